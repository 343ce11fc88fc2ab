"""Decoding batches in worker processes, handed over through shared memory (no pickled pixels).

Forked workers write each decoded 224 view straight into a slot of a shared uint8 ring (two halves of a batch
each: one being consumed by the model, one being filled) and send back only a small tuple. On CUDA the next batch
decodes while the GPU runs the current one (`overlap`), the batch is copied into pinned host memory and moved with
`non_blocking=True`. On CPU the model already uses every core, so decoding overlapped with it only preempts the
model's OpenMP threads (each parallel region waits for its slowest thread); there the batch is decoded by all
workers at once, between forward passes (`overlap=False`), which costs decode time / workers and nothing more.
"""

import io
import math

import torch

from .constants import CROP_SIZE
from .images import CorruptImage, center_view, decode, to_uint8_tensor
from .stages import stop_pool, worker_pool

_RING: torch.Tensor | None = None  # the shared ring, inherited by forked workers


class DecodeJob:
    """bytes -> the 224 view written into ring slot `slot`; returns (slot, error, image column or None)."""

    def __init__(self, draft: bool, image_mode: str | None):
        self.draft, self.image_mode = draft, image_mode  # image_mode None: no image column wanted

    def __call__(self, job):
        slot, data = job
        if data is None:  # the sample says why (`Sample.error`)
            return slot, "no image bytes", None
        try:
            view = center_view(decode(data, self.draft))
        except CorruptImage as e:
            return slot, str(e), None
        _RING[slot].copy_(to_uint8_tensor(view))
        return slot, None, self._image_column(view, data)

    def _image_column(self, view, data):
        if self.image_mode == "crop":
            buffer = io.BytesIO()
            view.save(buffer, format="PNG", compress_level=6)
            return {"bytes": buffer.getvalue(), "path": None}
        if self.image_mode == "original":
            return {"bytes": data, "path": None}
        return None


class Decoded:
    """One decoded batch: the samples that decoded (`good`), their uint8 views, image columns, and the failures."""

    def __init__(self, good, views, images, failed):
        self.good, self.views, self.images, self.failed = good, views, images, failed


class BatchDecoder:
    def __init__(self, workers: int, batch_size: int, draft: bool, image_mode: str | None = None,
                 pin_memory: bool = False):
        self.batch_size, self.workers = batch_size, workers
        self.ring = torch.empty((2 * batch_size, 3, CROP_SIZE, CROP_SIZE), dtype=torch.uint8).share_memory_()
        self.job = DecodeJob(draft, image_mode)
        self.pinned = torch.empty((batch_size, 3, CROP_SIZE, CROP_SIZE), dtype=torch.uint8,
                                  pin_memory=pin_memory)
        self.pool = None
        if workers > 0:
            self.pool = worker_pool(workers, _use_ring, (self.ring,))
        else:
            _use_ring(self.ring)
        self._half = 0

    def submit(self, samples: list):
        """Start decoding `samples` (at most batch_size) into the next half of the ring."""
        base = self._half * self.batch_size
        self._half ^= 1
        jobs = [(base + i, s.data) for i, s in enumerate(samples)]
        if self.pool is None:
            return samples, list(map(self.job, jobs))
        chunk = max(1, math.ceil(len(jobs) / self.workers))
        return samples, self.pool.map_async(self.job, jobs, chunk)

    def collect(self, pending) -> Decoded:
        samples, results = pending
        results = results if isinstance(results, list) else results.get()
        good, slots, images, failed = [], [], [], []
        for sample, (slot, error, image) in zip(samples, results):
            if error is not None:
                failed.append((sample, sample.error or error))
            else:
                good.append(sample)
                slots.append(slot)
                images.append(image)
        views = self.pinned[:len(slots)]
        if slots:  # contiguous slots (the usual case) are one copy
            first = slots[0]
            if slots == list(range(first, first + len(slots))):
                views.copy_(self.ring[first:first + len(slots)])
            else:
                torch.index_select(self.ring, 0, torch.tensor(slots), out=views)
        return Decoded(good, views, images, failed)

    def batches(self, sample_batches, overlap: bool):
        """Decoded batches in order; with `overlap`, batch i+1 decodes while the caller works on batch i."""
        pending = None
        for samples in sample_batches:
            if not overlap:
                yield self.collect(self.submit(samples))
                continue
            following = self.submit(samples)
            if pending is not None:
                yield self.collect(pending)
            pending = following
        if pending is not None:
            yield self.collect(pending)

    def map(self, fn, items: list) -> list:
        """`fn` over `items` in the same workers (e.g. masks and PNG encoding), results in order."""
        if self.pool is None or not items:
            return list(map(fn, items))
        return self.pool.map(fn, items, max(1, math.ceil(len(items) / self.workers)))

    def close(self, abort: bool = False) -> None:
        """Done: the workers finish and exit; `abort` (an error, Ctrl-C): they are stopped now (`stop_pool`)."""
        if self.pool is not None:
            pool, self.pool = self.pool, None
            stop_pool(pool, abort)


def _use_ring(ring: torch.Tensor) -> None:
    global _RING
    _RING = ring
