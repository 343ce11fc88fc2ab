"""The builder: wires the stages for one build.

Pass 1 reads every image once: decode (workers) -> robust model (batched) -> feature importance sums and the
bounded top-k candidates of every annotated pair, whose maps come from the same forward pass.
Pass 2 reads only the selected images again: decode -> masks -> rows (workers) -> Arrow spill.
Then the spill is sorted by (group, image_id) into parquet shards, the annotations config is written, and the card.
"""

import logging
import platform
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import __version__
from .. import annotations as annotations_mod
from ..constants import (
    ANNOTATIONS_CONFIG,
    ANNOTATIONS_URL,
    ANNOTATOR_TOP_IMAGES,
    CROP_SIZE,
    DEFAULT_MODEL,
    DEFAULT_OUT,
    DEFAULT_TOP_K,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAJORITY,
    MAX_SHARD_BYTES,
    NUM_CLASSES,
    RESIZE_SIZE,
)
from ..errors import InputError
from ..images import to_unit_float
from ..masks import normalized_maps
from ..model import create_feature_model, pick_device
from ..schema import annotation_features, class_names, image_features
from ..sources import Sample, open_source
from ..stages import StageTimer, batched, default_workers, ordered_map, synchronize, timed_iter
from . import card
from .output import discard_staging, prepare_output, publish
from .rows import ImageMeta, Pass1Decoder, Pass2Decoder, make_row_job
from .selection import Candidate, FeatureImportance, TopK
from .writer import ShardWriter, Spill, encode_rows

log = logging.getLogger(__name__)

IMAGE_MODES = ("crop", "original", "none")
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
    workers: int = field(default_factory=default_workers)
    device: str | None = None
    overwrite: bool = False
    source_type: str | None = None
    draft: bool = True
    cache_dir: str = str(Path.home() / ".cache" / "salient_imagenet")
    command: str = ""
    demo: bool = False
    max_shard_bytes: int = MAX_SHARD_BYTES

    def __post_init__(self):
        if self.group_by not in GROUP_BY:
            raise ValueError(f"--group-by must be one of {GROUP_BY}, got {self.group_by!r}")
        if self.image_mode not in IMAGE_MODES:
            raise ValueError(f"--image-mode must be one of {IMAGE_MODES}, got {self.image_mode!r}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"--top-k must be a positive integer or 'all', got {self.top_k}")


class Builder:
    def __init__(self, config: BuildConfig):
        self.config = config
        self.timer = StageTimer()
        self.stats: dict = {"skipped_images": 0, "skipped_ids": []}

    def run(self) -> dict:
        config = self.config
        out = Path(config.out)
        staging = prepare_output(out, config.overwrite, config.source)
        try:
            self._run(staging)
        except BaseException:
            discard_staging(staging)  # the previous output, if any, is untouched; work/ is kept for a resume
            raise
        publish(staging, out)
        log.info("stage seconds: %s", self.stats["stage_seconds"])
        return self.stats

    def _run(self, staging: Path) -> None:
        config = self.config
        start = time.perf_counter()
        self.device = pick_device(config.device)
        with self.timer("load model"):
            self.model, self.model_info = create_feature_model(config.model, config.model_checkpoint, config.arch)
            self.model = self.model.to(self.device, memory_format=torch.channels_last)
        with self.timer("load annotations"):
            self.annotations = self._load_annotations()
        self.source = open_source(config.source, config.split, config.source_type)
        self.classes = self._build_classes()
        self.pairs_by_class = defaultdict(list)
        for pair in self.annotations.pairs.values():
            self.pairs_by_class[pair.class_index].append(pair)
        self.topk = TopK(self.annotations.pairs, config.top_k)
        self.fi = FeatureImportance(NUM_CLASSES, self.model.num_features)
        self.metas: dict[int, ImageMeta] = {}

        self.scan()
        selected = self.select()
        spill = Spill(staging / ".rows.arrow", image_features())
        self.materialize(selected, spill)
        spill.close()
        if spill.rows == 0:
            raise InputError(f"no image was grouped into the built classes {self.classes[:20]} "
                             f"({self.stats['images_scanned']} read): nothing to write. With few images per class, "
                             "try --group-by label or a larger --limit.")
        with self.timer("write shards"):
            shards = ShardWriter(staging / "data", config.split, image_features(), config.max_shard_bytes)
            for table in spill.sorted_batches(["group", "image_id"]):
                shards.write(table)
            self.stats["default_shards"] = [p.name for p in shards.close()]
            self.stats["default_bytes"] = shards.bytes
            spill.path.unlink()
            ann_rows = self.annotation_rows()
            ann_writer = ShardWriter(staging / "data", ANNOTATIONS_CONFIG, annotation_features())
            ann_writer.write(encode_rows(ann_rows, annotation_features()))
            self.stats["annotation_shards"] = [p.name for p in ann_writer.close()]
            self.stats["annotation_bytes"] = ann_writer.bytes
        self.stats["seconds_total"] = round(time.perf_counter() - start, 2)
        self.stats["stage_seconds"] = self.timer.report()
        self.stats["images_per_second"] = round(self.stats["images_scanned"] / max(self.stats["seconds_total"], 1e-9), 2)
        card.write_card(staging, self.provenance(), self.stats, config.split, repo_id=str(config.out))

    def _load_annotations(self):
        config = self.config
        published = config.annotations == ANNOTATIONS_URL
        annotations = annotations_mod.load(config.annotations, Path(config.cache_dir) / "annotations",
                                           num_features=self.model.num_features, expect_published=published)
        if config.classes is not None:
            annotations = annotations.restrict(config.classes)
        return annotations

    def _build_classes(self) -> list[int]:
        annotated = set(self.annotations.classes)
        wanted = set(self.config.classes) if self.config.classes is not None else annotated
        missing = sorted(wanted - annotated)
        if missing:
            log.warning("skipping %d class(es) without annotations: %s%s", len(missing), missing[:20],
                        " ..." if len(missing) > 20 else "")
        self.stats["classes_without_annotations"] = missing
        classes = sorted(wanted & annotated)
        if not classes:
            raise InputError("no class to build: none of the requested classes has annotations")
        return classes

    # pass 1 ----------------------------------------------------------------------------------------------------------

    def scan(self) -> None:
        config = self.config
        classes = None if len(self.classes) == NUM_CLASSES else set(self.classes)  # None: no filter to apply
        total = self.source.count(classes, config.limit)
        samples = self.source.samples(classes, config.limit)
        scanned = 0
        bar = tqdm(total=total, unit="img", desc="pass 1/2: robust model over the source", dynamic_ncols=True)
        with ordered_map(Pass1Decoder(config.draft), config.workers) as imap:
            decoded = timed_iter(imap(samples), self.timer, "read+decode (pass 1)")
            for batch in batched(decoded, config.batch_size):
                good = [(s, t) for s, t, error in batch if error is None]
                for s, _, error in batch:
                    if error is not None:
                        self._skip(s, error)
                if good:
                    self._scan_batch([s for s, _ in good], torch.stack([t for _, t in good]), scanned)
                scanned += len(good)
                bar.update(len(batch))
        bar.close()
        self.stats["images_scanned"] = scanned

    def _skip(self, sample: Sample, error: str) -> None:
        self.stats["skipped_images"] += 1
        if len(self.stats["skipped_ids"]) < 100:
            self.stats["skipped_ids"].append(sample.image_id)
        log.warning("skipping corrupt image %s (%s): %s", sample.image_id, sample.ref, error)

    def forward(self, batch_uint8: torch.Tensor):
        with self.timer("model"), torch.inference_mode():
            x = to_unit_float(batch_uint8.to(self.device, non_blocking=True))
            spatial, pooled, logits = self.model(x.contiguous(memory_format=torch.channels_last))
            synchronize(self.device)
        return spatial, pooled, logits

    def _scan_batch(self, samples: list[Sample], batch: torch.Tensor, first_seq: int) -> None:
        spatial, pooled, logits = self.forward(batch)
        with self.timer("select"):
            predictions = logits.argmax(1)
            labels = torch.tensor([s.label for s in samples], device=predictions.device)
            groups = predictions if self.config.group_by == "prediction" else labels
            self.fi.update(groups, pooled)
            groups, predictions, pooled_cpu = groups.tolist(), predictions.tolist(), pooled.float().cpu()
            for i, sample in enumerate(samples):
                self._offer(first_seq + i, sample, predictions[i], groups[i], pooled_cpu[i], spatial[i])

    def _offer(self, seq, sample, prediction, group, pooled, spatial) -> None:
        kept = False
        for pair in self.pairs_by_class.get(group, ()):
            key = (pair.class_index, pair.feature_index)
            activation = float(pooled[pair.feature_index])
            if not self.topk.would_keep(key, activation):
                continue
            nam = None
            if self.config.top_k is not None:  # bounded: keep the map from this pass; 'all' recomputes in pass 2
                nam = normalized_maps(spatial[pair.feature_index].float()).cpu().numpy()
            self.topk.offer(key, Candidate(activation, sample.image_id, seq, nam))
            kept = True
        if kept:
            self.metas[seq] = ImageMeta(sample.image_id, sample.label, prediction, group, sample.ref)

    # selection -------------------------------------------------------------------------------------------------------

    def select(self) -> dict[int, list[dict]]:
        """seq -> entries (one per pair whose top-k holds the image)."""
        selected: dict[int, list[dict]] = defaultdict(list)
        for key, pair in self.annotations.pairs.items():
            for rank, candidate in enumerate(self.topk.ranked(key), start=1):
                selected[candidate.seq].append({
                    "feature_index": pair.feature_index, "feature_rank": pair.feature_rank, "kind": pair.kind,
                    "activation": candidate.activation, "rank": rank, "nam": candidate.nam,
                })
        self.metas = {seq: self.metas[seq] for seq in selected}
        return selected

    # pass 2 ----------------------------------------------------------------------------------------------------------

    def materialize(self, selected: dict[int, list[dict]], spill: Spill) -> None:
        config = self.config
        by_ref = {self.metas[seq].ref: seq for seq in selected}
        worker = Pass2Decoder(config.image_mode, config.draft)
        bar = tqdm(total=len(by_ref), unit="img", desc="pass 2/2: masks for the selected images", dynamic_ncols=True)
        masks = 0
        with ordered_map(worker.view, config.workers) as imap, ordered_map(make_row_job, config.workers) as rows_map:
            views = timed_iter(imap(self.source.read_many(list(by_ref))), self.timer, "read+decode (pass 2)")
            for batch in batched(views, config.batch_size):
                seqs = [by_ref[ref] for ref, _, _ in batch]
                if any(e["nam"] is None for seq in seqs for e in selected[seq]):
                    self._recompute_nams(seqs, torch.stack([v for _, v, _ in batch]), selected)
                jobs = [(self.metas[seq], image, selected[seq]) for seq, (_, _, image) in zip(seqs, batch)]
                with self.timer("masks+encode"):
                    rows = list(rows_map(jobs))
                with self.timer("spill"):
                    spill.append(rows)
                masks += sum(len(selected[seq]) for seq in seqs)
                bar.update(len(batch))
        bar.close()
        self.stats["images_written"] = spill.rows
        self.stats["masks_written"] = masks

    def _recompute_nams(self, seqs, batch, selected) -> None:
        spatial, _, _ = self.forward(batch)
        for i, seq in enumerate(seqs):
            for entry in selected[seq]:
                entry["nam"] = normalized_maps(spatial[i, entry["feature_index"]].float()).cpu().numpy()

    # annotations config ---------------------------------------------------------------------------------------------

    def annotation_rows(self) -> list[dict]:
        weight = self.model.classifier_weight
        importance, ranks = self.fi.importance(weight), self.fi.ranks(weight)
        names, rows, agree = class_names(), [], 0
        for (c, j), pair in sorted(self.annotations.pairs.items()):
            votes = pair.votes
            empty = int(self.fi.counts[c]) == 0
            computed_rank = None if empty else int(ranks[c, j])
            agree += computed_rank is not None and computed_rank <= len(self.annotations.for_class(c))
            rows.append({
                "class_index": c, "wordnet_id": pair.wordnet_id, "class_name": names[c], "feature_index": j,
                "feature_rank": pair.feature_rank, "importance": None if empty else float(importance[c, j]),
                "computed_rank": computed_rank, "kind": pair.kind, "spurious_type": pair.spurious_type,
                "votes_main_object": votes["main_object"], "votes_separate_object": votes["separate_object"],
                "votes_background": votes["background"], "mean_confidence": pair.mean_confidence,
                "answers": [asdict(a) for a in pair.answers], "group_size": int(self.fi.counts[c]),
                "top_image_ids": [cand.image_id for cand in self.topk.ranked((c, j))[:ANNOTATOR_TOP_IMAGES]],
            })
        self.stats["annotation_stats"] = self.annotations.stats()
        self.stats["top5_agreement"] = {"agree": agree, "pairs": len(rows),
                                        "pairs_with_images": sum(r["group_size"] > 0 for r in rows)}
        self.stats["groups"] = dict(Counter({c: int(self.fi.counts[c]) for c in self.classes}))
        return rows

    def provenance(self) -> dict:
        config, info = self.config, self.model_info
        return {
            "package_version": __version__,
            "command": config.command or " ".join(sys.argv),
            "source": self.source.describe(),
            "split": config.split,
            "model": info.name, "arch": info.arch, "checkpoint": info.checkpoint, "checkpoint_sha256": info.sha256,
            "annotations": self.annotations.source, "annotations_sha256": self.annotations.sha256,
            "constants": {
                "resize": RESIZE_SIZE, "crop": CROP_SIZE, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                "top_k": config.top_k if config.top_k is not None else "all", "group_by": config.group_by,
                "majority": MAJORITY, "image_mode": config.image_mode, "jpeg_draft": config.draft,
            },
            "classes": self.classes,
            "demo": config.demo,
            "python": platform.python_version(), "torch": torch.__version__, "device": str(self.device),
        }


def build(config: BuildConfig) -> dict:
    return Builder(config).run()
