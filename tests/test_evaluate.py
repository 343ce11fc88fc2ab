"""Evaluation: metrics on cases whose answer is known by construction, noise, seeds, the CLI on builds made by the
real builder (folder, --image-mode none + --imagenet, Hub), and clear errors. No weights are ever downloaded."""

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import built_once
from PIL import Image
from torch import nn

from salient_imagenet_builder import evaluation as ev
from salient_imagenet_builder.builder import BuildConfig, build
from salient_imagenet_builder.builder.demo import make_annotations, make_checkpoint, make_images
from salient_imagenet_builder.cli import main
from salient_imagenet_builder.core.constants import CROP_SIZE, IMAGENET_MEAN
from salient_imagenet_builder.core.masks import decode_mask
from salient_imagenet_builder.core.model import CheckpointError
from salient_imagenet_builder.core.schema import image_features
from salient_imagenet_builder.core.writer import ShardWriter, encode_rows
from salient_imagenet_builder.evaluation import rows as ev_rows
from salient_imagenet_builder.evaluation.api import model_specs
from salient_imagenet_builder.evaluation.noise import row_seed
from salient_imagenet_builder.evaluation.outputs import class_rows, pair_rows

ROOT = Path(__file__).resolve().parents[1]
CLASSES = [0, 1, 2]
HALF = CROP_SIZE // 2


# --- a dataset whose masks are known by construction, and a model that reads one region only ----------------------

def png(array: np.ndarray, mode: str) -> dict:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def region(side: str) -> np.ndarray:
    mask = np.zeros((CROP_SIZE, CROP_SIZE), dtype=np.uint8)
    if side == "left":
        mask[:, :HALF] = 255
    else:
        mask[:, HALF:] = 255
    return mask


def level(label: int) -> int:
    return 25 * label + 12


def region_image(rng: np.random.Generator, label: int, spot: bool) -> np.ndarray:
    """The label as a flat grey level on the left half; texture on the right half; `spot` breaks the left half."""
    pixels = rng.integers(0, 256, (CROP_SIZE, CROP_SIZE, 3), dtype=np.uint8)
    pixels[:, :HALF] = level(label)
    if spot:
        pixels[100, 50] = 255
    return pixels


def region_row(rng, image_id, label, features, spot=False) -> dict:
    """features: [(feature_index, kind, side)]; the group is the label."""
    masks = {"core": [], "spurious": []}
    entries = []
    for rank, (index, kind, side) in enumerate(features, start=1):
        masks[kind].append(region(side))
        entries.append({"feature_index": index, "feature_rank": rank, "kind": kind, "activation": 1.0, "rank": 1,
                        "nam": [1.0], "mask": png(region(side), "L")})  # a 1 x 1 raw map
    combined = {k: png(np.max(np.stack(v), 0), "L") if v else None for k, v in masks.items()}
    return {"image": png(region_image(rng, label, spot), "RGB"), "image_id": image_id, "label": label,
            "wordnet_id": "n0", "prediction": label, "group": label, "features": entries,
            "core_mask": combined["core"], "spurious_mask": combined["spurious"]}


def write_dataset(folder: Path, rows: list[dict]) -> Path:
    writer = ShardWriter(folder / "data", "train", image_features((1, 1)))
    writer.write(encode_rows(rows, image_features((1, 1))))
    writer.close()
    return folder


@pytest.fixture(scope="module")
def region_dataset(tmp_path_factory) -> Path:
    """Class 0: core feature on the left, spurious on the right, one of 4 images unreadable (clean acc 3/4).
    Class 1: core on the right, spurious on the left. Class 2: one core feature (left), no spurious feature."""
    rng = np.random.default_rng(0)
    rows = [region_row(rng, f"a{i}", 0, [(10, "core", "left"), (20, "spurious", "right")], spot=i == 3)
            for i in range(4)]
    rows += [region_row(rng, f"b{i}", 1, [(30, "core", "right"), (40, "spurious", "left")]) for i in range(4)]
    rows += [region_row(rng, f"c{i}", 2, [(50, "core", "left")]) for i in range(3)]
    return write_dataset(tmp_path_factory.mktemp("region"), rows)


REGION_CONFIG = {"input_size": (3, CROP_SIZE, CROP_SIZE), "interpolation": "bilinear", "mean": (0.5, 0.5, 0.5),
                 "std": (0.25, 0.25, 0.25)}


class RegionReader(nn.Module):
    """Predicts from the left half only: a flat grey level (25 label + 12) / 255 there means `label`; anything else
    (a spot, noise) means class 999, which is never a label."""

    def __init__(self, config=REGION_CONFIG):
        super().__init__()
        self.register_buffer("mean", torch.tensor(config["mean"]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(config["std"]).view(1, 3, 1, 1))

    def forward(self, x):
        values = (x * self.std + self.mean)[..., :HALF].flatten(1)
        grey = values.mean(1)
        flat = (values - grey[:, None]).abs().amax(1) < 1e-3
        label = torch.round((grey * 255 - level(0)) / 25).long().clamp(0, 998)
        return F.one_hot(torch.where(flat, label, torch.full_like(label, 999)), 1000).float()


def settings(**kwargs) -> ev.EvalSettings:
    return ev.EvalSettings(**{"draws": 2, "batch_size": 5, "device": "cpu", "progress": False, **kwargs})


def by_class(rows: list[dict]) -> dict[int, dict]:
    return {r["class"]: r for r in rows}


def test_region_model_gives_known_accuracies(region_dataset):
    data = ev.load_eval_data(str(region_dataset), progress=False)
    result = ev.evaluate_model(data, RegionReader(), REGION_CONFIG, settings())
    rows = by_class(class_rows(result.per_class))
    assert sorted(rows) == CLASSES
    # class 0: the model reads its core region: noise there destroys accuracy, noise on the spurious region does not
    assert rows[0]["core_feature_images"] == rows[0]["spurious_feature_images"] == 4
    assert rows[0]["clean_acc_core_images"] == rows[0]["clean_acc_spurious_images"] == 0.75
    assert (rows[0]["spurious_acc"], rows[0]["core_acc"], rows[0]["rcs"]) == (0.0, 0.75, 1.0)
    # class 1: the model reads its spurious region
    assert (rows[1]["spurious_acc"], rows[1]["core_acc"], rows[1]["rcs"]) == (1.0, 0.0, -1.0)
    # class 2: core features only: a spurious accuracy, no core accuracy
    assert rows[2]["spurious_feature_images"] == 0 and rows[2]["spurious_acc"] == 0.0
    assert np.isnan(rows[2]["core_acc"]) and np.isnan(rows[2]["rcs"])
    m = result.metrics
    assert m["core_acc"]["mean"] == pytest.approx((0.75 + 0.0) / 2)  # classes with spurious features: 0, 1
    assert m["spurious_acc"]["mean"] == pytest.approx((0.0 + 1.0 + 0.0) / 3)  # classes with core features: 0, 1, 2
    assert m["rcs"]["mean"] == pytest.approx(1 / 17)  # (3/8 - 1/3) / (2 * min(17/48, 31/48))
    assert m["clean_acc_core_images"] == pytest.approx((0.75 + 1 + 1) / 3)
    assert m["clean_acc_spurious_images"] == pytest.approx((0.75 + 1) / 2)
    assert m["core_acc"]["std"] == m["spurious_acc"]["std"] == 0.0
    assert (m["classes_with_core_features"], m["classes_with_spurious_features"]) == (3, 2)


def test_region_model_single_feature_drops(region_dataset):
    data = ev.load_eval_data(str(region_dataset), progress=False)
    result = ev.evaluate_model(data, RegionReader(), REGION_CONFIG, settings())
    pairs = {(r["class"], r["feature_index"]): r for r in pair_rows(data.pairs, result.per_pair)}
    expected = {(0, 10): ("core", 0.75), (0, 20): ("spurious", 0.0), (1, 30): ("core", 0.0),
                (1, 40): ("spurious", 1.0), (2, 50): ("core", 1.0)}
    assert {k: (r["kind"], r["drop"]) for k, r in pairs.items()} == expected
    assert [(r["class"], r["feature_index"]) for r in pair_rows(data.pairs, result.per_pair)][:3] == \
        [(1, 40), (2, 50), (0, 10)]  # most harmful first (ties: more images first)
    by_kind = result.metrics["single_feature"]["mean_drop_by_kind"]
    assert by_kind["core"]["mean"] == pytest.approx((0.75 + 0 + 1) / 3)
    assert by_kind["spurious"]["mean"] == pytest.approx((0 + 1) / 2)


def test_noise_std_zero_gives_clean_accuracy(region_dataset):
    data = ev.load_eval_data(str(region_dataset), progress=False)
    result = ev.evaluate_model(data, RegionReader(), REGION_CONFIG, settings(noise_std=0.0))
    for row in class_rows(result.per_class):
        assert row["spurious_acc"] == row["clean_acc_core_images"]
        if row["spurious_feature_images"]:
            assert row["core_acc"] == row["clean_acc_spurious_images"]
    assert all(r["drop"] == 0 for r in pair_rows(data.pairs, result.per_pair))


def test_rcs_definition_and_edge_cases():
    rcs = ev.relative_core_sensitivity
    assert rcs(1.0, 0.0) == 1.0 and rcs(0.0, 1.0) == -1.0
    assert rcs(0.0, 0.0) == 0.0  # a = 0
    assert rcs(1.0, 1.0) == 0.0  # a = 1
    assert rcs(0.75, 0.25) == pytest.approx(0.5)
    assert rcs(0.9, 0.8) == pytest.approx(0.1 / 0.3)  # a = 0.85: 2 min(a, 1 - a) = 0.3
    assert rcs(0.2, 0.1) == pytest.approx(0.1 / 0.3)  # a = 0.15
    assert np.isnan(rcs(np.nan, 0.5))
    assert np.allclose(rcs(np.array([1.0, 0.5]), np.array([1.0, 0.5])), 0.0)


def test_noise_stays_inside_the_mask_and_is_clamped():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=generator)
    z = torch.randn(2, 3, 8, 8, generator=generator)
    mask = torch.zeros(2, 8, 8)
    mask[:, :4] = 1.0
    mask[:, 4:6] = 0.5
    out = ev.add_noise(x.clone(), mask, z, 0.25).numpy()
    expected = np.clip(x.numpy() + mask.numpy()[:, None] * (0.25 * z.numpy()), 0, 1)
    assert np.allclose(out, expected, atol=1e-6)
    assert np.array_equal(out[:, :, 6:], x.numpy()[:, :, 6:])  # mask 0: untouched, bit for bit
    assert out.min() >= 0 and out.max() <= 1 and (out == 0).any()


def test_noise_is_seeded_per_image_not_per_batch():
    a = ev.unit_noise(["x", "y"], seed=0, draw=0, device=torch.device("cpu"))
    b = ev.unit_noise(["y"], seed=0, draw=0, device=torch.device("cpu"))
    assert torch.equal(a[1], b[0])
    assert not torch.equal(a[0], ev.unit_noise(["x"], seed=0, draw=1, device=torch.device("cpu"))[0])
    assert not torch.equal(a[0], ev.unit_noise(["x"], seed=1, draw=0, device=torch.device("cpu"))[0])
    assert abs(float(a.std()) - 1) < 0.01


class PixelModel(nn.Module):
    """Noise-sensitive: the class (0-2) whose pixel in the right half is brightest."""

    def forward(self, x):
        pixels = torch.stack([x[:, :, 100, HALF + 20 + 30 * i].sum(1) for i in CLASSES], 1)
        return F.pad(pixels, (0, 1000 - len(CLASSES)), value=-1e9)


def test_seeds_reproduce_across_batch_sizes_and_model_order(region_dataset):
    data = ev.load_eval_data(str(region_dataset), progress=False)
    first = ev.evaluate_model(data, PixelModel(), REGION_CONFIG, settings(batch_size=3))
    ev.evaluate_model(data, RegionReader(), REGION_CONFIG, settings())  # another model in between
    again = ev.evaluate_model(data, PixelModel(), REGION_CONFIG, settings(batch_size=64))
    assert np.array_equal(first.noisy_predictions, again.noisy_predictions)
    assert first.metrics["core_acc"]["per_draw"].tolist() == again.metrics["core_acc"]["per_draw"].tolist()
    other_seed = ev.evaluate_model(data, PixelModel(), REGION_CONFIG, settings(seed=1))
    assert not np.array_equal(first.noisy_predictions, other_seed.noisy_predictions)
    assert not np.array_equal(first.noisy_predictions[0], first.noisy_predictions[1])  # draws differ


def test_preprocess_resizes_to_the_models_input_and_normalises():
    config = {"input_size": (3, 160, 160), "interpolation": "bicubic", "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.1, 0.5)}
    x = torch.full((1, 3, CROP_SIZE, CROP_SIZE), 0.6)
    out = ev.Preprocess(config)(x)
    assert out.shape == (1, 3, 160, 160)
    expected = (0.6 - np.array(config["mean"])) / np.array(config["std"])
    assert np.allclose(out[0, :, 80, 80].numpy(), expected, atol=1e-5)


# --- builds made by the real builder --------------------------------------------------------------------------------

def build_fixture(root: Path, image_mode: str) -> Path:
    out = root / f"salient_{image_mode}"
    build(BuildConfig(source=str(root / "imagenet"), out=str(out), model="resnet18",
                      model_checkpoint=str(root / "resnet18.ckpt"), annotations=str(root / "annotations.csv"),
                      classes=CLASSES, top_k=3, group_by="label", image_mode=image_mode, workers=0))
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    return built_once(tmp_path_factory, "test_evaluate", _built)


def _built(root: Path) -> dict:
    make_images(root / "imagenet", CLASSES, per_class=4, quirks=False)
    make_checkpoint(root / "resnet18.ckpt", arch="resnet18", classes=CLASSES)
    answers = {(c, rank): [answer] * 5 for c in CLASSES for rank, answer in ((1, "background"), (2, "main_object"))}
    make_annotations(root / "annotations.csv", CLASSES, num_features=512, answers=answers)
    crop = build_fixture(root, "crop")
    checkpoint = image_dependent_checkpoint(make_checkpoint(root / "resnet10t.ckpt", arch="resnet10t",
                                                            classes=CLASSES), crop)
    return {"root": root, "crop": crop, "none": build_fixture(root, "none"), "checkpoint": checkpoint}


def image_dependent_checkpoint(path: Path, dataset: Path) -> Path:
    """A random-weight resnet10t predicts the same class for every image (its pooled features barely vary). Centring
    its logits on the fixture's mean feature (bias = -W f_mean) makes predictions depend on the image, and on the
    noise, so noisy and clean accuracies really differ."""
    import timm
    from datasets import load_dataset

    ckpt = torch.load(path, weights_only=True)
    net = timm.create_model("resnet10t", pretrained=False).eval()
    net.load_state_dict({k[len("module.model."):]: v for k, v in ckpt["model"].items()
                         if k.startswith("module.model.")})
    views = torch.stack([torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
                         for image in load_dataset(str(dataset), split="train")["image"]])
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    views = F.interpolate(views, size=net.pretrained_cfg["input_size"][-2:], mode="bicubic", antialias=True)
    with torch.no_grad():
        features = net.forward_head(net.forward_features((views - mean) / std), pre_logits=True).mean(0)
        for prefix in ("module.model.", "module.attacker.model."):
            ckpt["model"][prefix + "fc.bias"][CLASSES] = -(ckpt["model"][prefix + "fc.weight"][CLASSES] @ features)
    torch.save(ckpt, path)
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


SEED, DRAWS, NOISE_STD = 3, 2, 0.25


@pytest.fixture(scope="module")
def independent(built, tmp_path_factory) -> list[dict]:
    def compute(_):
        classifier = ev.load_classifier("resnet10t", str(built["checkpoint"]))
        return independent_predictions(built["crop"], classifier.module, classifier.data_config)

    return built_once(tmp_path_factory, "test_evaluate_independent", compute)


def independent_predictions(dataset: Path, model: nn.Module, data_config: dict) -> list[dict]:
    """Predictions computed image by image, straight from `load_dataset` rows: x' = clamp(x + m sigma z, 0, 1) with
    z from the image's own generator (`row_seed`), the model's preprocessing, argmax. Per row: label, group, clean
    prediction and noisy predictions keyed by (mask, draw), mask = 'core', 'spurious' or a feature index."""
    from datasets import Image as ImageFeature
    from datasets import load_dataset

    model, preprocess = model.eval(), ev.Preprocess(data_config)
    ds = load_dataset(str(dataset), split="train").cast_column("core_mask", ImageFeature(decode=False))
    ds = ds.cast_column("spurious_mask", ImageFeature(decode=False))

    def predict(x):
        with torch.inference_mode():
            return int(model(preprocess(x[None])).argmax(1))

    rows = []
    for row in ds:
        x = torch.from_numpy(np.asarray(row["image"].convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
        masks = {"core": row["core_mask"], "spurious": row["spurious_mask"]}
        masks.update({f["feature_index"]: {"bytes": io_bytes(f["mask"])} for f in row["features"]})
        noisy = {}
        for what, mask in masks.items():
            if mask is None:
                continue
            m = torch.from_numpy(decode_mask(mask["bytes"]))
            for draw in range(DRAWS):
                z = torch.randn(3, CROP_SIZE, CROP_SIZE,
                                generator=torch.Generator().manual_seed(row_seed(SEED, draw, row["image_id"])))
                noisy[what, draw] = predict((x + m[None] * (NOISE_STD * z)).clamp(0, 1))
        rows.append({"image_id": row["image_id"], "label": row["label"], "group": row["group"],
                     "clean": predict(x), "noisy": noisy})
    return rows


def io_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def independent_class_metrics(rows: list[dict]) -> dict:
    """Plain per-class means: clean accuracy on the core / spurious feature images, noisy accuracies per draw."""
    correct: dict = {}
    for row in rows:
        metrics = correct.setdefault(row["group"], {})
        for kind, accuracy in (("core", "spurious_acc"), ("spurious", "core_acc")):
            if (kind, 0) in row["noisy"]:
                metrics.setdefault(f"clean_{kind}", []).append(row["clean"] == row["label"])
                for draw in range(DRAWS):
                    metrics.setdefault(accuracy, [[] for _ in range(DRAWS)])[draw].append(
                        row["noisy"][kind, draw] == row["label"])
    return {c: {k: [float(np.mean(d)) for d in v] if k.endswith("acc") else float(np.mean(v))
                for k, v in metrics.items()} for c, metrics in correct.items()}


@pytest.mark.parametrize("model_name", ["resnet10t", "pixel"])
def test_every_prediction_matches_an_independent_computation(built, independent, model_name):
    """resnet10t (input 176, bicubic) reacts to noise being there; the pixel model to each noise value."""
    data = ev.load_eval_data(str(built["crop"]), progress=False)
    if model_name == "resnet10t":
        classifier = ev.load_classifier("resnet10t", str(built["checkpoint"]))
        model, config = classifier.module, classifier.data_config
    else:
        model, config = PixelModel(), REGION_CONFIG
        independent = independent_predictions(built["crop"], model, config)
    result = ev.evaluate_model(data, model, config, settings(seed=SEED, batch_size=4))
    assert data.image_ids == [r["image_id"] for r in independent]
    assert result.clean_predictions.tolist() == [r["clean"] for r in independent]
    names = {ev.NOISE_ON_CORE: "core", ev.NOISE_ON_SPURIOUS: "spurious"}
    expected = [[independent[row]["noisy"][names.get(condition) or int(data.pairs.feature_index[pair]), draw]
                 for row, condition, pair in zip(result.jobs.row, result.jobs.condition, result.jobs.pair)]
                for draw in range(DRAWS)]
    assert result.noisy_predictions.tolist() == expected
    assert len(result.jobs) == sum(len(r["noisy"]) for r in independent) // DRAWS
    changed = sum(p != r["clean"] for r in independent for p in r["noisy"].values())
    assert changed > 0  # the noise changes predictions: the comparison is not vacuous
    classes = independent_class_metrics(independent).values()
    for key in ("core_acc", "spurious_acc"):  # class-balanced per draw, then mean and sample std over draws
        per_draw = np.mean([e[key] for e in classes if key in e], axis=0)
        assert result.metrics[key]["per_draw"] == pytest.approx(per_draw)
        assert result.metrics[key]["mean"] == pytest.approx(per_draw.mean())
        assert result.metrics[key]["std"] == pytest.approx(np.std(per_draw, ddof=1))


def test_cli_on_a_builder_fixture_matches_an_independent_computation(built, independent, tmp_path, capsys):
    out = tmp_path / "results"
    code = main(["evaluate", "--dataset", str(built["crop"]), "--model", "resnet10t", "--checkpoint",
                 str(built["checkpoint"]), "--draws", str(DRAWS), "--seed", str(SEED), "--out", str(out),
                 "--workers", "0", "--batch-size", "7"])
    assert code == 0
    folder = out / "resnet10t-resnet10t"
    for name in ("classes.csv", "features.csv", "summary.json", "core_vs_spurious.png", "feature_drops.png"):
        assert (folder / name).stat().st_size > 0, name
    assert (out / "comparison.png").stat().st_size > 0 and (out / "comparison.csv").is_file()
    printed = capsys.readouterr().out
    assert "resnet10t-resnet10t" in printed and "RCS" in printed

    expected = independent_class_metrics(independent)
    rows = by_class(read_csv(folder / "classes.csv"))
    assert sorted(rows) == sorted(str(c) for c in expected)
    for c, e in expected.items():
        row = rows[str(c)]
        assert float(row["clean_acc_core_images"]) == pytest.approx(e["clean_core"], abs=1e-6)
        assert float(row["spurious_acc"]) == pytest.approx(np.mean(e["spurious_acc"]), abs=1e-6)
        if "core_acc" in e:  # the fixture's annotations give every class a spurious feature
            assert float(row["clean_acc_spurious_images"]) == pytest.approx(e["clean_spurious"], abs=1e-6)
            assert float(row["core_acc"]) == pytest.approx(np.mean(e["core_acc"]), abs=1e-6)
            rcs = [ev.relative_core_sensitivity(a, b) for a, b in zip(e["core_acc"], e["spurious_acc"])]
            assert float(row["rcs"]) == pytest.approx(np.mean(rcs), abs=1e-6)


    summary = json.loads((folder / "summary.json").read_text())
    assert summary["settings"]["seed"] == SEED and summary["settings"]["draws"] == DRAWS
    assert summary["dataset"]["provenance"]["model"] == "resnet18"  # the build's provenance travels along
    assert summary["model"]["checkpoint_sha256"] and summary["model"]["data_config"]["input_size"] == [3, 176, 176]
    m = summary["metrics"]
    classes = expected.values()
    for key in ("core_acc", "spurious_acc"):
        per_draw = np.mean([e[key] for e in classes if key in e], axis=0)  # class-balanced, per draw
        assert m[key]["per_draw"] == pytest.approx(per_draw.tolist(), abs=1e-6)
        assert m[key]["std"] == pytest.approx(float(np.std(per_draw, ddof=1)), abs=1e-6)
    per_draw_rcs = [ev.relative_core_sensitivity(c, s)
                    for c, s in zip(m["core_acc"]["per_draw"], m["spurious_acc"]["per_draw"])]
    assert m["rcs"]["per_draw"] == pytest.approx(per_draw_rcs, abs=1e-6)
    assert summary["throughput"]["images_evaluated"] == len(independent) + sum(len(r["noisy"]) for r in independent)
    pairs = read_csv(folder / "features.csv")
    assert {p["kind"] for p in pairs} == {"core", "spurious"}
    drops = [float(p["drop"]) for p in pairs]
    assert drops == sorted(drops, reverse=True)
    assert len(m["single_feature"]["most_harmful"]) == min(10, len(pairs))


def test_several_models_in_one_run_decode_the_dataset_once(built, tmp_path, monkeypatch):
    calls = []
    decode_rows = ev_rows.decode_rows
    monkeypatch.setattr(ev_rows, "decode_rows", lambda *a, **k: calls.append(1) or decode_rows(*a, **k))
    other = make_checkpoint(tmp_path / "other.ckpt", arch="resnet10t", seed=1, classes=CLASSES)
    code = main(["evaluate", "--dataset", str(built["crop"]), "--model", "resnet10t", "--checkpoint",
                 str(built["checkpoint"]), "--model", "resnet10t", "--checkpoint", str(other), "--draws", "2",
                 "--no-single-feature", "--workers", "0", "--out", str(tmp_path / "results")])
    assert code == 0 and len(calls) == 1
    comparison = read_csv(tmp_path / "results" / "comparison.csv")
    assert [r["model"] for r in comparison] == ["resnet10t-resnet10t", "resnet10t-other"]
    for row in comparison:
        summary = json.loads((tmp_path / "results" / row["model"] / "summary.json").read_text())
        assert float(row["core_acc"]) == pytest.approx(summary["metrics"]["core_acc"]["mean"], abs=1e-6)
        assert not (tmp_path / "results" / row["model"] / "features.csv").exists()


def test_decoded_masks_are_the_stored_masks(built, monkeypatch):
    from datasets import Image as ImageFeature
    from datasets import load_dataset

    data = ev.load_eval_data(str(built["crop"]), progress=False)
    monkeypatch.setattr(ev_rows, "EVAL_IN_MEMORY_BYTES", 0)  # large runs: the same tensors, memory-mapped on disk
    spilled = ev.load_eval_data(str(built["crop"]), workers=2, progress=False)
    assert spilled.spill is not None and data.spill is None
    assert torch.equal(spilled.images, data.images) and torch.equal(spilled.masks, data.masks)
    ds = load_dataset(str(built["crop"]), split="train").cast_column("core_mask", ImageFeature(decode=False))
    for r, row in enumerate(ds):
        assert row["image_id"] == data.image_ids[r] and row["group"] == data.groups[r]
        assert np.array_equal(data.images[r].permute(1, 2, 0).numpy(), np.asarray(row["image"].convert("RGB")))
        if row["core_mask"] is not None:
            as_used = (data.masks[data.core_mask[r]].float() / 255.0).numpy()  # what noisy_batch multiplies by
            assert np.array_equal(as_used, decode_mask(row["core_mask"]["bytes"]))
        assert (data.feature_row == r).sum() == len(row["features"])


def test_image_mode_none_build_reads_images_by_id(built):
    with pytest.raises(ev.EvaluationError, match="--imagenet"):
        ev.load_eval_data(str(built["none"]), progress=False)
    crop = ev.load_eval_data(str(built["crop"]), progress=False)
    joined = ev.load_eval_data(str(built["none"]), imagenet=str(built["root"] / "imagenet"), progress=False)
    assert joined.image_ids == crop.image_ids
    assert torch.equal(joined.images, crop.images) and torch.equal(joined.masks, crop.masks)


def test_clear_errors(built, tmp_path, caplog):
    with pytest.raises(ev.EvaluationError, match="resnet18"):  # close matches are listed
        ev.load_classifier("resnet18x")
    with pytest.raises(CheckpointError, match="does not fit"):
        ev.load_classifier("resnet18", str(built["checkpoint"]))  # resnet10t weights
    with pytest.raises(ev.EvaluationError, match="one per model"):
        model_specs(["resnet10t", "resnet18"], [str(built["checkpoint"])])
    with pytest.raises(ev.EvaluationError, match="no such file"):
        model_specs(["resnet10t"], [str(tmp_path / "missing.pth")])
    other = tmp_path / "other"
    write_dataset_table(other)
    with pytest.raises(ev.EvaluationError, match=r"missing column\(s\) \['group', 'core_mask'"):
        ev.load_eval_data(str(other), progress=False)
    code = main(["evaluate", "--dataset", str(other), "--model", "resnet10t", "--checkpoint", str(built["checkpoint"]),
                 "--out", str(tmp_path / "r")])
    assert code == 2 and "missing column" in caplog.text


def test_results_go_only_where_evaluate_may_write(built, tmp_path, monkeypatch, caplog):
    """--out: never a file, `.` or someone's folder; its own earlier results folder is written again."""
    args = ["--dataset", str(built["crop"]), "--model", "resnet10t", "--checkpoint", str(built["checkpoint"]),
            "--draws", "1", "--no-single-feature", "--workers", "0"]
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "comparison.csv").write_text("my own table")
    monkeypatch.chdir(tmp_path)
    for out, message in ((notes, "is a file, not a folder"), (".", "is the current folder"),
                         (mine, "exists and is not a results folder of this tool (no evaluate_info.json)")):
        caplog.clear()
        assert main(["evaluate", *args, "--out", str(out)]) == 2
        assert f"--out {out}: {message}" in caplog.text
    assert notes.read_text() == "mine" and [p.name for p in mine.iterdir()] == ["comparison.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "notes.txt"]
    results = tmp_path / "results"
    for _ in range(2):  # the same command twice: the second run replaces the first's files
        assert main(["evaluate", *args, "--out", str(results)]) == 0
    info = json.loads((results / "evaluate_info.json").read_text())
    assert info["package"] == "salient-imagenet-builder" and info["models"] == ["resnet10t-resnet10t"]
    assert not [p for p in results.rglob(".*.partial")]


def test_pretrained_weights_offline_is_one_line_before_decoding(built, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "empty_cache"), PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "salient_imagenet_builder.cli", "evaluate", "--dataset",
                           str(built["crop"]), "--model", "resnet10t", "--out", str(tmp_path / "r")], env=env,
                          capture_output=True, text=True, timeout=150)
    assert done.returncode == 4 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert ("--model 'resnet10t': cannot download its pretrained weights: HF_HUB_OFFLINE=1 is set, and they are not "
            f"in the huggingface_hub cache ({tmp_path / 'empty_cache' / 'hub'}). Pass --checkpoint PATH") in done.stderr
    assert "decode dataset" not in done.stderr and not (tmp_path / "r").exists()


def write_dataset_table(folder: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.table({"image_id": ["a"], "label": [0]}), folder / "data" / "train-00000-of-00001.parquet")


def test_checkpoint_normaliser_sets_mean_and_std(built, tmp_path):
    ckpt = torch.load(built["checkpoint"], weights_only=True)
    ckpt["model"]["module.normalizer.new_mean"] = torch.tensor([0.5, 0.5, 0.5]).view(3, 1, 1)
    torch.save(ckpt, tmp_path / "other_mean.ckpt")
    assert ev.load_classifier("resnet10t", str(built["checkpoint"])).data_config["mean"] == pytest.approx(IMAGENET_MEAN)
    assert ev.load_classifier("resnet10t", str(tmp_path / "other_mean.ckpt")).data_config["mean"] == (0.5, 0.5, 0.5)


HUB_SERVER = Path(__file__).with_name("hub_server.py")


@pytest.mark.skipif(not HUB_SERVER.is_file(), reason="tests/hub_server.py not there")
def test_hub_dataset_gives_the_same_results(built, tmp_path):
    try:
        from tests.hub_server import HubServer
    except ImportError:  # tests/ on sys.path rather than the repository root
        from hub_server import HubServer

    args = ["--model", "resnet10t", "--checkpoint", str(built["checkpoint"]), "--draws", "1", "--no-single-feature",
            "--workers", "0"]
    assert main(["evaluate", "--dataset", str(built["crop"]), "--out", str(tmp_path / "local"), *args]) == 0
    files = {str(p.relative_to(built["crop"])): p.read_bytes() for p in built["crop"].rglob("*") if p.is_file()}
    with HubServer(token="hf_dummy", user="user") as hub:
        hub.seed("user/salient", files)
        code = "import sys; from salient_imagenet_builder.cli import main; sys.exit(main(sys.argv[1:]))"
        done = subprocess.run([sys.executable, "-c", code, "evaluate", "--dataset", "user/salient", "--out",
                               str(tmp_path / "hub"), *args], env=hub.client_env(tmp_path / "hf"),
                              capture_output=True, text=True, timeout=150)
        assert done.returncode == 0, done.stderr[-3000:]
    label = "resnet10t-resnet10t"
    assert read_csv(tmp_path / "hub" / label / "classes.csv") == read_csv(tmp_path / "local" / label / "classes.csv")
    summary = json.loads((tmp_path / "hub" / label / "summary.json").read_text())
    assert summary["dataset"]["dataset"] == "user/salient"
    assert summary["dataset"]["provenance"]["model"] == "resnet18"  # build_info.json read from the Hub repo


def tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def stop_at_call(monkeypatch, name: str, k: int) -> None:
    """`os.<name>`'s k-th call stops the process there (KeyboardInterrupt, where a kill would stop it)."""
    real, calls = getattr(os, name), []

    def stopping(*args, **kwargs):
        calls.append(args)
        if len(calls) == k:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, stopping)


def test_a_swap_of_results_cut_short_leaves_a_folder_the_same_command_accepts(built, tmp_path, monkeypatch):
    """evaluate writes into `.results.partial` and swaps it into place (`results` -> `.results.old`, the new one ->
    `results`, `.results.old` removed). A kill between the renames or in the middle of the removal leaves a state
    the same command accepts: it finishes the swap or drops the replaced folder, then writes its own results."""
    from salient_imagenet_builder.core.output import kind_of as output_kind
    from salient_imagenet_builder.core.output import old_folder, staging_folder
    from salient_imagenet_builder.core.staging import move_into_place, prepare_output

    args = ["evaluate", "--dataset", str(built["crop"]), "--model", "resnet10t", "--checkpoint",
            str(built["checkpoint"]), "--draws", "1", "--no-single-feature", "--workers", "0"]
    earlier, new = tmp_path / "earlier", tmp_path / "new"
    assert main([*args, "--out", str(earlier)]) == 0 and main([*args, "--draws", "2", "--out", str(new)]) == 0
    out = tmp_path / "case" / "results"
    removals = len(tree(earlier)) + 1  # one os.unlink or os.rmdir per file and folder of the replaced results
    moments = [("rename", 2)] + [(f, k) for f in ("unlink", "rmdir") for k in range(1, removals + 1)]
    cut_short = 0
    for function, k in moments:
        shutil.rmtree(out.parent, ignore_errors=True)
        shutil.copytree(earlier, out)
        shutil.copytree(new, staging_folder(out))
        with monkeypatch.context() as patched:
            stop_at_call(patched, function, k)
            try:
                move_into_place(staging_folder(out), out)
            except KeyboardInterrupt:
                cut_short += 1
        prepare_output(out, True, None, "results")  # what the same command does first: accepted
        assert output_kind(out) == "results" and not old_folder(out).exists()  # repaired
    assert cut_short == 1 + removals  # between the renames, and after each step of the removal

    assert main([*args, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["results"]
    assert sorted(tree(out)) == sorted(tree(earlier))  # the same command's results: the same files, the same rows
    label = "resnet10t-resnet10t"
    assert read_csv(out / label / "classes.csv") == read_csv(earlier / label / "classes.csv")
