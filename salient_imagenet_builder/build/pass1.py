"""Pass 1 over one work unit: decode -> robust model -> a small, mergeable `ScanResult`.

The result holds the unit's feature-importance sums (float64, per class present), the unit's top candidates of
every annotated pair (activation, image id and, for a bounded `--top-k`, the normalised map from this very forward
pass), the metadata of those images, its skipped images and its stage timings. With `--top-k all` every image of an
annotated group gets its row right here (masks of all of its group's pairs, rank 0 until the reduce), spilled to
the unit's `rows.arrow`: one read and one forward per image; the candidates then only serve the annotators' top 5.
"""

import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch

from ..masks import normalized_maps
from ..schema import image_features
from ..stages import StageTimer, batched, timed_iter
from .decoding import BatchDecoder
from .rows import ImageMeta, make_row_job
from .selection import Candidate, TopK
from .units import Unit
from .writer import Spill

META_FIELDS = ("image_id", "label", "prediction", "group", "ref")


class ScanResult:
    def __init__(self, classes, sums, counts, candidates, metas, skipped, scanned, timings, rows_path=None,
                 unlabelled=None):
        self.classes, self.sums, self.counts = classes, sums, counts  # int64 [n], float64 [n, F], int64 [n]
        self.candidates = candidates  # list of ((class, feature), Candidate) with seq = index into metas
        self.metas = metas  # list[ImageMeta]
        self.skipped = skipped  # list of (image_id, ref, error)
        self.scanned, self.timings, self.rows_path = scanned, timings, rows_path
        self.unlabelled = unlabelled or {}  # label (as text) -> samples skipped for a label outside 0-999

    def summary(self) -> dict:
        return {"scanned": self.scanned, "skipped": len(self.skipped), "candidates": len(self.candidates),
                "timings": self.timings}

    def save(self, folder: Path) -> None:
        keys = [key for key, _ in self.candidates]
        cands = [c for _, c in self.candidates]
        nams = [c.nam for c in cands if c.nam is not None]
        arrays = {
            "classes": self.classes, "sums": self.sums, "counts": self.counts,
            "cand_class": np.array([k[0] for k in keys], np.int64), "cand_feature": np.array([k[1] for k in keys],
                                                                                             np.int64),
            "cand_activation": np.array([c.activation for c in cands], np.float64),
            "cand_image": np.array([c.image_id for c in cands], dtype=str), "cand_seq": np.array(
                [c.seq for c in cands], np.int64),
            "cand_nam": np.stack(nams) if nams else np.zeros((0, 0, 0), np.float32),
        }
        for name in META_FIELDS:
            arrays[f"meta_{name}"] = np.array([getattr(m, name) for m in self.metas],
                                              dtype=str if name in ("image_id", "ref") else np.int64)
        with open(folder / "scan.npz", "wb") as f:
            np.savez(f, **arrays)
        (folder / "scan.json").write_text(json.dumps({"scanned": self.scanned, "skipped": self.skipped,
                                                      "timings": self.timings, "unlabelled": self.unlabelled}),
                                          encoding="utf-8")
        if self.rows_path is not None:
            os.replace(self.rows_path, folder / "rows.arrow")

    @classmethod
    def load(cls, folder: Path) -> "ScanResult":
        with np.load(folder / "scan.npz", allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        info = json.loads((folder / "scan.json").read_text(encoding="utf-8"))
        has_nams = len(a["cand_nam"]) == len(a["cand_class"]) and len(a["cand_class"]) > 0
        candidates = [((int(c), int(j)), Candidate(float(act), str(image), int(seq),
                                                   a["cand_nam"][i] if has_nams else None))
                      for i, (c, j, act, image, seq) in enumerate(zip(
                          a["cand_class"], a["cand_feature"], a["cand_activation"], a["cand_image"], a["cand_seq"]))]
        metas = [ImageMeta(str(i), int(label), int(p), int(g), str(r)) for i, label, p, g, r in zip(
            *(a[f"meta_{name}"] for name in META_FIELDS))]
        rows = folder / "rows.arrow"
        return cls(a["classes"], a["sums"], a["counts"], candidates, metas, [tuple(s) for s in info["skipped"]],
                   info["scanned"], info["timings"], rows if rows.is_file() else None, info.get("unlabelled"))


class ScanWorker:
    """Built once per process (the clip-retrieval `Runner`'s builders); `worker(unit)` scans one unit."""

    def __init__(self, source, runner, pairs_by_class, config, classes, spill_dir: Path):
        self.source, self.runner, self.config = source, runner, config
        self.pairs_by_class, self.classes = pairs_by_class, classes
        self.all_mode = config.top_k is None
        self.k = config.top_k if config.top_k is not None else ANNOTATOR_TOP
        self.spill_dir = spill_dir
        self.decoder = BatchDecoder(config.workers, config.batch_size, config.draft,
                                    image_mode=config.image_mode if self.all_mode else None,
                                    pin_memory=runner.device.type == "cuda")
        self.overlap = runner.device.type != "cpu"

    def close(self) -> None:
        self.decoder.close()

    def __call__(self, unit: Unit) -> ScanResult:
        timer = self.runner.timer = StageTimer()
        state = _UnitState(self.k, self.runner.model.num_features)
        spill = None
        if self.all_mode:
            self.spill_dir.mkdir(parents=True, exist_ok=True)
            spill = Spill(self.spill_dir / f".{unit.index:05d}.rows.arrow.partial", image_features())
        self.source.unlabelled = Counter()
        samples = self.source.unit_samples(unit.spec, self.classes, self.config.limit)
        batches = self.decoder.batches(batched(samples, self.config.batch_size), self.overlap)
        for decoded in timed_iter(batches, timer, "read+decode"):
            state.skipped += [(s.image_id, s.ref, error) for s, error in decoded.failed]
            if decoded.good:
                self._scan_batch(decoded, state, spill, timer)
        if spill is not None:
            spill.close()
        result = state.result(timer.report(), spill.path if spill is not None else None)
        result.unlabelled = {str(label): n for label, n in self.source.unlabelled.items()}
        return result

    def _scan_batch(self, decoded, state, spill, timer) -> None:
        samples = decoded.good
        spatial, pooled, logits = self.runner(decoded.views)
        with timer("select"):
            predictions = logits.argmax(1).cpu()
            labels = torch.tensor([s.label for s in samples])
            groups = predictions if self.config.group_by == "prediction" else labels
            pooled_cpu = pooled.cpu()
            state.add_sums(groups, pooled_cpu)
            groups, predictions = groups.tolist(), predictions.tolist()
            offers = []  # (image position, pair key, activation) that may enter the unit's heaps
            for i, sample in enumerate(samples):
                for pair in self.pairs_by_class.get(groups[i], ()):
                    key = (pair.class_index, pair.feature_index)
                    activation = float(pooled_cpu[i, pair.feature_index])
                    if state.topk.would_keep(key, activation):
                        offers.append((i, key, activation))
            nams = None
            if offers and not self.all_mode:  # one gather for the batch's kept maps
                rows_i = torch.tensor([i for i, _, _ in offers])
                cols = torch.tensor([key[1] for _, key, _ in offers])
                nams = normalized_maps(spatial[rows_i.to(spatial.device), cols.to(spatial.device)]).cpu().numpy()
            seqs = {}
            for n, (i, key, activation) in enumerate(offers):
                if i not in seqs:
                    seqs[i] = len(state.metas)
                    state.metas.append(ImageMeta(samples[i].image_id, samples[i].label, predictions[i], groups[i],
                                                 samples[i].ref))
                state.topk.offer(key, Candidate(activation, samples[i].image_id, seqs[i],
                                                None if nams is None else nams[n]))
            state.scanned += len(samples)
        if self.all_mode:
            with timer("masks+encode"):
                self._rows(decoded, spatial, pooled_cpu, predictions, groups, spill)

    def _rows(self, decoded, spatial, pooled, predictions, groups, spill) -> None:
        jobs, images = [], []
        for i, sample in enumerate(decoded.good):
            pairs = self.pairs_by_class.get(groups[i], ())
            if not pairs:
                continue
            features = [p.feature_index for p in pairs]
            nams = normalized_maps(spatial[i, features]).cpu().numpy()
            entries = [{"feature_index": p.feature_index, "feature_rank": p.feature_rank, "kind": p.kind,
                        "activation": float(pooled[i, p.feature_index]), "rank": 0, "nam": nams[n]}
                       for n, p in enumerate(pairs)]
            jobs.append((ImageMeta(sample.image_id, sample.label, predictions[i], groups[i], sample.ref), None,
                         entries))
            images.append(decoded.images[i])
        rows = self.decoder.map(make_row_job, jobs)
        for row, image in zip(rows, images):
            row["image"] = image
        spill.append(rows)


ANNOTATOR_TOP = 5  # in `all` mode the candidates only give the annotations config its top image ids


class _UnitState:
    def __init__(self, k, num_features):
        self.topk = TopK(defaultdict(list), k)
        self.topk.heaps = defaultdict(list)
        self.sums: dict[int, np.ndarray] = {}
        self.counts: dict[int, int] = defaultdict(int)
        self.num_features = num_features
        self.metas, self.skipped, self.scanned = [], [], 0

    def add_sums(self, groups: torch.Tensor, pooled: torch.Tensor) -> None:
        pooled = pooled.double().numpy()
        for g in torch.unique(groups).tolist():
            rows = (groups == g).numpy()
            if g not in self.sums:
                self.sums[g] = np.zeros(self.num_features, np.float64)
            for row in pooled[rows]:  # image by image, in reader order: the same sums whatever the batch
                self.sums[g] += row
            self.counts[g] += int(rows.sum())

    def result(self, timings, rows_path) -> ScanResult:
        classes = sorted(self.sums)
        candidates = [(key, c) for key in sorted(self.topk.heaps) for c in self.topk.ranked(key)]
        kept = sorted({c.seq for _, c in candidates})  # only the metas of images still among the candidates
        renumber = {old: new for new, old in enumerate(kept)}
        for _, c in candidates:
            c.seq = renumber[c.seq]
        sums = np.stack([self.sums[c] for c in classes]) if classes else np.zeros((0, self.num_features))
        return ScanResult(np.array(classes, np.int64), sums, np.array([self.counts[c] for c in classes], np.int64),
                          candidates, [self.metas[i] for i in kept], self.skipped, self.scanned, timings, rows_path)
