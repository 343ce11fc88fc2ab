"""The evaluation plots keep every label inside the saved image, with the long model labels users give."""

import numpy as np
import pytest
from PIL import Image

from salient_imagenet_builder.evaluation import outputs
from salient_imagenet_builder.evaluation.runner import ModelResult

LONG = "vit_base_patch16_224.augreg2_in21k_ft_in1k-my_finetuned_checkpoint_epoch_090_final_v2"


def result(label: str, seed: int) -> ModelResult:
    rng = np.random.default_rng(seed)
    per_class = {k: rng.uniform(0, 1, (3, 1000)) for k in ("core_acc", "spurious_acc")}
    stat = lambda: {"mean": float(rng.uniform(0.2, 0.8)), "std": 0.01}  # noqa: E731
    metrics = {"core_acc": stat(), "spurious_acc": stat(), "rcs": {"mean": 0.1, "std": 0.02},
               "clean_acc_core_images": 0.7, "clean_acc_spurious_images": 0.6}
    return ModelResult(label, per_class, None, metrics, {}, None, None, None)


@pytest.fixture
def figures(monkeypatch):
    made = []
    real = outputs._figure

    def recording(*args, **kwargs):
        figure, axes = real(*args, **kwargs)
        made.append(figure)
        return figure, axes

    monkeypatch.setattr(outputs, "_figure", recording)
    return made


def assert_nothing_cut(path, figure):
    """The saved PNG is at least as large as the box around every artist (titles, tick labels, legends)."""
    dpi = 120
    figure.canvas.draw()
    needed = figure.get_tightbbox(figure.canvas.get_renderer())  # inches
    width, height = Image.open(path).size
    assert width >= needed.width * dpi - 2 and height >= needed.height * dpi - 2, (path.name, (width, height),
                                                                                 needed)


def test_plots_keep_long_labels_inside_the_image(figures, tmp_path):
    results = [result(LONG, 0), result(LONG.replace("v2", "v3"), 1), result("resnet50.a1_in1k", 2)]
    outputs.plot_core_vs_spurious(tmp_path / "core_vs_spurious.png", results[0])
    rows = [{"class_name": "a very long class name, with commas, and more words", "feature_index": 2047 - i,
             "kind": "spurious" if i % 2 else "core", "drop": 0.1 * i, "drop_std": 0.01} for i in range(10)]
    outputs.plot_feature_drops(tmp_path / "feature_drops.png", rows, LONG, 10)
    outputs.plot_comparison(tmp_path / "comparison.png", results)
    for figure, name in zip(figures, ("core_vs_spurious.png", "feature_drops.png", "comparison.png")):
        assert_nothing_cut(tmp_path / name, figure)
