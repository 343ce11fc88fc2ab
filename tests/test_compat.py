"""`core.compat`: each private interface of Python or a dependency we rely on, tried on the installed version, so
the version that breaks one fails here (and not in a user's run)."""

import argparse
import subprocess
import sys
from pathlib import Path

import torch

from salient_imagenet_builder.core.compat import parser_actions, shared_storage

ROOT = Path(__file__).resolve().parents[1]


def test_shared_storage_is_shared_memory_of_the_size_asked():
    storage = shared_storage(4096)
    assert isinstance(storage, torch.UntypedStorage) and storage.nbytes() == 4096 and storage.is_shared()
    tensor = torch.empty(0, dtype=torch.uint8).set_(storage)
    tensor.fill_(7)  # writable, and the bytes are the storage's
    assert tensor.numel() == 4096 and int(tensor.sum()) == 7 * 4096


def test_run_exit_handlers_runs_them_before_a_fast_exit(tmp_path):
    """The command line's Ctrl-C path: the handlers run, then `os._exit` skips the interpreter's teardown."""
    done = tmp_path / "flushed"
    script = (f"import atexit, os, pathlib\n"
              f"atexit.register(lambda: pathlib.Path({str(done)!r}).write_text('yes'))\n"
              f"from salient_imagenet_builder.core.compat import run_exit_handlers\n"
              f"run_exit_handlers()\nos._exit(5)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 5, result.stderr
    assert done.read_text() == "yes"


def test_parser_actions_are_the_arguments_in_order():
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    group = parser.add_argument_group("speed")
    group.add_argument("--workers", type=int)
    parser.add_argument("--verbose", action="store_true")
    assert [a.dest for a in parser_actions(parser)] == ["help", "path", "workers", "verbose"]
    assert parser_actions(parser)[2].type is int
