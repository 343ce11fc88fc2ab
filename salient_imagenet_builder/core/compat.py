"""The few private interfaces of Python and our dependencies that have no public equivalent, each in one place, each
with a test (tests/test_compat.py) that fails on the version that breaks it."""

import argparse
import atexit

__all__ = ["parser_actions", "run_exit_handlers", "shared_storage"]


def shared_storage(nbytes: int):
    """A new, uninitialised torch storage of `nbytes` in shared memory (what a DataLoader worker sends back without a
    copy). `torch.empty(...).share_memory_()` would first fault in ordinary pages, then copy them."""
    import torch

    return torch.UntypedStorage._new_shared(nbytes)


def run_exit_handlers() -> None:
    """Run the process's exit handlers now (logging's flush, multiprocessing's and tempfile's clean-ups), for a
    command line that then ends with `os._exit`, skipping the interpreter's slow teardown."""
    atexit._run_exitfuncs()


def parser_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The arguments of a parser, in order (argparse offers no public list)."""
    return list(parser._actions)
