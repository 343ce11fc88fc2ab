"""The output folder: the one place that decides what `--out` may replace, and how a new build takes its place.

Everything is written in a staging folder `.X.partial` beside `X`, then swapped into place, so an interrupted build
never leaves a shard that `load_dataset` would read, and the previous build stays whole until the new one is complete.

What `--out X` may be (checked before any work; a refusal is one line and touches nothing):
- a new path, or an empty folder;
- an earlier output of this tool of the same kind (a build's `build_info.json`, a discovery study's
  `discover_info.json`, names the package), replaced only with `--overwrite`: a build never replaces a study (its
  annotators' answers may be in it) and a study never replaces a build;
- never a file or a symbolic link, never `.`, `/`, the home folder or an ancestor of the current folder, never the
  source folder, a folder inside it or a folder that contains it.

The swap is the `datasets` way: stage, then rename into place (`X` -> `.X.old`, `.X.partial` -> `X`, drop
`.X.old`). An interruption between the two renames leaves `X` missing and the intact earlier output in `.X.old`:
commands that only read (`check`, `show`, `evaluate --dataset`, a build's `--source`) say so in one line and touch
nothing (`half_replaced`); only commands that write `X` (build, discover, generalize, evaluate) finish or undo the
swap (`repair`, from `prepare_output`, on one process) before they start. The replaced output is dropped with its
marker file last, so a kill during that clean-up still leaves a `.X.old` that the next run knows as ours and drops.

`.X.partial/work/` is the builder's resumable work area: it survives a failed or interrupted build (the builder
decides whether the next run reuses it) and is dropped when the build is published.
"""

import fnmatch
import hashlib
import json
import logging
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .constants import (
    BUILD_INFO,
    DEFAULT_GENERALIZE_DIR,
    DEFAULT_OUT,
    DEFAULT_RESULTS_DIR,
    DEFAULT_STUDY_DIR,
    DISCOVER_INFO,
    EVALUATE_INFO,
    GALLERY_FILE,
    GENERALIZE_INFO,
    PAIRS_FILE,
    PACKAGE_NAME,
    WORK_DIR,
)
from .errors import InputError, Interrupted
from .interrupts import is_interrupt, stop_if_interrupted

log = logging.getLogger(__name__)

class OutputExists(InputError, FileExistsError):
    """`--out` cannot be used as it is (exists, is not ours, is protected)."""


def staging_folder(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def old_folder(out: Path) -> Path:
    return out.parent / f".{out.name}.old"


@dataclass(frozen=True)
class OutputKind:
    """What an `--out` folder of this tool holds: its name in messages, its marker file, a good `--out` to suggest,
    what its command replaces, and (for a kind whose command replaces the whole folder) the files it writes, as
    glob patterns of paths inside the folder: `--overwrite` refuses to delete any other file."""

    noun: str
    marker: str
    example: str
    replaces: str
    owns: tuple[str, ...] | None = None


STUDY_FILES = ("index.html", PAIRS_FILE, "panels/*.png")
OUTPUT_KINDS = {"build": OutputKind("a build", BUILD_INFO, DEFAULT_OUT, "--overwrite only replaces an earlier build",
                                    (BUILD_INFO, "README.md", GALLERY_FILE, "attach_info.json", "data/*.parquet")),
         "study": OutputKind("a discovery study", DISCOVER_INFO, DEFAULT_STUDY_DIR,
                             "--overwrite only replaces an earlier study", (DISCOVER_INFO, *STUDY_FILES)),
         "generalization": OutputKind("a generalization study", GENERALIZE_INFO, DEFAULT_GENERALIZE_DIR,
                                      "--overwrite only replaces an earlier generalization study",
                                      (GENERALIZE_INFO, *STUDY_FILES)),
         "results": OutputKind("a results folder", EVALUATE_INFO, DEFAULT_RESULTS_DIR,
                               "evaluate writes only into a new or empty folder or its own earlier results",
                               (EVALUATE_INFO, "comparison.csv", "comparison.png", "*/classes.csv", "*/features.csv",
                                "*/summary.json", "*/core_vs_spurious.png", "*/feature_drops.png"))}


def foreign_files(folder: Path, kind: str) -> list[str]:
    """Files in `folder` (an output of `kind`) that this tool did not write there (an annotator's export, the user's
    notes), as paths inside it; none for a kind whose command never replaces the folder."""
    owns = OUTPUT_KINDS[kind].owns
    if owns is None:
        return []
    found = (p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir() or p.is_symlink())
    return sorted(path for path in found if not any(fnmatch.fnmatchcase(path, pattern) for pattern in owns))


def output_kind(folder: Path) -> str | None:
    """"build", "study", "generalization" or "results" when `folder` is an output of this tool (its marker file names the
    package), else None."""
    if is_build(folder):
        return "build"
    for kind, what in OUTPUT_KINDS.items():
        if kind == "build":  # `is_build`, which also knows builds from before the marker
            continue
        try:
            info = json.loads((folder / what.marker).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and info.get("package") == PACKAGE_NAME:
            return kind
    return None


def is_build(folder: Path) -> bool:
    """A build of this tool: its `build_info.json` names the package (builds from before the marker: a provenance
    with our package version)."""
    try:
        info = json.loads((folder / BUILD_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(info, dict):
        return False
    legacy = isinstance(info.get("provenance"), dict) and "package_version" in info["provenance"]
    return info.get("package") == PACKAGE_NAME or ("package" not in info and legacy)


# --- what --out may be ------------------------------------------------------------------------------------------

def protected_reason(out: Path) -> str | None:
    """Why `out` may never be written or replaced, or None."""
    resolved, cwd, home = out.resolve(), Path.cwd().resolve(), Path.home().resolve()
    if resolved == Path(resolved.anchor):
        return "is the root folder"
    if resolved == home:
        return "is the home folder"
    if resolved == cwd:
        return "is the current folder"
    if cwd.is_relative_to(resolved):
        return "contains the current folder"
    return None


def _overlaps_source(out: Path, source: str | None) -> str | None:
    if not source or not Path(source).expanduser().exists():
        return None  # a Hub id, or nothing to compare with
    resolved, src = out.resolve(), Path(source).expanduser().resolve()
    if resolved == src:
        return "is the --source folder"
    if resolved.is_relative_to(src):
        return "is inside the --source folder"
    if src.is_relative_to(resolved):
        return "contains the --source folder"
    return None


def check_out(out: Path, overwrite: bool, source: str | None = None, kind: str = "build",
              replacing: bool = True) -> None:
    """The one guard of an `--out` folder (a build, a study, evaluate's results): refuse what this command (writing
    a `kind`) must not write (see the module docstring); touches nothing, and says why in one line. `replacing`:
    the command replaces the folder (False: `update`, which keeps every file of it)."""
    name, what = f"--out {out}", OUTPUT_KINDS[kind]
    if out.is_symlink():
        raise OutputExists(f"{name}: is a symbolic link; give the path of a folder (a new one, or an earlier "
                           f"{kind})")
    if out.exists() and not out.is_dir():
        raise OutputExists(f"{name}: is a file, not a folder; choose another --out, e.g. --out {what.example}")
    reason = protected_reason(out)
    if reason:
        raise OutputExists(f"{name}: {reason}; refusing to write or replace it. Choose a folder of its own, e.g. "
                           f"--out {what.example}")
    reason = _overlaps_source(out, source)
    if reason:
        raise OutputExists(f"{name}: {reason}; refusing to write there. Choose a folder outside the source")
    for leftover in (staging_folder(out), old_folder(out)):
        if leftover.is_symlink() or (leftover.exists() and not leftover.is_dir()):
            raise OutputExists(f"{name}: {leftover} is in the way (a file or link where this tool keeps its "
                               "temporary folder); move or remove it")
    parent = next(p for p in out.absolute().parents if p.exists())  # the folder the staging folder goes into
    if out.parent.exists() and not out.parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputExists(f"{name}: cannot write in {parent} (not a writable folder); choose another --out")
    old = old_folder(out)
    if old.exists() and output_kind(old) is None and any(old.iterdir()):  # ours (or an empty one) `repair` handles
        raise OutputExists(f"{name}: {old} is in the way (not {what.noun} of this tool, so not removed); move or "
                           "remove it")
    current = out if out.exists() else old  # a half-replaced `out`: its intact output is in `old`
    if not current.exists() or not any(current.iterdir()):
        return
    found = output_kind(current)
    if found is None:
        raise OutputExists(f"{name}: exists and is not {what.noun} of this tool (no {what.marker}); {what.replaces}. "
                           "Choose another --out")
    if found != kind:
        raise OutputExists(f"{name}: is {OUTPUT_KINDS[found].noun} of this tool, not {what.noun}; {what.replaces}. "
                           "Choose another --out")
    if not overwrite:
        label = "generalization study" if kind == "generalization" else kind
        raise OutputExists(f"{name}: an earlier {label} is there; pass --overwrite to replace it (it stays whole "
                           f"until the new {label} is complete)")
    foreign = foreign_files(current, kind) if replacing else []
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputExists(f"{name}: --overwrite would delete {len(foreign)} file(s) this tool did not write there "
                           f"({shown}); move them out of it, or choose another --out")


def check_out_file(out: Path, *, what: str, example, is_ours, foreign: str, overwrite: bool = True,
                   inputs=(), suffix: tuple[str, str] | None = None) -> None:
    """The one guard of an `--out` file (show's PNG, ingest's CSV): never a folder, never one of the command's
    inputs, a `suffix` = (ending, message) when the format needs one, and an existing file replaced only when
    `is_ours(path)` (an earlier output of the same kind; `foreign` says what it is not) and `overwrite`."""
    name = f"--out {out}"
    if out.is_dir():
        raise OutputExists(f"{name}: is a folder; give {what}, e.g. --out {example}")
    if suffix is not None and out.suffix.lower() != suffix[0]:
        raise OutputExists(f"{name}: {suffix[1]}")
    if any(out.resolve() == Path(p).resolve() for p in inputs):
        raise OutputExists(f"{name}: is one of the input files; choose another --out")
    if not out.exists():
        return
    if not overwrite:
        raise OutputExists(f"{name}: already exists; pass --overwrite to replace it")
    if not is_ours(out):
        raise OutputExists(f"{name}: exists and is not {foreign}; choose another --out")


def prepare_output(out: Path, overwrite: bool, source: str | None = None, kind: str = "build",
                   replacing: bool = True) -> Path:
    """Check `out` (see `check_out`) and return the staging folder beside it, emptied except for `work/`."""
    out = Path(out)
    check_out(out, overwrite, source, kind, replacing)
    repair(out)
    if old_folder(out).exists():  # an output of another kind that `repair` leaves alone
        raise OutputExists(f"--out {out}: {old_folder(out)} is in the way (not {OUTPUT_KINDS[kind].noun}, so not "
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


# --- the swap and its repair ------------------------------------------------------------------------------------

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
    markers = {kind.marker for kind in OUTPUT_KINDS.values()}
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
    kind = output_kind(old)
    if kind is None:
        return None
    writer = {"build": "build (python build_dataset.py ...)", "study": "discover", "generalization": "generalize",
              "results": "evaluate"}[kind]
    return (f"{out}: a replacement of it was interrupted; the intact {kind} is in {old}. Run the {writer} that was "
            f"writing --out {out} again to finish or undo the replacement (this command changes nothing)")


def repair(out: Path) -> None:
    """Finish or undo a swap that was interrupted between its two renames; drop a replaced build left behind."""
    out, old, staging = Path(out), old_folder(Path(out)), staging_folder(Path(out))
    if old.is_symlink() or not old.is_dir():
        return
    if not any(old.iterdir()):  # left by a removal cut short after its last file
        old.rmdir()
        return
    if not out.exists() and not out.is_symlink():
        if output_kind(old) is None:
            return  # not ours: leave it alone
        if _complete(staging):  # the new output was complete: finish the swap
            shutil.rmtree(staging / WORK_DIR, ignore_errors=True)
            os.rename(staging, out)
            log.warning("%s: finished the interrupted replacement of an earlier %s", out, output_kind(out))
        else:
            os.rename(old, out)
            log.warning("%s: restored the earlier %s (its replacement was interrupted)", out, output_kind(out))
            return
    if output_kind(out) is not None and output_kind(out) == output_kind(old):
        try:
            drop_output(old)  # the output `out` replaced, left by an interrupted clean-up
        except OSError as e:  # in the way of nothing: the next run tries again
            log.warning("%s: could not remove it (%s)", old, e.strerror or e)


def _complete(staging: Path) -> bool:
    """A staged output that was whole: a build with its card, a study with its page, results with their marker
    (written last)."""
    kind = output_kind(staging)
    last = {"build": "README.md", "study": "index.html", "generalization": "index.html", "results": EVALUATE_INFO}
    return kind is not None and (staging / last[kind]).is_file()


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
