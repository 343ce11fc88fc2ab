"""The update itself: stage a hard-linked copy of the build, rewrite its annotations config and card, swap it in."""

import logging
import os
import shutil
from pathlib import Path
from typing import Protocol

import pyarrow.parquet as pq

from ..core.card import BuildStats, read_build_info, write_card
from ..core.constants import ANNOTATIONS_CONFIG, BUILD_INFO
from ..core.errors import InputError
from ..core.output import half_replaced, is_build, move_into_place, prepare_output
from ..core.schema import annotation_features
from ..core.writer import ShardWriter, encode_rows

log = logging.getLogger(__name__)
REWRITTEN = ("README.md", BUILD_INFO)  # written anew in the staging folder, with the annotation shards


class UpdateError(InputError):
    pass


class Recording(Protocol):
    """One study recorded in a build."""

    name: str  # its key in the card's `updates`

    def fill(self, rows: list[dict], earlier: dict | None) -> dict:
        """Set this study's columns in the annotations rows (in place); return its summary for the card. `earlier`:
        the summary an earlier update of this study recorded (None: the first)."""


def update(dataset: str | os.PathLike, recordings: list[Recording]) -> dict:
    """Record every study of `recordings` in the local build `dataset`; returns {name: summary}."""
    out = Path(dataset)
    check_build(out)
    info = read_build_info(out)
    stats = BuildStats.from_dict(info["stats"])
    rows = read_annotation_rows(out)
    # every input checked before anything is written; a study recorded before is passed its earlier summary
    summaries = {r.name: r.fill(rows, stats.updates.get(r.name)) for r in recordings}
    staging = prepare_output(out, overwrite=True, replacing=False)  # every file of it is kept (linked)
    try:
        link_build(out, staging)
        writer = ShardWriter(staging / "data", ANNOTATIONS_CONFIG, annotation_features())
        writer.write(encode_rows(rows, annotation_features()))
        stats.annotation_shards = [p.name for p in writer.close()]
        stats.annotation_bytes = writer.bytes
        stats.generalization_columns = True
        stats.updates = {**stats.updates, **summaries}
        write_card(staging, info["provenance"], stats, info["split"], repo_id=out.name)
        move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # the build stays as it was
        raise
    return summaries


def check_build(out: Path) -> None:
    reason = half_replaced(out)
    if reason:
        raise UpdateError(reason)
    if not out.is_dir():
        raise UpdateError(f"{out}: no such folder (update records a study in a local build)")
    if not is_build(out):
        raise UpdateError(f"{out}: not a build of this tool (no {BUILD_INFO})")


def annotation_shards(out: Path) -> list[Path]:
    shards = sorted((out / "data").glob(f"{ANNOTATIONS_CONFIG}-*.parquet"))
    if not shards:
        raise UpdateError(f"{out}: no annotation shards (data/{ANNOTATIONS_CONFIG}-*.parquet)")
    return shards


def read_annotation_rows(out: Path) -> list[dict]:
    """The annotations config's rows; a build from before the generalization columns gets them null."""
    rows = [row for path in annotation_shards(out) for row in pq.read_table(path).to_pylist()]
    for row in rows:
        row.setdefault("generalization", None)
        row.setdefault("generalizes_to_rank", None)
    return rows


def link_build(out: Path, staging: Path) -> None:
    """Every file of the build but the annotation shards and the card, hard-linked into the staging folder (the
    same bytes, no copy; copied where the file system cannot link)."""
    skipped = {p.resolve() for p in annotation_shards(out)} | {(out / name).resolve() for name in REWRITTEN}
    for path in sorted(out.rglob("*")):
        if path.is_dir() or path.resolve() in skipped:
            continue
        target = staging / path.relative_to(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
