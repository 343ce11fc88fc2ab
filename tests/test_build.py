"""End-to-end builds, checked against an independent computation: torchvision's transforms, the network's modules
called one by one (conv1 ... layer4), FI and top-k by hand."""

import csv
import io
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from conftest import ARCH, built_once
from datasets import load_dataset
from PIL import Image
from torchvision import transforms

from salient_imagenet_builder.builder import build
from salient_imagenet_builder.core.annotations import parse
from salient_imagenet_builder.core.constants import IMAGENET_MEAN, IMAGENET_STD
from salient_imagenet_builder.core.model import create_feature_model
from salient_imagenet_builder.core.output import OutputExists
from salient_imagenet_builder.core.schema import annotation_features, image_features

TOP_K = 3


def reference(inputs):
    """image_id -> (label, r(x), layer4 map, prediction), computed without the package's model or preprocessing."""
    net = create_feature_model(ARCH, str(inputs["checkpoint"]))[0].net.eval()
    preprocess = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                     transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    out = {}
    with torch.no_grad():
        for name, label, data in inputs["written"]:
            try:
                image = Image.open(io.BytesIO(data)).convert("RGB")
            except OSError:
                continue
            x = preprocess(image)[None]
            x = net.maxpool(net.act1(net.bn1(net.conv1(x))))
            spatial = net.layer4(net.layer3(net.layer2(net.layer1(x))))[0]
            pooled = spatial.mean((1, 2))
            out[name.split(".")[0]] = (label, pooled, spatial, int(net.fc(pooled).argmax()))
    return out, net.fc.weight.detach()


@pytest.fixture(scope="module")
def built(inputs, tmp_path_factory):
    return built_once(tmp_path_factory, "test_build", lambda root: _build(inputs, root))


def _build(inputs, root):
    from salient_imagenet_builder.builder import BuildConfig

    out = root / "salient_imagenet"
    config = BuildConfig(source=str(inputs["folder"]), out=str(out), model=ARCH,
                         model_checkpoint=str(inputs["checkpoint"]), annotations=str(inputs["annotations"]),
                         workers=0, batch_size=5, top_k=TOP_K, draft=False)
    stats = build(config)
    return out, stats


def test_build_matches_independent_computation(built, inputs):
    out, stats = built
    ref, weight = reference(inputs)
    pairs = parse(inputs["annotations"], num_features=weight.shape[1]).pairs
    images = load_dataset(str(out), split="train")
    table = load_dataset(str(out), "annotations", split="train")

    # groups by the reference prediction; FI by the formula
    groups = defaultdict(list)
    for image_id, (_, pooled, _, prediction) in ref.items():
        groups[prediction].append(image_id)
    for row in table:
        c, j = row["class_index"], row["feature_index"]
        members = groups.get(c, [])
        assert row["group_size"] == len(members)
        if not members:
            assert row["importance"] is None
            continue
        fi = torch.stack([ref[i][1] for i in members]).mean(0) * weight[c]
        assert row["importance"] == pytest.approx(float(fi[j]), rel=1e-4, abs=1e-6)
        assert row["computed_rank"] == int((fi > fi[j]).sum()) + 1
        expected_top = sorted(members, key=lambda i: -float(ref[i][1][j]))[:TOP_K]
        assert row["top_image_ids"] == expected_top[:5]

    # every row: the features whose top-k holds it, their NAMs and masks
    expected_rows = defaultdict(list)
    for (c, j), pair in pairs.items():
        for rank, image_id in enumerate(sorted(groups.get(c, []), key=lambda i: -float(ref[i][1][j]))[:TOP_K], 1):
            expected_rows[image_id].append((j, rank, pair.kind))
    assert sorted(images["image_id"]) == sorted(expected_rows)
    assert len(images) == stats.images_written
    for row in images:
        label, pooled, spatial, prediction = ref[row["image_id"]]
        assert (row["label"], row["prediction"], row["group"]) == (label, prediction, prediction)
        got = [(f["feature_index"], f["rank"], f["kind"]) for f in row["features"]]
        assert sorted(got) == sorted(expected_rows[row["image_id"]])
        masks_by_kind = defaultdict(list)
        for feature in row["features"]:
            j = feature["feature_index"]
            assert feature["activation"] == pytest.approx(float(pooled[j]), rel=1e-4, abs=1e-6)
            nam = spatial[j] / spatial[j].max()
            # stored flat, row-major (H * W values of a fixed-size list)
            np.testing.assert_allclose(np.array(feature["nam"]).reshape(nam.shape), nam.numpy(), rtol=1e-4, atol=1e-5)
            upsampled = F.interpolate(nam[None, None], size=(224, 224), mode="bilinear", align_corners=False)[0, 0]
            mask = np.asarray(feature["mask"], dtype=np.int16)
            assert mask.shape == (224, 224)
            assert np.abs(mask - np.rint(upsampled.numpy() * 255)).max() <= 1
            masks_by_kind[feature["kind"]].append(mask)
        for kind in ("core", "spurious"):
            combined = row[f"{kind}_mask"]
            if masks_by_kind[kind]:
                np.testing.assert_array_equal(np.asarray(combined), np.max(masks_by_kind[kind], axis=0))
            else:
                assert combined is None


def test_image_column_is_the_224_view(built, inputs):
    out, _ = built
    images = load_dataset(str(out), split="train")
    by_name = {n.split(".")[0]: d for n, _, d in inputs["written"]}
    view = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])
    for row in images.select(range(3)):
        expected = np.asarray(view(Image.open(io.BytesIO(by_name[row["image_id"]])).convert("RGB")))
        np.testing.assert_array_equal(np.asarray(row["image"]), expected)  # lossless PNG of the model's input


def test_features_round_trip_and_layout(built):
    out, stats = built
    assert load_dataset(str(out), split="train").features == image_features()
    assert load_dataset(str(out), "annotations", split="train").features == annotation_features()
    shards = sorted((out / "data").glob("*.parquet"))
    assert [p.name for p in shards] == ["annotations-00000-of-00001.parquet", "train-00000-of-00001.parquet"]
    parquet = pq.ParquetFile(shards[1])
    assert b"huggingface" in parquet.schema_arrow.metadata
    assert parquet.metadata.row_group(0).column(0).has_offset_index  # page index written
    assert not list(out.parent.glob(".*partial*"))
    card = (out / "README.md").read_text()
    assert "config_name: annotations" in card and "data/train-*.parquet" in card
    assert f'load_dataset("{out.name}", split="train")' in card  # the folder's name: no local path is published
    assert "| corrupt images skipped | 1 (n01440764\\_truncated) |" in card  # data is escaped for Markdown


def test_corrupt_and_odd_images(built, inputs):
    _, stats = built
    assert stats.skipped_images == 1 and stats.skipped_ids == ["n01440764_truncated"]
    assert stats.images_scanned == len(inputs["written"]) - 1  # CMYK, greyscale and PNG-named-JPEG decode


def test_three_readers_give_identical_datasets(config, inputs, parquet_source, webdataset_source, tmp_path):
    tables = {}
    for name, source in (("folder", inputs["folder"]), ("parquet", parquet_source), ("wds", webdataset_source)):
        build(config(source=str(source), out=str(tmp_path / name), top_k=2))
        tables[name] = {p.name: pq.read_table(p) for p in sorted((tmp_path / name / "data").glob("*.parquet"))}
    assert tables["folder"]["train-00000-of-00001.parquet"].num_rows > 0
    for name in ("parquet", "wds"):
        assert tables[name].keys() == tables["folder"].keys()
        for shard, table in tables["folder"].items():
            assert tables[name][shard].equals(table), (name, shard)


def test_top_k_all_gives_every_image_all_features(config, inputs):
    build(config(top_k=None, group_by="label", classes=[1, 2]))
    images = load_dataset(config().out, split="train")
    expected = {n.split(".")[0] for n, label, _ in inputs["written"] if label in (1, 2)}
    assert set(images["image_id"]) == expected
    pairs = parse(inputs["annotations"], num_features=512)
    for row in images:
        assert row["group"] == row["label"]
        assert sorted(f["feature_index"] for f in row["features"]) == sorted(
            p.feature_index for p in pairs.for_class(row["label"]))
    for c in (1, 2):  # rank orders each pair's images by activation
        for j in (p.feature_index for p in pairs.for_class(c)):
            entries = sorted((f["rank"], f["activation"]) for r in images if r["group"] == c
                             for f in r["features"] if f["feature_index"] == j)
            assert [rank for rank, _ in entries] == list(range(1, len(entries) + 1))
            assert [a for _, a in entries] == sorted((a for _, a in entries), reverse=True)


def test_image_modes(config, inputs, tmp_path):
    originals = {n.split(".")[0]: d for n, _, d in inputs["written"]}
    build(config(image_mode="original", classes=[2], out=str(tmp_path / "original")))
    for row in load_dataset(str(tmp_path / "original"), split="train").cast_column("image", _undecoded()):
        assert row["image"]["bytes"] == originals[row["image_id"]]
    build(config(image_mode="none", classes=[2], out=str(tmp_path / "none")))
    rows = load_dataset(str(tmp_path / "none"), split="train")
    assert len(rows) > 0 and all(image is None for image in rows["image"])
    assert "Join with your ImageNet copy" in (tmp_path / "none" / "README.md").read_text()


def _undecoded():
    from datasets import Image as ImageFeature

    return ImageFeature(decode=False)


def test_classes_limit_and_unannotated_class(config):
    stats = build(config(classes=[0, 2, 5], limit=3, group_by="label"))
    assert stats.images_scanned == 6
    assert stats.classes_without_annotations == [5]
    table = load_dataset(config().out, "annotations", split="train")
    assert sorted(set(table["class_index"])) == [0, 2]


def test_existing_output_refused_and_failed_rebuild_keeps_it(config, tmp_path):
    build(config(classes=[2]))
    before = sorted(p.name for p in Path(config().out).rglob("*"))
    with pytest.raises(OutputExists, match="--overwrite"):
        build(config(classes=[2]))
    broken = tmp_path / "broken.csv"
    broken.write_text("WorkerId,Input.wordnet_id\n1,n01440764\n")
    with pytest.raises(ValueError, match="broken.csv"):
        build(config(classes=[2], overwrite=True, annotations=str(broken)))
    assert sorted(p.name for p in Path(config().out).rglob("*")) == before
    assert len(load_dataset(config().out, split="train")) > 0
    build(config(classes=[1], overwrite=True, group_by="label"))
    assert set(load_dataset(config().out, split="train")["group"]) == {1}


def test_a_study_with_three_answers_per_pair_builds_by_two_of_three(config, inputs, tmp_path):
    """An ingested study of 3 annotators: the build labels each pair by a majority of its 3 answers (a vote count
    done here by hand) and the card says 3 annotators and 2 of 3."""
    with open(inputs["annotations"], newline="") as f:
        rows = list(csv.DictReader(f))
    kept, seen = [], defaultdict(int)
    for row in rows:  # the first 3 answers of every pair
        key = (row["Input.class_index"], row["Input.feature_index"])
        seen[key] += 1
        if seen[key] <= 3:
            kept.append(row)
    three = tmp_path / "three.csv"
    with open(three, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    out = tmp_path / "three_build"
    build(config(out=str(out), annotations=str(three), classes=[1, 2], group_by="label", top_k=2))
    table = load_dataset(str(out), "annotations", split="train")
    assert len(table) > 0
    for pair in table:
        answers = [r["Answer.main"] for r in kept if (int(r["Input.class_index"]), int(r["Input.feature_index"]))
                   == (pair["class_index"], pair["feature_index"])]
        spurious = sum(a in ("separate_object", "background") for a in answers)
        assert len(answers) == len(pair["answers"]) == 3
        assert pair["kind"] == ("spurious" if spurious >= 2 else "core")
    card = (out / "README.md").read_text()
    assert "Each pair was shown to 3 annotators; it is **spurious** when at least 2 of the 3 answered" in card
