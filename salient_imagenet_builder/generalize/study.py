"""A generalization study, as a library call: `make_study(GeneralizeConfig(dataset=..., out=...))`.

Everything comes from the build: the pairs (its annotations config), each pair's ranked images and their masks
(its image rows). Only an `--image-mode none` build needs `--imagenet`, read by image id for the shown images
alone. The study is written in a staging folder beside `out` and renamed into place when complete.
"""

import csv
import io
import json
import logging
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..core import render
from ..core.annotation_page import study_data, write_page
from ..core.annotations import GENERALIZATION_PAIR_COLUMNS, band_text
from ..core.constants import (
    ANNOTATOR_TOP_IMAGES,
    BUILD_INFO,
    DEFAULT_BANDS,
    DEFAULT_GENERALIZE_DIR,
    GENERALIZE_INFO,
    PACKAGE_NAME,
    PAIRS_FILE,
    WORK_DIR,
)
from ..core.dataset import DatasetView, Shown
from ..core.errors import InputError
from ..core.images import CorruptImage, center_view, decode
from ..core.output import (
    check_out,
    discard_staging,
    move_into_place,
    prepare_output,
    staging_folder,
    write_text_atomic,
)
from ..core.schema import wordnet_ids
from ..core.sources import open_source
from ..core.targets import resolve
from ..core.units import WorkLock
from .bands import check_within, parse_bands
from .panels import BandTask, render_band_panel

log = logging.getLogger(__name__)
# pairs.csv: the columns ingest checks, then what the panel shows (the image ids of A and B, space-separated)
PAIR_COLUMNS = (*GENERALIZATION_PAIR_COLUMNS, "Input.feature_rank", "Input.panel", "Input.images_a",
                "Input.images_b")

__all__ = ["GeneralizeConfig", "make_study"]


@dataclass
class GeneralizeConfig:
    """The options of `salient-imagenet generalize`, as fields."""

    dataset: str
    out: str = DEFAULT_GENERALIZE_DIR
    bands: str | tuple = DEFAULT_BANDS
    classes: list[int] | None = None
    imagenet: str | None = None
    imagenet_type: str | None = None
    split: str | None = None
    title: str | None = None
    overwrite: bool = False
    command: str = ""


def make_study(config: GeneralizeConfig) -> dict:
    """Panels, pairs.csv, the page and generalize_info.json in `config.out`; returns what the info file holds."""
    out = Path(config.out)
    check_out(out, config.overwrite, kind="generalization")  # before reading anything
    bands = parse_bands(config.bands)
    if config.imagenet:
        resolve(config.imagenet, "--imagenet")  # "no such folder" before the dataset is read
    view = DatasetView(config.dataset, config.split, command="generalize")
    build = json.loads(view.target.read_text(BUILD_INFO)) if BUILD_INFO in view.target.files else {}
    constants = build.get("provenance", {}).get("constants", {})
    check_within(bands, constants.get("top_k"), config.dataset)
    pairs = [p for p in view.pairs() if config.classes is None or p["class_index"] in config.classes]
    if not pairs:
        raise InputError(f"{config.dataset}: no annotated pair of the classes {config.classes} (its annotations "
                         "config names the pairs to study)")
    images = ImageSupply(config, build, constants)
    lock = WorkLock(staging_folder(out) / WORK_DIR, f"--out {out}")
    try:
        staging = prepare_output(out, config.overwrite, kind="generalization")
        try:
            info = _write(staging, config, view, pairs, bands, images)
        except BaseException:
            discard_staging(staging)
            raise
        move_into_place(staging, out)
    finally:
        lock.release()
    return info


def _write(staging: Path, config, view, pairs: list[dict], bands, images) -> dict:
    tasks, short = [], []
    for class_index in sorted({p["class_index"] for p in pairs}):
        ranked = view.class_images(class_index, max(b for _, b in bands))
        class_pairs = [p for p in pairs if p["class_index"] == class_index]
        images.fill([s for p in class_pairs for s in ranked.get(p["feature_index"], [])])
        for pair in class_pairs:
            made, missing = band_tasks(pair, ranked.get(pair["feature_index"], []), bands)
            tasks += made
            short += missing
        for task in (t for t in tasks if t.class_index == class_index):
            render.save_png(render_band_panel(task), staging / task.panel)
    if not tasks:
        most = _most_ranked(view, pairs)
        if most == 0:
            raise InputError(f"{config.dataset}: no image of the build is grouped into the classes of its pairs "
                             f"({_classes(pairs)}); nothing to show (check --classes)")
        raise InputError(f"{config.dataset}: no pair has images at the ranks {', '.join(map(band_text, bands))} "
                         f"(its pairs rank {most} images at most); choose lower --bands")
    if short:
        log.warning("%d (pair, band)(s) left out: the pair ranks fewer images than the band's last rank, e.g. class "
                    "%d feature %d band %s", len(short), *short[0])
    write_pairs(staging / PAIRS_FILE, tasks)
    title = config.title or f"Do the features of {config.dataset} generalize?"
    write_page(staging, study_data([t.page_task() for t in tasks], title, mode="generalize"))
    info = provenance(config, bands, tasks, short, images)
    write_text_atomic(staging / GENERALIZE_INFO, json.dumps(info, indent=2))
    return info


def band_tasks(pair: dict, ranked: list[Shown], bands) -> tuple[list[BandTask], list[tuple]]:
    """The pair's task per band, and the bands it cannot fill (fewer ranked images than the band's end)."""
    by_rank = {s.rank: s for s in ranked}
    top = [by_rank[r] for r in range(1, ANNOTATOR_TOP_IMAGES + 1) if r in by_rank]
    made, missing = [], []
    for first, last in bands:
        shown = [by_rank.get(r) for r in range(first, last + 1)]
        key = (pair["class_index"], pair["feature_index"], f"{first}-{last}")
        if None in shown:
            missing.append(key)
            continue
        made.append(BandTask(*key[:2], pair["feature_rank"], key[2], top, shown))
    return made, missing


def _classes(pairs) -> str:
    classes = sorted({p["class_index"] for p in pairs})
    return ", ".join(map(str, classes[:10])) + (" ..." if len(classes) > 10 else "")


def _most_ranked(view, pairs) -> int:
    ranks = [len(v) for c in {p["class_index"] for p in pairs} for v in view.class_images(c, 10**9).values()]
    return max(ranks, default=0)


def write_pairs(path: Path, tasks: list[BandTask]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PAIR_COLUMNS)
    for t in tasks:
        writer.writerow([t.class_index, t.feature_index, t.band, wordnet_ids()[t.class_index], t.feature_rank, t.panel,
                         " ".join(s.image_id for s in t.a), " ".join(s.image_id for s in t.b)])
    write_text_atomic(path, buffer.getvalue())


class ImageSupply:
    """The 224 views of an `--image-mode none` build's shown images, read from `--imagenet` by image id; other
    builds carry them already (DatasetView decodes them)."""

    def __init__(self, config: GeneralizeConfig, build: dict, constants: dict):
        self.masks_only = constants.get("image_mode") == "none"
        self.draft = constants.get("jpeg_draft", True)
        self.missing: list[str] = []
        self.bytes_read = 0
        self.source = None
        if self.masks_only and not config.imagenet:
            raise InputError(f"{config.dataset}: a masks-only build (--image-mode none); give --imagenet DIR_OR_ID, "
                             "your copy of ImageNet, to show its images on the panels")
        if self.masks_only:
            split = config.split or build.get("split", "train")
            self.source, self.name = open_source(config.imagenet, split, config.imagenet_type), config.imagenet

    def fill(self, shown: list[Shown]) -> None:
        wanted = {s.image_id for s in shown if s.view is None}
        if self.source is None or not wanted:
            return
        views = {}
        for image_id, data in self.source.read_ids(self.source.index_ids(wanted)):
            try:
                views[image_id] = np.asarray(center_view(decode(data, self.draft)).convert("RGB"))
            except CorruptImage as e:
                log.warning("--imagenet %s: %s: %s", self.name, image_id, e)
        self.bytes_read += self.source.io.take()
        self.missing += sorted(wanted - set(views))
        for s in shown:
            if s.view is None and s.image_id in views:
                s.view = views[s.image_id]


def provenance(config: GeneralizeConfig, bands, tasks: list[BandTask], short: list, images: ImageSupply) -> dict:
    if images.missing:
        log.warning("--imagenet %s: %d shown image(s) not found or unreadable (their heatmaps show without the "
                    "image), e.g. %s", config.imagenet, len(images.missing), images.missing[0])
    return {
        "package": PACKAGE_NAME, "package_version": __version__,
        "command": config.command or shlex.join(["salient-imagenet", *sys.argv[1:]]),
        "dataset": config.dataset, "imagenet": config.imagenet, "bands": [band_text(b) for b in bands],
        "tasks": len(tasks), "pairs": len({(t.class_index, t.feature_index) for t in tasks}),
        "left_out": [{"class_index": c, "feature_index": j, "band": b} for c, j, b in short],
        "images_missing": images.missing[:100], "images_missing_count": len(images.missing),
        "imagenet_bytes": images.bytes_read,
    }
