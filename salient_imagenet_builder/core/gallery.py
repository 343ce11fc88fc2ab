"""The build's gallery: a few annotated pairs' top images with their masks, drawn from the build's own files and
shown at the top of its card."""

import logging
from pathlib import Path

from . import render
from .constants import GALLERY_FILE, GALLERY_IMAGES, GALLERY_PAIRS
from .dataset import DatasetView

log = logging.getLogger(__name__)
GALLERY_CELL = 112


def gallery_pairs(view: DatasetView, count: int) -> list[dict]:
    """Spurious pairs first (the dataset's point), most agreed first, then core ones; one pair per class."""
    chosen, classes = [], set()
    order = sorted(view.pairs(), key=lambda p: (p["kind"] != "spurious",
                                                -max(p["votes_separate_object"], p["votes_background"],
                                                     p["votes_main_object"]), p["class_index"], p["feature_rank"]))
    for pair in order:
        if pair["class_index"] not in classes and pair["group_size"]:
            chosen.append(pair)
            classes.add(pair["class_index"])
        if len(chosen) == count:
            break
    return chosen


def gallery(view: DatasetView, count: int = GALLERY_PAIRS, n: int = GALLERY_IMAGES):
    """A few pairs, one row each: their top images with the mask overlaid, labelled with class and kind."""
    blocks = [render.text_block(["Salient ImageNet: top images of annotated (class, feature) pairs with the "
                                 "feature's mask (red = high activation)"], render.row_width(n, GALLERY_CELL))]
    for pair in gallery_pairs(view, count):
        shown = view.pair_images(pair["class_index"], pair["feature_index"], n)
        if shown:
            row_label = f"{pair['class_name'].split(',')[0]}: feature {pair['feature_index']}, {pair['kind']}"
            blocks.append(render.image_row(row_label, [s.overlay_cell() for s in shown], n, GALLERY_CELL))
    return render.stack(blocks) if len(blocks) > 1 else None


def write_gallery(folder: Path, split: str) -> str | None:
    """The build's one call: `gallery.png` at the top level of the (staging) folder; its name, or None when there
    is nothing to show. A failure here is logged, never fatal: the dataset itself is complete."""
    try:
        picture = gallery(DatasetView(str(folder), split))
        if picture is None:
            return None
        render.save_png(picture, Path(folder) / GALLERY_FILE)
        return GALLERY_FILE
    except Exception as e:  # noqa: BLE001 - a preview must not cost the user a finished build
        log.warning("no gallery for the card (%s: %s)", type(e).__name__, e)
        return None
