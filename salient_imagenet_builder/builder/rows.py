"""Rows of the `default` config: an image's masks (PNG) from its maps. `make_row_job` runs in forked workers;
the image column is attached by the caller, so its bytes never travel to a worker and back."""

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Features

from ..core.masks import normalized_maps, to_uint8, upsample
from ..core.png import encode_png
from ..core.schema import wordnet_ids
from ..core.writer import Spill


@dataclass
class ImageMeta:
    image_id: str
    label: int
    prediction: int
    group: int
    ref: str
    size: tuple[int, int]  # (width, height) of the image as displayed (EXIF orientation applied)


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
            "activation": entry["activation"], "rank": entry["rank"], "nam": entry["nam"].ravel().tolist(),
            "mask": {"bytes": encode_png(mask), "path": None},
        })
        by_kind[entry["kind"]].append(mask)
    combined = {kind: {"bytes": encode_png(np.max(np.stack(m), axis=0)), "path": None} for kind, m in by_kind.items()}
    return {
        "image": image, "image_id": meta.image_id, "label": meta.label, "wordnet_id": wordnet_ids()[meta.label],
        "prediction": meta.prediction, "group": meta.group, "original_width": meta.size[0],
        "original_height": meta.size[1], "features": features,
        "core_mask": combined.get("core"), "spurious_mask": combined.get("spurious"),
    }


def make_row_job(args):
    return make_row(*args)




class RowSpill:
    """`--top-k all`: every image of an annotated group gets its row during pass 1 (masks of all of its group's
    pairs, rank 0 until the reduce knows it), spilled to the unit's Arrow file: one read and one forward per image.
    The scan's `rows` hook (`core.scan.ScanWorker`)."""

    def __init__(self, pairs_by_class: dict, spill_dir: Path, features: Features):
        self.pairs_by_class, self.spill_dir, self.features = pairs_by_class, spill_dir, features
        self.spill = None

    def open(self, unit) -> None:
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        self.spill = Spill(self.spill_dir / f".{unit.index:05d}.rows.arrow.partial", self.features)

    def add(self, decoded, spatial, pooled, predictions, groups, decoder) -> None:
        jobs, images = [], []
        for i, sample in enumerate(decoded.good):
            pairs = self.pairs_by_class.get(groups[i], ())
            if not pairs:
                continue
            nams = normalized_maps(spatial[i, [p.feature_index for p in pairs]]).float().cpu().numpy()
            entries = [{"feature_index": p.feature_index, "feature_rank": p.feature_rank, "kind": p.kind,
                        "activation": float(pooled[i, p.feature_index]), "rank": 0, "nam": nams[n]}
                       for n, p in enumerate(pairs)]
            jobs.append((ImageMeta(sample.image_id, sample.label, predictions[i], groups[i], sample.ref,
                                   decoded.sizes[i]), None, entries))
            images.append(decoded.images[i])
        rows = decoder.map(make_row_job, jobs)
        for row, image in zip(rows, images):
            row["image"] = image
        self.spill.append(rows)

    def close(self) -> Path:
        self.spill.close()
        return self.spill.path
