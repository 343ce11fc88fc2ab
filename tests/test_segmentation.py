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
    """Where the build does not tell the image's size (a crop or none build from before the size columns) the mask is
    taken as drawn on the displayed image, any size: here the hand view of a 300x200 mask."""
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


ORIENTATIONS = {3: lambda a: np.rot90(a, 2), 6: lambda a: np.rot90(a, -1), 2: np.fliplr}  # stored -> displayed


@pytest.fixture(scope="module")
def turned(inputs, tmp_path_factory):
    """A crop build of class 0 whose images carry EXIF orientations 3 (turned 180 degrees), 6 (a quarter turn) and 2
    (mirrored), beside the fixture's upright ones: the build records each image's size as displayed."""
    from salient_imagenet_builder.core.schema import wordnet_ids

    def make(root):
        folder = root / "imagenet" / "train" / wordnet_ids()[0]
        folder.mkdir(parents=True)
        for name, _, data in inputs["written"][:4]:
            if name.startswith(wordnet_ids()[0]):
                (folder / name).write_bytes(data)
        rng = np.random.default_rng(5)
        for orientation in ORIENTATIONS:
            picture = Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8))  # stored 300 x 200
            exif = picture.getexif()
            exif[0x0112] = orientation
            picture.save(folder / f"{wordnet_ids()[0]}_turned{orientation}.JPEG", "JPEG", exif=exif.tobytes())
        builds = {}
        for mode in ("crop", "original"):
            builds[mode] = root / mode
            build(BuildConfig(source=str(root / "imagenet"), out=str(builds[mode]), model=ARCH, classes=[0],
                              model_checkpoint=str(inputs["checkpoint"]), annotations=str(inputs["annotations"]),
                              workers=0, batch_size=8, top_k=7, group_by="label", image_mode=mode,
                              cache_dir=str(root / "cache")))
        return builds

    return built_once(tmp_path_factory, "test_segmentation_turned", make)["crop"]


def displayed(path) -> tuple[int, int]:
    """The file's size as displayed, by Pillow's own transpose (independent of the build's code)."""
    from PIL import ImageOps

    with Image.open(path) as picture:
        return ImageOps.exif_transpose(picture).size


def test_a_build_records_each_images_size_as_displayed(turned):
    rows = list(load_dataset(str(turned), split="train"))
    folder = next(turned.parent.glob("imagenet/train/*"))
    assert {r["image_id"] for r in rows} >= {f"{folder.name}_turned{o}" for o in ORIENTATIONS}
    for row in rows:
        assert (row["original_width"], row["original_height"]) == displayed(folder / f"{row['image_id']}.JPEG")


@pytest.mark.parametrize("mode", ["crop", "original"])
@pytest.mark.parametrize("orientation", [3, 6])
def test_a_human_mask_is_drawn_on_the_image_as_displayed(turned, tmp_path, orientation, mode):
    """A mask drawn on the displayed image (as ImageNet-S draws them) scores against the build's masks as is, for
    any orientation: energy_inside by hand from that mask through the view. A mask of the stored pixels' size for a
    quarter turn, or one already cut to 224 x 224, is refused in one line naming the file. An original build (the
    files kept, EXIF and all) no longer turns a mask of the stored size by the orientation."""
    turned = turned.parent / mode
    rows = [r for r in load_dataset(str(turned), split="train") if r["image_id"].endswith(f"turned{orientation}")]
    row = rows[0]
    width, height = row["original_width"], row["original_height"]
    ids = imagenet_s_ids(np.random.default_rng(orientation), width, height)
    folder = tmp_path / "masks"
    write_imagenet_s(folder / row["wordnet_id"] / f"{row['image_id']}.png", ids)
    report = tmp_path / "report"
    assert main(["validate", str(turned), "--human-masks", str(folder), "--format", "imagenet-s",
                 "--out", str(report)]) == 0
    pairs = list(load_dataset(str(turned), "annotations", split="train"))
    check_against(read_report(report), expected_rows(rows, {row["image_id"]: ((ids != 0) & (ids != 1000),
                                                                               ids != 1000)}), pairs)
    stored = ORIENTATIONS[orientation](ids) if orientation == 6 else None  # 300 x 200, the file's own pixels
    for wrong in ([stored] if stored is not None else []) + [ids[:224, :224]]:
        write_imagenet_s(folder / row["wordnet_id"] / f"{row['image_id']}.png", np.ascontiguousarray(wrong))
        done = main(["validate", str(turned), "--human-masks", str(folder), "--format", "imagenet-s",
                     "--out", str(tmp_path / "other")])
        assert done == 2


def test_a_masks_only_or_crop_build_refuses_a_mask_of_another_size(turned, tmp_path, caplog):
    """Item of the issue: masks cut to 224 x 224 were scored as if they were the whole image."""
    row = next(r for r in load_dataset(str(turned), split="train") if r["image_id"].endswith("turned3"))
    path = tmp_path / "masks" / row["wordnet_id"] / f"{row['image_id']}.png"
    write_imagenet_s(path, np.ones((224, 224), np.int32))
    assert main(["validate", str(turned), "--human-masks", str(tmp_path / "masks"), "--format", "imagenet-s",
                 "--out", str(tmp_path / "report")]) == 2
    line = (f"human mask {path}: 224x224 pixels, but its image is {row['original_width']}x{row['original_height']} "
            "(as displayed")
    assert line in caplog.text and "Traceback" not in caplog.text
    assert not (tmp_path / "report").exists()


def test_an_older_build_without_sizes_warns_once_that_sizes_are_unchecked(turned, tmp_path, caplog):
    from conftest import as_legacy_build

    older = as_legacy_build(turned, tmp_path / "older", "array2d")
    row = next(r for r in load_dataset(str(turned), split="train") if r["image_id"].endswith("turned3"))
    path = tmp_path / "masks" / row["wordnet_id"] / f"{row['image_id']}.png"
    write_imagenet_s(path, np.ones((224, 224), np.int32))
    assert main(["validate", str(older), "--human-masks", str(tmp_path / "masks"), "--format", "imagenet-s",
                 "--out", str(tmp_path / "report")]) == 0
    warned = [r.getMessage() for r in caplog.records if "before the image size columns" in r.getMessage()]
    assert len(warned) == 1 and str(older) in warned[0]
