"""A generalization study as a job of the engine (`core.job.Job`: the claim of `--out`, the lock, the staging folder
and the swap are the base's), and as a library call: `make_study(GeneralizeConfig(dataset=..., out=...))`.

Everything comes from the build: the pairs (its annotations config), each pair's ranked images and their masks
(its image rows). Only an `--image-mode none` build needs `--imagenet`, read by image id for the shown images
alone.
"""

import csv
import io
import json
import logging
from pathlib import Path

import numpy as np

from ..core import render
from ..core.annotation_page import study_data, write_page
from ..core.constants import ANNOTATOR_TOP_IMAGES, BUILD_INFO, PAIRS_FILE
from ..core.dataset import DatasetView, Shown
from ..core.errors import InputError
from ..core.images import CorruptImage, center_view, decode
from ..core.job import Job
from ..core.output import write_text_atomic
from ..core.provenance import made_by
from ..core.schema import wordnet_ids
from ..core.sources import open_source
from ..core.targets import resolve
from .bands import check_within, parse_bands
from .options import GENERALIZE_INFO, GeneralizeConfig
from .panels import BandTask, render_band_panel
from .study_format import PAIR_COLUMNS as STUDY_COLUMNS
from .study_format import band_text

log = logging.getLogger(__name__)
# pairs.csv: the columns ingest checks, then what the panel shows (the image ids of A and B, space-separated)
PAIR_COLUMNS = (*STUDY_COLUMNS, "Input.feature_rank", "Input.panel", "Input.images_a",
                "Input.images_b")

__all__ = ["GeneralizeJob", "make_study"]


class GeneralizeJob(Job):
    kind = "generalization study"


    def check(self) -> None:
        self.bands = parse_bands(self.config.bands)
        if self.config.imagenet:
            resolve(self.config.imagenet, "--imagenet")  # "no such folder" before the dataset is read

    def prepare(self) -> None:
        config = self.config
        self.view = DatasetView(config.dataset, config.split, command="generalize")
        build = json.loads(self.view.target.read_text(BUILD_INFO)) if BUILD_INFO in self.view.target.files else {}
        constants = build.get("provenance", {}).get("constants", {})
        check_within(self.bands, constants.get("top_k"), config.dataset)
        self.pairs = [p for p in self.view.pairs() if config.classes is None or p["class_index"] in config.classes]
        if not self.pairs:
            raise InputError(f"{config.dataset}: no annotated pair of the classes {config.classes} (its annotations "
                             "config names the pairs to study)")
        self.images = ImageSupply(config, build, constants)

    def write(self, staging: Path) -> dict:
        return _write(staging, self.config, self.view, self.pairs, self.bands, self.images)


def make_study(config: GeneralizeConfig) -> dict:
    """Panels, pairs.csv, the page and generalize_info.json in `config.out`; returns what the info file holds."""
    return GeneralizeJob(config).run()


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
        with self.source.io.measure() as read:
            for image_id, data in self.source.read_ids(self.source.index_ids(wanted)):
                try:
                    views[image_id] = np.asarray(center_view(decode(data, self.draft)).convert("RGB"))
                except CorruptImage as e:
                    log.warning("--imagenet %s: %s: %s", self.name, image_id, e)
        self.bytes_read += read.bytes
        self.missing += sorted(wanted - set(views))
        for s in shown:
            if s.view is None and s.image_id in views:
                s.view = views[s.image_id]


def provenance(config: GeneralizeConfig, bands, tasks: list[BandTask], short: list, images: ImageSupply) -> dict:
    if images.missing:
        log.warning("--imagenet %s: %d shown image(s) not found or unreadable (their heatmaps show without the "
                    "image), e.g. %s", config.imagenet, len(images.missing), images.missing[0])
    return {
        **made_by(config.command),
        "dataset": config.dataset, "imagenet": config.imagenet, "bands": [band_text(b) for b in bands],
        "tasks": len(tasks), "pairs": len({(t.class_index, t.feature_index) for t in tasks}),
        "left_out": [{"class_index": c, "feature_index": j, "band": b} for c, j, b in short],
        "images_missing": images.missing[:100], "images_missing_count": len(images.missing),
        "imagenet_bytes": images.bytes_read,
    }
