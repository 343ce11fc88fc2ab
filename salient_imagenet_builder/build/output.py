"""The output folder: everything is written in a staging folder beside it, then renamed into place, so an
interrupted build never leaves a shard that `load_dataset` would read, and the previous build stays whole until
the new one is complete."""

import os
import shutil
from pathlib import Path

from ..constants import WORK_DIR
from ..errors import InputError


class OutputExists(InputError, FileExistsError):
    pass


def staging_folder(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def prepare_output(out: Path, overwrite: bool) -> Path:
    """Refuse an existing output unless `overwrite`; return a staging folder beside it, emptied except for its
    `work/` folder (an interrupted build's unit results: the builder decides to resume or discard it)."""
    if out.exists() and not overwrite:
        raise OutputExists(f"{out} already exists; pass --overwrite to replace it")
    staging = staging_folder(out)
    if staging.exists():
        for child in staging.iterdir():  # left by an interrupted build: never read by anyone
            if child.name != WORK_DIR:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    staging.mkdir(parents=True, exist_ok=True)
    return staging


def publish(staging: Path, out: Path) -> None:
    """Swap the staging folder into place: the old output stays whole until the new one is complete."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old"
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
