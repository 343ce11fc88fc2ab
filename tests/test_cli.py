"""The commands users run, as real subprocesses."""

import json
import subprocess
import sys
from pathlib import Path

from datasets import load_dataset

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "build_dataset.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_demo_builds_offline_and_loads(tmp_path):
    result = run("--demo", "--workers", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "meaningless" in result.stdout and "load_dataset('salient_imagenet_demo'" in result.stdout
    out = tmp_path / "salient_imagenet_demo"
    info = json.loads((out / "build_info.json").read_text())
    assert info["provenance"]["arch"] == "resnet50" and info["provenance"]["demo"] is True
    assert info["stats"]["skipped_images"] == 1
    images = load_dataset(str(out), split="train")
    assert len(images) == info["stats"]["images_written"] > 0
    assert "Demo build" in (out / "README.md").read_text()
    again = run("--demo", "--workers", "0", "--classes", "0-3", cwd=tmp_path)  # replaces its own earlier demo
    assert again.returncode == 0, again.stderr[-3000:]


def test_bad_arguments_are_named(tmp_path):
    result = run("--source", str(tmp_path), "--classes", "3-x", cwd=tmp_path)
    assert result.returncode == 2 and "--classes '3-x'" in result.stderr
    result = run("--source", str(tmp_path), "--top-k", "0", cwd=tmp_path)
    assert result.returncode == 2 and "--top-k '0'" in result.stderr
    (tmp_path / "salient_imagenet").mkdir()
    (tmp_path / "salient_imagenet" / "notes.txt").write_text("mine")
    (tmp_path / "src").mkdir()
    result = run("--source", str(tmp_path / "src"), "--model-checkpoint", "x.ckpt", "--annotations", "a.csv",
                 cwd=tmp_path)
    assert result.returncode == 2 and "--out salient_imagenet: exists and is not a build of this tool" in result.stderr
    result = run("--source", str(tmp_path / "nowhere"), "--out", "new", "--model", "resnet18",
                 "--model-checkpoint", str(tmp_path / "missing.ckpt"), cwd=tmp_path)
    assert result.returncode == 2 and "missing.ckpt: no such file" in result.stderr
    result = run("--source", str(tmp_path / "nowhere"), "--out", "new", "--model", "resnet18", cwd=tmp_path)
    assert result.returncode == 2 and f"--source {tmp_path / 'nowhere'}: no such folder" in result.stderr
    assert not (tmp_path / "new").exists() and not (tmp_path / ".new.partial").exists()
