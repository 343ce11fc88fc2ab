"""Work units at full-scale shape, on the fixture: a build killed with SIGKILL resumes and equals a one-shot build,
torchrun (gloo, two CPU processes) equals one process, a different build never mixes with an old work folder,
and `--top-k all` in one pass equals the two-pass bounded build that keeps every image."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from conftest import ARCH, built_once

from salient_imagenet_builder.builder import build
from salient_imagenet_builder.core import distributed
from salient_imagenet_builder.core.card import read_build_info
from salient_imagenet_builder.core.sources import open_source
from salient_imagenet_builder.core.units import Unit

ROOT = Path(__file__).resolve().parents[1]
UNIT_SIZE = 2  # 25 fixture images in 3 classes -> 14 units


def tables(out: Path) -> dict:
    return {p.name: pq.read_table(p) for p in sorted((Path(out) / "data").glob("*.parquet"))}


def assert_same_tables(got: Path, expected: Path) -> None:
    a, b = tables(got), tables(expected)
    assert a.keys() == b.keys() and a
    for name in a:
        assert a[name].equals(b[name]), name


def cli_args(inputs, out, *extra) -> list[str]:
    return ["--source", str(inputs["folder"]), "--out", str(out), "--model", ARCH,
            "--model-checkpoint", str(inputs["checkpoint"]), "--annotations", str(inputs["annotations"]),
            "--workers", "1", "--batch-size", "2", "--unit-size", str(UNIT_SIZE), "--top-k", "3", *extra]


def environment(tmp_path) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1",
               HF_DATASETS_CACHE=str(tmp_path / "hf_cache"))
    env.pop("WORLD_SIZE", None)
    return env


def run_cli(args, tmp_path, torchrun: int = 0) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"] \
        if torchrun else [sys.executable]
    return subprocess.run([*launcher, str(ROOT / "build_dataset.py"), *args], cwd=ROOT, env=environment(tmp_path),
                          capture_output=True, text=True, timeout=600)


def run_here(args, caplog=None) -> tuple[int, str]:
    """The same command in this process, on one thread (as the subprocesses' OMP_NUM_THREADS=1): the exit code and
    the log (INFO and above). Where the process boundary is not the subject."""
    from salient_imagenet_builder.cli import build_main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if caplog is None:
            return build_main(args), ""
        caplog.clear()
        with caplog.at_level(logging.INFO):
            code = build_main(args)
        return code, caplog.text
    finally:
        torch.set_num_threads(threads)


def kill_midway(args, tmp_path, out: Path, after_units: int, torchrun: int = 0, folder: str = "scan") -> int:
    """Start a build, SIGKILL it (and its ranks) once `after_units` units of the pass that writes `folder`
    ("scan": pass 1, "rows": pass 2) are done; returns the units done."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"] \
        if torchrun else [sys.executable]
    markers = out.parent / f".{out.name}.partial" / "work" / folder
    process = subprocess.Popen([*launcher, str(ROOT / "build_dataset.py"), *args], cwd=ROOT,
                               env=environment(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 300
    while len(list(markers.glob("*.done.json"))) < after_units:
        assert process.poll() is None, "the build ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for pid in [process.pid, *descendants(process.pid)]:  # torchrun starts its ranks in sessions of their own
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()
    return len(list(markers.glob("*.done.json")))


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.fixture(scope="module")
def one_shot(inputs, tmp_path_factory) -> Path:
    def make(tmp):
        out = tmp / "salient_imagenet"
        assert run_here(cli_args(inputs, out))[0] == 0
        return out

    return built_once(tmp_path_factory, "test_units_one_shot", make)


def test_killed_build_resumes_and_equals_the_one_shot_build(inputs, one_shot, tmp_path, caplog):
    out = tmp_path / "salient_imagenet"
    done = kill_midway(cli_args(inputs, out), tmp_path, out, after_units=4)
    assert not out.exists() and 4 <= done < 14

    code, log = run_here(cli_args(inputs, out)[:-2] + ["--top-k", "4"], caplog)  # a different build
    assert code == 2  # and no exception escaped: no traceback
    assert "--top-k was 3, now 4" in log and "--restart" in log

    code, log = run_here(cli_args(inputs, out), caplog)
    assert code == 0, log[-3000:]
    assert f"pass 1: resuming from {done} of 14 units already done" in log
    assert_same_tables(out, one_shot)
    assert not (out / "work").exists() and not list(tmp_path.glob(".*partial"))


def test_torchrun_killed_midway_resumes_under_torchrun(inputs, one_shot, tmp_path):
    out = tmp_path / "salient_imagenet"
    done = kill_midway(cli_args(inputs, out), tmp_path, out, after_units=3, torchrun=2)
    assert not out.exists() and 3 <= done < 14
    resumed = run_cli(cli_args(inputs, out), tmp_path, torchrun=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"pass 1: resuming from {done} of 14 units already done" in resumed.stderr
    assert_same_tables(out, one_shot)  # two ranks (gloo), killed and resumed == one process, uninterrupted
    info = read_build_info(out)
    assert info["stats"]["world_size"] == 2 and info["provenance"]["world_size"] == 2
    assert info["stats"]["pass1_units"]["units"] == 14 and info["stats"]["pass1_units"]["resumed"] == done


def test_killed_in_pass_2_resumes_there(inputs, one_shot, tmp_path, caplog):
    out = tmp_path / "salient_imagenet"
    done = kill_midway(cli_args(inputs, out), tmp_path, out, after_units=1, folder="rows")
    assert not out.exists() and 1 <= done < 7  # 7 units hold selected images
    code, log = run_here(cli_args(inputs, out), caplog)
    assert code == 0, log[-3000:]
    assert "pass 1: resuming from 14 of 14 units" in log
    assert f"pass 2: resuming from {done} of 7 units" in log
    assert_same_tables(out, one_shot)


def test_restart_discards_the_old_work(inputs, one_shot, tmp_path, caplog):
    out = tmp_path / "salient_imagenet"
    kill_midway(cli_args(inputs, out), tmp_path, out, after_units=2)
    code, log = run_here(cli_args(inputs, out, "--restart"), caplog)
    assert code == 0, log[-3000:]
    assert "discarding the partial build" in log and "resuming" not in log
    assert_same_tables(out, one_shot)


def test_top_k_all_one_pass_equals_two_pass_bounded_build(config, tmp_path):
    """k larger than any group keeps every image of every annotated group: the two-pass bounded build
    (ranks from its heaps, maps from pass 1, images read again in pass 2) must give the very same tables."""
    one = build(config(top_k=None, group_by="label", unit_size=3, out=str(tmp_path / "all")))
    two = build(config(top_k=10**6, group_by="label", unit_size=3, out=str(tmp_path / "bounded")))
    assert_same_tables(tmp_path / "all", tmp_path / "bounded")
    assert one.forward_passes == {"images_forwarded": one.images_scanned, "per_image": 1,
                                     "reads_of_source": 1}
    assert two.forward_passes["reads_of_source"] == 2
    card = (tmp_path / "all" / "README.md").read_text()
    assert f"| model forward passes | {one.images_scanned} (1 per image read); the source was read 1 time" in card


def test_unit_plans_cover_the_readers_samples(inputs, parquet_source, webdataset_source):
    """Every reader's units, read one after another, give exactly its samples (with class filter and limit)."""
    for source in (inputs["folder"], parquet_source, webdataset_source):
        reader = open_source(str(source), "train")
        for classes, limit in ((None, None), ({0, 2}, 3)):
            units = [Unit(i, spec) for i, spec in enumerate(reader.plan_units(classes, limit, UNIT_SIZE))]
            json.dumps([u.spec for u in units])  # specs are kept in JSON done markers
            got = [(s.image_id, s.ref) for u in units for s in reader.unit_samples(u.spec, classes, limit)]
            assert got == [(s.image_id, s.ref) for s in reader.samples(classes, limit)], (source, classes, limit)


def test_opt_in_numerics_run_on_cpu_and_are_recorded(config, tmp_path):
    stats = build(config(classes=[2], group_by="label", bf16=True, tf32=True, out=str(tmp_path / "fast")))
    info = read_build_info(tmp_path / "fast")
    assert info["provenance"]["numerics"] == {"tf32": True, "bf16": True, "compile": False}
    assert stats.images_written > 0
    assert "| opt-in numerics | tf32, bf16 |" in (tmp_path / "fast" / "README.md").read_text()


def test_distributed_helpers_without_a_process_group(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    world = distributed.world_from_env()
    assert (world.rank, world.size, world.local_rank, world.is_main) == (0, 1, 0, True)
    assert distributed.all_gather_object({"a": 1}) == [{"a": 1}] and distributed.broadcast_object(5) == 5
    distributed.barrier()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert distributed.world_from_env().my_share(list(range(8))) == [1, 4, 7]
