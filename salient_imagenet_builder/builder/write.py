"""The build's output, on rank 0: the units' rows sorted by (group, image_id) into parquet shards (`core.writer`),
the annotations config (one row per annotated pair, with its importance in this build), the gallery and the card
(`core.card`), with the build's provenance."""

import logging
import platform
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

from ..core.card import write_card
from ..core.constants import (
    ANNOTATIONS_CONFIG,
    ANNOTATOR_TOP_IMAGES,
    CROP_SIZE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    NUM_CLASSES,
    RESIZE_SIZE,
)
from ..core.errors import InputError
from ..core.gallery import write_gallery
from ..core.provenance import command_line, public_paths
from ..core.scan_units import nothing_grouped
from ..core.schema import annotation_features, class_names
from ..core.writer import ShardWriter, SpilledRows, encode_rows
from ..version import __version__
from .reduce import PairRanks, check_unique_rows, top_image_ids

__all__ = ["NothingToWrite", "write_build"]

log = logging.getLogger(__name__)


class NothingToWrite(InputError):
    """Every unit ran, and there is nothing to write: rerunning the same command would end the same way."""


def write_build(job, staging: Path) -> None:
    """`job`: the `BuildJob` whose passes are done."""
    config, stats, scan = job.config, job.stats, job.scan
    count_skipped(job)
    with job.timer("write shards"):
        rows = SpilledRows(job.rows_files)
        if rows.table is None or rows.table.num_rows == 0:
            raise NothingToWrite(nothing_grouped(job.source, f"--source {config.source}", job.classes,
                                                 scan.scanned, config.group_by) + "; nothing to write")
        check_unique_rows(rows.table, job.source.locate)
        fill = PairRanks(rows.table).apply if config.top_k is None else None
        shards = ShardWriter(staging / "data", config.split, stats.image_features(), config.max_shard_bytes,
                             group_column="group")
        for table in rows.sorted_batches(["group", "image_id"], fill=fill):
            shards.write(table)
        stats.default_shards = [p.name for p in shards.close()]
        stats.default_bytes = shards.bytes
        stats.images_written = rows.table.num_rows
        stats.masks_written = sum(len(chunk.flatten()) for chunk in rows.table.column("features").chunks)
        ann_writer = ShardWriter(staging / "data", ANNOTATIONS_CONFIG, annotation_features())
        ann_writer.write(encode_rows(annotation_rows(job), annotation_features()))
        stats.annotation_shards = [p.name for p in ann_writer.close()]
        stats.annotation_bytes = ann_writer.bytes
        stats.generalization_columns = True
        del rows
    stats.seconds_total = round(time.perf_counter() - job.start, 2)
    seconds = defaultdict(float, scan.timings)
    for stage, value in job.timer.report().items():
        seconds[stage] += value
    stats.stage_seconds = {stage: round(value, 2) for stage, value in seconds.items()}
    stats.images_per_second = round(scan.scanned / max(stats.seconds_total, 1e-9), 2)
    stats.source_bytes["total"] = sum(stats.source_bytes.values())
    stats.source_size = job.source.size()
    stats.gallery = write_gallery(staging, config.split)  # a preview at the top of the card
    write_card(staging, provenance(job), stats, config.split, repo_id=Path(config.out).name)


def count_skipped(job) -> None:
    """What pass 1 passed over, counted in the stats and the card, one warning line each: corrupt images, labels
    outside 0-999 (never stored as another class), files that are not images, `--decode gpu`'s fallbacks."""
    scan, stats = job.scan, job.stats
    for image_id, ref, error in scan.skipped:
        log.warning("skipped corrupt image %s (%s): %s", image_id, ref, error)
    stats.images_scanned, stats.skipped_images = scan.scanned, len(scan.skipped)
    stats.skipped_ids = [image_id for image_id, _, _ in scan.skipped[:100]]
    stats.decode_fallbacks = dict(sorted(scan.decode_fallbacks.items()))
    if scan.decode_fallbacks:
        log.info("--decode gpu: %d image(s) decoded by Pillow instead (reason: count %s)",
                 sum(scan.decode_fallbacks.values()), stats.decode_fallbacks)
    unlabelled = scan.unlabelled
    stats.skipped_labels = sum(unlabelled.values())
    stats.skipped_label_values = dict(sorted(unlabelled.items()))
    if unlabelled:
        log.warning("skipped %d image(s) whose label is not an ImageNet class 0-%d (label: count %s)",
                    stats.skipped_labels, NUM_CLASSES - 1, stats.skipped_label_values)
    not_images = sorted(job.source.not_images)
    stats.skipped_non_image_files = len(not_images)
    if not_images:
        log.warning("skipped %d file(s) that are not images (by extension), e.g. %s", len(not_images),
                    ", ".join(not_images[:5]))
    if scan.scanned == 0 and unlabelled:
        raise NothingToWrite(f"--source {job.config.source} (split {job.config.split}): none of its images has an "
                             f"ImageNet label 0-{NUM_CLASSES - 1} (labels seen: {stats.skipped_label_values}); a "
                             "test split carries no labels: build from the train or validation split")


def annotation_rows(job) -> list[dict]:
    """The annotations config: each annotated pair with its votes, its importance and rank in this build."""
    weight, fi, scan, annotations = job.model.classifier_weight, job.scan.fi, job.scan, job.annotations
    importance, ranks = fi.importance(weight), fi.ranks(weight)
    names, rows, agree = class_names(), [], 0
    for (c, j), pair in sorted(annotations.pairs.items()):
        votes = pair.votes
        empty = int(fi.counts[c]) == 0
        computed_rank = None if empty else int(ranks[c, j])
        agree += computed_rank is not None and computed_rank <= len(annotations.for_class(c))
        rows.append({
            "class_index": c, "wordnet_id": pair.wordnet_id, "class_name": names[c], "feature_index": j,
            "feature_rank": pair.feature_rank, "importance": None if empty else float(importance[c, j]),
            "computed_rank": computed_rank, "kind": pair.kind, "spurious_type": pair.spurious_type,
            "votes_main_object": votes["main_object"], "votes_separate_object": votes["separate_object"],
            "votes_background": votes["background"], "mean_confidence": pair.mean_confidence,
            "answers": [asdict(a) for a in pair.answers], "group_size": int(fi.counts[c]),
            "top_image_ids": top_image_ids(scan, (c, j), ANNOTATOR_TOP_IMAGES),
            "generalization": None, "generalizes_to_rank": None,  # filled by a study recorded later
        })
    job.stats.annotation_stats = annotations.stats()
    job.stats.top5_agreement = {"agree": agree, "pairs": len(rows),
                                "pairs_with_images": sum(r["group_size"] > 0 for r in rows)}
    job.stats.groups = {c: int(fi.counts[c]) for c in job.classes}
    return rows


def provenance(job) -> dict:
    """build_info.json's provenance (the card's table): the build's inputs by file name and sha256 (no local
    absolute path is published), its settings and software."""
    import torch

    config, info = job.config, job.model_info
    return {
        "package_version": __version__,
        "command": command_line(config.command),
        "source": public_paths(job.source.describe()),
        "split": config.split,
        "model": info.name, "arch": info.arch, "checkpoint_sha256": info.sha256,
        "checkpoint": Path(info.checkpoint).name if info.checkpoint else None,
        "annotations": config.annotations if "://" in config.annotations else Path(config.annotations).name,
        "annotations_sha256": job.annotations.sha256,
        "constants": {
            "resize": RESIZE_SIZE, "crop": CROP_SIZE, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
            "top_k": config.top_k if config.top_k is not None else "all", "group_by": config.group_by,
            "majority": job.annotations.majority, "answers_per_pair": job.annotations.answers_per_pair,
            "image_mode": config.image_mode, "jpeg_draft": config.draft and config.decode == "cpu",
            "decode": config.decode,
        },
        "numerics": config.numerics.describe(),
        "classes": job.classes,
        "demo": config.demo,
        "python": platform.python_version(), "torch": torch.__version__, "device": str(job.device),
        "world_size": job.world.size,
        # the speed settings each pass's units ran with (a resume may change them): [[settings, units], ...]
        "units_ran_with": job.ran_with_units,
    }
