"""The reduce step of pass 1: feature importance per class, and the bounded top-k images of every annotated pair.

FI[c, j] = mean over images x grouped into c of r_j(x) * W[c, j]; the top images of pair (c, j) are the images
of group c with the largest r_j(x).
"""

import heapq
from dataclasses import dataclass, field

import numpy as np
import torch


class FeatureImportance:
    """Running per-group sums of r(x) (float64), so FI needs no second pass."""

    def __init__(self, num_classes: int, num_features: int):
        self.sums = torch.zeros(num_classes, num_features, dtype=torch.float64)
        self.counts = torch.zeros(num_classes, dtype=torch.int64)

    def update(self, groups: torch.Tensor, pooled: torch.Tensor) -> None:
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


@dataclass(order=True)
class Candidate:
    activation: float
    image_id: str  # ties broken by image id, so the choice does not depend on the reader's order
    seq: int = field(compare=False)  # index of the image in the pass-1 image table
    nam: np.ndarray | None = field(compare=False, default=None)  # max-normalised map, kept when known


class TopK:
    """For every annotated pair, the k images with the largest activation (k=None keeps every image)."""

    def __init__(self, pairs, k: int | None):
        self.k = k
        self.heaps: dict[tuple[int, int], list[Candidate]] = {pair: [] for pair in pairs}

    def offer(self, pair, candidate: Candidate) -> None:
        heap = self.heaps[pair]
        if self.k is None:
            heap.append(candidate)
        elif len(heap) < self.k:
            heapq.heappush(heap, candidate)
        elif candidate > heap[0]:
            heapq.heapreplace(heap, candidate)

    def would_keep(self, pair, activation: float) -> bool:
        """Cheap pre-check, so maps are copied only for images that may enter the heap."""
        heap = self.heaps[pair]
        return self.k is None or len(heap) < self.k or activation >= heap[0].activation

    def ranked(self, pair) -> list[Candidate]:
        return sorted(self.heaps[pair], reverse=True)
