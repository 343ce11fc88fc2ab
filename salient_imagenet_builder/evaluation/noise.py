"""Stage 3: z ~ N(0, 1) drawn per (seed, draw, image_id) with its own generator, so results depend neither on
batch size nor on model order; an image's z is shared by all its masks within a draw (common random numbers)."""

import hashlib

import numpy as np
import torch

from ..core.constants import (
    CROP_SIZE,
)
from ..core.images import to_unit_float
from ..core.masks import add_noise
from .rows import EvalData


def row_seed(seed: int, draw: int, image_id: str) -> int:
    """The generator seed of one image in one draw: a hash, so it depends on nothing else (batch, order, model)."""
    digest = hashlib.blake2b(f"{seed}:{draw}:{image_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def unit_noise(image_ids: list[str], seed: int, draw: int, device: torch.device) -> torch.Tensor:
    """N(0, 1) noise [B, 3, 224, 224], one generator seeded per (seed, draw, image_id)."""
    generator = torch.Generator(device=device)
    out = torch.empty((len(image_ids), 3, CROP_SIZE, CROP_SIZE), device=device)
    for i, image_id in enumerate(image_ids):
        generator.manual_seed(row_seed(seed, draw, image_id))
        torch.randn(out.shape[1:], generator=generator, device=device, out=out[i])
    return out


def noisy_batch(data: EvalData, rows: np.ndarray, masks: np.ndarray, noise_std: float, seed: int, draw: int,
                device: torch.device) -> torch.Tensor:
    """The [0, 1] views of `rows`, with noise inside masks[masks] (none where the mask index is -1)."""
    x = to_unit_float(data.images[torch.from_numpy(rows)].to(device, non_blocking=True))
    noisy = masks >= 0
    if noise_std == 0 or not noisy.any():
        return x
    unique, inverse = np.unique(rows, return_inverse=True)
    z = unit_noise([data.image_ids[r] for r in unique], seed, draw, device)[torch.from_numpy(inverse).to(device)]
    m = torch.zeros((len(rows), CROP_SIZE, CROP_SIZE), device=device)
    m[torch.from_numpy(noisy).to(device)] = data.masks[torch.from_numpy(masks[noisy])].to(device).float() / 255.0
    return add_noise(x, m, z, noise_std)


