"""`show` and the build's gallery: the pictures come from the build's own rows (checked through `datasets`), a Hub
repo renders exactly like the local folder it was pushed from, and mistakes get one clear line."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ARCH, built_once
from datasets import load_dataset
from PIL import Image

from salient_imagenet_builder.builder import BuildConfig, build
from salient_imagenet_builder.cli import main
from salient_imagenet_builder.core.constants import GALLERY_FILE
from salient_imagenet_builder.core.dataset import DatasetView

try:
    from tests.hub_server import HubServer
except ImportError:
    from hub_server import HubServer

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_show_token_123"
REPO = "user/salient_imagenet"


@pytest.fixture(scope="module")
def masks_only(inputs, tmp_path_factory) -> Path:
    """An --image-mode none build: masks and annotations, no images."""
    return built_once(tmp_path_factory, "test_show", lambda root: _masks_only(inputs, root))


def _masks_only(inputs, root):
    out = root / "masks_only"
    build(BuildConfig(source=str(inputs["folder"]), out=str(out), model=ARCH,
                      model_checkpoint=str(inputs["checkpoint"]), annotations=str(inputs["annotations"]), workers=0,
                      batch_size=8, top_k=3, group_by="label", image_mode="none", cache_dir=str(out.parent / "cache")))
    return out


def test_a_build_without_images_still_gets_a_gallery(masks_only):
    gallery = Image.open(masks_only / GALLERY_FILE)
    assert gallery.format == "PNG" and gallery.height > 150
    assert f"]({GALLERY_FILE})" in (masks_only / "README.md").read_text()


def test_pair_pictures_use_the_pairs_own_top_images_and_masks(masks_only):
    pairs = load_dataset(str(masks_only), "annotations", split="train")
    rows = load_dataset(str(masks_only), split="train")
    view = DatasetView(str(masks_only))
    pair = next(p for p in pairs if p["group_size"] >= 3)
    shown = view.pair_images(pair["class_index"], pair["feature_index"], 3)
    assert [s.image_id for s in shown] == pair["top_image_ids"][:3]
    by_id = {r["image_id"]: r for r in rows}
    for s in shown:
        entry = next(f for f in by_id[s.image_id]["features"] if f["feature_index"] == pair["feature_index"])
        np.testing.assert_array_equal(np.rint(s.mask * 255).astype(np.uint8), np.asarray(entry["mask"]))
        assert s.view is None  # no image column in this build


def test_show_from_the_hub_matches_the_local_folder(masks_only, tmp_path):
    pair = load_dataset(str(masks_only), "annotations", split="train")[0]
    args = ["--class", str(pair["class_index"]), "--feature", str(pair["feature_index"])]
    local = tmp_path / "local.png"
    assert main(["show", str(masks_only), *args, "--out", str(local)]) == 0
    with HubServer(token=TOKEN, user="user") as hub:
        env = hub.client_env(tmp_path / "hf")
        pushed = subprocess.run([sys.executable, str(ROOT / "build_dataset.py"), "--push", "--out", str(masks_only),
                                 "--repo-id", REPO], env=env, capture_output=True, text=True, timeout=300)
        assert pushed.returncode == 0, pushed.stderr[-3000:]
        assert GALLERY_FILE in hub.files(REPO)
        remote = tmp_path / "remote.png"
        shown = subprocess.run([sys.executable, "-m", "salient_imagenet_builder.cli", "show", REPO, *args, "--out",
                                str(remote)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert shown.returncode == 0, shown.stderr[-3000:]
    assert np.array_equal(np.asarray(Image.open(remote)), np.asarray(Image.open(local)))


def test_show_mistakes_get_one_line(masks_only, tmp_path, caplog):
    pair = load_dataset(str(masks_only), "annotations", split="train")[0]
    code = main(["show", str(masks_only), "--class", str(pair["class_index"]), "--feature", "2047", "--out",
                 str(tmp_path / "x.png")])
    assert code == 2
    assert f"class {pair['class_index']} has no annotated feature 2047 (its features: [" in caplog.text
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["show", str(empty), "--class", "0", "--out", str(tmp_path / "y.png")]) == 2
    assert "not a Salient ImageNet build" in caplog.text
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "y.png").exists()


def test_show_never_writes_over_a_file_that_is_not_a_png(masks_only, tmp_path, caplog, capsys, monkeypatch):
    """--out names a PNG: a folder, another extension or an existing non-PNG file is refused before any reading."""
    notes = tmp_path / "annotations.png"
    notes.write_text("WorkerId,Input.wordnet_id\n")  # a user's file that merely ends in .png
    for out, message in ((tmp_path, "is a folder; give a file name ending in .png"),
                         (tmp_path / "panel.jpg", "show writes PNG images; give a file name ending in .png"),
                         (notes, "exists and is not a PNG image, so it is not replaced")):
        caplog.clear()
        assert main(["show", str(masks_only), "--class", "0", "--out", str(out)]) == 2
        assert f"--out {out}: {message}" in caplog.text
    assert notes.read_text() == "WorkerId,Input.wordnet_id\n" and not (tmp_path / "panel.jpg").exists()
    picture = tmp_path / "summary.png"  # an earlier picture is replaced
    classes = sorted(set(load_dataset(str(masks_only), "annotations", split="train")["class_index"]))
    for c in classes[:2]:
        assert main(["show", str(masks_only), "--class", str(c), "--out", str(picture)]) == 0
    assert Image.open(picture).size[0] > 0
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read when asked, not at import
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:  # argparse: exit 2, usage and the message on stderr
        main(["show", "no/such_build", "--class", "1000", "--out", str(picture)])
    assert exited.value.code == 2
    assert "argument --class: expected a class index 0-999, got '1000'" in capsys.readouterr().err
    caplog.clear()
    assert main(["show", "no/such_build", "--class", "0", "--out", str(picture)]) == 4  # no exception escaped
    assert (f"show no/such_build: no such folder ({tmp_path / 'no/such_build'}); as a Hub dataset id it could not "
            "be checked: HF_HUB_OFFLINE=1 is set") in caplog.text
