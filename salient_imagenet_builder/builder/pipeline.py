"""The builder: wires the engine's stages for one build, on one process or on every rank of a torchrun job.

1. plan: the source is cut into work units (`core.sources` readers' `plan_units`), fixed by the data, not by the
   number of ranks;
2. pass 1 (`core.scan`), unit by unit, each rank taking units round-robin: decode (workers, shared memory) ->
   robust model on the rank's own device (`core.runner.ModelRunner`) -> per-unit FI sums and each annotated pair's
   top-k candidates with their maps (or, with `--top-k all`, the rows themselves: `rows.RowSpill`), persisted in
   `<staging>/work/scan/` with a done marker; the unit results merged in unit order on every rank;
3. reduce (`reduce.py`): the selection of each annotated pair's top-k;
4. pass 2 (`pass2.py`, bounded top-k only): the selected images of each unit read again, rows from pass 1's maps;
5. write (rank 0): the units' rows sorted by (group, image_id) into parquet shards (`core.writer`), the
   annotations config, the gallery and the card (`core.card`); the staging folder replaces `--out`
   (`core.output`).
A run stopped anywhere resumes from the units done (same command); the dataset is the same as one run's.
"""

import logging
import os
import platform
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from .. import __version__
from ..core import annotations as annotations_mod
from ..core import card, distributed
from ..core.card import BuildStats
from ..core.constants import (
    ANNOTATIONS_CONFIG,
    ANNOTATIONS_URL,
    ANNOTATOR_TOP_IMAGES,
    CROP_SIZE,
    DEFAULT_CACHE_DIR,
    DEFAULT_MODEL,
    DEFAULT_OUT,
    DEFAULT_TOP_K,
    DEFAULT_UNIT_SIZE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAX_SHARD_BYTES,
    NUM_CLASSES,
    RESIZE_SIZE,
    WORK_DIR,
)
from ..core.errors import InputError
from ..core.gallery import write_gallery
from ..core.model import create_feature_model
from ..core.output import check_out, discard_staging, move_into_place, prepare_output, staging_folder
from ..core.runner import ModelRunner, Numerics
from ..core.scan import ScanSpec, ScanWorker, fingerprint, nothing_grouped, scan_units
from ..core.schema import annotation_features, class_names
from ..core.sources import open_source, ref_location
from ..core.stages import StageTimer, default_workers
from ..core.units import Unit, UnitFolder, WorkLock, open_work, ran_with_counts, run_units
from ..core.writer import ShardWriter, SpilledRows, encode_rows
from .pass2 import RowsWorker
from .reduce import PairRanks, check_unique_ids, check_unique_rows, select, top_image_ids
from .rows import RowSpill

__all__ = ["BuildConfig", "Builder", "build"]

log = logging.getLogger(__name__)


class NothingToWrite(InputError):
    """Every unit ran, and there is nothing to write: rerunning the same command would end the same way."""

IMAGE_MODES = ("crop", "original", "none")
DECODE = ("cpu", "gpu")
GROUP_BY = ("prediction", "label")


@dataclass
class BuildConfig:
    source: str
    split: str = "train"
    out: str = DEFAULT_OUT
    model: str = DEFAULT_MODEL
    model_checkpoint: str | None = None
    arch: str | None = None
    annotations: str = ANNOTATIONS_URL
    classes: list[int] | None = None
    limit: int | None = None  # images per class
    top_k: int | None = DEFAULT_TOP_K  # None: every image of the group ("Salient ImageNet-1M" style)
    group_by: str = "prediction"
    image_mode: str = "crop"
    batch_size: int = 64
    workers: int | None = None  # decoding processes per rank; None: from the cores and the device
    device: str | None = None
    overwrite: bool = False
    source_type: str | None = None
    draft: bool = True
    cache_dir: str = DEFAULT_CACHE_DIR
    command: str = ""
    demo: bool = False
    max_shard_bytes: int = MAX_SHARD_BYTES
    unit_size: int = DEFAULT_UNIT_SIZE  # folder images per work unit
    restart: bool = False  # discard the work folder of a different (or any) interrupted build
    tf32: bool = False
    bf16: bool = False
    compile: bool = False
    decode: str = "cpu"  # "gpu": torchvision.io.decode_jpeg on the model's device (`core.decoding`)

    def __post_init__(self):
        if self.group_by not in GROUP_BY:
            raise InputError(f"--group-by must be one of {GROUP_BY}, got {self.group_by!r}")
        if self.image_mode not in IMAGE_MODES:
            raise InputError(f"--image-mode must be one of {IMAGE_MODES}, got {self.image_mode!r}")
        if self.decode not in DECODE:
            raise InputError(f"--decode must be one of {DECODE}, got {self.decode!r}")
        if self.top_k is not None and self.top_k < 1:
            raise InputError(f"--top-k must be a positive integer or 'all', got {self.top_k}")
        if self.unit_size < 1:
            raise InputError(f"--unit-size must be a positive integer, got {self.unit_size}")
        if self.workers is not None and self.workers < 0:
            raise InputError(f"--workers must be 0 (decode in this process) or more, got {self.workers}")

    @property
    def numerics(self) -> Numerics:
        return Numerics(tf32=self.tf32, bf16=self.bf16, compile=self.compile)


class Builder:
    def __init__(self, config: BuildConfig):
        self.config = config
        self.timer = StageTimer()
        self.stats = BuildStats()

    def run(self) -> BuildStats:
        world = distributed.world_from_env()
        self.world, self.device = world, distributed.device_for(world, self.config.device)
        self.stats.rank, self.stats.world_size = world.rank, world.size
        joined = distributed.init(world, self.device)
        try:
            return self._run()
        finally:
            if joined:
                distributed.destroy()

    def _on_main(self, fn):
        """Run `fn` on rank 0; its failure stops every rank with the same message (no rank left at a barrier)."""
        failure, result = None, None
        if self.world.is_main:
            try:
                result = fn()
            except Exception as e:
                failure = e
        message = distributed.broadcast_object(None if failure is None else str(failure))
        if failure is not None:
            raise failure
        if message is not None:
            raise InputError(f"rank 0 stopped: {message}")
        return result

    def _run(self) -> BuildStats:
        config, world = self.config, self.world
        out = Path(config.out)
        start = time.perf_counter()
        self.lock = None
        staging = self._on_main(lambda: self._claim(out))
        self.staging = staging or staging_folder(out)
        ours = False  # the work folder holds this build's units (not those of an earlier run with other settings)
        try:
            try:
                self._setup()
                self._on_main(lambda: open_work(self.staging / WORK_DIR, self.fingerprint(), config.restart))
                ours = True
                distributed.barrier()
                scan, rows_files = self._passes()
                if world.is_main:
                    self._write(scan, rows_files, start)
            except BaseException as error:
                if world.is_main:  # the previous output is untouched
                    if ours and (config.demo or isinstance(error, NothingToWrite)):
                        # nothing to resume: the same command would fail the same way (and another would be refused),
                        # or the demo, whose inputs each run generates afresh in a new temporary folder
                        shutil.rmtree(self.staging, ignore_errors=True)
                    else:
                        discard_staging(self.staging)  # finished units stay for a resume
                raise
            if world.is_main:
                move_into_place(self.staging, out)  # drops the work folder, then swaps the build into place
                log.info("stage seconds: %s", self.stats.stage_seconds)
        finally:
            if self.lock is not None:
                self.lock.release()
        distributed.barrier()
        return self.stats

    def _claim(self, out: Path) -> Path:
        """Rank 0: check --out, lock its work folder (one build at a time), then prepare the staging folder."""
        config = self.config
        check_out(out, config.overwrite, config.source)
        self.lock = WorkLock(staging_folder(out) / WORK_DIR, f"--out {out}")
        try:
            return prepare_output(out, config.overwrite, config.source)
        except BaseException:
            discard_staging(staging_folder(out))
            self.lock.release()
            self.lock = None
            raise

    def _setup(self) -> None:
        config = self.config
        with self.timer("load model"):
            model, self.model_info = create_feature_model(config.model, config.model_checkpoint, config.arch)
            self.stats.map_shape = list(model.map_shape())  # the stored raw maps' shape (the schema's Array2D)
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
        self.stats.source_bytes = {"plan": self.source.io.take()}  # footers, label columns, tar headers
        self.workers = config.workers if config.workers is not None else default_workers(self.device, self.world)
        self.decode_device = self.device if config.decode == "gpu" else None
        if self.decode_device is not None and self.device.type != "cuda" and self.world.is_main:
            log.warning("--decode gpu on device %s: torchvision's JPEG decoder runs on the CPU, in this process "
                        "(the GPU path's logic, not its speed; --decode cpu is faster here)", self.device)
        self.batch_size = self._batch_size()
        self.ran_with = {"--batch-size": self.batch_size, "--workers": self.workers, "--device": str(self.device)}

    @property
    def features(self):
        """The `default` config's schema, with this model's map shape."""
        return self.stats.image_features()

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

    def fingerprint(self) -> dict:
        """What makes two runs the same build; the number of ranks and workers is not part of it."""
        config = self.config
        return fingerprint(self.source, config.split, self.plan, self.model_info, self.spec, limit=config.limit,
                           draft=config.draft, unit_size=config.unit_size, numerics=config.numerics.describe(),
                           annotations_sha256=self.annotations.sha256, top_k=config.top_k,
                           image_mode=config.image_mode, decode=config.decode)

    def _passes(self):
        config, world, work = self.config, self.world, self.staging / WORK_DIR
        all_mode = config.top_k is None
        scan_folder = UnitFolder(work, "scan")

        def make_scan_worker():
            rows = RowSpill(self.pairs_by_class, scan_folder.path, self.features) if all_mode else None
            return ScanWorker(self.source, self.runner, self.spec, batch_size=self.batch_size,
                              workers=self.workers, draft=config.draft, limit=config.limit,
                              image_mode=config.image_mode if all_mode else None, rows=rows,
                              device_decode=config.decode == "gpu")

        scan, self.stats.pass1_units = scan_units(self.plan, scan_folder, self.spec, self.model.num_features,
                                                  make_scan_worker, world, "pass 1",
                                                  f"pass 1: robust model over {len(self.plan)} units", self.ran_with)
        self.ran_with_units = {"pass 1": ran_with_counts(scan_folder, range(len(self.plan)))}
        self.stats.forward_passes = {"images_forwarded": scan.scanned, "per_image": 1,
                                     "reads_of_source": 1 if all_mode else 2}
        self.stats.source_bytes["pass 1"] = scan.bytes_read
        if all_mode:
            return scan, scan.rows_paths
        selected = select(scan, self.annotations.pairs)
        check_unique_ids(selected, lambda ref: ref_location(self.source, ref))
        plan2 = [unit for unit in self.plan if unit.index in selected]
        rows_folder = UnitFolder(work, "rows")
        self.stats.pass2_units = run_units(
            plan2, rows_folder, lambda: RowsWorker(self.source, replace(config, batch_size=self.batch_size),
                                                   self.workers, selected, scan_folder, rows_folder.path,
                                                   self.features, self.decode_device),
            world, "pass 2", desc=f"pass 2: masks for the selected images of {len(plan2)} units",
            ran_with=self.ran_with)
        self.ran_with_units["pass 2"] = ran_with_counts(rows_folder, [unit.index for unit in plan2])
        self.stats.source_bytes["pass 2"] = 0
        for unit in plan2:
            marker = rows_folder.read_marker(unit.index)
            self.stats.source_bytes["pass 2"] += marker["bytes_read"]
            for stage, seconds in marker["timings"].items():
                scan.timings[stage] += seconds
        return scan, [rows_folder.result_dir(unit.index) / "rows.arrow" for unit in plan2]

    # write (rank 0) --------------------------------------------------------------------------------------------------

    def _write(self, scan, rows_files, start) -> None:
        config, stats = self.config, self.stats
        for image_id, ref, error in scan.skipped:
            log.warning("skipped corrupt image %s (%s): %s", image_id, ref, error)
        stats.images_scanned, stats.skipped_images = scan.scanned, len(scan.skipped)
        stats.skipped_ids = [image_id for image_id, _, _ in scan.skipped[:100]]
        stats.decode_fallbacks = dict(sorted(scan.decode_fallbacks.items()))
        if scan.decode_fallbacks:
            log.info("--decode gpu: %d image(s) decoded by Pillow instead (reason: count %s)",
                     sum(scan.decode_fallbacks.values()), stats.decode_fallbacks)
        self._count_unusable(scan)
        with self.timer("write shards"):
            rows = SpilledRows(rows_files)
            if rows.table is None or rows.table.num_rows == 0:
                raise NothingToWrite(nothing_grouped(self.source, f"--source {config.source}", self.classes,
                                                     scan.scanned, config.group_by) + "; nothing to write")
            check_unique_rows(rows.table, self.source.locate)
            fill = PairRanks(rows.table).apply if config.top_k is None else None
            shards = ShardWriter(self.staging / "data", config.split, self.features, config.max_shard_bytes,
                                 group_column="group")
            for table in rows.sorted_batches(["group", "image_id"], fill=fill):
                shards.write(table)
            stats.default_shards = [p.name for p in shards.close()]
            stats.default_bytes = shards.bytes
            stats.images_written = rows.table.num_rows
            stats.masks_written = sum(len(chunk.flatten()) for chunk in rows.table.column("features").chunks)
            ann_writer = ShardWriter(self.staging / "data", ANNOTATIONS_CONFIG, annotation_features())
            ann_writer.write(encode_rows(self.annotation_rows(scan), annotation_features()))
            stats.annotation_shards = [p.name for p in ann_writer.close()]
            stats.annotation_bytes = ann_writer.bytes
            stats.generalization_columns = True
            del rows
        stats.seconds_total = round(time.perf_counter() - start, 2)
        seconds = defaultdict(float, scan.timings)
        for stage, value in self.timer.report().items():
            seconds[stage] += value
        stats.stage_seconds = {stage: round(value, 2) for stage, value in seconds.items()}
        stats.images_per_second = round(scan.scanned / max(stats.seconds_total, 1e-9), 2)
        stats.source_bytes["total"] = sum(stats.source_bytes.values())
        stats.source_size = self.source.size()
        stats.gallery = write_gallery(self.staging, config.split)  # a preview at the top of the card
        card.write_card(self.staging, self.provenance(), stats, config.split, repo_id=Path(config.out).name)

    def _count_unusable(self, scan) -> None:
        """Samples the source passed over: labels outside 0-999 (never stored as another class) and, in a folder,
        files that are not images. Counted in the stats and the card, one warning line each."""
        unlabelled, stats = scan.unlabelled, self.stats
        stats.skipped_labels = sum(unlabelled.values())
        stats.skipped_label_values = dict(sorted(unlabelled.items()))
        if unlabelled:
            log.warning("skipped %d image(s) whose label is not an ImageNet class 0-%d (label: count %s)",
                        stats.skipped_labels, NUM_CLASSES - 1, stats.skipped_label_values)
        not_images = sorted(self.source.not_images)
        stats.skipped_non_image_files = len(not_images)
        if not_images:
            log.warning("skipped %d file(s) that are not images (by extension), e.g. %s", len(not_images),
                        ", ".join(not_images[:5]))
        if scan.scanned == 0 and unlabelled:
            raise NothingToWrite(f"--source {self.config.source} (split {self.config.split}): none of its images has an "
                              f"ImageNet label 0-{NUM_CLASSES - 1} (labels seen: {stats.skipped_label_values});"
                              " a test split carries no labels: build from the train or validation split")

    # annotations config ---------------------------------------------------------------------------------------------

    def annotation_rows(self, scan) -> list[dict]:
        weight, fi = self.model.classifier_weight, scan.fi
        importance, ranks = fi.importance(weight), fi.ranks(weight)
        names, rows, agree = class_names(), [], 0
        for (c, j), pair in sorted(self.annotations.pairs.items()):
            votes = pair.votes
            empty = int(fi.counts[c]) == 0
            computed_rank = None if empty else int(ranks[c, j])
            agree += computed_rank is not None and computed_rank <= len(self.annotations.for_class(c))
            rows.append({
                "class_index": c, "wordnet_id": pair.wordnet_id, "class_name": names[c], "feature_index": j,
                "feature_rank": pair.feature_rank, "importance": None if empty else float(importance[c, j]),
                "computed_rank": computed_rank, "kind": pair.kind, "spurious_type": pair.spurious_type,
                "votes_main_object": votes["main_object"], "votes_separate_object": votes["separate_object"],
                "votes_background": votes["background"], "mean_confidence": pair.mean_confidence,
                "answers": [asdict(a) for a in pair.answers], "group_size": int(fi.counts[c]),
                "top_image_ids": top_image_ids(scan, (c, j), ANNOTATOR_TOP_IMAGES),
                "generalization": None, "generalizes_to_rank": None,  # filled by `update --generalization`
            })
        self.stats.annotation_stats = self.annotations.stats()
        self.stats.top5_agreement = {"agree": agree, "pairs": len(rows),
                                     "pairs_with_images": sum(r["group_size"] > 0 for r in rows)}
        self.stats.groups = {c: int(fi.counts[c]) for c in self.classes}
        return rows

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

    def provenance(self) -> dict:
        config, info = self.config, self.model_info
        return {
            "package_version": __version__,
            # inputs by file name (or URL, Hub id) and sha256: no local absolute path is published
            "command": card.public_paths(config.command or " ".join(sys.argv)),
            "source": card.public_paths(self.source.describe()),
            "split": config.split,
            "model": info.name, "arch": info.arch, "checkpoint_sha256": info.sha256,
            "checkpoint": Path(info.checkpoint).name if info.checkpoint else None,
            "annotations": config.annotations if "://" in config.annotations else Path(config.annotations).name,
            "annotations_sha256": self.annotations.sha256,
            "constants": {
                "resize": RESIZE_SIZE, "crop": CROP_SIZE, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                "top_k": config.top_k if config.top_k is not None else "all", "group_by": config.group_by,
                "majority": self.annotations.majority, "answers_per_pair": self.annotations.answers_per_pair,
                "image_mode": config.image_mode, "jpeg_draft": config.draft and config.decode == "cpu",
                "decode": config.decode,
            },
            "numerics": config.numerics.describe(),
            "classes": self.classes,
            "demo": config.demo,
            "python": platform.python_version(), "torch": torch.__version__, "device": str(self.device),
            "world_size": self.world.size,
            # the speed settings each pass's units ran with (a resume may change them): [[settings, units], ...]
            "units_ran_with": self.ran_with_units,
        }


def _unit_images(spec: dict) -> int | None:
    """The most images a unit's spec can yield, when the spec says (a folder block, a parquet unit's row list)."""
    if "stop" in spec and "start" in spec:
        return spec["stop"] - spec["start"]
    if spec.get("rows") is not None:
        return len(spec["rows"])
    return None


def build(config: BuildConfig) -> BuildStats:
    """Build Salient ImageNet as `config` says (the command line's options, as fields); returns its statistics.
    Leaves the caller's process as it found it: no thread count, backend flag or warnings filter is changed."""
    return Builder(config).run()
