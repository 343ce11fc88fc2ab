"""Decoding and the paper's preprocessing: shorter side to 256 (bilinear), center-crop 224, pixels in [0, 1]."""

import io

import numpy as np
import torch
from PIL import Image

from .constants import CROP_SIZE, RESIZE_SIZE


class CorruptImage(ValueError):
    pass


def decode(data: bytes, draft: bool = True) -> Image.Image:
    """Bytes -> RGB PIL image. Handles CMYK, greyscale and PNG files named .JPEG (PIL reads the content).

    With `draft`, a JPEG is decoded at the smallest 1/2, 1/4 or 1/8 scale whose shorter side stays >= 256:
    several times cheaper, and the bilinear resize that follows then starts from fewer pixels.
    """
    try:
        image = Image.open(io.BytesIO(data))
        if draft and image.format == "JPEG":
            w, h = image.size
            scale = RESIZE_SIZE / min(w, h)
            image.draft("RGB", (max(1, int(w * scale) + 1), max(1, int(h * scale) + 1)))
        image.load()
        return image.convert("RGB")
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, DecompressionBombError...)
        raise CorruptImage(f"{type(e).__name__}: {e}") from None


def center_view(image: Image.Image) -> Image.Image:
    """Resize the shorter side to RESIZE_SIZE, then center-crop CROP_SIZE (torchvision's Resize + CenterCrop)."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(RESIZE_SIZE * long / short)
    size = (RESIZE_SIZE, new_long) if w <= h else (new_long, RESIZE_SIZE)
    image = image.resize(size, Image.BILINEAR)
    left = int(round((size[0] - CROP_SIZE) / 2.0))
    top = int(round((size[1] - CROP_SIZE) / 2.0))
    return image.crop((left, top, left + CROP_SIZE, top + CROP_SIZE))


def to_uint8_tensor(image: Image.Image) -> torch.Tensor:
    """HWC RGB image -> CHW uint8 tensor (what DataLoader workers send: 4x smaller than float)."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def to_unit_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> float NCHW in [0, 1]."""
    return batch.float().div_(255)
