"""A discovery study as a job of the engine (`core.job.Job`: the claim of `--out`, the lock, staging, resume, ranks
and the swap are the base's), and as a library call: `discover(DiscoverConfig(source=..., out=...))`.

The scan is the build's own (`core.scan_units`, `core.runner.ModelRunner`, the same units, resume and fingerprint),
with every feature of every class tracked, since the pairs to annotate are known only once FI is complete; then the
ranking and the panels, in work units of classes (every rank); rank 0 writes pairs.csv, the page and
discover_info.json. Finished scan and panel units survive a crash and a rerun resumes from them.
"""

import json
import logging
import time
from pathlib import Path

from ..core.annotation_page import study_data, write_page
from ..core.constants import NUM_CLASSES, PAIRS_FILE
from ..core.errors import InputError
from ..core.job import Job
from ..core.model import create_feature_model
from ..core.output import write_text_atomic
from ..core.provenance import made_by
from ..core.runner import ModelRunner
from ..core.scan import ScanSpec
from ..core.scan_units import ScanWorker, fingerprint, nothing_grouped, scan_units
from ..core.sources import open_source
from ..core.stages import StageTimer, default_workers
from ..core.units import Unit, UnitFolder
from .options import ATTACK_BATCH, CONTEXT_IMAGES, DISCOVER_INFO, DiscoverConfig
from .panels import write_panels
from .ranking import rank_pairs, write_pairs

log = logging.getLogger(__name__)

__all__ = ["DiscoverJob", "discover"]


class DiscoverJob(Job):
    kind = "study"
    distributed = True
    resumable = True


    def prepare(self) -> None:
        config = self.config
        self.start = time.perf_counter()
        model, self.info = create_feature_model(config.model, config.model_checkpoint, config.arch)
        self.runner = ModelRunner(model, self.device, config.numerics, StageTimer())
        self.source = open_source(config.source, config.split, config.source_type)
        classes = config.classes or list(range(NUM_CLASSES))
        self.spec = ScanSpec(classes, config.top_images, config.group_by, features=None, context_k=CONTEXT_IMAGES)
        class_filter = None if len(classes) == NUM_CLASSES else set(classes)
        self.plan = [Unit(i, s) for i, s in enumerate(self.source.plan_units(class_filter, config.limit,
                                                                            config.unit_size))]
        self.source_bytes = {"plan": self.source.io.total}  # footers, label columns, tar headers (this rank's)

    def fingerprint(self) -> dict:
        config = self.config
        return fingerprint(self.source, config.split, self.plan, self.info, self.spec, limit=config.limit,
                           draft=config.draft, unit_size=config.unit_size, numerics=config.numerics.describe(),
                           top_images=config.top_images)

    def work(self, work: Path) -> None:
        """Every rank: the scan (resumable units), the ranking, the panels (resumable units of classes)."""
        config, world = self.config, self.world
        workers = default_workers(self.device, world) if config.workers is None else config.workers
        self.scan, _ = scan_units(self.plan, UnitFolder(work, "discover-scan"), self.spec,
                                  self.runner.model.num_features,
                                  lambda: ScanWorker(self.source, self.runner, self.spec, batch_size=config.batch_size,
                                                     workers=workers, draft=config.draft, limit=config.limit),
                                  world, "discover scan", f"scan: robust model over {len(self.plan)} units")
        self.source_bytes["scan"] = self.scan.bytes_read
        self.tasks = self._rank(self.scan)
        self.source_bytes["panels"] = write_panels(self.staging, work, self.tasks, self.scan, self.source,
                                                   self.runner.model, config.attack_steps,
                                                   min(config.batch_size, ATTACK_BATCH), self.device, world,
                                                   config.draft)
        self.source_bytes["total"] = sum(self.source_bytes.values())

    def write(self, staging: Path) -> dict:
        provenance = self._provenance()
        write_pairs(staging / PAIRS_FILE, self.tasks)
        title = self.config.title or f"Salient features of {self.info.name}"
        write_page(staging, study_data([t.page_task() for t in self.tasks], title, mode="discover"))
        write_text_atomic(staging / DISCOVER_INFO, json.dumps(provenance, indent=2))
        return provenance

    def run(self) -> dict:
        """The study's provenance (what discover_info.json holds), on every rank."""
        super().run()
        return self._provenance()

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

    def _provenance(self) -> dict:
        config, info, scan, tasks = self.config, self.info, self.scan, self.tasks
        return {
            **made_by(config.command),
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
            "seconds": round(time.perf_counter() - self.start, 2),
        }


def discover(config: DiscoverConfig) -> dict:
    """Scan the source, rank features, draw the panels, write pairs.csv, the annotation page and discover_info.json;
    returns the study's provenance (what discover_info.json holds). Every torchrun rank calls it."""
    return DiscoverJob(config).run()
