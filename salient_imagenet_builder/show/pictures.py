"""Pictures of a built dataset: a pair's panel and a class summary (drawn with `core.render`)."""

from ..core import render
from ..core.dataset import DatasetView, Shown
from ..core.errors import InputError


def label_of(pair: dict) -> str:
    kind = pair["kind"] + (f" ({pair['spurious_type']})" if pair.get("spurious_type") else "")
    return (f"{kind}; votes main / separate / background: {pair['votes_main_object']} / "
            f"{pair['votes_separate_object']} / {pair['votes_background']}")


def overlays(shown: list[Shown]) -> list[tuple]:
    return [s.overlay_cell() for s in shown]


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
