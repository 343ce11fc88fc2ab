"""The output folder: the one place that decides what `--out` may replace, and how a new build takes its place.

Everything is written in a staging folder `.X.partial` beside `X`, then swapped into place, so an interrupted build
never leaves a shard that `load_dataset` would read, and the previous build stays whole until the new one is complete.

What `--out X` may be (checked before any work; a refusal is one line and touches nothing):
- a new path, or an empty folder;
- an earlier output of this tool of the same kind (each kind is registered, `core.registry.OutputKind`: its marker
  file names the package), replaced only with `--overwrite`, and only when every file in it is one this tool wrote
  there (the kind's own files): an annotator's export or a note saved in a study or a build is never deleted, and a
  build never replaces a study (or any other kind);
- never a file or a symbolic link, never `.`, `/`, the home folder or an ancestor of the current folder, never the
  source folder, a folder inside it or a folder that contains it.

The staging folder and the swap are `core.staging`'s: stage, then rename into place. `.X.partial/work/` is a job's
resumable work area (`core.job`): it survives a failed or interrupted run and is dropped when the output is
published.

The engine's own kind is the dataset (a build: `build_info.json`, the card, `data/`), which several commands write.
"""

import fnmatch
import hashlib
import json
import logging
import os
from pathlib import Path

from .constants import BUILD_INFO, DEFAULT_OUT, GALLERY_FILE, PACKAGE_NAME
from .errors import InputError
from .registry import OutputKind, output_kind, output_kinds, register_output

log = logging.getLogger(__name__)


class OutputExists(InputError, FileExistsError):
    """`--out` cannot be used as it is (exists, is not ours, is protected)."""


def staging_folder(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def old_folder(out: Path) -> Path:
    return out.parent / f".{out.name}.old"


def _legacy_build(folder: Path) -> bool:
    """A build from before the marker named the package: a provenance with our package version."""
    info = _marker(folder / BUILD_INFO)
    return info is not None and "package" not in info and "package_version" in (info.get("provenance") or {})


DATASET = register_output(OutputKind(
    name="build", noun="a build", label="build", marker=BUILD_INFO, example=DEFAULT_OUT, command="",
    owns=(BUILD_INFO, "README.md", GALLERY_FILE, "data/*.parquet"), last="README.md", legacy=_legacy_build))


def _marker(path: Path) -> dict | None:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def kind_of(folder: Path) -> str | None:
    """The registered kind of an output of this tool (its marker file names the package), else None."""
    for kind in output_kinds().values():
        info = _marker(folder / kind.marker)
        if info is not None and info.get("package") == PACKAGE_NAME or kind.legacy is not None and kind.legacy(folder):
            return kind.name
    return None


def foreign_files(folder: Path, kind: str) -> list[str]:
    """Files in `folder` (an output of `kind`) that this tool did not write there (an annotator's export, the user's
    notes), as paths inside it."""
    owns = output_kind(kind).owns
    found = (p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir() or p.is_symlink())
    return sorted(path for path in found if not any(fnmatch.fnmatchcase(path, pattern) for pattern in owns))


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


def check_out(out: Path, overwrite: bool, source: str | None, kind: str, replacing: bool = True) -> None:
    """The one guard of an `--out` folder (a build, a study, evaluate's results): refuse what this command (writing
    a `kind`) must not write (see the module docstring); touches nothing, and says why in one line. `replacing`:
    the command replaces the folder (False: `update`, which keeps every file of it)."""
    name, what = f"--out {out}", output_kind(kind)
    if out.is_symlink():
        raise OutputExists(f"{name}: is a symbolic link; give the path of a folder (a new one, or an earlier "
                           f"{what.label})")
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
    if old.exists() and kind_of(old) is None and any(old.iterdir()):  # ours (or an empty one) `repair` handles
        raise OutputExists(f"{name}: {old} is in the way (not {what.noun} of this tool, so not removed); move or "
                           "remove it")
    current = out if out.exists() else old  # a half-replaced `out`: its intact output is in `old`
    if not current.exists() or not any(current.iterdir()):
        return
    found = kind_of(current)
    if found is None:
        raise OutputExists(f"{name}: exists and is not {what.noun} of this tool (no {what.marker}); {what.replaces}. "
                           "Choose another --out")
    if found != kind:
        raise OutputExists(f"{name}: is {output_kind(found).noun} of this tool, not {what.noun}; {what.replaces}. "
                           "Choose another --out")
    if not (overwrite or what.rewritten or not replacing):  # an update replaces nothing
        raise OutputExists(f"{name}: an earlier {what.label} is there; pass --overwrite to replace it (it stays "
                           f"whole until the new {what.label} is complete)")
    foreign = foreign_files(current, kind) if replacing else []
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        replacing_it = f"writing the {what.label} again" if what.rewritten else "--overwrite"
        raise OutputExists(f"{name}: {replacing_it} would delete {len(foreign)} file(s) this tool did not write "
                           f"there ({shown}); move them out of it, or choose another --out")


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
