"""Pass 1 over the source's work units: `ScanWorker` scans one unit (decode workers -> `runner.ModelRunner` ->
`UnitScan`, which accumulates a `core.scan.ScanResult` batch by batch); `scan_units` runs (or resumes) every unit of
a plan with `units.run_units` and merges the results in unit order; `fingerprint` says what makes two scans the
same; `nothing_grouped` says, in words that point the right way, why no image fell into the requested classes."""

import time
from collections import Counter, defaultdict

import numpy as np
import torch

from ..version import __version__
from . import distributed
from .constants import NUM_CLASSES
from .decoding import BatchDecoder
from .masks import normalized_maps
from .scan import ImageTable, ScanResult, ScanSpec, id_ranks, merge_top, remap
from .stages import StageTimer, batched, timed_iter
from .units import Unit, UnitFolder, fingerprint_hash, load_results, run_units

__all__ = ["ScanWorker", "UnitScan", "fingerprint", "nothing_grouped", "scan_units"]

MERGE_GROUP = 16  # unit results merged together before they meet the total (see `scan_units`)


def _slots(inverse: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """0, 1, 2... within each group of equal `inverse` values, in order of appearance."""
    order = torch.argsort(inverse, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(inverse)
    slot[order] = torch.arange(len(inverse)) - starts[inverse[order]]
    return slot


class UnitScan:
    """Accumulates one unit batch by batch. Images get positions in reading order (nothing is renumbered per
    batch); ties compare by the ids' current sort ranks; `result()` sorts the table by id once at the end."""

    def __init__(self, spec: ScanSpec, num_features: int, unit_index: int = 0):
        self.acc = ScanResult.empty(spec, num_features)
        self.keep_maps, self.unit_index = spec.keep_maps, unit_index
        self.row_of = self.acc.rows()
        self.ids, self.refs, self.labels, self.predictions, self.sizes, self.maps = [], [], [], [], [], []

    def skip(self, failed) -> None:
        """Samples that did not decode: (sample, error) pairs."""
        self.acc.skipped += [(s.image_id, s.ref, error) for s, error in failed]

    def add(self, samples, pooled: torch.Tensor, logits: torch.Tensor, groups: torch.Tensor,
            spatial: torch.Tensor | None = None, sizes: list | None = None) -> None:
        """One batch: pooled features r(x) and logits (CPU, float), the group of each image, with `keep_maps` the
        spatial maps (any device) the kept images' maps are cut from, and each image's (width, height)."""
        acc = self.acc
        acc.scanned += len(samples)
        rows = self.row_of[groups]
        inside = torch.nonzero(rows >= 0).flatten()  # images grouped into a class outside the scan count for nothing
        acc.fi.update(groups[inside], pooled[inside])
        if not len(inside):
            return
        first = len(self.ids)
        for i, prediction in zip(inside.tolist(), logits[inside].argmax(1).tolist()):
            self.ids.append(samples[i].image_id)
            self.refs.append(samples[i].ref)
            self.labels.append(samples[i].label)
            self.predictions.append(prediction)
            self.sizes.append(sizes[i] if sizes is not None and sizes[i] is not None else (0, 0))
        id_rank = torch.from_numpy(id_ranks(self.ids))
        seq = torch.arange(first, len(self.ids))
        pooled, logits, rows = pooled[inside], logits[inside], rows[inside]
        activations = acc.tracked_activations(pooled, rows)
        touched, inverse, counts = torch.unique(rows, return_inverse=True, return_counts=True)
        slot = _slots(inverse, counts)  # each image's column among its row's candidates
        shape = (len(touched), activations.shape[1], int(counts.max()))
        act, img = torch.full(shape, float("-inf")), torch.full(shape, -1)
        act[inverse, :, slot] = activations
        img[inverse, :, slot] = torch.where(activations > float("-inf"), seq[:, None], -1)
        acc.set_top(touched, *merge_top(acc.top_act[touched], acc.top_img[touched], act, img, acc.k, id_rank)[:2])
        if self.keep_maps and spatial is not None:
            self.maps.append(self._maps(spatial, inside, rows))
        if acc.context_k:
            score, score_img = torch.full((len(touched), 1, shape[2]), float("-inf")), torch.full_like(img[:, :1], -1)
            own_logit = logits[torch.arange(len(rows)), torch.tensor(acc.classes)[rows]]  # the group's own class
            score[inverse, 0, slot], score_img[inverse, 0, slot] = own_logit, seq
            acc.set_context(touched, *merge_top(acc.context_score[touched], acc.context_img[touched], score, score_img,
                                                acc.context_k, id_rank)[:2])

    def _maps(self, spatial: torch.Tensor, inside: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Max-normalised maps of each image's tracked features [n, T, h, w], cut on the maps' device."""
        features = (self.acc.tracked[rows] if self.acc.tracked is not None
                    else torch.arange(spatial.shape[1]).expand(len(rows), -1)).clamp_min(0)
        index = inside.to(spatial.device)[:, None]
        return normalized_maps(spatial[index, features.to(spatial.device)].float()).cpu()

    def result(self) -> ScanResult:
        acc = self.acc
        acc.images, position = ImageTable.of(self.ids, self.refs, self.labels, self.predictions, self.unit_index,
                                             self.sizes)
        acc.top_img, acc.context_img = remap(acc.top_img, position), remap(acc.context_img, position)
        if self.maps:
            acc.image_maps = torch.empty_like(torch.cat(self.maps))
            acc.image_maps[torch.from_numpy(position)] = torch.cat(self.maps)
        acc.compact()
        acc.images.unit_positions = np.arange(len(acc.images), dtype=np.int64)  # rows of the saved unit result
        return acc


class ScanWorker:
    """Built once per process (the clip-retrieval `Runner`'s builders): decode workers with a shared-memory
    hand-over and the rank's `ModelRunner`; `worker(unit)` scans one unit.

    `rows`, when given, makes rows on the way (`--top-k all`): `rows.open(unit)`, then `rows.add(decoded, spatial,
    pooled, predictions, groups, decoder)` per batch, and `rows.close()` returns the unit's spilled rows file."""

    def __init__(self, source, runner, spec: ScanSpec, *, batch_size: int, workers: int, draft: bool = True,
                 limit: int | None = None, image_mode: str | None = None, rows=None, device_decode: bool = False):
        self.source, self.runner, self.spec, self.rows = source, runner, spec, rows
        self.batch_size, self.limit = batch_size, limit
        self.class_filter = None if len(spec.classes) == NUM_CLASSES else set(spec.classes)
        # `device_decode` (`--decode gpu`): JPEGs decoded on the model's device, in this process
        self.decoder = BatchDecoder(workers, batch_size, draft, image_mode=image_mode,
                                    pin_memory=runner.device.type == "cuda" and not device_decode,
                                    decode_device=runner.device if device_decode else None)
        self.overlap = runner.device.type != "cpu"  # on a CPU, decoding between forward passes is faster

    def close(self, abort: bool = False) -> None:
        self.decoder.close(abort)

    def __call__(self, unit: Unit) -> ScanResult:
        timer = self.runner.timer = StageTimer()
        scan = UnitScan(self.spec, self.runner.model.num_features, unit.index)
        if self.rows is not None:
            self.rows.open(unit)
        self.source.unlabelled = Counter()  # labels outside 0-999 are a result of the unit (they survive a resume)
        with self.source.io.measure() as read:  # bytes read are a result of the unit too
            self._scan(unit, scan, timer)
        result = scan.result()
        result.unlabelled = Counter({str(label): n for label, n in self.source.unlabelled.items()})
        result.rows_paths = [self.rows.close()] if self.rows is not None else []
        result.bytes_read = read.bytes
        result.decode_fallbacks, self.decoder.fallbacks = self.decoder.fallbacks, Counter()
        result.timings = defaultdict(float, timer.report())
        return result

    def _scan(self, unit: Unit, scan: UnitScan, timer: StageTimer) -> None:
        samples = batched(self.source.unit_samples(unit.spec, self.class_filter, self.limit), self.batch_size)
        if self.overlap:  # a GPU: the next batch decodes while the device runs this one
            batches = ((decoded, None) for decoded in self.decoder.batches(samples, overlap=True))
        else:  # a CPU: the next batch decodes once this one's forward pass is over (`batches_with_next`)
            batches = self.decoder.batches_with_next(samples)
        for decoded, start_next in timed_iter(batches, timer, "read+decode"):
            scan.skip(decoded.failed)
            if decoded.good:
                self._batch(decoded, scan, timer, start_next)

    def _batch(self, decoded, scan: UnitScan, timer: StageTimer, start_next=None) -> None:
        spatial, pooled, logits = self.runner(decoded.views)
        if start_next is not None:
            start_next()
        with timer("select"):
            pooled, logits = pooled.cpu(), logits.cpu()
            predictions = logits.argmax(1)
            groups = predictions if self.spec.group_by == "prediction" else torch.tensor(
                [s.label for s in decoded.good])
            scan.add(decoded.good, pooled, logits, groups, spatial if self.spec.keep_maps else None, decoded.sizes)
        if self.rows is not None:
            with timer("masks+encode"):
                self.rows.add(decoded, spatial, pooled, predictions.tolist(), groups.tolist(), self.decoder)


def fingerprint(source, split: str, plan: list[Unit], model_info, spec: ScanSpec, *, limit, draft: bool,
                unit_size: int, numerics: dict, **settings) -> dict:
    """What makes two scans the same; `settings` adds what else the caller's output depends on, named in its own
    words (e.g. the build's `top_k`). The speed knobs (batch size, workers, device, ranks) are not part of it: a
    resume may change them (e.g. a smaller --batch-size after running out of GPU memory); each unit's marker
    records the ones it ran with (`units.run_units`' `ran_with`)."""
    return {
        "package_version": __version__, "source": source.describe(), "split": split,
        "plan_sha256": fingerprint_hash({"plan": [u.spec for u in plan]}), "model": model_info.name,
        "arch": model_info.arch, "checkpoint_sha256": model_info.sha256 or model_info.checkpoint, "limit": limit,
        "draft": draft, "unit_size": unit_size, "numerics": numerics, **spec.describe(), **settings,
    }


def scan_units(plan: list[Unit], folder: UnitFolder, spec: ScanSpec, num_features: int, make_worker, world,
               log_name: str, desc: str, ran_with: dict | None = None) -> tuple[ScanResult, dict]:
    """Run (or resume) this rank's share of the plan's units, then merge every unit's result in unit order (every
    rank gets the same result). Returns the result and the unit runner's counts."""
    counts = run_units(plan, folder, make_worker, world, log_name, desc=desc, ran_with=ran_with)
    start = time.perf_counter()
    total = ScanResult.empty(spec, num_features)
    # Units are merged MERGE_GROUP at a time before they meet the total: a unit touches few slots, the total many,
    # so the total is rewritten once per group rather than once per unit. The merge is a total order: the same
    # result for any grouping.
    results = (result for _, result in load_results(plan, folder, ScanResult))
    for group in batched(results, MERGE_GROUP):
        partial = group[0]
        for result in group[1:]:
            partial.merge(result)
        total.merge(partial.compact()).compact()
    total.timings["merge"] += time.perf_counter() - start
    distributed.barrier()
    return total, counts


def nothing_grouped(source, where: str, classes: list[int], scanned: int, group_by: str) -> str:
    """Why no image fell into the requested classes, in words that point the right way: no image of them in the
    source (--group-by would not help), or images of them the model predicted as other classes (it would)."""
    wanted = _classes_text(classes)
    if scanned == 0:
        counts = source._label_counts() or {}
        present = sorted(c for c, n in counts.items() if n and 0 <= c < NUM_CLASSES)
        has = f" (it holds images of the classes {_classes_text(present)})" if present else ""
        return f"{where} has no image of the classes {wanted}{has}; check --classes"
    if group_by == "prediction":
        return (f"the model predicted none of the {scanned} images read as one of the classes {wanted}; "
                "--group-by label groups them by their true label")
    return f"none of the {scanned} images read is labelled with one of the classes {wanted}"


def _classes_text(classes: list[int]) -> str:
    shown = ", ".join(map(str, classes[:20]))
    return shown + (f", ... ({len(classes)} classes)" if len(classes) > 20 else "")
