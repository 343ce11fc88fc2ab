"""Reads proportional to the job: the bytes a build downloads from a Hub parquet source (counted by the local Hub
server), against what a careful reader needs, computed here from the file's own metadata; joins by id that read
only what they join (`attach` reads each row group it needs once); `show` that reads only the row groups of the
class it shows."""

import io
import json
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import CLASSES
from datasets import ClassLabel, Features, Image
from PIL import Image as PILImage
from test_attach import builds  # noqa: F401 (the masks-only build in several shards)

from salient_imagenet_builder.core.schema import class_names, wordnet_ids
from salient_imagenet_builder.core.sources import open_source

try:
    from tests.hub_server import HubServer
except ImportError:
    from hub_server import HubServer

ROOT = Path(__file__).resolve().parents[1]
PER_CLASS, GROUP_ROWS = 30, 6  # 3 classes sorted by label: 15 row groups, 5 per class
FOOTER_READ = 64 * 1024  # pyarrow's speculative read of a file's tail (its footer)
TRIAL_CLASS = CLASSES[1]


def noise_jpeg(rng: np.random.Generator, size: int = 128) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def sorted_parquet(tmp_path_factory) -> dict:
    """One Hub-style parquet file, rows sorted by label, small row groups; where every image id lives."""
    rng = np.random.default_rng(0)
    rows = [(f"{wordnet_ids()[c]}_{n}.JPEG", c, noise_jpeg(rng)) for c in CLASSES for n in range(PER_CLASS)]
    features = Features({"image": Image(), "label": ClassLabel(names=class_names())})
    table = pa.table({"image": [{"bytes": b, "path": name} for name, _, b in rows], "label": [c for _, c, _ in rows]},
                     schema=features.arrow_schema)
    path = tmp_path_factory.mktemp("sorted") / "train-00000-of-00001.parquet"
    pq.write_table(table, path, row_group_size=GROUP_ROWS)
    group_of = {Path(name).stem: i // GROUP_ROWS for i, (name, _, _) in enumerate(rows)}
    return {"path": path, "group_of": group_of}


def column_bytes(meta, groups, leaves) -> int:
    """The compressed bytes of some leaf columns in some row groups: what reading them costs."""
    total = 0
    for g in groups:
        group = meta.row_group(g)
        total += sum(group.column(i).total_compressed_size for i in range(group.num_columns)
                     if group.column(i).path_in_schema in leaves)
    return total


def careful_bytes(path: Path, pass1_groups, pass2_groups) -> int:
    """A careful reader: the footer, the label column, the image column of the groups each pass needs."""
    meta = pq.ParquetFile(path).metadata
    size = path.stat().st_size
    labels = column_bytes(meta, range(meta.num_row_groups), {"label"})
    images = column_bytes(meta, pass1_groups, {"image.bytes", "image.path"}) + \
        column_bytes(meta, pass2_groups, {"image.bytes", "image.path"})
    return min(size, FOOTER_READ) + labels + images


@pytest.fixture(scope="module")
def hub_builds(inputs, sorted_parquet, tmp_path_factory):
    """Three trial builds of one class from the Hub copy; the bytes the server sent for each."""
    root = tmp_path_factory.mktemp("hub_builds")
    made = {}
    with HubServer(token="hf_reads_token", user="user") as hub:
        hub.seed("user/sorted", {"data/train-00000-of-00001.parquet": sorted_parquet["path"].read_bytes()})
        for name, extra in (("trial", ["--top-k", "2"]), ("none", ["--top-k", "2", "--image-mode", "none"]),
                            ("all", ["--top-k", "all"])):
            hub.clear_requests()
            out = root / name
            result = subprocess.run(
                [sys.executable, str(ROOT / "build_dataset.py"), "--source", "user/sorted", "--out", str(out),
                 "--classes", str(TRIAL_CLASS), "--group-by", "label", "--model", "resnet18", "--model-checkpoint",
                 str(inputs["checkpoint"]), "--annotations", str(inputs["annotations"]), "--workers", "0",
                 "--batch-size", "8", *extra],
                env=hub.client_env(root / f"hf-{name}"), capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, result.stderr[-3000:]
            sent = sum(r.sent for r in hub.requests if r.method == "GET" and "/resolve/" in r.path)
            made[name] = {"out": out, "sent": sent, "stdout": result.stdout}
    return made


def groups_of_class(sorted_parquet, label) -> set[int]:
    return {g for image_id, g in sorted_parquet["group_of"].items() if image_id.startswith(wordnet_ids()[label])}


def selected_groups(sorted_parquet, out: Path) -> set[int]:
    ids = pq.read_table(out / "data" / "train-00000-of-00001.parquet", columns=["image_id"]).column(0).to_pylist()
    return {sorted_parquet["group_of"][i] for i in ids}


def test_a_one_class_trial_downloads_what_a_careful_reader_needs(hub_builds, sorted_parquet):
    """`--classes C --top-k 2 --group-by label` from a Hub copy: pass 1 fetches the class's row groups only, pass 2
    the groups holding the selected images only; the summary and build_info say what was read, and it is what the
    server sent (issue: 7.8 x the file before, ~0.4-0.7 x for a careful reader)."""
    build, path = hub_builds["trial"], sorted_parquet["path"]
    careful = careful_bytes(path, groups_of_class(sorted_parquet, TRIAL_CLASS),
                            selected_groups(sorted_parquet, build["out"]))
    assert build["sent"] <= careful * 1.02, (build["sent"], careful)
    assert build["sent"] <= 0.72 * path.stat().st_size
    stats = json.loads((build["out"] / "build_info.json").read_text())["stats"]
    assert stats["source_bytes"]["total"] == build["sent"]
    assert stats["source_bytes"]["pass 2"] > 0 and stats["source_size"] == path.stat().st_size
    assert f"Read {build['sent'] / 1e6:.1f} MB of the source's {path.stat().st_size / 1e6:.1f} MB" in build["stdout"]


def test_a_masks_only_trial_reads_no_image_twice(hub_builds, sorted_parquet):
    """`--image-mode none`: pass 2 needs no image, so it reads nothing (~0.35 x the file)."""
    build, path = hub_builds["none"], sorted_parquet["path"]
    careful = careful_bytes(path, groups_of_class(sorted_parquet, TRIAL_CLASS), set())
    assert build["sent"] <= careful * 1.02, (build["sent"], careful)
    assert build["sent"] <= 0.4 * path.stat().st_size
    stats = json.loads((build["out"] / "build_info.json").read_text())["stats"]
    assert stats["source_bytes"]["pass 2"] == 0 and stats["source_bytes"]["total"] == build["sent"]


def test_an_all_images_trial_reads_the_class_once(hub_builds, sorted_parquet):
    """`--top-k all`: one pass over the class's row groups (~0.35 x the file)."""
    build, path = hub_builds["all"], sorted_parquet["path"]
    careful = careful_bytes(path, groups_of_class(sorted_parquet, TRIAL_CLASS), set())
    assert build["sent"] <= careful * 1.02, (build["sent"], careful)
    assert build["sent"] <= 0.4 * path.stat().st_size
    rows = pq.read_table(build["out"] / "data" / "train-00000-of-00001.parquet", columns=["label"])
    assert rows.num_rows == PER_CLASS


def test_a_parquet_copy_is_joined_by_its_path_column_without_image_bytes(sorted_parquet):
    """Indexing a parquet copy by id reads its path column, not its images; then only the named images."""
    source = open_source(str(sorted_parquet["path"]))
    wanted = {f"{wordnet_ids()[CLASSES[2]]}_{n}" for n in (3, 17)} | {"n09999999_1"}
    with source.io.measure() as indexed:
        refs = source.index_ids(wanted)
    meta = pq.ParquetFile(sorted_parquet["path"]).metadata
    assert set(refs) == wanted - {"n09999999_1"}
    assert indexed.bytes < column_bytes(meta, range(meta.num_row_groups), {"image.bytes"}) / 20
    with source.io.measure() as read:
        images = dict(source.read_many(refs.values()))
    groups = {sorted_parquet["group_of"][i] for i in refs}
    assert read.bytes <= column_bytes(meta, groups, {"image.bytes", "image.path"})
    assert len(images) == 2


def test_a_folder_copy_is_joined_by_file_name_opening_only_the_named_files(tmp_path):
    """`evaluate --imagenet DIR`: 75 unrelated files in three class folders are never opened: the bytes read are
    exactly the named files' sizes."""
    rng, wnids = np.random.default_rng(1), wordnet_ids()
    for c in CLASSES:
        folder = tmp_path / "train" / wnids[c]
        folder.mkdir(parents=True)
        for n in range(25):
            (folder / f"{wnids[c]}_{n}.JPEG").write_bytes(noise_jpeg(rng, 32))
    wanted = {f"{wnids[CLASSES[0]]}_4", f"{wnids[CLASSES[2]]}_11"}
    source = open_source(str(tmp_path))
    refs = source.index_ids(wanted)
    assert source.io.total == 0
    with source.io.measure() as reads:
        read = dict(source.read_many(refs.values()))
    expected = sum((tmp_path / "train" / ref).stat().st_size for ref in refs.values())
    assert reads.bytes == expected and len(read) == 2


def test_a_local_tar_trial_reads_headers_and_the_wanted_images_only(tmp_path):
    """WebDataset: a `--classes` trial indexes each local tar by its headers and small members, then reads the
    wanted images by offset: far less than the tars, and at least the wanted images."""
    rng, wnids = random.Random(2), wordnet_ids()
    image_bytes = {}
    for shard in range(2):
        with tarfile.open(tmp_path / f"train-{shard:04d}.tar", "w") as tar:
            for n in range(30):
                c = CLASSES[rng.randrange(3)]
                key = f"{wnids[c]}_{shard}_{n}"
                data = noise_jpeg(np.random.default_rng(n + 100 * shard))
                image_bytes[key] = (c, len(data))
                for ext, payload in (("jpg", data), ("cls", str(c).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    source = open_source(str(tmp_path))
    plan = source.plan_units({TRIAL_CLASS}, None, 100)
    planned = source.io.total
    with source.io.measure() as read:
        samples = [s for spec in plan for s in source.unit_samples(spec, {TRIAL_CLASS}, None)]
    wanted = sorted(k for k, (c, _) in image_bytes.items() if c == TRIAL_CLASS)
    assert sorted(s.image_id for s in samples) == wanted
    assert read.bytes == sum(image_bytes[k][1] for k in wanted)  # pass 1: the wanted images, nothing else
    tars = sum(p.stat().st_size for p in tmp_path.glob("*.tar"))
    headers = 2 * 512 * len(image_bytes) + 2 * 1024  # a header per member, the archives' end blocks
    assert planned <= headers + sum(len(str(c)) for c, _ in image_bytes.values()) < tars / 10


def test_show_on_the_hub_reads_only_the_row_groups_of_the_class(hub_builds, tmp_path):
    """`show` of one class of a Hub dataset: a footer per shard and the class's row groups, not whole shards."""
    out = hub_builds["all"]["out"]
    files = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code = ("import sys; from salient_imagenet_builder.core.dataset import DatasetView\n"
            "view = DatasetView('user/shown')\n"
            f"print(sum(len(v) for v in view.class_images({TRIAL_CLASS}, 3).values()))\n"
            f"print(len(view.class_images({CLASSES[0]}, 3)))\n")
    with HubServer(token="hf_reads_token", user="user") as hub:
        hub.seed("user/shown", files)
        hub.clear_requests()
        result = subprocess.run([sys.executable, "-c", code], env=hub.client_env(tmp_path / "hf"),
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        sent = sum(r.sent for r in hub.requests if r.method == "GET" and "/resolve/" in r.path
                   and "/data/train-" in r.path)
    shown, other = map(int, result.stdout.split())
    assert shown > 0 and other == 0  # the class's images are there; an absent class reads only footers
    shard = out / "data" / "train-00000-of-00001.parquet"
    meta = pq.ParquetFile(shard).metadata
    groups = column_bytes(meta, range(meta.num_row_groups), {meta.row_group(0).column(i).path_in_schema
                                                              for i in range(meta.num_columns)})
    footers = 2 * min(shard.stat().st_size, FOOTER_READ)
    assert sent <= footers + groups, (sent, footers, groups)


def test_discover_reads_its_classes_row_groups_and_the_panels_images(inputs, sorted_parquet, tmp_path):
    """discover --classes C on a label-sorted parquet file: its scan reads the class's row groups only, its panels
    the groups holding the images they show; discover_info says so."""
    from salient_imagenet_builder.cli import main

    out = tmp_path / "study"
    code = main(["discover", "--source", str(sorted_parquet["path"]), "--model", "resnet18", "--model-checkpoint",
                 str(inputs["checkpoint"]), "--out", str(out), "--classes", str(TRIAL_CLASS), "--group-by", "label",
                 "--features-per-class", "2", "--top-images", "2", "--attack-steps", "0", "--workers", "0",
                 "--batch-size", "8"])
    assert code == 0
    info = json.loads((out / "discover_info.json").read_text())
    path, meta = sorted_parquet["path"], pq.ParquetFile(sorted_parquet["path"]).metadata
    image_leaves = {"image.bytes", "image.path"}
    assert info["source_bytes"]["scan"] == column_bytes(meta, groups_of_class(sorted_parquet, TRIAL_CLASS), image_leaves)
    shown = {sorted_parquet["group_of"][i] for pair in info["pairs"] for i in pair["top_image_ids"]}
    assert column_bytes(meta, shown, image_leaves) <= info["source_bytes"]["panels"] <= \
        column_bytes(meta, groups_of_class(sorted_parquet, TRIAL_CLASS), image_leaves)
    assert info["source_bytes"]["plan"] <= min(path.stat().st_size, FOOTER_READ) + column_bytes(
        meta, range(meta.num_row_groups), {"label"})


@pytest.fixture(scope="module")
def shuffled_copy(inputs, tmp_path_factory) -> dict:
    """The fixture images' file names on bigger noise images, shuffled into one parquet file with its images inside,
    in row groups of 4: the masks-only build's shards need images of the same row groups. Where every id lives."""
    rng = np.random.default_rng(4)
    written = inputs["written"]
    rows = [(written[i][0], written[i][1], noise_jpeg(rng, 256)) for i in rng.permutation(len(written))]
    features = Features({"image": Image(), "label": ClassLabel(names=class_names())})
    table = pa.table({"image": [{"bytes": b, "path": name} for name, _, b in rows], "label": [c for _, c, _ in rows]},
                     schema=features.arrow_schema)
    path = tmp_path_factory.mktemp("shuffled") / "train-00000-of-00001.parquet"
    pq.write_table(table, path, row_group_size=4)
    return {"path": path, "group_of": {Path(name).stem: i // 4 for i, (name, _, _) in enumerate(rows)}}


def attach_careful_bytes(builds, shuffled_copy) -> tuple[int, int]:
    """What attach needs of the copy: to index it, the footer and the `path` column; then the image column of each
    row group holding an image of the dataset, once (its shards share row groups: read per shard, some twice)."""
    path, group_of = shuffled_copy["path"], shuffled_copy["group_of"]
    shards = sorted((builds["none"] / "data").glob("train-*.parquet"))
    by_shard = [{group_of[i] for i in pq.read_table(s, columns=["image_id"]).column(0).to_pylist()} for s in shards]
    needed = set().union(*by_shard)
    assert sum(map(len, by_shard)) > len(needed)
    meta = pq.ParquetFile(path).metadata
    index = min(path.stat().st_size, FOOTER_READ) + column_bytes(meta, range(meta.num_row_groups), {"image.path"})
    return index, column_bytes(meta, needed, {"image.bytes", "image.path"})


def assert_attach_reads(full: Path, stdout: str, size: int, index: int, images: int) -> int:
    """attach_info's count and what attach printed; returns the bytes read."""
    read = json.loads((full / "attach_info.json").read_text())
    total = read["source_bytes"]["index"] + read["source_bytes"]["images"]
    assert read["source_bytes"]["images"] == images and read["source_bytes"]["index"] <= index
    assert read["source_size"] == size
    assert (f"Read {total / 1e6:.1f} MB of the copy's {size / 1e6:.1f} MB (index "
            f"{read['source_bytes']['index'] / 1e6:.1f} MB, images {images / 1e6:.1f} MB).") in stdout
    return total


def test_attach_from_a_parquet_copy_reads_each_needed_row_group_once(builds, shuffled_copy, tmp_path,  # noqa: F811
                                                                     capsys):
    """Issue 24.11: a parquet copy with its images inside. Indexing reads the `path` column, no image bytes; then
    each row group that holds an image of the dataset is read once, whichever shards need it (before: about twice
    the copy, each shard reading the row groups it needed)."""
    from salient_imagenet_builder.cli import main

    path, full = shuffled_copy["path"], tmp_path / "full"
    index, images = attach_careful_bytes(builds, shuffled_copy)
    assert main(["attach", str(builds["none"]), "--imagenet", str(path), "--out", str(full), "--workers", "0"]) == 0
    total = assert_attach_reads(full, capsys.readouterr().out, path.stat().st_size, index, images)
    assert total <= index + images < path.stat().st_size + FOOTER_READ


def test_attach_from_a_hub_parquet_copy_downloads_each_needed_row_group_once(builds, shuffled_copy,  # noqa: F811
                                                                             tmp_path):
    """The same copy on the Hub (the local server): what the server sent is what attach says it read, and what a
    careful reader needs."""
    path, full = shuffled_copy["path"], tmp_path / "full"
    index, images = attach_careful_bytes(builds, shuffled_copy)
    with HubServer(token="hf_reads_token", user="user") as hub:
        hub.seed("user/shuffled", {"data/train-00000-of-00001.parquet": path.read_bytes()})
        hub.clear_requests()
        done = subprocess.run([sys.executable, "-m", "salient_imagenet_builder.cli", "attach", str(builds["none"]),
                               "--imagenet", "user/shuffled", "--out", str(full), "--workers", "0"], cwd=ROOT,
                              env=hub.client_env(tmp_path / "hf"), capture_output=True, text=True, timeout=300)
        sent = sum(r.sent for r in hub.requests if r.method == "GET" and "/resolve/" in r.path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert assert_attach_reads(full, done.stdout, path.stat().st_size, index, images) == sent
