"""No silently wrong rows: labels outside 0-999, EXIF orientation, duplicate ids, non-image files, folders that are
not classes, symlink loops. Real folders, parquet and tar sources, real builds, read back with `load_dataset`."""

import io
import json
import logging
import os
import random
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ARCH, STUDY_ARGS, built_once
from datasets import Dataset, Features, Image, Value, load_dataset
from PIL import Image as PILImage
from PIL import ImageOps

from salient_imagenet_builder.builder import build
from salient_imagenet_builder.builder.demo import jpeg_bytes, synthetic_image
from salient_imagenet_builder.cli import main
from salient_imagenet_builder.core.images import center_view
from salient_imagenet_builder.core.model import create_feature_model
from salient_imagenet_builder.core.schema import wordnet_ids
from salient_imagenet_builder.core.sources import SourceError, open_source

WNIDS = wordnet_ids()


def _rotated_jpeg(rng, label, orientation):
    """A JPEG whose stored pixels are the upright picture turned the way a camera stores it, with the EXIF tag that
    tells viewers (and `datasets`) to turn it back."""
    upright = synthetic_image(rng, label, (320, 256))
    undo = {3: PILImage.Transpose.ROTATE_180, 6: PILImage.Transpose.ROTATE_90, 8: PILImage.Transpose.ROTATE_270}
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    return jpeg_bytes(upright.transpose(undo[orientation]), exif=exif.tobytes())


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory):
    """A folder source with what real folders hold besides images."""
    return built_once(tmp_path_factory, "test_wrong_rows_odd", lambda folder: _odd_folder(folder / "imagenet"))


def _odd_folder(root):
    rng = random.Random(7)
    one, two = root / "train" / WNIDS[1], root / "train" / WNIDS[2]
    for folder, label in ((one, 1), (two, 2)):
        folder.mkdir(parents=True)
        for n in range(3):
            (folder / f"{WNIDS[label]}_{n}.JPEG").write_bytes(jpeg_bytes(synthetic_image(rng, label)))
    (one / f"{WNIDS[1]}_rot6.JPEG").write_bytes(_rotated_jpeg(rng, 1, 6))
    (one / f"{WNIDS[1]}_rot8.JPEG").write_bytes(_rotated_jpeg(rng, 1, 8))
    (one / f"{WNIDS[1]}_0.copy.JPEG").write_bytes(jpeg_bytes(synthetic_image(rng, 1)))  # id must stay apart
    (one / "Thumbs.db").write_bytes(os.urandom(300))
    (one / "notes.txt").write_text("where these came from\n")
    (one / ".DS_Store").write_bytes(os.urandom(100))
    os.symlink("self.JPEG", one / "self.JPEG")  # a link to itself
    os.symlink("..", one / "up")  # a folder link back up: a cycle for anything that follows links
    (root / "train" / "misc").mkdir()
    (root / "train" / "misc" / "cat.JPEG").write_bytes(jpeg_bytes(synthetic_image(rng, 3)))
    (root / "train" / "n99999999").mkdir()
    os.symlink("loop", root / "train" / "loop")
    os.symlink(".", root / "again")  # the root inside itself
    return root


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def odd_builds(odd_folder, inputs, tmp_path_factory):
    """The odd folder built in each --image-mode (full decoding, so masks can be compared exactly)."""
    return built_once(tmp_path_factory, "test_wrong_rows_builds", lambda out: _odd_builds(odd_folder, inputs, out))


def _odd_builds(odd_folder, inputs, out):
    handler = _Lines()
    logging.getLogger("salient_imagenet_builder").addHandler(handler)
    built = {}
    try:
        for mode in ("crop", "original", "none"):
            stats = build(_config(inputs, odd_folder, out / mode, image_mode=mode))
            built[mode] = (out / mode, stats)
    finally:
        logging.getLogger("salient_imagenet_builder").removeHandler(handler)
    return built, handler.lines


def _config(inputs, source, out, **overrides):
    from salient_imagenet_builder.builder import BuildConfig

    fields = dict(source=str(source), out=str(out), model=ARCH, model_checkpoint=str(inputs["checkpoint"]),
                  annotations=str(inputs["annotations"]), workers=0, batch_size=4, classes=[1, 2],
                  group_by="label", top_k=None, draft=False)
    fields.update(overrides)
    return BuildConfig(**fields)


# --- folders: non-images, non-class folders, symlink loops, ids -----------------------------------------------------

def test_non_images_are_not_corrupt_and_odd_folders_are_named(odd_builds):
    built, lines = odd_builds
    _, stats = built["crop"]
    assert stats.skipped_images == 0  # Thumbs.db and notes.txt are no corrupt images
    assert stats.skipped_non_image_files == 2
    assert stats.images_scanned == 3 + 3 + 3  # class 2, class 1, and class 1's two rotated files + the .copy
    folder_lines = [line for line in lines if "not ImageNet class ids" in line]
    assert len(folder_lines) == 3 and all("2 folder(s)" in line and "misc, n99999999" in line
                                          for line in folder_lines)  # one line per build
    assert any("2 file(s) that are not images" in line and "Thumbs.db" in line for line in lines)


def test_symlink_loops_anywhere_are_no_crash(odd_folder):
    source = open_source(str(odd_folder))
    assert sorted({s.label for s in source.samples()}) == [1, 2]
    assert len(list(source.samples())) == 9


def test_image_ids_are_unique_and_keep_everything_but_the_extension(odd_builds):
    built, _ = odd_builds
    ids = load_dataset(str(built["crop"][0]), split="train")["image_id"]
    assert len(ids) == len(set(ids)) == 9
    assert {f"{WNIDS[1]}_0", f"{WNIDS[1]}_0.copy"} <= set(ids)


def test_two_files_with_one_id_are_refused_naming_both(inputs, tmp_path):
    folder = tmp_path / "dup" / "train" / WNIDS[1]
    folder.mkdir(parents=True)
    image = synthetic_image(random.Random(3), 1)
    (folder / "x.JPEG").write_bytes(jpeg_bytes(image))
    (folder / "x.png").write_bytes(jpeg_bytes(image, format="PNG"))
    with pytest.raises(SourceError) as caught:
        build(_config(inputs, tmp_path / "dup", tmp_path / "out"))
    assert str(caught.value).startswith(f"two images have the id 'x': {folder / 'x.JPEG'} and {folder / 'x.png'}")
    assert not (tmp_path / "out").exists()


# --- EXIF orientation: the loaded image and its masks line up in every mode ---------------------------------------

def _reference_masks(view: PILImage.Image, features: list[dict], model) -> list[np.ndarray]:
    """The masks of `view` computed here: the model's layer4 channel, max-normalised, upsampled bilinearly."""
    x = torch.from_numpy(np.asarray(view, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        spatial = model(x)[0][0]
    masks = []
    for feature in features:
        nam = spatial[feature["feature_index"]]
        nam = nam / nam.max() if nam.max() > 0 else torch.zeros_like(nam)  # a dead channel stays all zero
        masks.append(F.interpolate(nam[None, None], size=(224, 224), mode="bilinear", align_corners=False)[0, 0])
    return [np.rint(m.numpy() * 255) for m in masks]


def test_exif_orientation_masks_line_up_in_every_mode(odd_builds, odd_folder, inputs):
    built, _ = odd_builds
    model = create_feature_model(ARCH, str(inputs["checkpoint"]))[0].eval()
    files = {p.stem: p for p in (odd_folder / "train" / WNIDS[1]).glob("*rot*")}
    crop_masks = {}
    for mode in ("crop", "original", "none"):
        rows = [r for r in load_dataset(str(built[mode][0]), split="train") if r["image_id"] in files]
        assert len(rows) == 2, mode
        for row in rows:
            upright = ImageOps.exif_transpose(PILImage.open(files[row["image_id"]])).convert("RGB")
            if mode == "crop":  # the stored view is of the upright picture
                view = row["image"]
                np.testing.assert_array_equal(np.asarray(view), np.asarray(center_view(upright)))
            elif mode == "original":  # load_dataset turns the original upright; the masks are of that picture
                assert row["image"].size == upright.size == (320, 256)
                view = center_view(row["image"].convert("RGB"))
            else:  # no image: the card tells users to join their own copy, made upright, resized and cropped
                view = center_view(upright)
            expected = _reference_masks(view, row["features"], model)
            for feature, mask in zip(row["features"], expected):
                got = np.asarray(feature["mask"], dtype=np.float64)
                assert np.abs(got - mask).max() <= 1, (mode, row["image_id"], feature["feature_index"])
            crop_masks.setdefault(row["image_id"], []).append([np.asarray(f["mask"]) for f in row["features"]])
    for image_id, per_mode in crop_masks.items():  # one picture, one set of masks, whatever the mode
        for masks in per_mode[1:]:
            for a, b in zip(per_mode[0], masks):
                np.testing.assert_array_equal(a, b)


# --- labels outside 0-999 --------------------------------------------------------------------------------------------

LABELS = [1, -1, 1, 1000, 2, None, 2, -1, 1, 2]
# a parquet file declares its labels up front: beyond 999 without class names it is refused (test_source_inputs.py),
# so its version holds a second -1 where a tar (labels met one by one) holds 1000
PARQUET_LABELS = [-1 if label == 1000 else label for label in LABELS]
OUTSIDE = Counter({-1: 3, None: 1})


@pytest.fixture(scope="module")
def unlabelled_sources(tmp_path_factory):
    """The same images as parquet (a plain int64 label column, as any writer may make) and as WebDataset tars."""
    return built_once(tmp_path_factory, "test_wrong_rows_unlabelled", _unlabelled_sources)


def _unlabelled_sources(root):
    rng = random.Random(11)
    images = [(f"img_{i}.JPEG", jpeg_bytes(synthetic_image(rng, label if label in (1, 2) else 0)))
              for i, label in enumerate(LABELS)]
    parquet = root / "parquet"
    parquet.mkdir()
    features = Features({"image": Image(), "label": Value("int64")})
    Dataset.from_dict({"image": [{"bytes": b, "path": n} for n, b in images], "label": PARQUET_LABELS},
                      features=features).to_parquet(parquet / "train-00000-of-00001.parquet")
    wds = root / "wds"
    wds.mkdir()
    with tarfile.open(wds / "train-0000.tar", "w") as tar:
        for i, ((name, data), label) in enumerate(zip(images, LABELS)):
            members = [("jpg", data), ("json", json.dumps({"filename": name}).encode())]
            if label is not None:
                members.append(("cls", str(label).encode()))
            else:
                members[1] = ("json", json.dumps({"filename": name, "label": "-1"}).encode())
            for ext, payload in members:
                info = tarfile.TarInfo(f"k{i:04d}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return {"parquet": parquet, "wds": wds}


@pytest.mark.parametrize("kind", ["parquet", "wds"])
def test_readers_skip_and_count_labels_outside_0_999(unlabelled_sources, kind):
    source = open_source(str(unlabelled_sources[kind]))
    labels = [s.label for s in source.samples()]
    assert labels == [label for label in LABELS if label in (1, 2)]
    expected = OUTSIDE if kind == "parquet" else Counter({-1: 3, 1000: 1})  # a tar's json label "-1" is -1
    assert source.unlabelled == expected
    assert [s.label for s in source.samples(classes={2})] == [2, 2, 2] and source.unlabelled == expected


@pytest.mark.parametrize("kind", ["parquet", "wds"])
def test_work_units_of_a_fresh_source_skip_and_count_them_too(unlabelled_sources, kind):
    """Discover reads units of a source it never called `samples` on: the count must not need a reset first."""
    source = open_source(str(unlabelled_sources[kind]))
    labels = [s.label for spec in source.plan_units(None, None, 3) for s in source.unit_samples(spec, None, None)]
    assert labels == [label for label in LABELS if label in (1, 2)]
    assert source.unlabelled == (OUTSIDE if kind == "parquet" else Counter({-1: 3, 1000: 1}))


def test_folder_reader_has_only_class_labels(odd_folder):
    source = open_source(str(odd_folder))
    assert {s.label for s in source.samples()} <= set(range(1000)) and not source.unlabelled


def test_build_by_label_never_stores_another_class(unlabelled_sources, inputs, tmp_path):
    stats = build(_config(inputs, unlabelled_sources["parquet"], tmp_path / "out"))
    assert stats.skipped_labels == 4 and stats.skipped_label_values == {"-1": 3, "None": 1}
    rows = load_dataset(str(tmp_path / "out"), split="train")
    assert sorted(rows["image_id"]) == sorted(f"img_{i}" for i, label in enumerate(LABELS) if label in (1, 2))
    assert all(WNIDS[r["label"]] == r["wordnet_id"] and r["group"] == r["label"] in (1, 2) for r in rows)
    info = json.loads((tmp_path / "out" / "build_info.json").read_text())
    assert info["stats"]["skipped_labels"] == 4
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| images without an ImageNet label 0-999 (skipped; e.g. -1 in test splits) | 4 (label: count" in card


def test_a_test_split_without_labels_is_one_line(unlabelled_sources, inputs, tmp_path, caplog):
    from salient_imagenet_builder.cli import build_main

    folder = tmp_path / "hub_test_split"
    folder.mkdir()
    Dataset.from_dict({"image": [{"bytes": jpeg_bytes(synthetic_image(random.Random(0), 1)), "path": "t.JPEG"}] * 3,
                       "label": [-1] * 3}, features=Features({"image": Image(), "label": Value("int64")})
                      ).to_parquet(folder / "test-00000-of-00001.parquet")
    code = build_main(["--source", str(folder), "--split", "test", "--out", str(tmp_path / "out"), "--model", ARCH,
                       "--model-checkpoint", str(inputs["checkpoint"]), "--annotations", str(inputs["annotations"]),
                       "--group-by", "label", "--workers", "0"])
    assert code == 2, caplog.text  # and no exception escaped: no traceback
    assert "none of its images has an ImageNet label 0-999 (labels seen: {'-1': 3})" in caplog.text
    assert not (tmp_path / "out").exists()
    caplog.clear()
    code = main(["discover", "--source", str(folder), "--split", "test", "--out", str(tmp_path / "study"), "--model",
                 ARCH, "--model-checkpoint", str(inputs["checkpoint"]), *STUDY_ARGS])
    assert code == 2, caplog.text
    assert "none of its images has an ImageNet label 0-999 (labels seen: {'-1': 3})" in caplog.text
    assert not (tmp_path / "study").exists()


def test_discover_counts_labels_outside_0_999_and_never_groups_them(unlabelled_sources, inputs, tmp_path):
    out = tmp_path / "study"
    assert main(["discover", "--source", str(unlabelled_sources["parquet"]), "--out", str(out), "--model", ARCH,
                 "--model-checkpoint", str(inputs["checkpoint"]), *STUDY_ARGS]) == 0
    info = json.loads((out / "discover_info.json").read_text())
    assert info["skipped_labels"] == {"-1": 3, "None": 1}
    assert info["images_scanned"] == 6 and info["group_sizes"] == {"1": 3, "2": 3}
