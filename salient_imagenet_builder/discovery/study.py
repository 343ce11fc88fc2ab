"""A discovery study, as a library call: `discover(DiscoverConfig(source=..., out=...))`.

The scan is the build's own (`core.scan`, `core.runner.ModelRunner`, the same units, resume and fingerprint), with
every feature of every class tracked, since the pairs to annotate are known only once FI is complete. The study
folder is written in a staging folder beside `out` and renamed into place when complete; finished scan and panel
units survive a crash and a rerun resumes from them.
"""

import json
import logging
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..core import distributed
from ..core.constants import (
    ANNOTATOR_TOP_IMAGES,
    CONTEXT_IMAGES,
    DEFAULT_ATTACK_STEPS,
    DEFAULT_MODEL,
    DEFAULT_STUDY_DIR,
    DEFAULT_UNIT_SIZE,
    DISCOVER_INFO,
    FEATURES_PER_CLASS,
    NUM_CLASSES,
    PACKAGE_NAME,
    PAIRS_FILE,
    WORK_DIR,
)
from ..core.errors import InputError
from ..core.annotation_page import study_data, write_page
from ..core.model import create_feature_model
from ..core.output import (
    check_out,
    discard_staging,
    move_into_place,
    prepare_output,
    staging_folder,
    write_text_atomic,
)
from ..core.runner import ModelRunner, Numerics
from ..core.scan import ScanSpec, ScanWorker, fingerprint, nothing_grouped, scan_units
from ..core.sources import open_source
from ..core.stages import StageTimer, default_workers
from ..core.units import Unit, UnitFolder, WorkLock, open_work
from .panels import write_panels
from .ranking import rank_pairs, write_pairs

log = logging.getLogger(__name__)

__all__ = ["DiscoverConfig", "discover"]


@dataclass
class DiscoverConfig:
    """The options of `salient-imagenet discover`, as fields."""

    source: str
    out: str = DEFAULT_STUDY_DIR
    split: str = "train"
    source_type: str | None = None
    model: str = DEFAULT_MODEL
    model_checkpoint: str | None = None
    arch: str | None = None
    classes: list[int] | None = None
    limit: int | None = None
    group_by: str = "prediction"
    features_per_class: int = FEATURES_PER_CLASS
    top_images: int = ANNOTATOR_TOP_IMAGES
    attack_steps: int = DEFAULT_ATTACK_STEPS
    title: str | None = None
    batch_size: int = 32
    workers: int | None = None
    device: str | None = None
    draft: bool = True
    unit_size: int = DEFAULT_UNIT_SIZE
    restart: bool = False
    overwrite: bool = False
    tf32: bool = False
    bf16: bool = False
    compile: bool = False
    command: str = ""

    @property
    def numerics(self) -> Numerics:
        return Numerics(tf32=self.tf32, bf16=self.bf16, compile=self.compile)


def check_study_out(config: DiscoverConfig) -> None:
    """What --out may be, before any work (never writes)."""
    out = Path(config.out)
    check_out(out, config.overwrite, config.source, kind="study")


def discover(config: DiscoverConfig) -> dict:
    """Scan the source, rank features, draw the panels, write pairs.csv, the annotation page and discover_info.json;
    returns the study's provenance (what discover_info.json holds). Every torchrun rank calls it."""
    check_study_out(config)
    world = distributed.world_from_env()
    device = distributed.device_for(world, config.device)
    joined = distributed.init(world, device)
    try:
        return _Study(config, world, device).run()
    finally:
        if joined:
            distributed.destroy()


class _Study:
    def __init__(self, config: DiscoverConfig, world, device):
        self.config, self.world, self.device, self.out = config, world, device, Path(config.out)

    def run(self) -> dict:
        config, world = self.config, self.world
        start = time.perf_counter()
        model, self.info = create_feature_model(config.model, config.model_checkpoint, config.arch)
        self.runner = ModelRunner(model, self.device, config.numerics, StageTimer())
        source = self.source = open_source(config.source, config.split, config.source_type)
        lock = WorkLock(staging_folder(self.out) / WORK_DIR, f"--out {self.out}") if world.is_main else None
        try:
            return self._run(source, start)
        finally:
            if lock is not None:
                lock.release()

    def _run(self, source, start) -> dict:
        config, world = self.config, self.world
        try:
            staging = (prepare_output(self.out, config.overwrite, config.source, kind="study") if world.is_main
                       else staging_folder(self.out))
        except BaseException:
            discard_staging(staging_folder(self.out))
            raise
        distributed.barrier()
        try:
            scan = self._scan(source, staging)
            tasks = self._rank(scan)
            self.source_bytes["panels"] = write_panels(staging, staging / WORK_DIR, tasks, scan, source,
                                                       self.runner.model, config.attack_steps, config.batch_size,
                                                       self.device, world, config.draft)
            self.source_bytes["total"] = sum(self.source_bytes.values())
            provenance = self._provenance(scan, tasks, start)
            if world.is_main:
                write_pairs(staging / PAIRS_FILE, tasks)
                write_page(staging, study_data([t.page_task() for t in tasks],
                                               config.title or f"Salient features of {self.info.name}"))
                write_text_atomic(staging / DISCOVER_INFO, json.dumps(provenance, indent=2))
        except BaseException:
            if world.is_main:
                discard_staging(staging)  # finished scan and panel units stay for a resume
            raise
        if world.is_main:
            move_into_place(staging, self.out)  # drops the work folder, then swaps the study into place
        distributed.barrier()
        return provenance

    def _scan(self, source, staging: Path):
        """Pass 1 over the source in resumable work units: the build's scan, every feature of a class tracked."""
        config, world = self.config, self.world
        classes = config.classes or list(range(NUM_CLASSES))
        spec = ScanSpec(classes, config.top_images, config.group_by, features=None, context_k=CONTEXT_IMAGES)
        class_filter = None if len(classes) == NUM_CLASSES else set(classes)
        plan = [Unit(i, s) for i, s in enumerate(source.plan_units(class_filter, config.limit, config.unit_size))]
        self.source_bytes = {"plan": source.io.take()}  # footers, label columns, tar headers (this rank's)
        work = staging / WORK_DIR
        if world.is_main:
            open_work(work, fingerprint(source, config.split, plan, self.info, spec, limit=config.limit,
                                        draft=config.draft, unit_size=config.unit_size,
                                        numerics=config.numerics.describe(), top_images=config.top_images),
                      config.restart)
        distributed.barrier()
        workers = default_workers(self.device, world) if config.workers is None else config.workers
        scan, _ = scan_units(plan, UnitFolder(work, "discover-scan"), spec, self.runner.model.num_features,
                             lambda: ScanWorker(source, self.runner, spec, batch_size=config.batch_size,
                                                workers=workers, draft=config.draft, limit=config.limit),
                             world, "discover scan", f"scan: robust model over {len(plan)} units")
        self.source_bytes["scan"] = scan.bytes_read
        return scan

    def _rank(self, scan) -> list:
        """Every rank: the pairs to annotate, ranked from the merged scan (the same on every rank)."""
        config = self.config
        unlabelled = dict(sorted(scan.unlabelled.items()))
        if unlabelled and self.world.is_main:
            log.warning("skipped %d image(s) whose label is not an ImageNet class 0-%d (label: count %s)",
                        sum(unlabelled.values()), NUM_CLASSES - 1, unlabelled)
        if scan.scanned == 0 and unlabelled:
            raise InputError(f"--source {config.source} (split {config.split}): none of its images has an ImageNet "
                             f"label 0-{NUM_CLASSES - 1} (labels seen: {unlabelled}); a test split carries no labels: "
                             "discover on the train or validation split")
        tasks = rank_pairs(scan, self.runner.model.classifier_weight, config.features_per_class)
        if not tasks:
            raise InputError(nothing_grouped(self.source, f"--source {config.source}", scan.classes, scan.scanned,
                                             config.group_by) + "; nothing to rank")
        return tasks

    def _provenance(self, scan, tasks, start) -> dict:
        config, info = self.config, self.info
        return {
            "package": PACKAGE_NAME, "package_version": __version__,
            "command": config.command or shlex.join(["salient-imagenet", *sys.argv[1:]]),
            "source": config.source, "split": config.split, "model": info.name, "arch": info.arch,
            "checkpoint": info.checkpoint, "checkpoint_sha256": info.sha256, "group_by": config.group_by,
            "features_per_class": config.features_per_class, "top_images": config.top_images,
            "attack_steps": config.attack_steps, "numerics": config.numerics.describe(),
            "images_scanned": scan.scanned, "images_skipped": len(scan.skipped),
            "skipped_ids": [image_id for image_id, _, _ in scan.skipped[:100]],
            "skipped_labels": dict(sorted(scan.unlabelled.items())),
            "group_sizes": {str(c): int(scan.fi.counts[c]) for c in scan.classes if int(scan.fi.counts[c])},
            "pairs": [{"class_index": t.class_index, "feature_index": t.feature_index, "feature_rank": t.feature_rank,
                       "importance": t.importance, "top_image_ids": [str(scan.images.ids[i]) for i, _ in t.top]}
                      for t in tasks],
            "source_bytes": self.source_bytes,
            "seconds": round(time.perf_counter() - start, 2),
        }
