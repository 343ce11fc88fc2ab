"""The update as a job of the engine (`core.job.Job`: the claim of `--out`, the lock, the staging folder and the
swap are the base's): stage a hard-linked copy of the build, rewrite its annotations config and card, swap it in.
It replaces nothing: every file of the build, the user's own included, is kept."""

import logging
import os
import shutil
from pathlib import Path
from typing import Protocol

import pyarrow.parquet as pq

from ..core.card import BuildStats, read_build_info, write_card
from ..core.constants import ANNOTATIONS_CONFIG, BUILD_INFO
from ..core.errors import InputError
from ..core.job import Job
from ..core.output import kind_of
from ..core.schema import annotation_features
from ..core.staging import half_replaced
from ..core.writer import ShardWriter, encode_rows

__all__ = ["Recording", "UpdateError", "UpdateJob", "update"]

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


class UpdateJob(Job):
    kind = "build"
    replacing = False  # every file of the build is kept (linked into the staging folder)

    def __init__(self, dataset: str | os.PathLike, recordings: list[Recording]):
        super().__init__(None, out=dataset)
        self.recordings = recordings

    def check(self) -> None:
        check_build(self.out)

    def prepare(self) -> None:
        """Every input checked before anything is written; a study recorded before is passed its earlier summary."""
        self.info = read_build_info(self.out)
        self.stats = BuildStats.from_dict(self.info["stats"])
        self.rows = read_annotation_rows(self.out)
        self.summaries = {r.name: r.fill(self.rows, self.stats.updates.get(r.name)) for r in self.recordings}

    def write(self, staging: Path) -> dict:
        stats, info = self.stats, self.info
        link_build(self.out, staging)
        writer = ShardWriter(staging / "data", ANNOTATIONS_CONFIG, annotation_features())
        writer.write(encode_rows(self.rows, annotation_features()))
        stats.annotation_shards = [p.name for p in writer.close()]
        stats.annotation_bytes = writer.bytes
        stats.generalization_columns = True
        stats.updates = {**stats.updates, **self.summaries}
        write_card(staging, info["provenance"], stats, info["split"], repo_id=self.out.name)
        return self.summaries


def update(dataset: str | os.PathLike, recordings: list[Recording]) -> dict:
    """Record every study of `recordings` in the local build `dataset`; returns {name: summary}."""
    return UpdateJob(dataset, recordings).run()


def check_build(out: Path) -> None:
    reason = half_replaced(out)
    if reason:
        raise UpdateError(reason)
    if not out.is_dir():
        raise UpdateError(f"{out}: no such folder (update records a study in a local build)")
    if kind_of(out) != "build":
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
