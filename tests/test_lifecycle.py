"""The one job lifecycle (`core.job`) as every writing command meets it: `--overwrite` over an earlier output that
holds files this tool did not write refuses in one line naming them and deletes nothing (update, which replaces
nothing, keeps them); a refusal on rank 0 stops every rank at once, under torchrun and with ranks started by hand."""

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ARCH, build_top7, built_once
from test_processes import human_masks

from salient_imagenet_builder.cli import main
from salient_imagenet_builder.core.constants import WORK_DIR
from salient_imagenet_builder.core.errors import EXIT_USAGE
from salient_imagenet_builder.core.output import staging_folder
from salient_imagenet_builder.core.registry import commands
from salient_imagenet_builder.core.units import WorkLock

ROOT = Path(__file__).resolve().parents[1]
SAVED = {"answers-batch1.csv": "WorkerId,Answer\nA1,yes\n", "notes/todo.txt": "ask the second group\n"}
PROMPTLY = 90  # seconds for two ranks to start, refuse and exit; a rank left waiting would take the 2-hour timeout
READ_ONLY = {"check", "show", "push", "ingest"}  # no output folder (ingest writes one CSV, `check_out_file`)
REWRITTEN = {"evaluate": "results folder", "validate": "validation report"}  # replace their own without --overwrite


@pytest.fixture(scope="module")
def top7(inputs, tmp_path_factory) -> Path:
    return built_once(tmp_path_factory, "top7", lambda root: build_top7(inputs, root))


def arguments(inputs, top7, folder: Path) -> dict[str, list[str]]:
    """Each writing command's arguments but --out (inputs in `folder`: human masks, a generalization CSV)."""
    model = ["--model", ARCH, "--model-checkpoint", str(inputs["checkpoint"])]
    return {
        "build": ["--source", str(inputs["folder"]), *model, "--annotations", str(inputs["annotations"]),
                  "--workers", "0", "--batch-size", "8", "--top-k", "2", "--group-by", "label", "--classes", "0"],
        "attach": ["attach", str(top7), "--imagenet", str(inputs["folder"]), "--workers", "0"],
        "discover": ["discover", "--source", str(inputs["folder"]), *model, "--classes", "0", "--features-per-class",
                     "1", "--top-images", "2", "--attack-steps", "1", "--group-by", "label", "--workers", "0"],
        "generalize": ["generalize", str(top7), "--bands", "6-6", "--classes", "0"],
        "evaluate": ["evaluate", "--dataset", str(top7), "--model", ARCH, "--checkpoint", str(inputs["checkpoint"]),
                     "--draws", "1", "--no-single-feature", "--workers", "0"],
        "validate": ["validate", str(top7), "--human-masks", str(folder / "humans"), "--format", "binary"],
    }


def run(args: list[str], out: Path, *extra: str) -> int:
    """A command in this process (`build_dataset.py`'s entry point for the build)."""
    from salient_imagenet_builder.cli import build_main

    if args[0] in {c.name for c in commands()}:
        return main([*args, "--out", str(out), *extra])
    return build_main([*args, "--out", str(out), *extra])


@pytest.fixture(scope="module")
def earlier(inputs, top7, tmp_path_factory) -> dict:
    """An earlier output of each writing command, made by the command itself, and the commands' arguments."""
    def make(root: Path) -> dict:
        human_masks(top7, root / "humans")
        args = arguments(inputs, top7, root)
        for name, command in args.items():
            assert run(command, root / name) == 0, name
        return {"args": args, "root": root}

    return built_once(tmp_path_factory, "test_lifecycle", make)


def snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def with_saved_files(folder: Path, copy: Path) -> Path:
    """A copy of an earlier output with an annotator's export and a notes file saved in it."""
    shutil.copytree(folder, copy)
    for name, text in SAVED.items():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_text(text)
    return copy


def test_every_command_is_a_folder_writer_or_read_only():
    """A new command is one or the other here, so a writing one gets the refusal test below."""
    writers = set(arguments({"folder": "", "checkpoint": "", "annotations": ""}, "", Path())) | {"update"}
    assert {c.name for c in commands()} == writers | READ_ONLY


@pytest.mark.parametrize("name", ["build", "attach", "discover", "generalize", "evaluate", "validate"])
def test_overwrite_refuses_files_the_tool_did_not_write_and_deletes_nothing(name, earlier, tmp_path, caplog):
    copy = with_saved_files(earlier["root"] / name, tmp_path / name)
    before = snapshot(copy)
    caplog.clear()
    assert run(earlier["args"][name], copy, *([] if name in REWRITTEN else ["--overwrite"])) == EXIT_USAGE
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1, errors
    replacing = f"writing the {REWRITTEN[name]} again" if name in REWRITTEN else "--overwrite"
    assert errors[0].startswith(f"--out {copy}: {replacing} would delete 2 file(s) this tool did not write there (")
    assert all(saved in errors[0] for saved in SAVED)
    assert snapshot(copy) == before and not staging_folder(copy).exists()


def test_the_same_outputs_without_foreign_files_are_replaced(earlier, tmp_path):
    """The refusal is about the saved files: the same copy without them is replaced (the generalization study, the
    cheapest)."""
    copy = tmp_path / "generalize"
    shutil.copytree(earlier["root"] / "generalize", copy)
    (copy / "pairs.csv").write_text("stale\n")
    assert run(earlier["args"]["generalize"], copy, "--overwrite") == 0
    assert (copy / "pairs.csv").read_text() != "stale\n"


def test_update_replaces_nothing_so_the_saved_files_stay(earlier, top7, tmp_path):
    dataset = with_saved_files(top7, tmp_path / "salient")
    report = earlier["root"] / "validate" / "validation.csv"
    assert main(["update", str(dataset), "--validation", str(report)]) == 0
    assert all((dataset / name).read_text() == text for name, text in SAVED.items())
    assert "## Validation against human segmentations" in (dataset / "README.md").read_text()


# --- a rank-0 refusal stops every rank -------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT", "PYTEST_XDIST_WORKER")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT),
               HF_DATASETS_CACHE=str(tmp_path / "hf_cache"), **extra)
    return env


def command_line(args: list[str]) -> list[str]:
    if args[0] in {c.name for c in commands()}:
        return ["-m", "salient_imagenet_builder.cli", *args]
    return [str(ROOT / "build_dataset.py"), *args]


def by_hand(args: list[str], tmp_path: Path) -> list[subprocess.CompletedProcess]:
    """Two ranks started as another launcher would: RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT per process."""
    port = str(free_port())
    ranks = [subprocess.Popen([sys.executable, *command_line(args)], cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE,
                              env=environment(tmp_path, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                                              LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
             for rank in (0, 1)]
    done = []
    for process in ranks:
        try:
            out, err = process.communicate(timeout=PROMPTLY)
        except subprocess.TimeoutExpired:
            for p in ranks:
                p.kill()
            pytest.fail("a rank did not stop promptly after rank 0's refusal")
        done.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return done


def under_torchrun(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "--tee=3", *command_line(args)], cwd=tmp_path, env=environment(tmp_path),
                          capture_output=True, text=True, timeout=PROMPTLY)


def refused(name: str, earlier, tmp_path: Path, how: str) -> tuple[Path, str]:
    """An --out rank 0 refuses: an earlier output holding a notes file, or one another run is writing (its lock
    held by this process); the line rank 0 says."""
    out = tmp_path / "out"
    if how == "foreign":
        with_saved_files(earlier["root"] / name, out)
        return out, f"--out {out}: --overwrite would delete 2 file(s) this tool did not write there"
    shutil.copytree(earlier["root"] / name, out)
    return out, f"--out {out}: another run is writing it"


@pytest.mark.parametrize("name", ["build", "discover"])
@pytest.mark.parametrize("how", ["foreign", "locked"])
def test_a_rank_0_refusal_stops_both_ranks_started_by_hand(name, how, earlier, tmp_path):
    out, line = refused(name, earlier, tmp_path, how)
    before = snapshot(out)
    lock = WorkLock(staging_folder(out) / WORK_DIR, "test") if how == "locked" else None
    try:
        start = time.monotonic()
        rank0, rank1 = by_hand([*earlier["args"][name], "--out", str(out), "--overwrite"], tmp_path)
        elapsed = time.monotonic() - start
    finally:
        if lock is not None:
            lock.release()
    assert rank0.returncode == EXIT_USAGE and line in rank0.stderr, rank0.stderr[-3000:]
    assert rank1.returncode == EXIT_USAGE and f"rank 0 stopped: {line}" in rank1.stderr, rank1.stderr[-3000:]
    assert "Traceback" not in rank0.stderr + rank1.stderr
    assert elapsed < PROMPTLY and snapshot(out) == before


@pytest.mark.parametrize("name", ["build", "discover"])
def test_a_rank_0_refusal_stops_both_ranks_under_torchrun(name, earlier, tmp_path):
    out, line = refused(name, earlier, tmp_path, "foreign")
    before = snapshot(out)
    done = under_torchrun([*earlier["args"][name], "--out", str(out), "--overwrite"], tmp_path)
    assert done.returncode != 0
    said = done.stdout + done.stderr
    ranks = [said_line for said_line in said.splitlines() if said_line.startswith(("[default0]:", "[default1]:"))]
    rank0 = [text for text in ranks if text.startswith("[default0]:") and "ERROR" in text]
    rank1 = [text for text in ranks if text.startswith("[default1]:") and "ERROR" in text]
    assert [line in text for text in rank0] == [True], said[-3000:]  # torchrun's own report keeps its traceback
    assert [f"rank 0 stopped: {line}" in text for text in rank1] == [True], said[-3000:]
    assert not any("Traceback" in text for text in ranks), said[-3000:]
    assert snapshot(out) == before
