"""`evaluate --generalized-only`: a pair's masks only up to its `generalizes_to_rank` (the generalization study
`update --generalization` recorded in the annotations config).

A feature entry of a row is kept when its pair was studied and the row's image is within the ranks judged to show
the annotated attribute (`rank <= generalizes_to_rank`); a pair not studied is left out (its masks were never
checked), and counted. The row's core and spurious masks are then the pixelwise maximum of its kept entries, as
the builder made them from all of them (8-bit masks: the maximum of rounded values is the rounded maximum, so this
is exactly the mask the builder would have stored); a row with no kept entry of a kind gets no mask of that kind.
"""

import numpy as np
import torch

from .rows import EvalData, Pairs
from .settings import EvaluationError, log


def generalization_limits(dataset: str) -> dict[tuple[int, int], int | None]:
    """(class, feature) -> generalizes_to_rank (None: not studied), from the dataset's annotations config."""
    from datasets import load_dataset

    try:
        table = load_dataset(str(dataset), "annotations", split="train")
    except Exception as e:  # datasets raises many types
        raise EvaluationError(f"--dataset {dataset}: cannot load the annotations config ({type(e).__name__}: {e})"
                              ) from None
    if "generalizes_to_rank" not in table.column_names:
        raise EvaluationError(f"--dataset {dataset}: no generalization study recorded (no generalizes_to_rank "
                              "column); run salient-imagenet update DATASET --generalization generalization.csv")
    columns = table.select_columns(["class_index", "feature_index", "generalizes_to_rank"]).to_dict()
    limits = {(c, f): r for c, f, r in zip(columns["class_index"], columns["feature_index"],
                                           columns["generalizes_to_rank"])}
    if all(r is None for r in limits.values()):
        raise EvaluationError(f"--dataset {dataset}: no pair has a generalizes_to_rank; run salient-imagenet "
                              "update DATASET --generalization generalization.csv first")
    return limits


def keep_generalized(data: EvalData, limits: dict[tuple[int, int], int | None]) -> dict:
    """Drop the feature entries beyond their pair's generalizes_to_rank (all of a pair not studied), rebuild the
    rows' core and spurious masks from what is left; returns the counts for the summary."""
    pair_limit = np.array([limits.get((int(g), int(f))) or 0 for g, f in zip(data.pairs.group,
                                                                            data.pairs.feature_index)], dtype=np.int64)
    kept = data.feature_image_rank <= pair_limit[data.feature_pair]
    studied = pair_limit > 0
    counts = {"pairs": len(data.pairs), "pairs_not_studied": int((~studied).sum()),
              "feature_masks": len(kept), "feature_masks_used": int(kept.sum())}
    kinds = np.array(data.pairs.kind, dtype=object)[data.feature_pair]
    for kind, slots in (("core", data.core_mask), ("spurious", data.spurious_mask)):
        for row in np.flatnonzero(slots >= 0):
            chosen = data.feature_mask[(data.feature_row == row) & kept & (kinds == kind)]
            if len(chosen):
                data.masks[slots[row]] = torch.amax(data.masks[torch.from_numpy(chosen)], dim=0)
            else:
                slots[row] = -1
    restrict_features(data, kept)
    log.info("--generalized-only: %s", counts)
    return counts


def restrict_features(data: EvalData, kept: np.ndarray) -> None:
    """Only the kept (row, feature) entries, and only the pairs that still have one."""
    used = np.unique(data.feature_pair[kept])
    new_index = np.full(len(data.pairs), -1, dtype=np.int64)
    new_index[used] = np.arange(len(used))
    p = data.pairs
    data.pairs = Pairs(p.group[used], p.feature_index[used], p.feature_rank[used], [p.kind[i] for i in used])
    data.feature_row, data.feature_mask = data.feature_row[kept], data.feature_mask[kept]
    data.feature_pair, data.feature_image_rank = new_index[data.feature_pair[kept]], data.feature_image_rank[kept]
