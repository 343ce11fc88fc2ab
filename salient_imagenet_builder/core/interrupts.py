"""Ctrl-C, once: the first SIGINT stops the command (KeyboardInterrupt) and is remembered; any further one is ignored.

Remembering it matters because a KeyboardInterrupt does not always reach the command. Python runs the handler
between any two bytecodes, including those of Python code a C extension calls back: pyarrow compares `datasets`'
extension types (`Array2D`) by calling their Python methods, and when Ctrl-C lands there, pyarrow drops the
KeyboardInterrupt and fails with its own error ("arrays to be concatenated must be identically typed").
`is_interrupt` tells such an error from a real failure, and `stop_if_interrupted`, called before work is committed
(a finished unit, an output renamed into place), stops a command whose Ctrl-C was dropped without an error, or
taken for a corrupt image, instead of letting it finish and keep that work.
"""

import logging
import signal
import sys
import threading
from contextlib import contextmanager

__all__ = ["ctrl_c_received", "ctrl_c_stops_once", "is_interrupt", "stop_if_interrupted"]

log = logging.getLogger(__name__)
_received = threading.Event()


@contextmanager
def ctrl_c_stops_once(owns_process: bool):
    """The handler for the block (a terminal sends SIGINT to every process of the command: worker processes ignore
    it), so an impatient second Ctrl-C cannot turn the clean-up into a traceback. Outside the main thread nothing
    changes. After it, a caller's process is as it was; a command line's own process (`owns_process`), which ends
    next, goes on ignoring Ctrl-C if it had one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous, unraisable = signal.signal(signal.SIGINT, _first_ctrl_c), sys.unraisablehook
    try:
        yield
    finally:
        if not (owns_process and ctrl_c_received()):
            signal.signal(signal.SIGINT, previous)
        if not owns_process:
            sys.unraisablehook = unraisable
            _received.clear()


def ctrl_c_received() -> bool:
    return _received.is_set()


def is_interrupt(error: BaseException) -> bool:
    """A KeyboardInterrupt, or any error raised after Ctrl-C (in its place, or while stopping because of it)."""
    return isinstance(error, KeyboardInterrupt) or ctrl_c_received()


def stop_if_interrupted() -> None:
    if ctrl_c_received():
        raise KeyboardInterrupt


def _first_ctrl_c(signum, frame):
    _received.set()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # an object the Ctrl-C cut off half-made may fail in its destructor (tqdm 4.66's __del__ raises AttributeError
    # when its __init__ was interrupted), and a C extension reports the KeyboardInterrupt it dropped as unraisable:
    # "Exception ignored in ..." with a traceback, after the command has stopped
    sys.unraisablehook = _ignore_unraisable
    raise KeyboardInterrupt


def _ignore_unraisable(unraisable) -> None:
    log.debug("ignored while stopping: %s in %r", unraisable.exc_value, unraisable.object)
