"""Feature importance (Singla & Feizi): FI[c, j] = mean over the images x grouped into class c of r_j(x) * W[c, j],
with r(x) the pooled penultimate features and W the final linear layer. Kept as per-group sums of r(x) in float64
with image counts, so FI needs no second pass and does not depend on how the source was cut into units."""

import torch

__all__ = ["FeatureImportance"]


class FeatureImportance:
    """Per-group sums of r(x) (float64) and image counts, so FI needs no second pass."""

    def __init__(self, num_classes: int, num_features: int):
        self.sums = torch.zeros(num_classes, num_features, dtype=torch.float64)
        self.counts = torch.zeros(num_classes, dtype=torch.int64)

    def update(self, groups: torch.Tensor, pooled: torch.Tensor) -> None:
        """Image by image in order (index_add_ on the CPU adds rows one after another): the same sums whatever
        the batch size."""
        groups = groups.cpu()
        self.sums.index_add_(0, groups, pooled.detach().cpu().double())
        self.counts.index_add_(0, groups, torch.ones_like(groups))

    def importance(self, weight: torch.Tensor) -> torch.Tensor:
        """FI (num_classes x num_features); rows of empty groups are NaN."""
        means = self.sums / self.counts.clamp_min(1)[:, None].double()
        fi = means * weight.detach().cpu().double()
        fi[self.counts == 0] = float("nan")
        return fi

    def ranks(self, weight: torch.Tensor) -> torch.Tensor:
        """1-based rank of every feature within its class by FI (1 = most important)."""
        order = torch.argsort(self.importance(weight).nan_to_num(float("-inf")), dim=1, descending=True, stable=True)
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, torch.arange(1, order.shape[1] + 1).expand_as(order).contiguous())
        return ranks
