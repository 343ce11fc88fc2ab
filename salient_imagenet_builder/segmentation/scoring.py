"""energy_inside per image and feature, per pair and per kind."""

import io
import logging
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..core.constants import CROP_SIZE
from ..core.dataset import DatasetView
from ..core.images import displayed_size
from ..core.masks import decode_mask
from .human import HumanMasks

log = logging.getLogger(__name__)


def energy_inside(mask: np.ndarray, human: np.ndarray, counted: np.ndarray) -> float | None:
    """sum(m * H) / sum(m) over the counted pixels; None when the soft mask has no mass there."""
    mass = float(mask[counted].sum(dtype=np.float64))
    if mass <= 0:
        return None
    return float(mask[counted & human].sum(dtype=np.float64)) / mass


@dataclass
class Scores:
    """What `score_dataset` found: one row per pair, and the counts of images it could not score."""

    pairs: list[dict] = field(default_factory=list)
    images: int = 0  # image rows of the build's pairs read
    scored: int = 0  # (image, feature) pairs with a human mask and a soft mask with mass
    without_mask: int = 0  # images with no human mask file
    empty_masks: int = 0  # (image, feature) with a human mask but no soft-mask mass on counted pixels


SIZES = ("original_width", "original_height")  # each image's size as displayed (builds of this version)


def score_dataset(view: DatasetView, humans: HumanMasks, classes: list[int] | None = None) -> Scores:
    """Every annotated pair of the build (of `classes` when given): its images' energy_inside and their mean."""
    scores = Scores()
    pairs = view.pairs()
    sized = set(SIZES) <= set(view.image_columns())
    if not sized:
        log.warning("%s: a build from before the image size columns (%s): the human masks' sizes are checked only "
                    "against an --image-mode original build's files, otherwise not at all", view.name,
                    ", ".join(SIZES))
    columns = ["image", "image_id", "wordnet_id", "features", *(SIZES if sized else ())]
    for class_index in sorted({p["class_index"] for p in pairs}):
        if classes is not None and class_index not in classes:
            continue
        per_feature = _score_class(view, humans, class_index, scores, columns)
        for pair in (p for p in pairs if p["class_index"] == class_index):
            values = per_feature.get(pair["feature_index"], [])
            scores.pairs.append({"class_index": class_index, "feature_index": pair["feature_index"],
                                 "kind": pair["kind"], "images": len(values),
                                 "energy_inside": float(np.mean(values)) if values else None})
    return scores


def _score_class(view: DatasetView, humans: HumanMasks, class_index: int, scores: Scores,
                 columns: list[str]) -> dict[int, list[float]]:
    """feature index -> energy_inside of each of its images in this class's rows that has a human mask."""
    found: dict[int, list[float]] = {}
    for row in view.group_rows(class_index, columns):
        scores.images += 1
        path = humans.path(row["wordnet_id"], row["image_id"])
        if path is None:
            scores.without_mask += 1
            continue
        human, counted = humans.view(path, image_size(row))
        for entry in row["features"]:
            value = energy_inside(decode_mask(entry["mask"]["bytes"]), human, counted)
            if value is None:
                scores.empty_masks += 1
                continue
            scores.scored += 1
            found.setdefault(entry["feature_index"], []).append(value)
    log.debug("class %d: %d features scored", class_index, len(found))
    return found


def image_size(row: dict) -> tuple[int, int] | None:
    """The row's image as displayed: the build's record of it, else (older builds) an --image-mode original build's
    file; None when neither tells (a crop or masks-only build from before the size columns)."""
    if row.get(SIZES[0]) is not None:
        return row[SIZES[0]], row[SIZES[1]]
    image = row.get("image")
    if not image or not image.get("bytes"):
        return None
    with Image.open(io.BytesIO(image["bytes"])) as picture:
        if picture.size == (CROP_SIZE, CROP_SIZE):  # the stored 224 view, not the file
            return None
    return displayed_size(image["bytes"])
