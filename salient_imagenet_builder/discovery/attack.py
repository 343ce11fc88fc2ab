"""What the annotators see of a feature besides its top images: its neural activation maps (NAMs) and the
feature attack, both batched over (image, feature) jobs.

Feature attack (the authors' code): start from the image and ascend r_j with L2-normalised gradient steps,
x <- clamp(x + step * g / ||g||_2, 0, 1), no projection; it exaggerates whatever the feature responds to.
"""

import torch

from ..core.images import to_unit_float
from ..core.masks import normalized_maps, upsample
from .options import ATTACK_STEP_SIZE


def activation_maps(model, views: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """uint8 views (N, 3, H, W) and one feature per view -> NAMs (N, H, W) in [0, 1] at the view's size."""
    with torch.inference_mode():
        spatial, _, _ = model(to_unit_float(views).contiguous(memory_format=torch.channels_last))
        chosen = spatial[torch.arange(len(features)), features.to(spatial.device)].float()
        return upsample(normalized_maps(chosen), views.shape[-1]).cpu()


def feature_attack(model, views: torch.Tensor, features: torch.Tensor, steps: int,
                   step_size: float = ATTACK_STEP_SIZE) -> torch.Tensor:
    """uint8 views (N, 3, H, W), feature j per view -> attacked images, uint8. Each image's gradient is its own
    (the model is in eval mode, so images in a batch do not interact)."""
    model.requires_grad_(False)
    x = to_unit_float(views)
    index = torch.arange(len(features))
    for _ in range(steps):
        x.requires_grad_(True)
        _, pooled, _ = model(x)
        (grad,) = torch.autograd.grad(pooled[index, features.to(pooled.device)].sum(), x)
        norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        x = (x.detach() + step_size * grad / norm).clamp_(0, 1)
    return (x.detach() * 255).round_().to(torch.uint8).cpu()
