"""The staging folder beside `--out` and the swap into place, the `datasets` way: everything is written in
`.X.partial` beside `X`, then renamed into place (`X` -> `.X.old`, `.X.partial` -> `X`, drop `.X.old`), so an
interrupted run never leaves a file that `load_dataset` would read, and the earlier output stays whole until the new
one is complete.

An interruption between the two renames leaves `X` missing and the intact earlier output in `.X.old`: commands that
only read (`check`, `show`, `evaluate --dataset`, a build's `--source`) say so in one line and touch nothing
(`half_replaced`); a command that writes `X` finishes or undoes the swap (`repair`, from `prepare_output`, on one
process) before it starts. The replaced output is dropped with its marker file last, so a kill during that clean-up
still leaves a `.X.old` that the next run knows as ours and drops.
"""

import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from .constants import WORK_DIR
from .errors import Interrupted
from .interrupts import is_interrupt, stop_if_interrupted
from .output import OutputExists, check_out, kind_of, old_folder, staging_folder
from .registry import output_kind, output_kinds

__all__ = ["discard_staging", "drop_output", "half_replaced", "interrupted", "interruptible", "move_into_place",
           "prepare_output", "repair"]

log = logging.getLogger(__name__)


def prepare_output(out: Path, overwrite: bool, source: str | None, kind: str, replacing: bool = True) -> Path:
    """Check `out` (see `check_out`) and return the staging folder beside it, emptied except for `work/`."""
    out = Path(out)
    check_out(out, overwrite, source, kind, replacing)
    repair(out, kind)
    if old_folder(out).exists():  # an output of another kind that `repair` leaves alone
        raise OutputExists(f"--out {out}: {old_folder(out)} is in the way (not {output_kind(kind).noun}, so not "
                           "removed); move or remove it")
    staging = staging_folder(out)
    try:
        if staging.is_dir():  # left by an interrupted build: never read by anyone but the builder
            _empty_except(staging, WORK_DIR)
        staging.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputExists(f"--out {out}: cannot create {staging} ({e.strerror or e})") from None
    return staging


@contextmanager
def interruptible(out: Path):
    """Ctrl-C in the block (a KeyboardInterrupt, or the error a C extension raised in its place): `interrupted`."""
    try:
        yield
    except Exception as error:  # after Ctrl-C any error (pyarrow's in its place, one while stopping) is that
        if not is_interrupt(error) or isinstance(error, Interrupted):
            raise
        log.debug("stopped by Ctrl-C", exc_info=True)
        raise interrupted(out) from None
    except KeyboardInterrupt:
        raise interrupted(out) from None


def interrupted(out: Path) -> Interrupted:
    """Ctrl-C: one line that says whether finished work was kept for the next run to resume from."""
    if (staging_folder(out) / WORK_DIR).is_dir():
        return Interrupted(f"interrupted; the finished work is kept in {staging_folder(out)}: run the same command "
                           "again to resume")
    return Interrupted(f"interrupted; {out} is as it was before this run (nothing partial was kept)")


def discard_staging(staging: Path) -> bool:
    """After a failed or interrupted build: remove the partial output; keep `work/` (True when there is one)."""
    if not staging.is_dir():
        return False
    _empty_except(staging, WORK_DIR)
    if any((staging / WORK_DIR).glob("*/*.done.json")):  # finished units: the next run resumes from them
        return True
    shutil.rmtree(staging, ignore_errors=True)
    return False


def _empty_except(folder: Path, keep: str) -> None:
    for entry in folder.iterdir():
        if entry.name == keep and entry.is_dir() and not entry.is_symlink():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def move_into_place(staging: Path, out: Path) -> None:
    """Rename the complete staging folder into place; an earlier output steps aside first and is dropped after.
    Between the two renames `out` is missing and the earlier output whole in `.out.old` (see `half_replaced`)."""
    stop_if_interrupted()  # a command Ctrl-C'd never publishes what it made, whatever some library did with the signal
    shutil.rmtree(staging / WORK_DIR, ignore_errors=True)  # the output is complete: its resume data is spent
    if not out.exists():
        os.rename(staging, out)
        return
    old = old_folder(out)
    if old.exists():
        drop_output(old)
    os.rename(out, old)
    os.rename(staging, out)  # an interruption right before this line is what `repair` undoes
    drop_output(old)


def drop_output(folder: Path) -> None:
    """Remove a replaced output, its marker file last: cut short (a kill), it still names itself an output of this
    tool, which the next run's `repair` drops, rather than a foreign folder that blocks `--out`."""
    markers = {kind.marker for kind in output_kinds().values()}
    for entry in folder.iterdir():
        if entry.name in markers:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    shutil.rmtree(folder)


def half_replaced(out: Path) -> str | None:
    """For commands that only read `out`: one line when an interrupted replacement left it half-done (`out`
    missing, the earlier output intact in `.out.old`), saying where the intact output is and what repairs it."""
    out, old = Path(out), old_folder(Path(out))
    if out.exists() or out.is_symlink() or old.is_symlink() or not old.is_dir():
        return None
    found = kind_of(old)
    if found is None:
        return None
    kind = output_kind(found)
    writer = f"the {kind.command}" if kind.command else "the command"
    return (f"{out}: a replacement of it was interrupted; the intact {kind.label} is in {old}. Run {writer} that was "
            f"writing --out {out} again to finish or undo the replacement (this command changes nothing)")


def repair(out: Path, kind: str) -> None:
    """Finish or undo a swap of an output of `kind` that was interrupted between its two renames; drop a replaced
    output left behind."""
    out, old, staging = Path(out), old_folder(Path(out)), staging_folder(Path(out))
    if old.is_symlink() or not old.is_dir():
        return
    if not any(old.iterdir()):  # left by a removal cut short after its last file
        old.rmdir()
        return
    if kind_of(old) != kind:
        return  # another kind's, or not ours: left alone (`prepare_output` says so)
    label = output_kind(kind).label
    if not out.exists() and not out.is_symlink():
        if (staging / output_kind(kind).last).is_file() and kind_of(staging) == kind:  # complete: finish the swap
            shutil.rmtree(staging / WORK_DIR, ignore_errors=True)
            os.rename(staging, out)
            log.warning("%s: finished the interrupted replacement of an earlier %s", out, label)
        else:
            os.rename(old, out)
            log.warning("%s: restored the earlier %s (its replacement was interrupted)", out, label)
            return
    if kind_of(out) == kind:
        try:
            drop_output(old)  # the output `out` replaced, left by an interrupted clean-up
        except OSError as e:  # in the way of nothing: the next run tries again
            log.warning("%s: could not remove it (%s)", old, e.strerror or e)
