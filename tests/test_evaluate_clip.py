"""CLIP zero-shot evaluation: a real timm CLIP image tower (randomly initialised, saved as a checkpoint) and a
random unit-norm float16 head, against a computation by hand (tower -> normalize -> @ head * 100 -> argmax); the
published head's pinned download through a local HTTP server; offline and bad heads as one line naming the file.
No weights are ever downloaded."""

import functools
import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import built_once
from test_evaluate import _built, independent_class_metrics, read_csv
from timm.models import generate_default_cfgs, register_model
from timm.models.vision_transformer import _create_vision_transformer

from salient_imagenet_builder import evaluation as ev
from salient_imagenet_builder.cli import main
from salient_imagenet_builder.core import constants
from salient_imagenet_builder.core.constants import CROP_SIZE
from salient_imagenet_builder.core.masks import decode_mask
from salient_imagenet_builder.evaluation.api import model_specs
from salient_imagenet_builder.evaluation.noise import row_seed
from salient_imagenet_builder.evaluation.options import CLIP_MEAN, CLIP_STD, ZERO_SHOT_HEADS

ROOT = Path(__file__).resolve().parents[1]
SEED, DRAWS, NOISE_STD = 3, 2, 0.25

# A CLIP image tower as timm builds OpenAI's (its VisionTransformer, pre-norm, QuickGELU, CLIP's mean / std and a
# 512-d projection as its head), one block of width 64: timm's smallest real CLIP tower (vit_xsmall, 8M parameters)
# runs ~4 img/s on these 2 cores, this one ~45.
TOWER = "test_vit_clip_224"
TOWER_TAG = f"{TOWER}.random"
default_cfgs = generate_default_cfgs({TOWER_TAG: {
    "input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 0.9, "mean": CLIP_MEAN, "std": CLIP_STD,
    "num_classes": 512, "first_conv": "patch_embed.proj", "classifier": "head"}})


@register_model
def test_vit_clip_224(pretrained=False, **kwargs):
    args = {"patch_size": 32, "embed_dim": 64, "depth": 1, "num_heads": 2, "pre_norm": True, "act_layer": "quick_gelu"}
    return _create_vision_transformer(TOWER, pretrained=pretrained, **{**args, **kwargs})


test_vit_clip_224.__test__ = False  # a model entry point, not a test


# --- the fixture: the builder's dataset, a tower checkpoint and a head whose predictions depend on the image ------

@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    return built_once(tmp_path_factory, "test_evaluate", _built)


@pytest.fixture(scope="module")
def clip(built, tmp_path_factory) -> dict:
    return built_once(tmp_path_factory, "test_evaluate_clip", functools.partial(_clip, built["crop"]))


def _clip(dataset: Path, root: Path) -> dict:
    torch.manual_seed(0)
    tower = timm.create_model(TOWER).eval()
    torch.save(tower.state_dict(), root / "tower.pth")
    head = image_dependent_head(tower, dataset)
    np.save(root / "head.npy", head)
    return {"tower": root / "tower.pth", "head": root / "head.npy"}


def clean_views(dataset: Path) -> tuple[torch.Tensor, list[int]]:
    from datasets import load_dataset

    rows = load_dataset(str(dataset), split="train")
    views = torch.stack([torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
                         for image in rows["image"]])
    return views, rows["label"]


def embed(tower, views: torch.Tensor) -> torch.Tensor:
    """CLIP's normalisation on the 224 view (the tower's input size: no resize), the tower, L2 normalised."""
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        return F.normalize(tower((views - mean) / std), dim=-1)


def image_dependent_head(tower, dataset: Path) -> np.ndarray:
    """Random unit-norm columns (float16, (512, 1000)). A random tower's embeddings share one dominant direction u,
    so every image would get the same class: the columns are made orthogonal to u, and each fixture label's column
    is the u-free part of one of its images' embeddings. Predictions then depend on the image and on the noise."""
    views, labels = clean_views(dataset)
    embeddings = embed(tower, views).double().numpy()
    u = embeddings.mean(0) / np.linalg.norm(embeddings.mean(0))
    head = np.random.default_rng(0).standard_normal((embeddings.shape[1], constants.NUM_CLASSES))
    for label in sorted(set(labels)):
        head[:, label] = embeddings[labels.index(label)]
    head -= np.outer(u, u @ head)
    return (head / np.linalg.norm(head, axis=0)).astype(np.float16)


# --- the computation by hand ------------------------------------------------------------------------------------

def by_hand(dataset: Path, tower_path: Path, head_path: Path) -> list[dict]:
    """Row by row from `load_dataset`: x' = clamp(x + m sigma z, 0, 1) with z from the image's own generator,
    logits = 100 * normalize(tower((x' - mean) / std)) @ W, argmax. Per row: label, group, clean prediction and
    noisy predictions keyed by ('core' | 'spurious', draw)."""
    from datasets import Image as ImageFeature
    from datasets import load_dataset

    tower = timm.create_model(TOWER).eval()
    tower.load_state_dict(torch.load(tower_path, weights_only=True))
    head = torch.from_numpy(np.load(head_path).astype(np.float32))
    ds = load_dataset(str(dataset), split="train")
    ds = ds.cast_column("core_mask", ImageFeature(decode=False)).cast_column("spurious_mask", ImageFeature(decode=False))

    def predict(x):
        return int((100 * embed(tower, x[None]) @ head).argmax(1))

    rows = []
    for row in ds:
        x = torch.from_numpy(np.asarray(row["image"].convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
        noisy = {}
        for kind in ("core", "spurious"):
            if row[f"{kind}_mask"] is None:
                continue
            m = torch.from_numpy(decode_mask(row[f"{kind}_mask"]["bytes"]))
            for draw in range(DRAWS):
                z = torch.randn(3, CROP_SIZE, CROP_SIZE,
                                generator=torch.Generator().manual_seed(row_seed(SEED, draw, row["image_id"])))
                noisy[kind, draw] = predict((x + m[None] * (NOISE_STD * z)).clamp(0, 1))
        rows.append({"image_id": row["image_id"], "label": row["label"], "group": row["group"], "clean": predict(x),
                     "noisy": noisy})
    return rows


@pytest.fixture(scope="module")
def hand(built, clip, tmp_path_factory) -> list[dict]:
    return built_once(tmp_path_factory, "test_evaluate_clip_hand",
                      lambda _: by_hand(built["crop"], clip["tower"], clip["head"]))


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- zero-shot predictions ----------------------------------------------------------------------------------------

def test_clip_tower_is_recognised_and_wrapped(clip):
    assert ev.zeroshot.is_clip_tower(TOWER) and ev.zeroshot.is_clip_tower("vit_base_patch16_clip_224.openai")
    assert ev.zeroshot.is_clip_tower("vit_base_patch32_clip_224.openai")
    assert not ev.zeroshot.is_clip_tower("vit_base_patch16_clip_224.openai_ft_in1k")  # fine-tuned: a classifier
    assert not ev.zeroshot.is_clip_tower("resnet10t")
    head = np.load(clip["head"])
    assert head.dtype == np.float16 and head.shape == (512, 1000)
    assert np.allclose(np.linalg.norm(head.astype(np.float64), axis=0), 1, atol=2e-3)
    classifier = ev.load_classifier(TOWER, str(clip["tower"]), zero_shot_head=str(clip["head"]))
    assert classifier.data_config["mean"] == CLIP_MEAN and classifier.data_config["std"] == CLIP_STD
    assert classifier.info["zero_shot_head"] == {
        "file": str(clip["head"]), "name": "head.npy", "url": None, "sha256": sha256(clip["head"]),
        "shape": [512, 1000], "dtype": "float16", "logit_scale": 100.0,
        "formula": "logits = 100 * normalize(tower(x)) @ head", "source": "--zero-shot-head"}


def test_zero_shot_predictions_match_a_computation_by_hand(built, clip, hand):
    data = ev.load_eval_data(str(built["crop"]), single_feature=False, progress=False)
    classifier = ev.load_classifier(TOWER, str(clip["tower"]), zero_shot_head=str(clip["head"]))
    settings = ev.EvalSettings(draws=DRAWS, seed=SEED, batch_size=5, device="cpu", single_feature=False,
                               progress=False)
    result = ev.evaluate_model(data, classifier.module, classifier.data_config, settings)
    assert data.image_ids == [r["image_id"] for r in hand]
    assert result.clean_predictions.tolist() == [r["clean"] for r in hand]
    names = {ev.NOISE_ON_CORE: "core", ev.NOISE_ON_SPURIOUS: "spurious"}
    expected = [[hand[row]["noisy"][names[condition], draw] for row, condition in zip(result.jobs.row,
                                                                                    result.jobs.condition)]
                for draw in range(DRAWS)]
    assert result.noisy_predictions.tolist() == expected
    # not vacuous: predictions depend on the image, some are right, and the noise changes some
    clean = [r["clean"] for r in hand]
    assert len(set(clean)) > 1 and 0 < sum(r["clean"] == r["label"] for r in hand) < len(hand)
    assert any(p != r["clean"] for r in hand for p in r["noisy"].values())


def test_cli_puts_clip_rows_beside_timm_models(built, clip, hand, tmp_path, capsys):
    out = tmp_path / "results"
    code = main(["evaluate", "--dataset", str(built["crop"]), "--model", TOWER, "--checkpoint", str(clip["tower"]),
                 "--zero-shot-head", str(clip["head"]), "--model", "resnet10t", "--checkpoint",
                 str(built["checkpoint"]), "--zero-shot-head", "default", "--draws", str(DRAWS), "--seed", str(SEED),
                 "--no-single-feature", "--workers", "0", "--out", str(out)])
    assert code == 0
    label = f"{TOWER}-tower-head"
    comparison = read_csv(out / "comparison.csv")
    assert [(r["model"], r["zero_shot_head"]) for r in comparison] == [(label, "head.npy"),
                                                                        ("resnet10t-resnet10t", "")]
    expected = independent_class_metrics(hand)
    classes = {r["class"]: r for r in read_csv(out / label / "classes.csv")}
    assert sorted(classes) == sorted(str(c) for c in expected)
    for c, e in expected.items():
        assert float(classes[str(c)]["clean_acc_core_images"]) == pytest.approx(e["clean_core"], abs=1e-6)
        assert float(classes[str(c)]["spurious_acc"]) == pytest.approx(np.mean(e["spurious_acc"]), abs=1e-6)
        assert float(classes[str(c)]["core_acc"]) == pytest.approx(np.mean(e["core_acc"]), abs=1e-6)
    per_draw = np.mean([e["spurious_acc"] for e in expected.values()], axis=0)  # class-balanced, per draw
    assert float(comparison[0]["spurious_acc"]) == pytest.approx(per_draw.mean(), abs=1e-6)
    summary = json.loads((out / label / "summary.json").read_text())
    assert summary["model"]["zero_shot_head"]["sha256"] == sha256(clip["head"])
    assert summary["model"]["data_config"]["mean"] == pytest.approx(CLIP_MEAN, abs=1e-6)
    info = json.loads((out / "evaluate_info.json").read_text())
    assert info["models"] == [label, "resnet10t-resnet10t"]
    assert info["zero_shot_heads"] == {label: {"file": str(clip["head"]), "url": None, "sha256": sha256(clip["head"])}}
    printed = capsys.readouterr().out
    assert (f"{label}: zero-shot, logits = 100 * normalize(tower(x)) @ head, head head.npy (sha256 "
            f"{sha256(clip['head'])})") in printed


# --- the published head: a pinned download --------------------------------------------------------------------

@pytest.fixture
def served(tmp_path):
    """A real HTTP server over a folder, on a free local port."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_published_heads_are_pinned():
    for name, size in (("vit_base_patch16_clip_224.openai", "b16"), ("vit_base_patch32_clip_224.openai", "b32")):
        head = ZERO_SHOT_HEADS[name]
        assert head["url"] == ("https://raw.githubusercontent.com/singlasahil14/salient_imagenet/"
                               f"f41ce51b748096fc9c57f276b22db0178ed03030/models/clip_vit_{size}_zeroshot_weights.npy")
        assert ZERO_SHOT_HEADS[name.replace("_clip_", "_clip_quickgelu_")] == head
    assert ZERO_SHOT_HEADS["vit_base_patch16_clip_224.openai"]["sha256"] == (
        "41e1b2474d8454e7bb9499d9e8f4faadfea6be7d13cc9ce9b9ca954cb21d5281")
    assert ZERO_SHOT_HEADS["vit_base_patch32_clip_224.openai"]["sha256"] == (
        "0ce859e49a8a7f2f0f69d35257ac891f8fdbbbbddd1c231b7958532afe466687")
    assert constants.ANNOTATIONS_URL.startswith(constants.AUTHORS_FILES_URL)  # one pinned commit for both


def test_published_head_download_is_pinned_by_sha256(built, clip, hand, served, tmp_path, monkeypatch, capsys):
    folder, url = served
    (folder / "clip_test_zeroshot_weights.npy").write_bytes(Path(clip["head"]).read_bytes())
    url += "/clip_test_zeroshot_weights.npy"
    cache = tmp_path / "cache"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setitem(ZERO_SHOT_HEADS, TOWER_TAG, {"url": url, "sha256": "0" * 64})
    with pytest.raises(ev.EvaluationError, match=f"the zero-shot head for {TOWER} downloaded from {url} has sha256 "
                                                 f"{sha256(clip['head'])} .* not the pinned 0000"):
        ev.load_classifier(TOWER, str(clip["tower"]), cache_dir=str(cache))  # upstream changed: refused
    assert not any(cache.rglob("*"))  # neither the file nor a partial download is kept

    monkeypatch.setitem(ZERO_SHOT_HEADS, TOWER_TAG, {"url": url, "sha256": sha256(clip["head"])})
    out = tmp_path / "results"
    args = ["evaluate", "--dataset", str(built["crop"]), "--model", TOWER, "--checkpoint", str(clip["tower"]),
            "--cache-dir", str(cache), "--draws", str(DRAWS), "--seed", str(SEED), "--no-single-feature",
            "--workers", "0", "--out", str(out)]
    assert main(args) == 0
    cached = cache / "clip_test_zeroshot_weights.npy"
    assert cached.read_bytes() == Path(clip["head"]).read_bytes()
    label = f"{TOWER}-tower"
    info = json.loads((out / "evaluate_info.json").read_text())
    assert info["zero_shot_heads"] == {label: {"file": str(cached), "url": url, "sha256": sha256(clip["head"])}}
    summary = json.loads((out / label / "summary.json").read_text())
    assert summary["model"]["zero_shot_head"]["source"] == "published (the authors' repository)"
    classes = {r["class"]: r for r in read_csv(out / label / "classes.csv")}
    for c, e in independent_class_metrics(hand).items():  # the same head, so the same results as by hand
        assert float(classes[str(c)]["spurious_acc"]) == pytest.approx(np.mean(e["spurious_acc"]), abs=1e-6)

    (folder / "clip_test_zeroshot_weights.npy").unlink()  # served no more: the cached copy is used, offline too
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(args) == 0
    assert read_csv(out / "comparison.csv")[0]["zero_shot_head"] == "clip_test_zeroshot_weights.npy"


def test_published_head_offline_is_one_line_before_decoding(built, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT))
    cache = tmp_path / "empty_cache"
    done = subprocess.run([sys.executable, "-m", "salient_imagenet_builder.cli", "evaluate", "--dataset",
                           str(built["crop"]), "--model", "vit_base_patch16_clip_224.openai", "--cache-dir",
                           str(cache), "--out", str(tmp_path / "r")], env=env, capture_output=True, text=True,
                          timeout=150, check=False)
    assert done.returncode == 4 and "Traceback" not in done.stderr, done.stderr[-3000:]
    line = ("the zero-shot head for vit_base_patch16_clip_224.openai is not in the cache "
            f"({cache / 'clip_vit_b16_zeroshot_weights.npy'}) and HF_HUB_OFFLINE=1 is set: pass --zero-shot-head "
            f"PATH (a copy of {ZERO_SHOT_HEADS['vit_base_patch16_clip_224.openai']['url']})")
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].endswith(f"ERROR salient_imagenet_builder: {line}"), done.stderr
    assert "decode dataset" not in done.stderr and not (tmp_path / "r").exists()


# --- bad heads: one line naming the file -----------------------------------------------------------------------------

def test_bad_heads_are_one_line_naming_the_file(clip, tmp_path):
    def refused(head, match, **kwargs):
        with pytest.raises(ev.EvaluationError, match=match):
            ev.load_classifier(kwargs.pop("model", TOWER), str(clip["tower"]), zero_shot_head=head, **kwargs)

    good = np.load(clip["head"])
    np.save(tmp_path / "narrow.npy", good[:, :10])
    refused(str(tmp_path / "narrow.npy"), rf"--zero-shot-head {tmp_path / 'narrow.npy'}: shape \(512, 10\), "
                                          r"expected \(D, 1000\)")
    np.save(tmp_path / "short.npy", good[:256])
    refused(str(tmp_path / "short.npy"), f"--zero-shot-head {tmp_path / 'short.npy'}: 256 rows, but {TOWER}'s image "
                                         r"tower gives 512-d embeddings: the head must be \(512, 1000\)")
    (tmp_path / "text.npy").write_text("not an array\n")
    refused(str(tmp_path / "text.npy"), f"--zero-shot-head {tmp_path / 'text.npy'}: not a .npy array")
    np.save(tmp_path / "objects.npy", np.array([{"x": 1}] * 2, dtype=object), allow_pickle=True)
    refused(str(tmp_path / "objects.npy"), f"--zero-shot-head {tmp_path / 'objects.npy'}: an array of Python "
                                           r"objects \(dtype object\), refused")
    np.savez(tmp_path / "archive.npz", head=good)
    refused(str(tmp_path / "archive.npz"), f"--zero-shot-head {tmp_path / 'archive.npz'}: a .npz archive")
    np.save(tmp_path / "ints.npy", good.astype(np.int32))
    refused(str(tmp_path / "ints.npy"), f"--zero-shot-head {tmp_path / 'ints.npy'}: dtype int32")
    with pytest.raises(ev.EvaluationError, match=r"--model 'vit_xsmall_patch16_clip_224' is a CLIP image tower "
                                                 r"\(512-d embeddings\) without a published zero-shot head .*: pass "
                                                 r"--zero-shot-head PATH.npy"):
        ev.load_classifier("vit_xsmall_patch16_clip_224")  # before any download of its weights
    with pytest.raises(ev.EvaluationError, match=r"1 --zero-shot-head for 2 --model: .*'default' for a model"):
        model_specs(["resnet10t", TOWER], None, [str(clip["head"])])
    with pytest.raises(ev.EvaluationError, match="--zero-shot-head missing.npy: no such file"):
        model_specs([TOWER], None, ["missing.npy"])
    specs = model_specs(["resnet10t", TOWER], None, ["default", str(clip["head"])])
    assert [(s.zero_shot_head, s.label) for s in specs] == [(None, "resnet10t"), (str(clip["head"]), f"{TOWER}-head")]


class Unpickled:
    """Unpickling it makes a folder: the proof that a head was (or was not) unpickled."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __reduce__(self):
        return os.mkdir, (str(self.folder),)


def test_bad_heads_say_what_is_wrong_and_where(clip, built, tmp_path, caplog):
    """Case: a head with a NaN was "dtype float32; expected finite floats"; a text file named .npy was "pickled
    data" with advice to pass allow_pickle= (no such option); a head given to a 1000-class classifier was "a CLIP
    tower with 1000-d embeddings". Each line now says what is wrong, and where."""
    good = np.load(clip["head"]).astype(np.float32)
    info = timm.data.ImageNetInfo()  # sorted wnids: column c is class c

    def named(c):
        return f"{info.label_names()[c]}, {info.index_to_description(c).split(',')[0]}"

    def message(array_or_bytes) -> str:
        path = tmp_path / "head.npy"
        if isinstance(array_or_bytes, bytes):
            path.write_bytes(array_or_bytes)
        else:
            np.save(path, array_or_bytes, allow_pickle=True)
        with pytest.raises(ev.EvaluationError) as refused:
            ev.load_classifier(TOWER, str(clip["tower"]), zero_shot_head=str(path))
        line = str(refused.value)
        assert line.startswith(f"--zero-shot-head {path}: ") and "\n" not in line and "pickle=" not in line, line
        return line[len(f"--zero-shot-head {path}: "):]

    one_nan = good.copy()
    one_nan[7, 17] = np.nan
    assert message(one_nan).startswith(f"1 value is NaN: in column 17 (class {named(17)}), first at row 7;")
    inf_column = good.copy()
    inf_column[3:, 900] = np.inf
    inf_column[5, 901] = -np.inf
    assert message(inf_column).startswith(f"{512 - 3 + 1} values are inf: in column 900 (class {named(900)}), "
                                          "first at row 3, and in 1 other column;")
    assert message(np.zeros((0, 1000), np.float32)).startswith("shape (0, 1000) (empty), expected (D, 1000)")
    assert message(good[:, 0]).startswith("shape (512,) (1-D), expected (D, 1000)")
    assert message(good.T).startswith("shape (1000, 512) (transposed? one row per class: save head.T)")
    assert message(good.astype(np.int64)).startswith("dtype int64; expected floats")
    proof = tmp_path / "unpickled"
    assert message(np.array([Unpickled(proof)], dtype=object)).startswith(
        "an array of Python objects (dtype object), refused (reading it would unpickle it)")
    assert not proof.exists()  # never unpickled
    saved = io.BytesIO()
    np.save(saved, good)
    assert message(saved.getvalue()[:-1000]) == ("truncated: its header says shape (512, 1000) float32, 2048000 "
                                                 f"bytes of data, but only {2048000 - 1000} follow")
    csv_text = "\n".join(",".join(f"{v:.4f}" for v in row) for row in good[:3]).encode()
    assert message(csv_text).startswith("not a .npy array but a text file (a CSV?)")
    assert message(good[:500]) == (f"500 rows, but {TOWER}'s image tower gives 512-d embeddings: the head must be "
                                   "(512, 1000)")

    head = tmp_path / "head.npy"
    np.save(head, good)
    for model in ("resnet18", "resnet10t.c3_in1k"):  # a classifier: refused before any weights are fetched
        with pytest.raises(ev.EvaluationError, match=rf"--zero-shot-head {head}: --model '{model}' already "
                                                     r"classifies the 1000 ImageNet classes \(it gives 1000 logits\), "
                                                     "so it needs no zero-shot head"):
            ev.load_classifier(model, zero_shot_head=str(head))
    out = tmp_path / "results"
    assert main(["evaluate", "--dataset", str(built["crop"]), "--model", "resnet10t", "--checkpoint",
                 str(built["checkpoint"]), "--zero-shot-head", str(head), "--out", str(out)]) == 2
    assert "already classifies the 1000 ImageNet classes" in caplog.text and "1000-d embeddings" not in caplog.text
    assert not out.exists()
