"""The engine under the capabilities: one scan for build and discovery (they agree on the same source), a library
that leaves its caller's process as it found it, and commands that only read and never write."""

import csv
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import ARCH, CLASSES
from datasets import load_dataset

from salient_imagenet_builder import BuildConfig, build
from salient_imagenet_builder.cli import main
from salient_imagenet_builder.core.annotations import COLUMNS
from salient_imagenet_builder.core.output import old_folder, staging_folder
from salient_imagenet_builder.core.schema import wordnet_ids

ROOT = Path(__file__).resolve().parents[1]


def test_discovery_and_the_build_rank_the_same_features_and_images(inputs, study, config, tmp_path):
    """The study's pairs, annotated and built from the same source with the same settings: the build computes the
    same rank and importance for every discovered feature, and the same top images."""
    info = json.loads((study / "discover_info.json").read_text())
    annotations = tmp_path / "annotations.csv"
    with open(annotations, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for pair in info["pairs"]:
            for worker in range(5):
                writer.writerow([worker, wordnet_ids()[pair["class_index"]], pair["class_index"],
                                 pair["feature_index"], pair["feature_rank"], "main_object", "4.0", "plain"])
    build(config(annotations=str(annotations), classes=CLASSES, group_by="label", top_k=info["top_images"]))
    built = {(r["class_index"], r["feature_index"]): r
             for r in load_dataset(str(tmp_path / "out"), "annotations", split="train")}
    assert len(built) == len(info["pairs"]) == 6
    for pair in info["pairs"]:
        row = built[(pair["class_index"], pair["feature_index"])]
        assert row["computed_rank"] == pair["feature_rank"]
        assert row["importance"] == pytest.approx(pair["importance"], rel=1e-5)
        assert row["top_image_ids"] == pair["top_image_ids"]


def process_state() -> dict:
    return {"threads": torch.get_num_threads(), "interop": torch.get_num_interop_threads(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark, "cudnn_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_tf32": torch.backends.cuda.matmul.allow_tf32, "grad": torch.is_grad_enabled(),
            "warnings": list(warnings.filters), "env": dict(os.environ)}


@pytest.mark.parametrize("config_kwargs", [{}, {"top_k": None, "workers": 1}], ids=["bounded", "all-with-a-worker"])
def test_a_build_leaves_the_callers_process_as_it_found_it(config, monkeypatch, config_kwargs):
    """Thread count, backend flags, warnings filters and the environment are the caller's: set to values a build
    would otherwise change (flags a CUDA run sets; as if on one of two torchrun ranks of a machine)."""
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # world size 1: no process group, but ranks would share cores
    saved = process_state()
    try:
        torch.set_num_threads(3)  # not what a rank's share of this machine's cores would be
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = True
        warnings.simplefilter("default", DeprecationWarning)
        before = process_state()
        build(config(**config_kwargs, tf32=True))
        assert process_state() == before
    finally:
        torch.set_num_threads(saved["threads"])
        torch.backends.cudnn.benchmark = saved["cudnn_benchmark"]
        torch.backends.cudnn.allow_tf32 = saved["cudnn_tf32"]
        torch.backends.cuda.matmul.allow_tf32 = saved["matmul_tf32"]
        warnings.filters[:] = saved["warnings"]


def test_importing_the_library_changes_no_global_state():
    code = ("import os, warnings, torch, timm, datasets, huggingface_hub\n"
            "def state(): return (list(warnings.filters), torch.get_num_threads(), dict(os.environ), "
            "torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32)\n"
            "before = state()\n"
            "import salient_imagenet_builder as s\n"
            "from salient_imagenet_builder import build, BuildConfig, evaluate, discover, push, check\n"
            "import salient_imagenet_builder.ingest, salient_imagenet_builder.show, salient_imagenet_builder.cli\n"
            "print(state() == before, sorted(s.__all__) == sorted(n for n in dir(s) if n in s.__all__))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]


def tree(folder: Path) -> dict:
    """Every entry below `folder` with its kind, size, modification time and bytes: what a write would change."""
    found = {}
    for path in sorted(folder.rglob("*")):
        stat = path.lstat()
        found[str(path.relative_to(folder))] = (path.is_dir(), stat.st_size, stat.st_mtime_ns,
                                                None if path.is_dir() else path.read_bytes())
    return found


@pytest.fixture(scope="module")
def one_build(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("read_only") / "built"
    build(BuildConfig(source=str(inputs["folder"]), out=str(out), model=ARCH,
                      model_checkpoint=str(inputs["checkpoint"]), annotations=str(inputs["annotations"]),
                      classes=[1, 2], group_by="label", top_k=2, workers=0, batch_size=8))
    return out


@pytest.mark.parametrize("state", ["whole", "half-replaced", "half-replaced, nothing staged"])
def test_check_and_show_never_write_in_what_they_read(one_build, state, tmp_path, caplog):
    root = tmp_path / "datasets"
    out = root / "built"
    import shutil

    shutil.copytree(one_build, out)
    if state != "whole":  # interrupted between `out -> .out.old` and `.out.partial -> out`
        os.rename(out, old_folder(out))
        if state == "half-replaced":
            shutil.copytree(one_build, staging_folder(out))
    before = tree(root)
    picture = tmp_path / "pictures" / "class1.png"
    picture.parent.mkdir()
    codes = [main(["check", str(out), "--no-stream"]),
             main(["show", str(out), "--class", "1", "--out", str(picture)]),
             main(["show", str(out), "--class", "1", "--feature", "0", "--out", str(picture)])]
    assert tree(root) == before
    if state == "whole":
        assert codes[:2] == [0, 0] and picture.is_file()
    else:
        assert codes == [2, 2, 2] and not picture.exists()
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 3
        assert all(f"the intact build is in {old_folder(out)}" in e and "to finish or undo" in e for e in errors)
