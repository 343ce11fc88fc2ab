"""`validate`: a build's soft masks against hand-made human segmentations (ImageNet-S ids and binary masks),
checked against a computation made here from the stored masks with numpy and PIL alone."""

import csv
import io
import json

import numpy as np
import pytest
from conftest import ARCH, built_once
from datasets import load_dataset
from PIL import Image

from salient_imagenet_builder.builder import BuildConfig, build
from salient_imagenet_builder.cli import main


@pytest.fixture(scope="module")
def originals(inputs, tmp_path_factory):
    """An --image-mode original build (the original files kept: mask sizes can be checked against them)."""
    return built_once(tmp_path_factory, "test_segmentation", lambda root: _originals(inputs, root))


def _originals(inputs, root):
    out = root / "originals"
    build(BuildConfig(source=str(inputs["folder"]), out=str(out), model=ARCH,
                      model_checkpoint=str(inputs["checkpoint"]), annotations=str(inputs["annotations"]), workers=0,
                      batch_size=8, top_k=3, group_by="label", image_mode="original",
                      cache_dir=str(out.parent / "cache")))
    return out


@pytest.fixture(scope="module")
def rows(originals):
    return list(load_dataset(str(originals), split="train"))


def upright_size(image: Image.Image) -> tuple[int, int]:
    return image.size  # the fixture's images carry no EXIF orientation


def hand_view(ids: np.ndarray) -> np.ndarray:
    """Shorter side to 256 by nearest neighbour, centre crop 224 (torchvision's Resize(256) + CenterCrop(224))."""
    h, w = ids.shape
    if w <= h:
        size = (256, int(256 * h / w))
    else:
        size = (int(256 * w / h), 256)
    resized = np.array(Image.fromarray(ids.astype(np.int32)).resize(size, Image.NEAREST))
    left, top = round((size[0] - 224) / 2), round((size[1] - 224) / 2)
    return resized[top:top + 224, left:left + 224]


def imagenet_s_ids(rng, width, height) -> np.ndarray:
    """Blocks of object ids (5, 300), other (0) and ignore (1000)."""
    ids = np.zeros((height, width), np.int32)
    for value in (5, 300, 1000, 5):
        x, y = rng.integers(0, width - 40), rng.integers(0, height - 40)
        ids[y:y + rng.integers(20, height // 2), x:x + rng.integers(20, width // 2)] = value
    return ids


def write_imagenet_s(path, ids):
    rgb = np.stack([ids % 256, ids // 256, np.zeros_like(ids)], axis=-1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, "RGB").save(path)


def expected_rows(rows, humans: dict) -> dict:
    """(class, feature) -> (images, mean energy_inside), by hand: humans maps image_id -> (H, counted) at the
    original size."""
    found = {}
    for row in rows:
        if row["image_id"] not in humans:
            continue
        human, counted = (hand_view(a.astype(np.int32)).astype(bool) for a in humans[row["image_id"]])
        for entry in row["features"]:
            m = np.asarray(entry["mask"], dtype=np.float64) / 255.0
            mass = (m * counted).sum()
            if mass > 0:
                found.setdefault((row["group"], entry["feature_index"]), []).append((m * human * counted).sum() / mass)
    return {key: (len(v), float(np.mean(v))) for key, v in found.items()}


def read_report(folder):
    with open(folder / "validation.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["class_index", "feature_index", "kind", "images", "energy_inside"]
        return list(reader)


def check_against(report_rows, expected, pairs):
    assert len(report_rows) == len(pairs)
    kinds = {(p["class_index"], p["feature_index"]): p["kind"] for p in pairs}
    for r in report_rows:
        key = (int(r["class_index"]), int(r["feature_index"]))
        assert r["kind"] == kinds[key]
        images, mean = expected.get(key, (0, None))
        assert int(r["images"]) == images, key
        if mean is None:
            assert r["energy_inside"] == ""
        else:
            assert float(r["energy_inside"]) == pytest.approx(mean, abs=2e-6), key


def test_imagenet_s_masks_score_as_computed_by_hand(originals, rows, tmp_path, capsys):
    rng = np.random.default_rng(0)
    folder, humans = tmp_path / "imagenet-s", {}
    for row in rows[::2]:  # every other image has a human mask; the rest are counted as without one
        width, height = upright_size(row["image"])
        ids = imagenet_s_ids(rng, width, height)
        write_imagenet_s(folder / row["wordnet_id"] / f"{row['image_id']}.png", ids)
        humans[row["image_id"]] = ((ids != 0) & (ids != 1000), ids != 1000)
    assert main(["validate", str(originals), "--human-masks", str(folder), "--format", "imagenet-s",
                 "--out", str(tmp_path / "report")]) == 0
    pairs = list(load_dataset(str(originals), "annotations", split="train"))
    expected = expected_rows(rows, humans)
    assert any(images > 0 for images, _ in expected.values())
    report_rows = read_report(tmp_path / "report")
    check_against(report_rows, expected, pairs)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["images_without_human_mask"] == len(rows) - len(humans)
    assert summary["image_rows"] == len(rows)
    for kind in ("core", "spurious"):
        means = [v for (c, j), (_, v) in expected.items() if next(p["kind"] for p in pairs
                                                                   if (p["class_index"], p["feature_index"]) == (c, j))
                 == kind]
        assert summary["kinds"][kind]["pairs"] == len(means)
        if means:
            assert summary["kinds"][kind]["energy_inside"] == pytest.approx(np.mean(means), abs=1e-5)
    plot = Image.open(tmp_path / "report" / "energy_inside.png")
    assert plot.format == "PNG" and plot.width > 300
    out = capsys.readouterr().out
    assert f"{len(rows) - len(humans)} of {len(rows)} images without a human mask" in out


def test_binary_masks_in_either_layout(originals, rows, tmp_path):
    rng = np.random.default_rng(1)
    folder, humans = tmp_path / "binary", {}
    for n, row in enumerate(rows[1::2]):
        width, height = upright_size(row["image"])
        obj = np.zeros((height, width), np.uint8)
        x, y = rng.integers(0, width // 2), rng.integers(0, height // 2)
        obj[y:y + height // 2, x:x + width // 3] = 255 if n % 2 else 1  # any non-zero value is the object
        path = folder / row["wordnet_id"] / f"{row['image_id']}.png" if n % 2 else folder / f"{row['image_id']}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(obj, "L").save(path)
        humans[row["image_id"]] = (obj != 0, np.ones_like(obj, dtype=bool))
    assert main(["validate", str(originals), "--human-masks", str(folder), "--format", "binary",
                 "--out", str(tmp_path / "report")]) == 0
    pairs = list(load_dataset(str(originals), "annotations", split="train"))
    check_against(read_report(tmp_path / "report"), expected_rows(rows, humans), pairs)


def test_update_validation_puts_the_report_summary_in_the_card(originals, rows, tmp_path, caplog):
    """`update --validation`: the card's table is the report's pairs per kind, their mean and median computed here
    from the CSV; the data shards stay byte-identical; a report of another build (a kind changed) is refused, naming
    its row, and leaves the build as it was."""
    import hashlib
    import shutil

    rng = np.random.default_rng(2)
    folder = tmp_path / "binary"
    for row in rows:
        width, height = upright_size(row["image"])
        path = folder / row["wordnet_id"] / f"{row['image_id']}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((height, width)) < 0.5).astype(np.uint8), "L").save(path)
    report = tmp_path / "report"
    assert main(["validate", str(originals), "--human-masks", str(folder), "--format", "binary",
                 "--out", str(report)]) == 0
    dataset = tmp_path / "salient"
    shutil.copytree(originals, dataset)
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (dataset / "data").glob("train-*")}
    assert main(["update", str(dataset), "--validation", str(report / "validation.csv")]) == 0
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (dataset / "data").glob("train-*")} == digest
    card = (dataset / "README.md").read_text()
    from salient_imagenet_builder.core.card import md_text
    from salient_imagenet_builder.publish.validate import check

    assert "## Validation against human segmentations" in card and md_text(folder) in card
    for kind in ("core", "spurious"):
        values = [float(r["energy_inside"]) for r in read_report(report) if r["kind"] == kind and r["energy_inside"]]
        pairs = sum(1 for r in read_report(report) if r["kind"] == kind)
        cells = (f"{np.mean(values):.3f} | {np.median(values):.3f}" if values else "n/a | n/a")
        assert f"| {kind} | {pairs} | {len(values)} | {cells} |" in card
    assert check(str(dataset)) == []

    lines = (report / "validation.csv").read_text().splitlines()
    flipped = lines[1].replace(",core,", ",spurious,") if ",core," in lines[1] else lines[1].replace(",spurious,",
                                                                                                      ",core,")
    other = tmp_path / "other.csv"
    other.write_text("\n".join([lines[0], flipped, *lines[2:]]) + "\n")
    before = (dataset / "README.md").read_bytes()
    assert main(["update", str(dataset), "--validation", str(other)]) == 2
    assert f"--validation {other}, row 2: class " in caplog.text and "(a report of another build?)" in caplog.text
    assert (dataset / "README.md").read_bytes() == before


def test_a_broken_or_wrong_size_mask_is_one_line_naming_it(originals, rows, tmp_path, caplog):
    row = rows[0]
    width, height = upright_size(row["image"])
    path = tmp_path / "masks" / row["wordnet_id"] / f"{row['image_id']}.png"
    write_imagenet_s(path, np.zeros((height, width + 7), np.int32))
    args = ["validate", str(originals), "--human-masks", str(tmp_path / "masks"), "--format", "imagenet-s",
            "--out", str(tmp_path / "report")]
    assert main(args) == 2
    assert f"human mask {path}: {width + 7}x{height} pixels, but its image is {width}x{height}" in caplog.text
    caplog.clear()
    path.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert main(args) == 2
    assert f"human mask {path}: cannot be read (" in caplog.text
    assert "Traceback" not in caplog.text
    assert not (tmp_path / "report").exists()


def test_masks_of_a_build_without_original_images_are_taken_as_upright(tmp_path):
    """Without the original image (a crop or none build) the mask is taken as upright, any size: here the hand
    view of a 300x200 mask."""
    from salient_imagenet_builder.segmentation.human import HumanMasks

    ids = imagenet_s_ids(np.random.default_rng(2), 300, 200)
    buffer = io.BytesIO()
    Image.fromarray(np.stack([ids % 256, ids // 256, 0 * ids], -1).astype(np.uint8)).save(buffer, "PNG")
    folder = tmp_path / "one_mask"
    (folder / "n0").mkdir(parents=True, exist_ok=True)
    (folder / "n0" / "x.png").write_bytes(buffer.getvalue())
    human, counted = HumanMasks(str(folder), "imagenet-s").view(folder / "n0" / "x.png", None)
    np.testing.assert_array_equal(human, hand_view((ids != 0) & (ids != 1000)).astype(bool))
    np.testing.assert_array_equal(counted, hand_view(ids != 1000).astype(bool))


@pytest.mark.parametrize("orientation, turn", [(6, lambda a: np.rot90(a, -1)), (3, lambda a: np.rot90(a, 2)),
                                               (2, np.fliplr)])
def test_a_mask_drawn_on_the_stored_pixels_turns_with_the_images_exif_orientation(tmp_path, orientation, turn):
    """The build sees the image upright (EXIF applied); a mask of the stored size is turned the same way, and a
    mask already drawn on the upright image is kept when its size tells them apart (a quarter turn)."""
    from salient_imagenet_builder.segmentation.human import HumanMasks

    picture = Image.new("RGB", (300, 200), "grey")
    exif = picture.getexif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", exif=exif.tobytes())
    ids = imagenet_s_ids(np.random.default_rng(3), 300, 200)
    humans = HumanMasks(str(tmp_path), "imagenet-s")
    drawings = (ids, turn(ids)) if orientation in (5, 6, 7, 8) else (ids,)  # the stored pixels, the upright picture
    for drawn in drawings:
        write_imagenet_s(tmp_path / "n0" / "x.png", np.ascontiguousarray(drawn))
        human, counted = humans.view(tmp_path / "n0" / "x.png", buffer.getvalue())
        upright = np.ascontiguousarray(turn(ids))
        np.testing.assert_array_equal(human, hand_view((upright != 0) & (upright != 1000)).astype(bool))
        np.testing.assert_array_equal(counted, hand_view(upright != 1000).astype(bool))
