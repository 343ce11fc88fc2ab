"""Stage 2: which (row, mask) pairs get noise: core masks, spurious masks, and one job per (row, feature)."""

from dataclasses import dataclass

import numpy as np

from .rows import EvalData
from .settings import (
    NOISE_ON_CORE,
    NOISE_ON_FEATURE,
    NOISE_ON_SPURIOUS,
)


@dataclass
class Jobs:
    """One noisy forward pass per entry: noise inside masks[mask] on images[row]."""
    row: np.ndarray
    mask: np.ndarray
    condition: np.ndarray  # NOISE_ON_CORE / NOISE_ON_SPURIOUS / NOISE_ON_FEATURE
    pair: np.ndarray  # index into data.pairs for NOISE_ON_FEATURE, else -1

    def __len__(self) -> int:
        return len(self.row)


def plan_jobs(data: EvalData, single_feature: bool = True) -> Jobs:
    """Core-mask jobs (spurious accuracy), spurious-mask jobs (core accuracy), then one job per (row, feature);
    ordered by row, so an image's masks share a batch and its noise is drawn once there."""
    core, spurious = np.flatnonzero(data.core_mask >= 0), np.flatnonzero(data.spurious_mask >= 0)
    parts = [(core, data.core_mask[core], NOISE_ON_CORE, np.full(len(core), -1)),
             (spurious, data.spurious_mask[spurious], NOISE_ON_SPURIOUS, np.full(len(spurious), -1))]
    if single_feature:
        parts.append((data.feature_row, data.feature_mask, NOISE_ON_FEATURE, data.feature_pair))
    rows, masks, conditions, pairs = zip(*parts)
    order = np.argsort(np.concatenate(rows), kind="stable")

    def joined(arrays):
        return np.concatenate(arrays).astype(np.int64)[order]

    return Jobs(joined(rows), joined(masks), joined([np.full(len(r), c) for r, c in zip(rows, conditions)]),
                joined(pairs))


