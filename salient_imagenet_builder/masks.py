"""Soft masks: neural activation maps (NAMs) of one feature, and their lossless 8-bit encoding."""

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .constants import CROP_SIZE


def normalized_maps(spatial: torch.Tensor) -> torch.Tensor:
    """Feature maps (..., H, W) divided by their per-map maximum: values in [0, 1], 1 = most active.
    An all-zero map (a dead ReLU channel) stays all zero."""
    peak = spatial.flatten(-2).amax(-1)[..., None, None]
    return torch.where(peak > 0, spatial / peak.clamp_min(torch.finfo(spatial.dtype).tiny), torch.zeros_like(spatial))


def upsample(maps: torch.Tensor, size: int = CROP_SIZE) -> torch.Tensor:
    """(N, H, W) maps -> (N, size, size) by bilinear interpolation (align_corners=False, as F.interpolate's default)."""
    return F.interpolate(maps[:, None].float(), size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def to_uint8(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    mask = mask.numpy() if isinstance(mask, torch.Tensor) else mask
    return np.clip(np.rint(mask * 255.0), 0, 255).astype(np.uint8)


def encode_png(mask_uint8: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(mask_uint8, mode="L").save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def decode_mask(data: bytes) -> np.ndarray:
    """PNG bytes -> float mask in [0, 1] (what evaluation multiplies the noise by)."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32) / 255.0
