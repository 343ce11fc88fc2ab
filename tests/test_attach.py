"""`salient-imagenet attach`: a masks-only build with the user's ImageNet copy joined by image_id equals the build
that stored the images itself, row for row; only the images the dataset names are read; images the copy lacks fail
the command in one line unless --allow-missing; an interrupted attach resumes from its finished shards."""

import io
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ARCH, as_legacy_build, built_once
from datasets import load_dataset
from PIL import Image

from salient_imagenet_builder.attach import AttachConfig, attach
from salient_imagenet_builder.attach import join as join_mod
from salient_imagenet_builder.builder import BuildConfig, build
from salient_imagenet_builder.cli import main
from salient_imagenet_builder.core.constants import WORK_DIR
from salient_imagenet_builder.core.errors import UserError
from salient_imagenet_builder.core.output import staging_folder
from salient_imagenet_builder.core.sources import open_source
from salient_imagenet_builder.core.units import WorkMismatch
from salient_imagenet_builder.publish.validate import check

try:
    from tests.hub_server import HubServer
except ImportError:
    from hub_server import HubServer

ROOT = Path(__file__).resolve().parents[1]
TOKEN, REPO = "hf_attach_token_123", "user/salient_imagenet_masks"
SMALL_SHARDS = 60_000  # bytes: the masks-only build is cut into several shards, so attach has several units
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # datasets' Image() column


def _build(inputs, out: Path, image_mode: str, **extra) -> Path:
    build(BuildConfig(source=str(inputs["folder"]), out=str(out), model=ARCH,
                      model_checkpoint=str(inputs["checkpoint"]), annotations=str(inputs["annotations"]), workers=0,
                      batch_size=8, top_k=3, group_by="label", image_mode=image_mode,
                      cache_dir=str(out.parent / "cache"), **extra))
    return out


@pytest.fixture(scope="module")
def builds(inputs, tmp_path_factory) -> dict:
    """The same source built three ways: masks only (in several shards), crop and original."""
    def make(root: Path) -> dict:
        return {"none": _build(inputs, root / "none", "none", max_shard_bytes=SMALL_SHARDS),
                "crop": _build(inputs, root / "crop", "crop"), "original": _build(inputs, root / "original", "original")}

    return built_once(tmp_path_factory, "test_attach", make)


def rows_of(folder: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted((folder / "data").glob("train-*.parquet"))])


def assert_same_dataset(full: Path, reference: Path) -> None:
    """Every column equal to the reference build's, the images decoded to the same pixels; the annotations config
    byte for byte the masks-only build's (which equals the reference's)."""
    got, want = rows_of(full), rows_of(reference)
    assert got.schema == want.schema and got.num_rows == want.num_rows > 0
    for name in got.column_names:
        if name != "image":
            assert got.column(name).equals(want.column(name)), name
    for a, b in zip(got.column("image").to_pylist(), want.column("image").to_pylist()):
        assert a is not None
        np.testing.assert_array_equal(pixels(a["bytes"]), pixels(b["bytes"]))
    assert (full / "data" / "annotations-00000-of-00001.parquet").read_bytes() == \
        (reference / "data" / "annotations-00000-of-00001.parquet").read_bytes()
    loaded = load_dataset(str(full), split="train")
    assert loaded["image_id"] == want.column("image_id").to_pylist()
    np.testing.assert_array_equal(np.asarray(loaded[0]["image"]), pixels(want.column("image")[0].as_py()["bytes"]))
    assert check(str(full)) == []


@pytest.mark.parametrize("legacy", ["array2d", "lists"])
def test_an_older_builds_masks_attach_into_this_versions_layout(builds, inputs, tmp_path, legacy):
    """A masks-only build of an older version (Array2D or nested-list maps, no image sizes) attaches to exactly the
    crop build of the same images in this version's layout: the maps flattened, each image's size from its file."""
    older = as_legacy_build(builds["none"], tmp_path / "older", legacy, max_shard_bytes=SMALL_SHARDS)
    assert len(list((older / "data").glob("train-*.parquet"))) > 1
    full = tmp_path / "full"
    attach(AttachConfig(dataset=str(older), imagenet=str(inputs["folder"]), out=str(full), workers=0))
    assert_same_dataset(full, builds["crop"])
    assert check(str(full)) == []


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_attach_of_a_masks_only_build_equals_the_crop_build_row_for_row(builds, inputs, tmp_path):
    full = tmp_path / "full"
    summary = attach(AttachConfig(dataset=str(builds["none"]), imagenet=str(inputs["folder"]), out=str(full),
                                  workers=0))
    assert len(list((builds["none"] / "data").glob("train-*.parquet"))) > 1  # several units
    assert_same_dataset(full, builds["crop"])
    assert summary["not_attached"] == 0 and summary["attached"] == summary["rows"] == rows_of(full).num_rows
    info = json.loads((full / "build_info.json").read_text())
    assert info["provenance"]["constants"]["image_mode"] == "crop"
    assert info["stats"]["attached"]["imagenet"] == "ImageNet folder train"  # no local absolute path is published
    card = (full / "README.md").read_text()
    assert "joined by `salient-imagenet attach` from ImageNet folder train" in card and str(inputs["root"]) not in card
    assert json.loads((full / "attach_info.json").read_text())["missing"] == []
    assert not staging_folder(full).exists()


def test_attach_from_a_parquet_copy_equals_the_original_build(builds, parquet_source, tmp_path):
    full = tmp_path / "full"
    attach(AttachConfig(dataset=str(builds["none"]), imagenet=str(parquet_source), out=str(full),
                        image_mode="original", workers=1))
    assert_same_dataset(full, builds["original"])
    got, want = rows_of(full).column("image"), rows_of(builds["original"]).column("image")
    assert got.equals(want)  # the source's bytes, as the original build stored them


def test_only_the_images_the_dataset_names_are_read(builds, inputs, tmp_path):
    """Indexing a folder reads no file; then exactly the files of the dataset's rows are read, no other."""
    full = tmp_path / "full"
    summary = attach(AttachConfig(dataset=str(builds["none"]), imagenet=str(inputs["folder"]), out=str(full),
                                  workers=0))
    source = open_source(str(inputs["folder"]))
    ids = set(rows_of(builds["none"]).column("image_id").to_pylist())
    refs = source.index_ids(ids)
    named = sum((source.dir / ref).stat().st_size for ref in refs.values())
    everything = sum(p.stat().st_size for p in source.dir.rglob("*.JPEG"))
    assert summary["source_bytes"] == {"index": 0, "images": named}
    assert len(refs) == len(ids) and named < everything


def test_missing_images_fail_in_one_line_unless_allowed(builds, inputs, tmp_path, caplog, capsys):
    copy = tmp_path / "imagenet"
    shutil.copytree(inputs["folder"], copy)
    ids = rows_of(builds["none"]).column("image_id").to_pylist()
    gone, broken = ids[0], ids[-1]
    next(copy.rglob(f"{gone}.*")).unlink()
    next(copy.rglob(f"{broken}.*")).write_bytes(b"not a jpeg")
    full = tmp_path / "full"
    command = ["attach", str(builds["none"]), "--imagenet", str(copy), "--out", str(full), "--workers", "0"]
    assert main(command) == 1
    lines = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(lines) == 1 and "\n" not in lines[0] and "Traceback" not in caplog.text
    assert lines[0] == (f"1 image(s) of {builds['none']} not found in {copy} (split 'train'), e.g. {gone}; put them in "
                        "place and rerun, or pass --allow-missing to attach the rest (their rows keep no image; "
                        f"{full / 'attach_info.json'} lists them)")
    assert not full.exists() and not staging_folder(full).exists()
    assert main([*command, "--allow-missing"]) == 0
    assert f"2 row(s) keep no image (--allow-missing); {full / 'attach_info.json'} lists them." in capsys.readouterr().out
    info = json.loads((full / "attach_info.json").read_text())
    assert info["missing"] == [gone] and [u["image_id"] for u in info["unreadable"]] == [broken]
    assert info["not_attached"] == 2 and info["attached"] == len(ids) - 2
    rows = {r["image_id"]: r["image"] for r in rows_of(full).select(["image_id", "image"]).to_pylist()}
    assert rows[gone] is None and rows[broken] is None and sum(v is None for v in rows.values()) == 2
    assert "| rows without an image (not found in, or not decoded from, the attached ImageNet copy) | 2 |" in \
        (full / "README.md").read_text()
    assert check(str(full)) == []


def test_an_interrupted_attach_resumes_from_its_finished_shards(builds, inputs, tmp_path, monkeypatch):
    full, calls = tmp_path / "full", []
    config = AttachConfig(dataset=str(builds["none"]), imagenet=str(inputs["folder"]), out=str(full), workers=0)
    original = join_mod.JoinWorker.__call__

    def stop_at_second(self, unit):
        if len(calls) == 1:
            raise KeyboardInterrupt
        calls.append(unit.index)
        return original(self, unit)

    monkeypatch.setattr(join_mod.JoinWorker, "__call__", stop_at_second)
    with pytest.raises(KeyboardInterrupt):
        attach(config)
    assert not full.exists()
    assert sorted(p.name for p in (staging_folder(full) / WORK_DIR / "join").glob("*.done.json")) == ["00000.done.json"]
    monkeypatch.setattr(join_mod.JoinWorker, "__call__", lambda self, unit: calls.append(unit.index) or
                        original(self, unit))
    with pytest.raises(WorkMismatch, match=r"\(--image-mode was crop, now original\); rerun that command to resume it"):
        attach(replace(config, image_mode="original"))  # other settings: refused, the finished shard kept
    attach(config)
    shards = len(list((builds["none"] / "data").glob("train-*.parquet")))
    assert calls == list(range(shards))  # unit 0 once, before the interruption; the others after
    assert_same_dataset(full, builds["crop"])


def test_a_dataset_that_is_no_build_is_refused_in_one_line(builds, inputs, tmp_path):
    (tmp_path / "not_a_build").mkdir()
    with pytest.raises(UserError) as e:
        attach(AttachConfig(dataset=str(tmp_path / "not_a_build"), imagenet=str(inputs["folder"]),
                            out=str(tmp_path / "full")))
    assert "not a Salient ImageNet build" in str(e.value)


def test_attach_of_a_hub_dataset_from_a_webdataset_copy(builds, webdataset_source, tmp_path):
    """DATASET a Hub repo (the local server that speaks the Hub's protocol), the copy WebDataset tars."""
    with HubServer(token=TOKEN, user="user") as hub:
        env = hub.client_env(tmp_path / "hf")
        pushed = subprocess.run([sys.executable, str(ROOT / "build_dataset.py"), "--push", "--out",
                                 str(builds["none"]), "--repo-id", REPO], env=env, capture_output=True, text=True,
                                timeout=300, check=False)
        assert pushed.returncode == 0, pushed.stderr[-3000:]
        full = tmp_path / "full"
        done = subprocess.run([sys.executable, "-m", "salient_imagenet_builder.cli", "attach", REPO, "--imagenet",
                               str(webdataset_source), "--out", str(full), "--workers", "1"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
    assert f"Attached {rows_of(full).num_rows} of {rows_of(full).num_rows} images" in done.stdout
    assert_same_dataset(full, builds["crop"])


def test_an_image_that_does_not_decode_fails_after_the_shards_and_resumes_with_allow_missing(builds, inputs, tmp_path,
                                                                                             caplog, monkeypatch):
    copy = tmp_path / "imagenet"
    shutil.copytree(inputs["folder"], copy)
    broken = rows_of(builds["none"]).column("image_id").to_pylist()[-1]
    next(copy.rglob(f"{broken}.*")).write_bytes(b"not a jpeg")
    full = tmp_path / "full"
    command = ["attach", str(builds["none"]), "--imagenet", str(copy), "--out", str(full), "--workers", "0"]
    assert main(command) == 1
    line = next(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert line.startswith(f"1 image(s) of {builds['none']} in {copy} could not be decoded, e.g. {broken} (")
    assert line.endswith(f"; the finished shards are kept in {staging_folder(full)}: rerun with --allow-missing to "
                         f"attach the rest (their rows keep no image; {full / 'attach_info.json'} lists them), or "
                         "replace those files and run the same command again (it joins again only the shards that "
                         "hold them)")
    shards = len(list((builds["none"] / "data").glob("train-*.parquet")))
    assert len(list((staging_folder(full) / WORK_DIR / "join").glob("*.done.json"))) == shards
    assert not full.exists()
    calls = []
    monkeypatch.setattr(join_mod.JoinWorker, "__call__", lambda self, unit: calls.append(unit.index))
    assert main([*command, "--allow-missing"]) == 0
    assert calls == []  # every shard was done: none is joined again
    assert json.loads((full / "attach_info.json").read_text())["unreadable"][0]["image_id"] == broken


def error_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


def test_a_rerun_after_replacing_undecodable_files_joins_their_shards_again(builds, inputs, tmp_path, caplog,
                                                                            monkeypatch):
    """Issue 24.9: files that did not decode, in the first and the last shard. Rerun as they are: the same line,
    no shard joined again. One replaced by the good file: the same command (no --restart) reads it again, joins only
    its shard again and says so, and fails on the other alone. Both replaced: it succeeds, the crop build's rows."""
    caplog.set_level("INFO")
    copy = tmp_path / "imagenet"
    shutil.copytree(inputs["folder"], copy)
    shards = sorted((builds["none"] / "data").glob("train-*.parquet"))
    first, last = [pq.read_table(s, columns=["image_id"]).column(0)[0].as_py() for s in (shards[0], shards[-1])]
    files = {i: next(copy.rglob(f"{i}.*")) for i in (first, last)}
    good = {i: f.read_bytes() for i, f in files.items()}
    for f in files.values():
        f.write_bytes(b"not a jpeg")
    full = tmp_path / "full"
    command = ["attach", str(builds["none"]), "--imagenet", str(copy), "--out", str(full), "--workers", "0"]
    assert main(command) == 1
    [line] = error_lines(caplog)
    assert line.startswith(f"2 image(s) of {builds['none']} in {copy} could not be decoded, e.g. {first} (")
    calls, original = [], join_mod.JoinWorker.__call__
    monkeypatch.setattr(join_mod.JoinWorker, "__call__", lambda self, unit: calls.append(unit.index) or
                        original(self, unit))
    caplog.clear()
    assert main(command) == 1
    assert error_lines(caplog) == [line] and calls == []  # still bad: kept as it was, the same line

    files[first].write_bytes(good[first])
    caplog.clear()
    assert main(command) == 1
    assert calls == [0]  # the shard of the replaced file alone
    assert (f"attach: 1 image(s) of data/{shards[0].name} that did not decode before decode now (e.g. {first}): "
            "joining that shard again; the other shards' finished work is kept") in caplog.text
    [line] = error_lines(caplog)
    assert line.startswith(f"1 image(s) of {builds['none']} in {copy} could not be decoded, e.g. {last} (")

    files[last].write_bytes(good[last])
    calls.clear()
    assert main(command) == 0
    assert calls == [len(shards) - 1]
    assert_same_dataset(full, builds["crop"])
    assert json.loads((full / "attach_info.json").read_text())["unreadable"] == []


def test_an_undecodable_file_replaced_under_another_name_is_joined_by_the_same_command(builds, inputs, tmp_path,
                                                                                       caplog, monkeypatch):
    """The bad `<id>.JPEG` replaced by a good `<id>.png` (the same id, another file): the same command joins that
    shard again, since the copy holds its image elsewhere now, and keeps the others."""
    caplog.set_level("INFO")
    copy = tmp_path / "imagenet"
    shutil.copytree(inputs["folder"], copy)
    shards = sorted((builds["none"] / "data").glob("train-*.parquet"))
    broken = pq.read_table(shards[2], columns=["image_id"]).column(0)[0].as_py()
    file = next(copy.rglob(f"{broken}.*"))
    good = file.read_bytes()
    file.write_bytes(b"not a jpeg")
    full = tmp_path / "full"
    command = ["attach", str(builds["none"]), "--imagenet", str(copy), "--out", str(full), "--workers", "0"]
    assert main(command) == 1
    file.unlink()
    file.with_suffix(".png").write_bytes(good)  # decoded by content, whatever the name says
    calls, original = [], join_mod.JoinWorker.__call__
    monkeypatch.setattr(join_mod.JoinWorker, "__call__", lambda self, unit: calls.append(unit.index) or
                        original(self, unit))
    assert main(command) == 0, error_lines(caplog)
    assert calls == [2]
    assert f"attach: the copy holds images of data/{shards[2].name} elsewhere now" in caplog.text
    assert_same_dataset(full, builds["crop"])


def write_copy(written, path: Path, image_type: str = "struct", named=lambda row: False) -> Path:
    """The fixture images as one parquet file: an `Image()` struct whose `path` is set only where `named(row)`, or
    a plain binary column (no file name, no other column than the label)."""
    images = [b for _, _, b in written]
    if image_type == "binary":
        column = pa.array(images, pa.binary())
    else:
        column = pa.array([{"bytes": b, "path": name if named(row) else None}
                           for row, (name, _, b) in enumerate(written)], IMAGE_STRUCT)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"image": column, "label": [y for _, y, _ in written]}), path, row_group_size=10)
    return path


def test_a_parquet_copy_that_names_no_file_is_refused_in_one_line_saying_what_would_work(builds, inputs, tmp_path,
                                                                                         caplog):
    """Issue 24.10: image bytes with no `path` (or a plain binary column): not "put them in place", but that the copy
    names no file, so nothing can be joined by id, and which copies would do; --allow-missing does not help."""
    written, ids = inputs["written"], rows_of(builds["none"]).column("image_id").to_pylist()
    for image_type, how in (("struct", "their `image.path` is empty, e.g. {copy} (row group 0, row 0)"),
                            ("binary", "column 'image' holds the image bytes alone, no file name")):
        copy = write_copy(written, tmp_path / image_type / "train-00000-of-00001.parquet", image_type)
        full = tmp_path / f"full-{image_type}"
        command = ["attach", str(builds["none"]), "--imagenet", str(copy), "--out", str(full), "--workers", "0"]
        for extra in ([], ["--allow-missing"]):
            caplog.clear()
            assert main([*command, *extra]) == 2
            [line] = error_lines(caplog)
            assert line.startswith(f"--imagenet {copy}: all {len(written)} rows of the copy (split 'train') name no "
                                   f"image file ({how.format(copy=copy)}), so none of the {len(ids)} images of "
                                   f"{builds['none']} can be found by image_id")
            assert "the ImageNet folder" in line and "keeps each file's `path`" in line and "\n" not in line
            assert not full.exists() and not staging_folder(full).exists()


def test_a_parquet_copy_naming_some_files_says_how_many_rows_name_none_and_attaches_the_rest(builds, inputs,
                                                                                             tmp_path, caplog):
    """A copy whose `path` is null in every third row: the images of those rows are not found, and the line says
    how many rows name no file; --allow-missing attaches the images of the named rows."""
    written, ids = inputs["written"], rows_of(builds["none"]).column("image_id").to_pylist()
    copy = write_copy(written, tmp_path / "copy" / "train-00000-of-00001.parquet", named=lambda row: row % 3 != 0)
    unnamed = {Path(name).stem for row, (name, _, _) in enumerate(written) if row % 3 == 0}
    missing = [i for i in ids if i in unnamed]
    full = tmp_path / "full"
    command = ["attach", str(builds["none"]), "--imagenet", str(copy), "--out", str(full), "--workers", "0"]
    assert 0 < len(missing) < len(ids) and main(command) == 1
    [line] = error_lines(caplog)
    assert line.startswith(f"{len(missing)} image(s) of {builds['none']} not found in {copy} (split 'train'), "
                           f"e.g. {', '.join(missing[:3])}; {len(unnamed)} of its {len(written)} rows name no file "
                           f"(their `image.path` is empty, e.g. {copy} (row group 0, row 0)); put them in place")
    assert main([*command, "--allow-missing"]) == 0
    info = json.loads((full / "attach_info.json").read_text())
    assert info["missing"] == missing and info["attached"] == len(ids) - len(missing)


def test_a_hub_parquet_copy_that_names_no_file_is_refused_in_one_line(builds, inputs, tmp_path):
    """The same from a Hub copy (the local server that speaks the Hub's protocol): the command's one line names it."""
    copy = write_copy(inputs["written"], tmp_path / "copy" / "train-00000-of-00001.parquet")
    with HubServer(token=TOKEN, user="user") as hub:
        hub.seed("user/nameless", {"data/train-00000-of-00001.parquet": copy.read_bytes()})
        done = subprocess.run([sys.executable, "-m", "salient_imagenet_builder.cli", "attach", str(builds["none"]),
                               "--imagenet", "user/nameless", "--out", str(tmp_path / "full")], cwd=ROOT,
                              env=hub.client_env(tmp_path / "hf"), capture_output=True, text=True, timeout=300,
                              check=False)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].split(" ERROR salient_imagenet_builder: ")[1].startswith(
        f"--imagenet user/nameless: all {len(inputs['written'])} rows of the copy (split 'train') name no image file "
        "(their `image.path` is empty, e.g. datasets/user/nameless/data/train-00000-of-00001.parquet (row group 0, "
        "row 0)), so none of")


def test_a_parquet_copy_rewritten_with_the_good_image_is_read_again_by_the_same_command(builds, inputs, tmp_path,
                                                                                        caplog):
    """A parquet copy (its row groups read once, kept in the work folder) with one image that does not decode,
    then written again with the good one: the same command reads that row group again and succeeds."""
    caplog.set_level("INFO")
    written, shards = inputs["written"], sorted((builds["none"] / "data").glob("train-*.parquet"))
    broken = pq.read_table(shards[1], columns=["image_id"]).column(0)[0].as_py()
    bad = [(n, y, b"not a jpeg" if Path(n).stem == broken else b) for n, y, b in written]
    copy = write_copy(bad, tmp_path / "copy" / "train-00000-of-00001.parquet", named=lambda row: True)
    full = tmp_path / "full"
    command = ["attach", str(builds["none"]), "--imagenet", str(copy), "--out", str(full), "--workers", "0"]
    assert main(command) == 1
    assert error_lines(caplog)[0].startswith(f"1 image(s) of {builds['none']} in {copy} could not be decoded, "
                                             f"e.g. {broken} (")
    write_copy(written, copy, named=lambda row: True)
    caplog.clear()
    assert main(command) == 0, error_lines(caplog)
    assert f"that did not decode before decode now (e.g. {broken}): joining that shard again" in caplog.text
    assert_same_dataset(full, builds["crop"])
