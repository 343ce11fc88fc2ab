"""Pictures of a built dataset: a pair's panel, a class summary, and the build's gallery (all with `..render`)."""

import logging
from pathlib import Path

from .. import render
from ..constants import GALLERY_FILE, GALLERY_IMAGES, GALLERY_PAIRS
from ..errors import InputError
from .data import DatasetView, Shown

log = logging.getLogger(__name__)
GALLERY_CELL = 112


def label_of(pair: dict) -> str:
    kind = pair["kind"] + (f" ({pair['spurious_type']})" if pair.get("spurious_type") else "")
    return (f"{kind}; votes main / separate / background: {pair['votes_main_object']} / "
            f"{pair['votes_separate_object']} / {pair['votes_background']}")


def overlays(shown: list[Shown]) -> list[tuple]:
    return [(render.overlay(s.view, s.mask), f"#{s.rank} {s.image_id}") for s in shown]


def pair_panel(view: DatasetView, class_index: int, feature_index: int, n: int):
    pair = next((p for p in view.pairs(class_index) if p["feature_index"] == feature_index), None)
    if pair is None:
        features = [p["feature_index"] for p in view.pairs(class_index)]
        raise InputError(f"{view.name}: class {class_index} has no annotated feature {feature_index} "
                         f"(its features: {features or 'none'})")
    shown = view.pair_images(class_index, feature_index, n)
    n = max(1, len(shown))  # no blank columns when the build kept fewer images
    title = [f"Class {class_index} ({pair['wordnet_id']}): {pair['class_name']}",
             f"Feature {feature_index}, rank {pair['feature_rank']}: {label_of(pair)}",
             f"{len(shown)} top images of the pair in this build (mask overlay: red = high activation)"]
    blocks = [render.text_block(title, render.row_width(n), bold_first=True)]
    if any(s.view is not None for s in shown):
        blocks.append(render.image_row("Images", [(s.view, f"r = {s.activation:.3g}") for s in shown
                                                  if s.view is not None], n))
    blocks.append(render.image_row("Masks", overlays(shown), n))
    return render.stack(blocks)


def class_summary(view: DatasetView, class_index: int, n: int):
    pairs = view.pairs(class_index)
    if not pairs:
        raise InputError(f"{view.name}: class {class_index} has no annotated features in this build")
    images = view.class_images(class_index, n)
    n = max([1, *(len(v) for v in images.values())])
    spurious = sum(p["kind"] == "spurious" for p in pairs)
    title = [f"Class {class_index} ({pairs[0]['wordnet_id']}): {pairs[0]['class_name']}",
             f"{len(pairs)} annotated features, {spurious} spurious; each row: the feature's top images with its "
             "mask (red = high)"]
    blocks = [render.text_block(title, render.row_width(n), bold_first=True)]
    for p in pairs:
        row_label = f"feature {p['feature_index']} (rank {p['feature_rank']}): {p['kind']} " \
                    f"{p['votes_main_object']}/{p['votes_separate_object']}/{p['votes_background']}"
        blocks.append(render.image_row(row_label, overlays(images.get(p["feature_index"], [])), n))
    return render.stack(blocks)


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
            blocks.append(render.image_row(row_label, overlays(shown), n, GALLERY_CELL))
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
