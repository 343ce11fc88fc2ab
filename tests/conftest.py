"""Fixtures made here, offline: generated images (with ImageNet's quirks), a random-weight model saved in the
robust-library checkpoint layout, and an annotation CSV in the published format."""

import io
import json
import os
import pickle
import shutil
import tarfile
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):  # one process per core (-n auto): one thread each, for torch and the
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # commands the tests start (set before torch is imported)

import pytest
import timm
from datasets import ClassLabel, Dataset, Features, Image
from filelock import FileLock

from salient_imagenet_builder.builder import BuildConfig
from salient_imagenet_builder.builder.demo import make_annotations, make_checkpoint, make_images
from salient_imagenet_builder.core.schema import class_names

CLASSES = [0, 1, 2]
ARCH = "resnet18"  # small and fast; the ResNet-50 layout is tested where it matters (test_model, the demo)


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.getbasetemp() / "hf_datasets_cache"))


# --- built once per run --------------------------------------------------------------------------------------------

def shared_root(tmp_path_factory) -> Path:
    """A folder every process of this run sees: under xdist, the run's temporary folder above the workers' own."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared"


def built_once(tmp_path_factory, name: str, make):
    """`make(folder)` run once per test run, whichever xdist worker asks first (the others wait on a file lock and
    read its pickled result). What it writes into `folder` is shared: tests read it, and copy it to change it."""
    root = shared_root(tmp_path_factory)
    root.mkdir(parents=True, exist_ok=True)
    folder, result = root / name, root / f"{name}.pickle"
    with FileLock(str(root / f"{name}.lock")):
        if not result.is_file():
            if folder.exists():  # a worker that failed half-way
                shutil.rmtree(folder)
            folder.mkdir()
            value = make(folder)
            result.write_bytes(pickle.dumps(value))
            return value
    return pickle.loads(result.read_bytes())


def build_top7(inputs, root: Path, **fields) -> Path:
    """The fixture images built with top-k 7 (so pairs have ranks beyond the top 5): the generalization study's
    build (`built_once(..., "top7", ...)` shares it between modules)."""
    from salient_imagenet_builder.builder import BuildConfig, build

    out = root / fields.pop("name", "salient")
    build(BuildConfig(**{"source": str(inputs["folder"]), "out": str(out), "model": ARCH,
                         "model_checkpoint": str(inputs["checkpoint"]), "annotations": str(inputs["annotations"]),
                         "classes": CLASSES, "top_k": 7, "group_by": "label", "workers": 0, "batch_size": 8,
                         "cache_dir": str(root / "cache"), **fields}))
    return out


def pytest_sessionfinish(session, exitstatus):
    """The shared folder goes with a passing run, as the workers' folders do (tmp_path_retention_policy)."""
    if exitstatus == 0 and not os.environ.get("PYTEST_XDIST_WORKER") and hasattr(session.config, "_tmp_path_factory"):
        factory = session.config._tmp_path_factory
        if factory._basetemp is not None:
            shutil.rmtree(factory.getbasetemp() / "shared", ignore_errors=True)


def _make_inputs(root: Path) -> dict:
    written = make_images(root / "imagenet", CLASSES, per_class=7, seed=1)
    num_features = timm.create_model(ARCH, pretrained=False).num_features
    return {
        "root": root,
        "folder": root / "imagenet",
        "written": written,
        "checkpoint": make_checkpoint(root / f"{ARCH}.ckpt", ARCH, seed=3, classes=CLASSES),
        "annotations": make_annotations(root / "annotations.csv", CLASSES, num_features, seed=2),
    }


@pytest.fixture(scope="session")
def inputs(tmp_path_factory) -> dict:
    return built_once(tmp_path_factory, "inputs", _make_inputs)


@pytest.fixture(scope="session")
def parquet_source(inputs, tmp_path_factory) -> Path:
    return built_once(tmp_path_factory, "parquet", lambda root: _make_parquet_source(inputs, root))


def _make_parquet_source(inputs, root: Path) -> Path:
    """The same images as Hugging Face parquet shards (image struct with the original path, ClassLabel label)."""
    folder = root / "parquet" / "data"
    folder.mkdir(parents=True)
    written = inputs["written"]
    features = Features({"image": Image(), "label": ClassLabel(names=class_names())})
    half = len(written) // 2
    for i, part in enumerate((written[:half], written[half:])):
        Dataset.from_dict({"image": [{"bytes": b, "path": n} for n, _, b in part], "label": [y for _, y, _ in part]},
                          features=features).to_parquet(folder / f"train-{i:05d}-of-00002.parquet")
    return folder.parent


@pytest.fixture(scope="session")
def webdataset_source(inputs, tmp_path_factory) -> Path:
    return built_once(tmp_path_factory, "webdataset", lambda root: _make_webdataset_source(inputs, root))


def _make_webdataset_source(inputs, root: Path) -> Path:
    """The same images as WebDataset tars: `<key>.jpg`, `<key>.cls`, `<key>.json` (file name inside the json)."""
    folder = root / "wds"
    folder.mkdir()
    written = inputs["written"]
    half = len(written) // 2
    for i, part in enumerate((written[:half], written[half:])):
        with tarfile.open(folder / f"imagenet1k-train-{i:04d}.tar", "w") as tar:
            for j, (name, label, data) in enumerate(part):
                key = f"s{i}{j:05d}"
                for ext, payload in (("jpg", data), ("cls", str(label).encode()),
                                     ("json", json.dumps({"filename": name}).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return folder


@pytest.fixture
def config(inputs, tmp_path):
    def make(**overrides) -> BuildConfig:
        fields = dict(source=str(inputs["folder"]), out=str(tmp_path / "out"), model=ARCH,
                      model_checkpoint=str(inputs["checkpoint"]), annotations=str(inputs["annotations"]),
                      workers=0, batch_size=8, cache_dir=str(tmp_path / "cache"))
        fields.update(overrides)
        return BuildConfig(**fields)

    return make


STUDY_ARGS = ["--classes", "0-2", "--features-per-class", "2", "--top-images", "3", "--attack-steps", "2",
              "--group-by", "label", "--workers", "0", "--batch-size", "8"]


@pytest.fixture(scope="session")
def study(inputs, tmp_path_factory) -> Path:
    return built_once(tmp_path_factory, "study", lambda root: _make_study(inputs, root))


def _make_study(inputs, root: Path) -> Path:
    """A discovery study of the fixture images (the resnet18 checkpoint), made by the real command."""
    from salient_imagenet_builder.cli import main
    from salient_imagenet_builder.discovery import panels

    out = root / "study"
    saved, panels.CHUNK_CLASSES = panels.CHUNK_CLASSES, 2  # two chunks of panels
    try:
        code = main(["discover", "--source", str(inputs["folder"]), "--model", ARCH, "--model-checkpoint",
                     str(inputs["checkpoint"]), "--out", str(out), *STUDY_ARGS])
    finally:
        panels.CHUNK_CLASSES = saved
    assert code == 0
    return out


def as_legacy_build(build: Path, out: Path, legacy: str, **writer_options) -> Path:
    """A copy of `build` in an older layout (`schema.LEGACY_LAYOUTS`: "array2d", the 0.x builds' Array2D maps, or
    "lists", the first builds' nested lists; neither has the image sizes), written with the real writer and card,
    as those versions wrote them (`writer_options`: the ShardWriter's, e.g. row_group_rows)."""
    import numpy as np
    import pyarrow.parquet as pq

    from salient_imagenet_builder.core.card import BuildStats, read_build_info, write_card
    from salient_imagenet_builder.core.writer import ShardWriter, encode_rows

    shutil.copytree(build, out)
    info = read_build_info(out)
    stats = BuildStats.from_dict({**info["stats"], "legacy_layout": legacy,
                                  "map_shape": None if legacy == "lists" else info["stats"]["map_shape"]})
    features = stats.image_features()
    rows = []
    for shard in sorted((out / "data").glob(f"{info['split']}-*.parquet")):
        rows += pq.read_table(shard).to_pylist()
        shard.unlink()
    for row in rows:
        del row["original_width"], row["original_height"]
        for feature in row["features"]:
            feature["nam"] = np.reshape(feature["nam"], info["stats"]["map_shape"]).tolist()
    writer = ShardWriter(out / "data", info["split"], features, group_column="group", **writer_options)
    writer.write(encode_rows(rows, features))
    stats.default_shards = [p.name for p in writer.close()]
    write_card(out, info["provenance"], stats, info["split"])
    return out
