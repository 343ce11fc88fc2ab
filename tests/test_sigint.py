"""Ctrl-C the way a terminal sends it: SIGINT to the command's whole process group (its decoding workers too), at
start-up, in pass 1, in pass 2 and while writing, for build, discover and evaluate; once, and twice in a row (an
impatient user). Every time: exit 130 within seconds, no traceback, the one interruption line last, no process of the
group left, and `--out` as it was or its finished work kept in `.X.partial` for a rerun that equals one run. An
evaluation of four models is also stopped (Ctrl-C, or a kill) after the first model's results are written.

The real commands run in their own session (a terminal's process group) on the tiny fixtures; each moment is found
from what the command itself shows on stderr (progress bars, log lines), or, at start-up, from torch's libraries
appearing in the process's memory map (it is importing the model stack)."""

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ARCH, CLASSES, STUDY_ARGS, built_once
from datasets import load_dataset

from salient_imagenet_builder.builder.demo import make_checkpoint
from salient_imagenet_builder.core.errors import EXIT_INTERRUPTED
from salient_imagenet_builder.core.output import staging_folder

ROOT = Path(__file__).resolve().parents[1]
EXIT_SECONDS = 10  # from the signal to the exit of the whole group
KEPT = "interrupted; the finished work is kept in {}: run the same command again to resume"
AS_BEFORE = "interrupted; {} is as it was before this run (nothing partial was kept)"
START_OVER = "interrupted; run the same command again to start over"
PROGRESS = re.compile(r"\d+%\|")  # a tqdm bar


def build_args(inputs) -> list[str]:
    """Several small units (so pass 1 has finished units to keep), one decoding worker (so the group SIGINT reaches
    a worker process)."""
    return ["--source", str(inputs["folder"]), "--model", ARCH, "--model-checkpoint", str(inputs["checkpoint"]),
            "--annotations", str(inputs["annotations"]), "--workers", "1", "--batch-size", "4", "--unit-size", "4",
            "--top-k", "2", "--group-by", "label"]


def env() -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "SALIENT_"))}
    return {**base, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def group(pgid: int) -> list[int]:
    """The processes of a process group, from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def importing_torch(pid: int) -> bool:
    try:
        return "torch/lib" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


class Interrupted:
    """A command run in its own process group, Ctrl-C'd (or sent `signum`) when `ready(stderr_so_far)` holds."""

    def __init__(self, command: list[str], cwd: Path, ready, twice: bool = False, signum=signal.SIGINT):
        self.process = subprocess.Popen(command, cwd=cwd, env=env(), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, start_new_session=True)
        chunks = []
        reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: self.process.stderr.read1(1 << 16), b"")),
                                  daemon=True)
        reader.start()
        deadline = time.monotonic() + 300
        while not ready(b"".join(chunks).decode(errors="replace"), self.process.pid):
            assert self.process.poll() is None, f"ended before Ctrl-C:\n{b''.join(chunks).decode()[-3000:]}"
            assert time.monotonic() < deadline, "the moment to interrupt never came"
            time.sleep(0.005)
        self.processes = len(group(self.process.pid))
        start = time.monotonic()
        os.killpg(self.process.pid, signum)
        if twice:
            time.sleep(0.05)
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.returncode = self.process.wait(timeout=EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            pytest.fail(f"no exit within {EXIT_SECONDS} s of Ctrl-C:\n{b''.join(chunks).decode()[-3000:]}")
        self.seconds = time.monotonic() - start
        reader.join(10)
        self.stderr = b"".join(chunks).decode(errors="replace")
        self.left = group(self.process.pid)
        for _ in range(30):  # a killed worker's exit may trail its parent's by a moment
            if not self.left:
                break
            time.sleep(0.1)
            self.left = group(self.process.pid)

    def line(self) -> str:
        """The checks every Ctrl-C passes; returns the last line (what the user reads)."""
        assert self.returncode == EXIT_INTERRUPTED, self.stderr[-3000:]
        assert "Traceback" not in self.stderr and "KeyboardInterrupt" not in self.stderr, self.stderr[-3000:]
        assert not self.left, f"processes left in the group: {self.left}"
        lines = [line for line in re.split(r"[\r\n]+", self.stderr) if line.strip() and not PROGRESS.search(line)]
        assert sum("interrupted" in line for line in lines) == 1, self.stderr[-3000:]
        return lines[-1]


def after(marker: str, workers: int = 0):
    """Once stderr shows `marker` (and `workers` processes besides the command's own run)."""
    return lambda stderr, pid: marker in stderr and len(group(pid)) > workers


def at_start_up(stderr, pid) -> bool:
    return importing_torch(pid)


def command(*args) -> list[str]:
    return [sys.executable, "-m", "salient_imagenet_builder.cli", *map(str, args)]


def build_command(inputs, out: Path) -> list[str]:
    return [sys.executable, str(ROOT / "build_dataset.py"), *build_args(inputs), "--out", str(out)]


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory) -> Path:
    """One uninterrupted build with the tests' arguments."""
    from salient_imagenet_builder.cli import build_main

    def make(root):
        assert build_main([*build_args(inputs), "--workers", "0", "--out", str(root / "out")]) == 0
        return root / "out"

    return built_once(tmp_path_factory, "test_sigint", make)


def rows(folder: Path) -> list[dict]:
    return sorted(load_dataset(str(folder), split="train").to_list(), key=lambda r: r["image_id"])


# --- build ----------------------------------------------------------------------------------------------------------

def test_build_at_start_up_twice(inputs, tmp_path):
    """Twice in a row while torch is being imported: one line, nothing written."""
    out = tmp_path / "out"
    run = Interrupted(build_command(inputs, out), tmp_path, at_start_up, twice=True)
    assert run.line().endswith(START_OVER) or run.line().endswith(AS_BEFORE.format(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_build_in_pass_1_hits_the_decoding_worker_too(inputs, tmp_path):
    out = tmp_path / "out"
    run = Interrupted(build_command(inputs, out), tmp_path, after("pass 1:", workers=1))
    assert run.processes >= 2  # the build and its decoding worker both got the SIGINT
    work = staging_folder(out) / "work"
    kept = any(work.glob("scan/*.done.json"))
    assert run.line().endswith(KEPT.format(staging_folder(out)) if kept else AS_BEFORE.format(out))
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ([staging_folder(out).name] if kept else [])


@pytest.mark.parametrize("moment", ["pass 2:", "skipped corrupt image"])  # pass 2; writing (its first line)
def test_build_in_pass_2_or_writing_keeps_the_work_and_resumes_to_the_same_rows(moment, inputs, reference, tmp_path):
    from salient_imagenet_builder.cli import build_main

    out = tmp_path / "out"
    run = Interrupted(build_command(inputs, out), tmp_path, after(moment), twice=moment == "pass 2:")
    assert run.line().endswith(KEPT.format(staging_folder(out)))
    assert not out.exists() and sorted(p.name for p in staging_folder(out).iterdir()) == ["work"]
    if moment == "pass 2:":  # the rerun: pass 1 is not done again, and the rows are one run's
        assert build_main([*build_args(inputs), "--workers", "0", "--out", str(out)]) == 0
        assert rows(out) == rows(reference)
        assert not staging_folder(out).exists()


def test_demo_keeps_nothing_and_the_same_command_then_builds(tmp_path):
    """The demo generates its inputs afresh in a new temporary folder each run, so its units could never be resumed
    (the next run's source differs): Ctrl-C keeps nothing and says so, and the same command then builds."""
    out = tmp_path / "demo"
    demo = [sys.executable, str(ROOT / "build_dataset.py"), "--demo", "--out", str(out)]
    run = Interrupted(demo, tmp_path, after("pass 2:"))
    assert run.line().endswith(AS_BEFORE.format(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    again = subprocess.run(demo, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(load_dataset(str(out), split="train")) > 0


def test_demo_never_drops_another_builds_kept_work(tmp_path):
    """`--demo --out X` where an interrupted real build kept its units: refused (other settings), the units kept."""
    from salient_imagenet_builder.cli import build_main

    out = tmp_path / "out"
    work = staging_folder(out) / "work"
    (work / "scan" / "00000").mkdir(parents=True)
    (work / "fingerprint.json").write_text(json.dumps({"source": "/data/imagenet"}))
    (work / "scan" / "00000" / "scan.npz").write_bytes(b"finished unit")
    (work / "scan" / "00000.done.json").write_text(json.dumps({"unit": 0, "files": ["scan.npz"]}))
    before = sorted(p.relative_to(work) for p in work.rglob("*"))
    assert build_main(["--demo", "--out", str(out)]) == 2
    assert sorted(p.relative_to(work) for p in work.rglob("*") if p.name != "lock") == before
    assert (work / "scan" / "00000" / "scan.npz").read_bytes() == b"finished unit"


# --- discover and evaluate ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("moment", ["scan:", "panels:"])
def test_discover(moment, inputs, tmp_path):
    out = tmp_path / "study"
    run = Interrupted(command("discover", "--source", inputs["folder"], "--model", ARCH, "--model-checkpoint",
                              inputs["checkpoint"], "--out", out, *STUDY_ARGS, "--workers", "1", "--unit-size", "4"),
                      tmp_path, after(moment))
    kept = any((staging_folder(out) / "work").glob("*/*.done.json"))
    assert kept or moment == "scan:"
    assert run.line().endswith(KEPT.format(staging_folder(out)) if kept else AS_BEFORE.format(out))
    assert not out.exists()


@pytest.mark.parametrize("moment", ["decode dataset", "evaluate resnet18"])
def test_evaluate(moment, inputs, reference, tmp_path):
    out = tmp_path / "results"
    run = Interrupted(command("evaluate", "--dataset", reference, "--model", ARCH, "--checkpoint",
                              inputs["checkpoint"], "--draws", "10", "--workers", "1", "--out", out),
                      tmp_path, after(moment), twice=moment == "decode dataset")
    assert run.line().endswith(AS_BEFORE.format(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --- evaluate: several models, stopped after the first one's results are written ---------------------------------

@pytest.fixture(scope="module")
def four_models(reference, tmp_path_factory) -> dict:
    """Four small models (resnet10t, 176 px: ~3x faster than resnet18; seeds 11-14, so other predictions) and their
    uninterrupted evaluation."""
    from salient_imagenet_builder.cli import main

    def make(root):
        models = []
        for i in range(1, 5):  # labels resnet10t-m1 ... resnet10t-m4
            checkpoint = make_checkpoint(root / f"m{i}.ckpt", "resnet10t", seed=10 + i, classes=CLASSES)
            models += ["--model", "resnet10t", "--checkpoint", str(checkpoint)]
        args = ["evaluate", "--dataset", str(reference), *models, "--draws", "2", "--no-single-feature",
                "--workers", "0"]
        assert main([*args, "--out", str(root / "results")]) == 0
        return {"args": args, "results": root / "results"}

    return built_once(tmp_path_factory, "test_sigint_evaluate", make)


def files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def results(folder: Path) -> dict:
    """What a results folder holds, less the timings: every file (hidden ones too), every CSV's rows, each model's
    metrics and model record, the marker."""
    found = {}
    for name, data in files(folder).items():
        if name.endswith(".csv"):
            rows = csv.DictReader(io.StringIO(data.decode()))
            data = [{k: v for k, v in row.items() if k != "images_per_second"} for row in rows]
        elif name.endswith("summary.json"):
            summary = json.loads(data)
            data = [summary["metrics"], summary["model"]]
        elif name.endswith(".png"):
            data = len(data) > 0
        found[name] = data
    return found


@pytest.mark.parametrize("earlier", [False, True], ids=["new", "replacing-earlier-results"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill"])
def test_evaluate_of_four_models_stopped_after_the_first_then_the_same_command(signum, earlier, four_models,
                                                                               tmp_path):
    from salient_imagenet_builder.cli import main

    """Ctrl-C (or a kill) while the second model runs, the first model's results written: `--out` is as it was (an
    earlier complete results folder whole), and the same command then gives the uninterrupted run's results."""
    out = tmp_path / "results"
    if earlier:
        shutil.copytree(four_models["results"], out)
    before = files(tmp_path)
    evaluate = command(*four_models["args"], "--out", out)
    run = Interrupted(evaluate, tmp_path, after("evaluate resnet10t-m2:"), signum=signum)
    if signum == signal.SIGINT:
        assert run.line().endswith(AS_BEFORE.format(out))
        assert files(tmp_path) == before  # nothing partial left beside it either
    else:
        assert run.returncode == -signal.SIGKILL
        assert {k: v for k, v in files(tmp_path).items() if not k.startswith(".results.partial")} == before
    assert main([*four_models["args"], "--out", str(out)]) == 0  # the same command
    assert results(out) == results(four_models["results"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]
