"""Stage 5: per-class and class-balanced accuracies per draw, then mean and std over draws; RCS."""


import numpy as np

from ..core.constants import (
    NUM_CLASSES,
)
from .jobs import Jobs
from .rows import EvalData, Pairs
from .settings import (
    NOISE_ON_CORE,
    NOISE_ON_FEATURE,
    NOISE_ON_SPURIOUS,
)


def relative_core_sensitivity(core_acc, spurious_acc):
    """RCS = (core - spurious) / (2 min(a, 1 - a)), a = (core + spurious) / 2; 0 when a is 0 or 1; NaN if undefined."""
    core, spurious = np.asarray(core_acc, dtype=np.float64), np.asarray(spurious_acc, dtype=np.float64)
    a = (core + spurious) / 2
    denominator = 2 * np.minimum(a, 1 - a)
    with np.errstate(divide="ignore", invalid="ignore"):
        rcs = np.where(denominator > 0, np.clip((core - spurious) / denominator, -1, 1), 0.0)
    rcs = np.where(np.isnan(a), np.nan, rcs)
    return float(rcs) if rcs.ndim == 0 else rcs


def group_mean(keys: np.ndarray, values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(count, mean) of `values` per key in 0..size-1; mean NaN where a key has no value."""
    counts = np.bincount(keys, minlength=size)
    sums = np.bincount(keys, weights=values.astype(np.float64), minlength=size)
    with np.errstate(divide="ignore", invalid="ignore"):
        return counts, np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def balanced(values: np.ndarray, counts: np.ndarray):
    """Class-balanced mean over the classes with rows (last axis); NaN when none has."""
    chosen = values[..., counts > 0]
    return chosen.mean(-1) if chosen.shape[-1] else np.full(chosen.shape[:-1], np.nan)


def mean_std(per_draw) -> dict:
    """Mean and sample standard deviation (ddof 1; 0 for a single draw) over draws."""
    per_draw = np.asarray(per_draw, dtype=np.float64)
    std = per_draw.std(axis=0, ddof=1) if len(per_draw) > 1 else np.zeros(per_draw.shape[1:])
    return {"mean": per_draw.mean(axis=0), "std": std, "per_draw": per_draw}


def class_metrics(data: EvalData, jobs: Jobs, clean_correct: np.ndarray, noisy_correct: np.ndarray) -> dict:
    """Per class (arrays over the 1,000 classes; per draw where noise is involved)."""
    out = {}
    for name, mask_index, condition in (("core", data.core_mask, NOISE_ON_CORE),
                                        ("spurious", data.spurious_mask, NOISE_ON_SPURIOUS)):
        rows = mask_index >= 0
        out[f"{name}_images"], out[f"clean_acc_{name}_images"] = group_mean(
            data.groups[rows], clean_correct[rows], NUM_CLASSES)
        chosen = jobs.condition == condition
        keys = data.groups[jobs.row[chosen]]
        # noise on the core mask measures spurious accuracy, and the other way round
        accuracy = "spurious_acc" if name == "core" else "core_acc"
        out[accuracy] = np.stack([group_mean(keys, draw[chosen], NUM_CLASSES)[1] for draw in noisy_correct])
    out["rcs"] = relative_core_sensitivity(out["core_acc"], out["spurious_acc"])
    return out


def summarize_classes(per_class: dict) -> dict:
    core_counts, spurious_counts = per_class["core_images"], per_class["spurious_images"]
    core = balanced(per_class["core_acc"], spurious_counts)  # per draw
    spurious = balanced(per_class["spurious_acc"], core_counts)
    return {
        "classes_with_core_features": int((core_counts > 0).sum()),
        "classes_with_spurious_features": int((spurious_counts > 0).sum()),
        "core_feature_images": int(core_counts.sum()), "spurious_feature_images": int(spurious_counts.sum()),
        "clean_acc_core_images": balanced(per_class["clean_acc_core_images"], core_counts),
        "clean_acc_spurious_images": balanced(per_class["clean_acc_spurious_images"], spurious_counts),
        "core_acc": mean_std(core), "spurious_acc": mean_std(spurious),
        "rcs": mean_std(relative_core_sensitivity(core, spurious)),
    }


def pair_metrics(data: EvalData, jobs: Jobs, clean_correct: np.ndarray, noisy_correct: np.ndarray) -> dict:
    """Single-feature test: per (class, feature) pair, clean accuracy on its images, accuracy with noise on that
    feature's mask only, and the drop."""
    chosen = jobs.condition == NOISE_ON_FEATURE
    keys, size = jobs.pair[chosen], len(data.pairs)
    images, clean = group_mean(keys, clean_correct[jobs.row[chosen]], size)
    noisy = np.stack([group_mean(keys, draw[chosen], size)[1] for draw in noisy_correct])
    return {"images": images, "clean_acc": clean, "noisy_acc": noisy, "drop": clean[None] - noisy}


def summarize_pairs(pairs: Pairs, per_pair: dict) -> dict:
    """Mean drop over the pairs of each kind (per draw, then mean and std over draws)."""
    kinds = np.array(pairs.kind, dtype=object)
    by_kind = {}
    for kind in ("core", "spurious"):
        chosen = (kinds == kind) & (per_pair["images"] > 0)
        if chosen.any():
            by_kind[kind] = {"pairs": int(chosen.sum()), **mean_std(per_pair["drop"][:, chosen].mean(1))}
    return {"pairs": int((per_pair["images"] > 0).sum()), "mean_drop_by_kind": by_kind}


