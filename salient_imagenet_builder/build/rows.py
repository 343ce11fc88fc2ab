"""Rows of the `default` config: an image's masks (PNG) from its maps. `make_row_job` runs in forked workers;
the image column is attached by the caller, so its bytes never travel to a worker and back."""

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from ..masks import encode_png, to_uint8, upsample
from ..schema import wordnet_ids


@dataclass
class ImageMeta:
    image_id: str
    label: int
    prediction: int
    group: int
    ref: str


def make_row(meta: ImageMeta, image, entries: list[dict]) -> dict:
    """One `default` row. `entries`: dicts with pair fields, `activation`, `rank` and the normalised `nam`
    (`rank` 0 in `--top-k all` builds until the reduce knows it)."""
    entries = sorted(entries, key=lambda e: e["feature_rank"])
    nams = torch.from_numpy(np.stack([e["nam"] for e in entries]).astype(np.float32))
    masks = to_uint8(upsample(nams))
    features, by_kind = [], defaultdict(list)
    for entry, mask in zip(entries, masks):
        features.append({
            "feature_index": entry["feature_index"], "feature_rank": entry["feature_rank"], "kind": entry["kind"],
            "activation": entry["activation"], "rank": entry["rank"], "nam": entry["nam"].tolist(),
            "mask": {"bytes": encode_png(mask), "path": None},
        })
        by_kind[entry["kind"]].append(mask)
    combined = {kind: {"bytes": encode_png(np.max(np.stack(m), axis=0)), "path": None} for kind, m in by_kind.items()}
    return {
        "image": image, "image_id": meta.image_id, "label": meta.label, "wordnet_id": wordnet_ids()[meta.label],
        "prediction": meta.prediction, "group": meta.group, "features": features,
        "core_mask": combined.get("core"), "spurious_mask": combined.get("spurious"),
    }


def make_row_job(args):
    return make_row(*args)


