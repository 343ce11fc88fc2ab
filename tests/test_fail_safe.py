"""Fail safe, as a new user meets it: what `--out` may replace, interrupted swaps and Ctrl-C, offline downloads,
paths that do not exist. Each failure must be one line and its exit code. Commands run in this process
(`cli.build_main`, `cli.main`: the exit code, and exactly one ERROR record from the `logging` that prints the line)
unless the process is the subject: Ctrl-C, and what huggingface_hub reads from the environment at import
(HF_HOME, HF_ENDPOINT) run as real subprocesses (one line on stderr, no traceback)."""

import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import built_once
from datasets import load_dataset

from salient_imagenet_builder.builder import build
from salient_imagenet_builder.core.errors import EXIT_INTERRUPTED, EXIT_NETWORK, EXIT_USAGE, InputError
from salient_imagenet_builder.core.output import old_folder, staging_folder
from salient_imagenet_builder.core.staging import move_into_place, prepare_output

ROOT = Path(__file__).resolve().parents[1]


def env(**extra) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "SALIENT_"))}
    base.update({"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
    base.update({k: v for k, v in extra.items() if v is not None})
    return {k: v for k, v in base.items() if extra.get(k, "") is not None}


def run(*args, cwd, script="build_dataset.py", **extra):
    command = [sys.executable, str(ROOT / script)] if script else [sys.executable, "-m", "salient_imagenet_builder.cli"]
    return subprocess.run([*command, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=env(**extra))


def log_lines(stderr: str) -> list[str]:
    """stderr without progress bars."""
    return [line for line in stderr.splitlines() if line.strip() and "it/s]" not in line and "img/s]" not in line]


def one_line(result, code: int) -> str:
    lines = log_lines(result.stderr)
    assert result.returncode == code, result.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]


@pytest.fixture
def here(monkeypatch, caplog):
    """`run` in this process: the current folder and the environment changed for the test only; returns the exit
    code and every record of WARNING or above (the lines a user would see on stderr)."""
    from salient_imagenet_builder import cli

    def run_here(*args, cwd, script="build_dataset.py", **extra):
        monkeypatch.chdir(cwd)
        for name, value in extra.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        caplog.clear()
        argv = [str(a) for a in args]
        code = cli.build_main(argv) if script else cli.main(argv)  # an exception escaping fails the test
        return code, [r for r in caplog.records if r.levelno >= logging.WARNING]

    return run_here


def one_error(ran, code: int) -> str:
    """In-process `one_line`: the exit code and exactly one record, an ERROR; its message."""
    exit_code, records = ran
    messages = [f"{r.levelname} {r.getMessage()}" for r in records]
    assert exit_code == code, messages
    assert len(records) == 1 and records[0].levelno == logging.ERROR, messages
    return records[0].getMessage()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def good_args(inputs):
    """Valid inputs: with the old guard, each refused --out below would really have been built over."""
    return ["--source", inputs["folder"], "--model", "resnet18", "--model-checkpoint", inputs["checkpoint"],
            "--annotations", inputs["annotations"], "--workers", "0", "--batch-size", "8", "--top-k", "2",
            "--group-by", "label", "--classes", "0"]


# --- 1. never delete what is not ours -----------------------------------------------------------------------------

def test_overwrite_refuses_a_folder_that_is_not_a_build(good_args, tmp_path, here):
    home = tmp_path / "someone"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("secret")
    (home / "thesis.txt").write_text("four years")
    before = snapshot(home)
    line = one_error(here(*good_args, "--out", home, "--overwrite", cwd=tmp_path), EXIT_USAGE)
    assert f"--out {home}: exists and is not a build of this tool" in line
    assert snapshot(home) == before and not staging_folder(home).exists()


@pytest.mark.parametrize("case", ["cwd", "ancestor", "home", "root", "source", "inside source", "contains source"])
def test_overwrite_never_touches_protected_folders(case, good_args, inputs, tmp_path, here):
    work = tmp_path / "work" / "here"
    work.mkdir(parents=True)
    (work / "notes.txt").write_text("mine")
    source = tmp_path / "data" / "src"
    shutil.copytree(inputs["folder"], source)
    out, reason = {
        "cwd": (".", "is the current folder"),
        "ancestor": ("..", "contains the current folder"),
        "home": (tmp_path / "work", "is the home folder"),
        "root": ("/", "is the root folder"),
        "source": (source, "is the --source folder"),
        "inside source": (source / "train", "is inside the --source folder"),
        "contains source": (tmp_path / "data", "contains the --source folder"),
    }[case]
    args = [a if a != inputs["folder"] else source for a in good_args]
    before_work, before_source = snapshot(tmp_path / "work"), snapshot(source)
    home = str(tmp_path / "work") if case == "home" else None
    line = one_error(here(*args, "--out", out, "--overwrite", cwd=work, HOME=home), EXIT_USAGE)
    assert f"--out {out}: {reason}" in line
    assert snapshot(tmp_path / "work") == before_work and snapshot(source) == before_source
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "work"]


@pytest.mark.parametrize("case", ["file", "symlink", "partial is a file", "old is a symlink", "old is not ours"])
def test_out_that_cannot_be_a_build_folder_is_refused_before_any_work(case, good_args, tmp_path, here):
    out = tmp_path / "out"
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    if case == "file":
        out.write_text("a file")
    elif case == "symlink":
        out.symlink_to(target)
    elif case == "partial is a file":
        staging_folder(out).write_text("x")
    elif case == "old is a symlink":
        old_folder(out).symlink_to(target)
    else:
        old_folder(out).mkdir()
        (old_folder(out) / "keep.txt").write_text("keep")
    line = one_error(here(*good_args, "--out", out, "--overwrite", cwd=tmp_path), EXIT_USAGE)
    expected = {"file": "is a file, not a folder", "symlink": "is a symbolic link",
                "partial is a file": f"{staging_folder(out)} is in the way",
                "old is a symlink": f"{old_folder(out)} is in the way",
                "old is not ours": f"{old_folder(out)} is in the way (not a build of this tool"}[case]
    assert expected in line
    assert (target / "keep.txt").read_text() == "keep" and not (out.is_dir() and not out.is_symlink())
    if case == "old is not ours":
        assert (old_folder(out) / "keep.txt").read_text() == "keep"


def test_a_build_never_replaces_a_study_nor_a_study_a_build(good_args, study, inputs, tmp_path, here):
    """Annotators may have saved their answers into the study: a build's --overwrite must not take it."""
    copy = tmp_path / "study"
    shutil.copytree(study, copy)
    (copy / "answers-ann1.csv").write_text("WorkerId\n")
    before = snapshot(copy)
    line = one_error(here(*good_args, "--out", copy, "--overwrite", cwd=tmp_path), EXIT_USAGE)
    assert f"--out {copy}: is a discovery study of this tool, not a build; --overwrite only replaces an earlier " \
           "build" in line
    assert snapshot(copy) == before
    built = tmp_path / "built"
    built.mkdir()
    (built / "build_info.json").write_text('{"package": "salient-imagenet-builder"}')
    line = one_error(here("discover", "--source", inputs["folder"], "--out", built, "--overwrite", script=None,
                          cwd=tmp_path), EXIT_USAGE)
    assert f"--out {built}: is a build of this tool, not a discovery study" in line
    assert [p.name for p in built.iterdir()] == ["build_info.json"]
    line = one_error(here("discover", "--source", inputs["folder"], "--out", copy, script=None, cwd=tmp_path),
                     EXIT_USAGE)
    assert "an earlier study is there; pass --overwrite" in line


def test_same_command_twice(good_args, tmp_path, here):
    out = tmp_path / "out"
    code, records = here(*good_args, "--out", out, cwd=tmp_path)
    assert code == 0, [r.getMessage() for r in records]
    before = snapshot(out)
    line = one_error(here(*good_args, "--out", out, cwd=tmp_path), EXIT_USAGE)
    assert "an earlier build is there; pass --overwrite" in line
    assert snapshot(out) == before and len(load_dataset(str(out), split="train")) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .out.partial, no .out.old


def test_an_empty_folder_is_a_fine_out(config, tmp_path):
    out = tmp_path / "made_by_mkdir"
    out.mkdir()
    build(config(out=str(out), classes=[1], group_by="label", top_k=2))
    assert len(load_dataset(str(out), split="train")) > 0


@pytest.fixture(scope="module")
def builds(inputs, tmp_path_factory) -> dict[str, Path]:
    """Two finished builds: group 1 only ("old") and group 2 only ("new")."""
    return built_once(tmp_path_factory, "test_fail_safe", lambda root: _builds(inputs, root))


def _builds(inputs, root):
    from salient_imagenet_builder.builder import BuildConfig

    made = {}
    for name, group in (("old", 1), ("new", 2)):
        build(BuildConfig(source=str(inputs["folder"]), out=str(root / name), model="resnet18",
                          model_checkpoint=str(inputs["checkpoint"]), annotations=str(inputs["annotations"]),
                          classes=[group], group_by="label", top_k=2, workers=0, batch_size=8))
        made[name] = root / name
    return made


def _two_builds(builds, tmp_path):
    """A finished build at `out` (group 1) and another complete build (group 2) at `newer`."""
    out, newer = tmp_path / "out", tmp_path / "newer"
    shutil.copytree(builds["old"], out)
    shutil.copytree(builds["new"], newer)
    return out, newer


def test_publish_keeps_out_whole(builds, tmp_path):
    out, newer = _two_builds(builds, tmp_path)
    staging = staging_folder(out)
    os.rename(newer, staging)
    (staging / "work").mkdir()  # the builder's resume area: spent once the build is published
    move_into_place(staging, out)
    assert set(load_dataset(str(out), split="train")["group"]) == {2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert not (out / "work").exists()


def half_replace(builds, tmp_path, staging_state: str) -> Path:
    """Interrupted between `out -> .out.old` and `.out.partial -> out`, with a complete or an incomplete new build."""
    out, newer = _two_builds(builds, tmp_path)
    os.rename(out, old_folder(out))
    if staging_state == "complete":
        os.rename(newer, staging_folder(out))
    else:
        staging_folder(out).mkdir()
        (staging_folder(out) / "work").mkdir()
        (staging_folder(out) / "work" / "unit-00000.json").write_text("{}")
        shutil.rmtree(newer)
    return out


@pytest.mark.parametrize("staging_state", ["complete", "incomplete"])
def test_a_half_done_swap_is_named_by_readers_and_repaired_by_the_next_writer(staging_state, builds, tmp_path):
    """`check` (a reader) names the folder that holds the intact build and the command that repairs it, and changes
    nothing; a command that writes `out` completes the swap (the new build was complete) or restores the earlier
    build before it starts; load_dataset works again."""
    out = half_replace(builds, tmp_path, staging_state)
    before = snapshot(tmp_path)
    line = one_line(run("check", out, "--no-stream", cwd=tmp_path, script=None), EXIT_USAGE)
    assert f"the intact build is in {old_folder(out)}" in line and "build" in line and "again" in line
    assert snapshot(tmp_path) == before
    staging = prepare_output(out, True, None, "build")  # what build and discover do first, on one process
    expected = {"complete": {2}, "incomplete": {1}}[staging_state]
    assert set(load_dataset(str(out), split="train")["group"]) == expected
    assert not old_folder(out).exists()
    if staging_state == "incomplete":  # a resumable work area is not ours to drop here
        assert (staging / "work" / "unit-00000.json").is_file()


def test_readers_of_a_half_replaced_folder_say_so_in_one_line(builds, tmp_path):
    from salient_imagenet_builder.core.sources import open_source
    from salient_imagenet_builder.evaluation.rows import open_dataset

    out = half_replace(builds, tmp_path, "complete")
    before = snapshot(tmp_path)
    for read in (lambda: open_dataset(str(out), "train"), lambda: open_source(str(out), "train", "parquet")):
        with pytest.raises(InputError, match="a replacement of it was interrupted; the intact build is in"):
            read()  # evaluate --dataset out; --source out
    assert snapshot(tmp_path) == before


# --- Ctrl-C ---------------------------------------------------------------------------------------------------------

def interrupt_build(args, out: Path, cwd: Path, started):
    """Start a build, press Ctrl-C (SIGINT to its process group, as a terminal does) as soon as `started()`: the
    build has checked its arguments and prepared its staging folder, and is loading the model or reading images."""
    process = subprocess.Popen([sys.executable, str(ROOT / "build_dataset.py"), *map(str, args), "--out", str(out)],
                               cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
                               start_new_session=True)
    deadline = time.monotonic() + 120
    while not started() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_ctrl_c_is_one_line_exit_130_and_leaves_the_earlier_build(good_args, builds, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(builds["old"], out)
    before = snapshot(out)
    args = [*good_args[:-2], "--workers", "1", "--overwrite"]  # every class; a decoding worker gets SIGINT too
    result = interrupt_build(args, out, tmp_path, started=staging_folder(out).exists)
    line = one_line(result, EXIT_INTERRUPTED)
    assert line.endswith(f"interrupted; {out} is as it was before this run (nothing partial was kept)")
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_ctrl_c_keeps_the_resumable_work_area(good_args, tmp_path):
    out = tmp_path / "out"
    unit = staging_folder(out) / "work" / "scan" / "00000.done.json"  # a finished unit's done marker
    unit.parent.mkdir(parents=True)
    unit.write_text('{"done": true}')
    partial = staging_folder(out) / "half-written.parquet"
    partial.write_text("partial")
    result = interrupt_build(good_args, out, tmp_path, started=lambda: not partial.exists())
    line = one_line(result, EXIT_INTERRUPTED)
    assert "run the same command again to resume" in line
    assert unit.read_text() == '{"done": true}'
    assert sorted(p.name for p in staging_folder(out).iterdir()) == ["work"] and not out.exists()


# --- 2. offline-first and local-first -----------------------------------------------------------------------------

@pytest.mark.parametrize("network", ["offline", "unreachable"])
def test_default_model_download_without_network_is_one_line_at_once(network, inputs, tmp_path):
    extra = {"HF_HOME": str(tmp_path / "hf")}
    if network == "unreachable":
        extra.update(HF_HUB_OFFLINE=None, HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}")
    result = run("--source", inputs["folder"], "--out", tmp_path / "out", "--annotations", inputs["annotations"],
                 cwd=tmp_path, **extra)
    line = one_line(result, EXIT_NETWORK)
    assert "--model-checkpoint PATH" in line and str(tmp_path / "hf" / "hub") in line
    assert ("HF_HUB_OFFLINE=1" if network == "offline" else "could not be reached") in line
    assert not (tmp_path / "out").exists() and not staging_folder(tmp_path / "out").exists()


@pytest.mark.parametrize("network", ["offline", "unreachable"])
def test_annotation_download_without_network_is_one_line(network, inputs, tmp_path, here):
    args = ["--source", inputs["folder"], "--out", tmp_path / "out", "--model", "resnet18", "--model-checkpoint",
            inputs["checkpoint"], "--cache-dir", tmp_path / "cache"]
    extra = {}
    if network == "unreachable":
        args += ["--annotations", f"http://127.0.0.1:{closed_port()}/discover_spurious_features.csv"]
        extra["HF_HUB_OFFLINE"] = None
    line = one_error(here(*args, cwd=tmp_path, **extra), EXIT_NETWORK)
    assert "--annotations PATH" in line and str(tmp_path / "cache" / "annotations") in line
    assert not (tmp_path / "out").exists()


def test_local_inputs_are_checked_before_any_download(tmp_path, here):
    """No network, default model and annotations: a wrong local path is named first, at once."""
    for args, expected in (
        (["--source", "./imagenet"], "--source ./imagenet: no such folder"),
        (["--source", tmp_path, "--out", tmp_path.parent / "o", "--model-checkpoint", "w.ckpt"],
         "--model-checkpoint w.ckpt: no such file"),
        (["--source", tmp_path, "--out", tmp_path.parent / "o", "--annotations", "a.csv"],
         "--annotations a.csv: no such file"),
    ):
        line = one_error(here(*args, cwd=tmp_path), EXIT_USAGE)
        assert expected in line


@pytest.mark.parametrize("command", ["build", "evaluate", "check"])
def test_a_path_that_does_not_exist_says_no_such_folder_first(command, tmp_path, here):
    def attempt(target, run=run, **extra):
        args = {"build": ["build", "--source", target, "--out", tmp_path / "o"],
                "evaluate": ["evaluate", "--dataset", target, "--model", "resnet18"],
                "check": ["check", target]}[command]
        return run(*args, cwd=tmp_path, script=None, **extra)

    option = {"build": "--source", "evaluate": "--dataset", "check": "check"}[command]
    for target in ("./x", "/data/x", "x/train/more"):  # cannot be Hub ids: the Hub is not mentioned
        line = one_error(attempt(target, here), EXIT_USAGE)
        assert f"{option} {target}: no such folder" in line and "Hub" not in line
    line = one_error(attempt("x/train", here), EXIT_NETWORK)  # could be a Hub id; offline (read when asked)
    assert f"{option} x/train: no such folder" in line and "HF_HUB_OFFLINE=1 is set" in line
    port = closed_port()  # HF_ENDPOINT is read when huggingface_hub is imported: a fresh process
    line = one_line(attempt("x/train", HF_HUB_OFFLINE=None, HF_ENDPOINT=f"http://127.0.0.1:{port}"), EXIT_NETWORK)
    assert f"{option} x/train: no such folder" in line and f"http://127.0.0.1:{port} could not be reached" in line


def test_a_hub_id_that_does_not_exist_says_the_hub_answered(tmp_path):
    try:
        from tests.hub_server import HubServer
    except ImportError:
        from hub_server import HubServer

    with HubServer(token="hf_t", user="user") as hub:
        url = hub.url
        result = subprocess.run([sys.executable, "-m", "salient_imagenet_builder.cli", "check", "x/train"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=120,
                                env={**hub.client_env(tmp_path / "hf"), "PYTHONPATH": str(ROOT)})
    line = one_line(result, EXIT_USAGE)
    assert "check x/train: no such folder" in line and f"the Hub ({url}) has no dataset x/train" in line


# --- the pinned annotation CSV ------------------------------------------------------------------------------------

@pytest.fixture
def http_folder(tmp_path):
    """A real local HTTP server over a folder."""
    folder = tmp_path / "served"
    folder.mkdir()
    port = closed_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    yield folder, f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=10)


def test_annotation_download_is_pinned_by_sha256(http_folder, inputs, tmp_path, monkeypatch):
    from salient_imagenet_builder.core import annotations, constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert "/f41ce51b748096fc9c57f276b22db0178ed03030/" in constants.ANNOTATIONS_URL
    assert constants.ANNOTATIONS_SHA256 == "6fc1cfbc6e3c90d456420406b05b69ef45e8ce9e851917ddc751486fcec1fa07"
    folder, url = http_folder
    shutil.copy(inputs["annotations"], folder / "discover_spurious_features.csv")
    url += "/discover_spurious_features.csv"
    cache = tmp_path / "cache"
    with pytest.raises(annotations.AnnotationError, match="not the pinned 6fc1cfbc"):
        annotations.fetch(url, cache, sha256=constants.ANNOTATIONS_SHA256)  # upstream changed: refused
    assert not any(cache.rglob("*"))  # neither the file nor a partial download is kept
    right = hashlib.sha256(Path(inputs["annotations"]).read_bytes()).hexdigest()
    path = annotations.fetch(url, cache, sha256=right)
    assert path.read_bytes() == Path(inputs["annotations"]).read_bytes()


def test_a_cached_annotation_file_that_is_not_the_pinned_one_is_not_used(inputs, tmp_path):
    """The default URL: a file in the cache with another sha256 is ignored (and offline, that is said)."""
    from salient_imagenet_builder.core import annotations, constants

    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(inputs["annotations"], cache / "discover_spurious_features.csv")
    with pytest.raises(annotations.NetworkError, match="not in the cache"):
        annotations.fetch(constants.ANNOTATIONS_URL, cache)


# --- one place turns failures into lines ------------------------------------------------------------------------

def test_a_bug_keeps_its_traceback_and_a_user_error_is_one_line(monkeypatch, caplog):
    from salient_imagenet_builder import cli
    from salient_imagenet_builder.core.errors import HubError
    from salient_imagenet_builder.publish import command

    monkeypatch.setattr(command, "run_check", lambda target, stream: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        cli.main(["check", "x"])

    def refused(target, stream):
        raise HubError("no write access")

    monkeypatch.setattr(command, "run_check", refused)
    assert cli.main(["check", "x"]) == 3
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == ["no write access"]


def test_library_log_lines_are_not_doubled_and_http_is_quiet():
    code = ("import logging, huggingface_hub, datasets\n"
            "from salient_imagenet_builder.cli import setup_logging\n"
            "setup_logging(False)\n"
            "logging.getLogger('huggingface_hub.utils._http').error('hub says boom')\n"
            "logging.getLogger('datasets.load').error('datasets says boom')\n"
            "logging.getLogger('httpx2').info('HTTP Request: GET https://huggingface.co')\n"
            "logging.getLogger('huggingface_hub.utils._http').warning('Retrying in 8s')\n"
            "logging.getLogger('salient_imagenet_builder').info('our own line')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env=env())
    assert result.stderr.count("hub says boom") == 1 and result.stderr.count("datasets says boom") == 1
    assert "HTTP Request" not in result.stderr and "Retrying" not in result.stderr
    assert "our own line" in result.stderr
