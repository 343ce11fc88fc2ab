"""Sources as users have them (issue 16): subsets with their own class names, string and float labels, parquet
image columns of file paths, null images, plain binary columns, images in sub-folders of class folders, tars whose
members are apart, compressed tars. Each case names what it covers; wrong rows are the worst outcome, so labels are
checked against ImageNet's wnid list, independently of the reader."""

import io
import json
import random
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ARCH, CLASSES
from datasets import ClassLabel, Dataset, Features, Image, Value

from salient_imagenet_builder.builder.demo import jpeg_bytes, synthetic_image
from salient_imagenet_builder.cli import build_main
from salient_imagenet_builder.core.schema import class_names, wordnet_ids
from salient_imagenet_builder.core.sources import SourceError, open_source

WNIDS = wordnet_ids()
IMAGENETTE = ["n01440764", "n02102040", "n02979186"]  # tench, English springer, cassette player


def images(n: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [jpeg_bytes(synthetic_image(rng, i % 3)) for i in range(n)]


def write_parquet(path: Path, labels: list, features: Features, data: list | None = None) -> Path:
    data = data or images(len(labels))
    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_dict({"image": [{"bytes": b, "path": f"img_{i}.JPEG"} for i, b in enumerate(data)],
                       "label": labels}, features=features).to_parquet(path)
    return path


def labels_of(path: Path) -> list[int]:
    return [s.label for s in open_source(str(path)).samples()]


def build_args(inputs, source: Path, out: Path) -> list[str]:
    return ["--source", str(source), "--out", str(out), "--model", ARCH, "--model-checkpoint",
            str(inputs["checkpoint"]), "--annotations", str(inputs["annotations"]), "--group-by", "label",
            "--workers", "0", "--batch-size", "8"]


def test_case_subset_with_its_own_wnid_class_names_gets_imagenet_labels(tmp_path):
    """Imagenette-style ClassLabel(names=[wnids]) with labels 0-2: springers are class 217, not goldfish."""
    path = write_parquet(tmp_path / "train-00000-of-00001.parquet", [0, 1, 2, 1],
                         Features({"image": Image(), "label": ClassLabel(names=IMAGENETTE)}))
    assert labels_of(path) == [WNIDS.index(IMAGENETTE[i]) for i in (0, 1, 2, 1)] == [0, 217, 482, 217]


def test_case_subset_with_imagenet_class_names_maps_them_too(tmp_path):
    names = [class_names()[7], "English springer", "cassette player"]
    path = write_parquet(tmp_path / "train.parquet", [2, 0, 1],
                         Features({"image": Image(), "label": ClassLabel(names=names)}))
    assert labels_of(path) == [482, 7, 217]


def test_case_imagenets_own_1000_names_are_kept_as_they_are(tmp_path):
    path = write_parquet(tmp_path / "train.parquet", [5, 999, 134, 517],
                         Features({"image": Image(), "label": ClassLabel(names=class_names())}))
    assert labels_of(path) == [5, 999, 134, 517]


def test_case_names_that_map_to_no_imagenet_class_are_refused_in_one_line(inputs, tmp_path, caplog):
    path = write_parquet(tmp_path / "src" / "train.parquet", [0, 1],
                         Features({"image": Image(), "label": ClassLabel(names=["cat", "n01440764", "dog"])}))
    with pytest.raises(SourceError, match=r"2 of 3 name no single ImageNet class .*\['cat', 'dog'\]"):
        open_source(str(path))
    assert build_main(build_args(inputs, tmp_path / "src", tmp_path / "out")) == 2
    assert "name no single ImageNet class" in caplog.text and "Traceback" not in caplog.text
    assert not (tmp_path / "out").exists()


def test_case_labels_beyond_999_without_names_are_refused(tmp_path):
    path = write_parquet(tmp_path / "train.parquet", [3, 1500, 7], Features({"image": Image(), "label": Value("int64")}))
    with pytest.raises(SourceError, match="labels up to 1500, beyond ImageNet's 0-999, and the file declares no class"):
        labels_of(path)


def test_case_wnid_string_and_float_labels_are_class_indices(tmp_path):
    wnid = write_parquet(tmp_path / "a" / "train.parquet", ["n01440764", "n02979186"],
                         Features({"image": Image(), "label": Value("string")}))
    assert labels_of(wnid) == [0, 482]
    floats = write_parquet(tmp_path / "b" / "train.parquet", [1.0, 2.0], Features({"image": Image(),
                                                                                   "label": Value("float64")}))
    assert labels_of(floats) == [1, 2]
    bad = write_parquet(tmp_path / "c" / "train.parquet", ["n01440764", "tabby cat?"],
                        Features({"image": Image(), "label": Value("string")}))
    with pytest.raises(SourceError, match=r"'tabby cat\?' is neither a class index nor a wnid"):
        labels_of(bad)


def test_case_an_image_column_of_file_paths_reads_the_files(tmp_path):
    """`Dataset.to_parquet` of an Image() column made from files stores paths, no bytes: the reader reads the files
    (absolute paths, and paths relative to the parquet file); a path that does not exist is a skip naming it."""
    files = tmp_path / "files"
    files.mkdir()
    data = images(3, seed=4)
    paths = []
    for i, b in enumerate(data):
        (files / f"{WNIDS[1]}_{i}.JPEG").write_bytes(b)
        paths.append(str(files / f"{WNIDS[1]}_{i}.JPEG"))
    paths.append(str(files / "gone.JPEG"))
    (files / "gone.JPEG").write_bytes(data[0])  # there when the parquet is written (datasets sizes the files)
    Dataset.from_dict({"image": paths, "label": [1, 1, 1, 1]},
                      features=Features({"image": Image(), "label": Value("int64")})).to_parquet(tmp_path / "abs.parquet")
    (files / "gone.JPEG").unlink()
    stored = pq.read_table(tmp_path / "abs.parquet").column("image").to_pylist()
    assert all(cell["bytes"] is None for cell in stored)  # what datasets writes: paths only
    samples = list(open_source(str(tmp_path / "abs.parquet")).samples())
    assert [s.data for s in samples[:3]] == data
    assert samples[3].data is None and str(files / "gone.JPEG") in samples[3].error
    relative = pa.table({"image": [{"bytes": None, "path": f"files/{Path(p).name}"} for p in paths[:3]],
                         "label": [1, 1, 1]})
    pq.write_table(relative, tmp_path / "rel.parquet")
    assert [s.data for s in open_source(str(tmp_path / "rel.parquet")).samples()] == data


def test_case_a_build_from_path_only_parquet_counts_the_missing_file(inputs, tmp_path, caplog):
    src = tmp_path / "src"
    src.mkdir()
    names = [n for n, label, _ in inputs["written"] if label == CLASSES[1]]
    paths = [str(inputs["folder"] / "train" / WNIDS[CLASSES[1]] / n) for n in names] + [str(tmp_path / "gone.JPEG")]
    (tmp_path / "gone.JPEG").write_bytes(b"x")
    Dataset.from_dict({"image": paths, "label": [CLASSES[1]] * len(paths)},
                      features=Features({"image": Image(), "label": Value("int64")})
                      ).to_parquet(src / "train-00000-of-00001.parquet")
    (tmp_path / "gone.JPEG").unlink()
    assert build_main(build_args(inputs, src, tmp_path / "out") + ["--top-k", "2"]) == 0, caplog.text
    info = json.loads((tmp_path / "out" / "build_info.json").read_text())["stats"]
    assert info["skipped_images"] == 1 and info["images_scanned"] == len(names)
    assert "gone.JPEG" in caplog.text and "cannot be read" in caplog.text


def test_case_null_images_and_plain_binary_columns(tmp_path):
    data = images(3, seed=5)
    table = pa.table({"image": pa.array([data[0], None, data[2]], pa.binary()), "label": [1, 1, 2]})
    pq.write_table(table, tmp_path / "binary.parquet")
    samples = list(open_source(str(tmp_path / "binary.parquet")).samples())
    assert [s.data for s in samples] == [data[0], None, data[2]] and "no image (null)" in samples[1].error
    assert [s.label for s in samples] == [1, 1, 2]


def test_case_images_in_sub_folders_of_a_class_folder(tmp_path):
    """`train/<wnid>/images/*.JPEG`, as torchvision's ImageFolder finds them."""
    data = images(4, seed=6)
    for i, b in enumerate(data):
        folder = tmp_path / "train" / WNIDS[2] / ("images" if i % 2 else "more/deeper")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{WNIDS[2]}_{i}.JPEG").write_bytes(b)
    samples = sorted(open_source(str(tmp_path)).samples(), key=lambda s: s.image_id)
    assert [(s.image_id, s.label, s.data) for s in samples] == [(f"{WNIDS[2]}_{i}", 2, b) for i, b in enumerate(data)]


def test_case_tar_members_apart_all_images_then_all_labels(tmp_path):
    data = images(3, seed=7)
    with tarfile.open(tmp_path / "train-0000.tar", "w") as tar:
        members = [(f"k{i}.jpg", b) for i, b in enumerate(data)] + [(f"k{i}.cls", b"%d" % (i + 1)) for i in range(3)]
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    source = open_source(str(tmp_path))
    assert sorted((s.image_id, s.label, s.data) for s in source.samples()) == [
        (f"k{i}", i + 1, b) for i, b in enumerate(data)]
    plan = source.plan_units({2}, None, 10)  # the local index finds them too
    assert [s.image_id for spec in plan for s in source.unit_samples(spec, {2}, None)] == ["k1"]


def test_case_a_tar_label_given_as_a_wnid(tmp_path):
    with tarfile.open(tmp_path / "train-0000.tar", "w") as tar:
        for name, payload in (("a.jpg", images(1)[0]), ("a.cls", IMAGENETTE[2].encode())):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    assert [s.label for s in open_source(str(tmp_path)).samples()] == [482]


def test_case_a_folder_of_compressed_tars_says_so(tmp_path):
    for i in range(2):
        (tmp_path / f"train-{i:04d}.tar.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(SourceError, match=r"holds 2 compressed tar file\(s\).*decompress them first"):
        open_source(str(tmp_path))
