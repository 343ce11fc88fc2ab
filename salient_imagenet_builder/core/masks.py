"""Soft masks: neural activation maps (NAMs) of one feature, and their lossless 8-bit encoding."""

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .constants import CROP_SIZE
from .png import decode_png


def normalized_maps(spatial: torch.Tensor) -> torch.Tensor:
    """Feature maps (..., H, W) divided by their per-map maximum: values in [0, 1], 1 = most active.
    An all-zero map (a dead ReLU channel) stays all zero."""
    peak = spatial.flatten(-2).amax(-1)[..., None, None]
    return torch.where(peak > 0, spatial / peak.clamp_min(torch.finfo(spatial.dtype).tiny), torch.zeros_like(spatial))


def upsample(maps: torch.Tensor, size: int = CROP_SIZE) -> torch.Tensor:
    """(N, H, W) maps -> (N, size, size) by bilinear interpolation (align_corners=False, as F.interpolate's default)."""
    return F.interpolate(maps[:, None].float(), size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def add_noise(x: torch.Tensor, masks: torch.Tensor, noise: torch.Tensor, noise_std: float) -> torch.Tensor:
    """x' = clamp(x + mask * sigma * z, 0, 1); x [B, 3, H, W] in [0, 1], masks [B, H, W] in [0, 1]."""
    return (x + masks[:, None] * (noise_std * noise)).clamp_(0, 1)


def to_uint8(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    mask = mask.numpy() if isinstance(mask, torch.Tensor) else mask
    return np.clip(np.rint(mask * 255.0), 0, 255).astype(np.uint8)


def decode_mask(data: bytes) -> np.ndarray:
    """PNG bytes -> float mask in [0, 1] (what evaluation multiplies the noise by)."""
    return decode_mask_uint8(data).astype(np.float32) / 255.0


def decode_mask_uint8(data: bytes) -> np.ndarray:
    """PNG bytes -> 8-bit greyscale (H, W): a build's own mask PNGs without Pillow (`core.png`), any other by it."""
    pixels = decode_png(data, channels=1)
    return pixels if pixels is not None else np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.uint8)


def map_shape_of(values: int) -> tuple[int, int]:
    """The (H, W) of a flat map of `values` floats: square, as every map of the 224 x 224 view is."""
    side = math.isqrt(values)
    if side * side != values:
        raise ValueError(f"a raw map of {values} values is not square; reshape it with the build's map_shape "
                         "(build_info.json)")
    return side, side
