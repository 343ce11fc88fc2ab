"""The build as a job of the engine (`core.job.Job`: the claim of `--out`, the lock, the staging folder, resume,
ranks and the swap are the base's); this module fills in its steps, on one process or every torchrun rank:

1. `prepare`: the model on the rank's device, the annotations, the source and its plan of work units (fixed by
   the data, not by the number of ranks);
2. `work`: pass 1 (`core.scan`), unit by unit, each rank taking units round-robin: decode -> robust model -> per-unit
   FI sums and each annotated pair's top-k candidates with their maps (or, with `--top-k all`, the rows themselves:
   `rows.RowSpill`); the units merged in unit order on every rank; the selection (`reduce`); pass 2 (`pass2`,
   bounded top-k only): the selected images of each unit read again, rows from pass 1's maps;
3. `write` (rank 0, `write.write_build`): the rows sorted into parquet shards, the annotations config, the gallery
   and the card.
A run stopped anywhere resumes from the units done (same command); the dataset is the same as one run's.
"""

import logging
import os
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from ..core import annotations as annotations_mod
from ..core.card import BuildStats
from ..core.constants import ANNOTATIONS_URL, ANNOTATOR_TOP_IMAGES, CROP_SIZE, NUM_CLASSES
from ..core.errors import InputError
from ..core.job import Job
from ..core.model import create_feature_model
from ..core.runner import ModelRunner
from ..core.scan import ScanSpec
from ..core.scan_units import ScanWorker, fingerprint, scan_units
from ..core.sources import open_source, ref_location
from ..core.stages import StageTimer, default_workers
from ..core.targets import resolve
from ..core.units import Unit, UnitFolder, ran_with_counts, run_units
from .options import BuildConfig
from .pass2 import RowsWorker
from .reduce import check_unique_ids, select
from .rows import RowSpill
from .write import NothingToWrite, write_build

__all__ = ["BuildJob", "Builder", "build"]

log = logging.getLogger(__name__)


class BuildJob(Job):
    kind = "build"
    distributed = True
    resumable = True

    def __init__(self, config: BuildConfig):
        super().__init__(config)
        self.timer, self.stats = StageTimer(), BuildStats()

    def run(self) -> BuildStats:
        self.start = time.perf_counter()
        super().run()
        return self.stats  # on every rank (rank 0's holds what was written)

    def keeps_nothing(self, error: BaseException) -> bool:
        """Nothing to resume: the same command would fail the same way (and another would be refused), or the demo,
        whose inputs each run generates afresh in a new temporary folder."""
        return self.config.demo or isinstance(error, NothingToWrite)

    def check(self) -> None:
        """What can be checked on this machine before any download or model (--out is the claim's, on rank 0)."""
        config = self.config
        if config.model_checkpoint is not None and not Path(config.model_checkpoint).expanduser().is_file():
            raise InputError(f"--model-checkpoint {config.model_checkpoint}: no such file")
        if "://" not in config.annotations and not Path(config.annotations).expanduser().is_file():
            raise InputError(f"--annotations {config.annotations}: no such file")
        resolve(config.source, "--source")  # a folder, or a Hub dataset that exists: asked before any download

    def prepare(self) -> None:
        config = self.config
        self.stats.rank, self.stats.world_size = self.world.rank, self.world.size
        with self.timer("load model"):
            model, self.model_info = create_feature_model(config.model, config.model_checkpoint, config.arch)
            self.stats.map_shape = list(model.map_shape())  # the stored raw maps' shape
            self.runner = ModelRunner(model, self.device, config.numerics, StageTimer())
            self.model = self.runner.model
        with self.timer("load annotations"):
            self.annotations = self._load_annotations()
        self.source = open_source(config.source, config.split, config.source_type)
        self.classes = self._build_classes()
        self.pairs_by_class = defaultdict(list)
        for pair in self.annotations.pairs.values():
            self.pairs_by_class[pair.class_index].append(pair)
        features = {c: [p.feature_index for p in self.pairs_by_class[c]] for c in self.classes}
        self.spec = ScanSpec(self.classes, config.top_k or ANNOTATOR_TOP_IMAGES, config.group_by, features,
                             keep_maps=config.top_k is not None)
        with self.timer("plan"):
            class_filter = None if len(self.classes) == NUM_CLASSES else set(self.classes)
            specs = self.source.plan_units(class_filter, config.limit, config.unit_size)
        self.plan = [Unit(i, spec) for i, spec in enumerate(specs)]
        self.stats.source_bytes = {"plan": self.source.io.total}  # all read so far: footers, labels, tar headers
        self.workers = config.workers if config.workers is not None else default_workers(self.device, self.world)
        self.decode_device = self.device if config.decode == "gpu" else None
        if self.decode_device is not None and self.device.type != "cuda" and self.world.is_main:
            log.warning("--decode gpu on device %s: torchvision's JPEG decoder runs on the CPU, in this process "
                        "(the GPU path's logic, not its speed; --decode cpu is faster here)", self.device)
        self.batch_size = self._batch_size()
        self.ran_with = {"--batch-size": self.batch_size, "--workers": self.workers, "--device": str(self.device)}

    def fingerprint(self) -> dict:
        """What makes two runs the same build; the number of ranks and workers is not part of it."""
        config = self.config
        return fingerprint(self.source, config.split, self.plan, self.model_info, self.spec, limit=config.limit,
                           draft=config.draft, unit_size=config.unit_size, numerics=config.numerics.describe(),
                           annotations_sha256=self.annotations.sha256, top_k=config.top_k,
                           image_mode=config.image_mode, decode=config.decode)

    def work(self, work: Path) -> None:
        """Pass 1 over every unit; then the selection and pass 2 (bounded top-k), or the rows pass 1 spilled."""
        config, world = self.config, self.world
        all_mode = config.top_k is None
        scan_folder = UnitFolder(work, "scan")
        features = self.stats.image_features()

        def make_scan_worker():
            rows = RowSpill(self.pairs_by_class, scan_folder.path, features) if all_mode else None
            return ScanWorker(self.source, self.runner, self.spec, batch_size=self.batch_size,
                              workers=self.workers, draft=config.draft, limit=config.limit,
                              image_mode=config.image_mode if all_mode else None, rows=rows,
                              device_decode=config.decode == "gpu")

        self.scan, self.stats.pass1_units = scan_units(self.plan, scan_folder, self.spec, self.model.num_features,
                                                       make_scan_worker, world, "pass 1",
                                                       f"pass 1: robust model over {len(self.plan)} units",
                                                       self.ran_with)
        self.ran_with_units = {"pass 1": ran_with_counts(scan_folder, range(len(self.plan)))}
        self.stats.forward_passes = {"images_forwarded": self.scan.scanned, "per_image": 1,
                                     "reads_of_source": 1 if all_mode else 2}
        self.stats.source_bytes["pass 1"] = self.scan.bytes_read
        self.rows_files = self.scan.rows_paths if all_mode else self._pass2(work, scan_folder)

    def _pass2(self, work: Path, scan_folder: UnitFolder) -> list[Path]:
        selected = select(self.scan, self.annotations.pairs)
        check_unique_ids(selected, lambda ref: ref_location(self.source, ref))
        plan2 = [unit for unit in self.plan if unit.index in selected]
        rows_folder = UnitFolder(work, "rows")
        features, config = self.stats.image_features(), replace(self.config, batch_size=self.batch_size)
        self.stats.pass2_units = run_units(
            plan2, rows_folder, lambda: RowsWorker(self.source, config, self.workers, selected, scan_folder,
                                                   rows_folder.path, features, self.decode_device),
            self.world, "pass 2", desc=f"pass 2: masks for the selected images of {len(plan2)} units",
            ran_with=self.ran_with)
        self.ran_with_units["pass 2"] = ran_with_counts(rows_folder, [unit.index for unit in plan2])
        self.stats.source_bytes["pass 2"] = 0
        for unit in plan2:
            marker = rows_folder.read_marker(unit.index)
            self.stats.source_bytes["pass 2"] += marker["bytes_read"]
            for stage, seconds in marker["timings"].items():
                self.scan.timings[stage] += seconds
        return [rows_folder.result_dir(unit.index) / "rows.arrow" for unit in plan2]

    def write(self, staging: Path) -> BuildStats:
        write_build(self, staging)
        log.info("stage seconds: %s", self.stats.stage_seconds)
        return self.stats

    def _batch_size(self) -> int:
        """--batch-size, capped by the most images a unit can hold (a batch never spans units): the decode buffers
        are sized by what can arrive, not by the flag alone; refused in one line when even that does not fit."""
        sizes = [_unit_images(unit.spec) for unit in self.plan]
        bound = max(sizes, default=0) if None not in sizes else self.source.count()
        size = self.config.batch_size if bound is None else max(1, min(self.config.batch_size, bound))
        needed = 3 * size * 3 * CROP_SIZE * CROP_SIZE  # the ring's two halves and the pinned batch, uint8
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if needed > memory // 2:
            raise InputError(f"--batch-size {self.config.batch_size}: its decode buffers would take "
                             f"{needed / 1e9:.1f} GB, more than half of this machine's memory ({memory / 1e9:.1f} "
                             "GB); use a smaller --batch-size")
        return size

    def _load_annotations(self):
        config = self.config
        published = config.annotations == ANNOTATIONS_URL
        annotations = annotations_mod.load(config.annotations, Path(config.cache_dir).expanduser() / "annotations",
                                           num_features=self.model.num_features, expect_published=published)
        if annotations.pairs and annotations.answers_per_pair == 1 and self.world.is_main:
            log.warning("--annotations %s: every pair has a single answer, so each pair's kind is that one answer "
                        "(majority 1 of 1); if this is one annotator's export, merge every annotator's export with "
                        "`salient-imagenet ingest` first", config.annotations)
        if config.classes is not None:
            annotations = annotations.restrict(config.classes)
        return annotations

    def _build_classes(self) -> list[int]:
        annotated = set(self.annotations.classes)
        wanted = set(self.config.classes) if self.config.classes is not None else annotated
        missing = sorted(wanted - annotated)
        if missing and self.world.is_main:
            log.warning("skipping %d class(es) without annotations: %s%s", len(missing), missing[:20],
                        " ..." if len(missing) > 20 else "")
        self.stats.classes_without_annotations = missing
        classes = sorted(wanted & annotated)
        if not classes:
            raise InputError("no class to build: none of the requested classes has annotations")
        return classes


def _unit_images(spec: dict) -> int | None:
    """The most images a unit's spec can yield, when the spec says (a folder block, a parquet unit's row list)."""
    if "stop" in spec and "start" in spec:
        return spec["stop"] - spec["start"]
    if spec.get("rows") is not None:
        return len(spec["rows"])
    return None


Builder = BuildJob  # its name before the engine's job


def build(config: BuildConfig) -> BuildStats:
    """Build Salient ImageNet as `config` says (the command line's options, as fields); returns its statistics.
    Leaves the caller's process as it found it: no thread count, backend flag or warnings filter is changed."""
    return BuildJob(config).run()
