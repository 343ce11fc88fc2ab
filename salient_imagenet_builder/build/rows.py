"""The mappers of the build, module-level because they run in forked decoding processes: pass 1 turns bytes into the
model's uint8 224 view, pass 2 decodes a selected image again and makes its row (masks as PNG, the image column)."""

import io
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from ..images import CorruptImage, center_view, decode, to_uint8_tensor
from ..masks import encode_png, to_uint8, upsample
from ..schema import wordnet_ids
from ..sources import Sample


@dataclass
class ImageMeta:
    image_id: str
    label: int
    prediction: int
    group: int
    ref: str


class Pass1Decoder:
    """Pass 1 worker: bytes -> uint8 224 view, or the error of a corrupt image. Bytes are not sent back."""

    def __init__(self, draft):
        self.draft = draft

    def __call__(self, sample: Sample):
        meta = Sample(sample.image_id, sample.label, b"", sample.ref)
        try:
            return meta, to_uint8_tensor(center_view(decode(sample.data, self.draft))), None
        except CorruptImage as e:
            return meta, None, str(e)


class Pass2Decoder:
    """Pass 2 worker: the selected image's view (and encoded image column), then its masks once the NAMs are known."""

    def __init__(self, image_mode, draft):
        self.image_mode, self.draft = image_mode, draft

    def view(self, item):
        ref, data = item
        view = center_view(decode(data, self.draft))
        if self.image_mode == "crop":
            image = {"bytes": _encode_image(view), "path": None}
        elif self.image_mode == "original":
            image = {"bytes": data, "path": None}
        else:
            image = None
        return ref, to_uint8_tensor(view), image


def _encode_image(view) -> bytes:
    buffer = io.BytesIO()
    view.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def make_row(meta: ImageMeta, image, entries: list[dict]) -> dict:
    """One `default` row. `entries`: dicts with pair fields, `activation`, `rank` and the normalised `nam`."""
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


