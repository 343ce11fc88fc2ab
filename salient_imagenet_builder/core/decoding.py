"""Decoding batches in worker processes, handed over through shared memory (no pickled pixels).

Forked workers write each decoded 224 view straight into a slot of a shared uint8 ring (two halves of a batch
each: one being consumed by the model, one being filled) and send back only a small tuple. On CUDA the next batch
decodes while the GPU runs the current one (`overlap`), the batch is copied into pinned host memory and moved with
`non_blocking=True`. On CPU the model already uses every core, so decoding overlapped with it only preempts the
model's OpenMP threads (each parallel region waits for its slowest thread); there the next batch starts decoding
once a forward pass is over, beside the caller's serial work on its outputs (`batches_with_next`), and whatever
is left of it is decoded by all workers at once before the next forward pass.

With a `decode_device` (`--decode gpu`), the main process decodes each batch itself with
`torchvision.io.decode_jpeg` on that device (nvjpeg on CUDA, batched; libjpeg-turbo on a CPU, which is how the
path is tested without a GPU) and makes the view there (`images.center_view_tensor`); files the device decoder
should not or cannot take go to the CPU path one by one (`images.device_decode_refusal`) and are counted in
`fallbacks`. The workers then only encode image columns and masks.
"""

import math
import warnings
import zlib
from collections import Counter

import numpy as np
import torch
from PIL import Image

from .constants import CROP_SIZE
from .images import CorruptImage, center_view, center_view_tensor, decode_sized, device_decode_refusal, to_uint8_tensor
from .png import FILTER_UP, encode_png
from .stages import stop_pool, worker_pool

_RING: torch.Tensor | None = None  # the shared ring, inherited by forked workers


class DecodeJob:
    """bytes -> the 224 view written into ring slot `slot`; returns (slot, error, image column or None, the image's
    (width, height) as displayed or None)."""

    def __init__(self, draft: bool, image_mode: str | None):
        self.draft, self.image_mode = draft, image_mode  # image_mode None: no image column wanted

    def __call__(self, job):
        slot, data = job
        if data is None:  # the sample says why (`Sample.error`)
            return slot, "no image bytes", None, None
        try:
            image, size = decode_sized(data, self.draft)
            view = center_view(image)
        except CorruptImage as e:
            return slot, str(e), None, None
        _RING[slot].copy_(to_uint8_tensor(view))
        return slot, None, image_column(view, data, self.image_mode), size


def image_column(view: Image.Image, data: bytes, image_mode: str | None) -> dict | None:
    """The `image` column of a row, as a build stores it: `crop` the 224 view as PNG, `original` the source's bytes,
    otherwise none (`attach` makes the same column from the user's copy)."""
    if image_mode == "crop":
        return {"bytes": view_png(view), "path": None}
    if image_mode == "original":
        return {"bytes": data, "path": None}
    return None


def view_png(view: Image.Image | np.ndarray) -> bytes:
    """The `crop` image column: the view (PIL, or HWC uint8) as PNG, Up-filtered (`core.png`: decoded without
    Pillow in about 60 % of the time, for ~10 % more bytes than Pillow's adaptive filters)."""
    return encode_png(np.asarray(view, dtype=np.uint8), FILTER_UP, level=6, strategy=zlib.Z_FILTERED)


def encode_slot_png(slot: int) -> bytes:
    """A view already in ring slot `slot` (a device-decoded one) -> its `view_png`."""
    return view_png(_RING[slot].permute(1, 2, 0).numpy())


def decode_jpegs(datas: list[bytes], device: torch.device) -> list[torch.Tensor | None]:
    """`torchvision.io.decode_jpeg` over a batch (one call: nvjpeg's batched decoder on CUDA); if the batch call
    fails, each file alone, None for the ones that fail then."""
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in datas]
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders in favour of torchcodec
        warnings.simplefilter("ignore")
        try:
            return list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)) if tensors else []
        except RuntimeError:
            return [_decode_one(decode_jpeg, tensor, device) for tensor in tensors]


def _decode_one(decode_jpeg, tensor: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    from torchvision.io import ImageReadMode

    try:
        return decode_jpeg(tensor, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        return None


class Decoded:
    """One decoded batch: the samples that decoded (`good`), their uint8 views, image columns and sizes as
    displayed ((width, height); None where not decoded, e.g. a row made without reading its image), and the
    failures."""

    def __init__(self, good, views, images, failed, sizes=None):
        self.good, self.views, self.images, self.failed = good, views, images, failed
        self.sizes = sizes if sizes is not None else [None] * len(good)


class BatchDecoder:
    def __init__(self, workers: int, batch_size: int, draft: bool, image_mode: str | None = None,
                 pin_memory: bool = False, decode_device: torch.device | None = None):
        self.batch_size, self.workers, self.image_mode = batch_size, workers, image_mode
        self.decode_device = decode_device
        self.fallbacks = Counter()  # `--decode gpu`: why files went to the CPU path -> how many
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
        if self.decode_device is not None:
            return samples, self._decode_on_device(samples, base)
        jobs = [(base + i, s.data) for i, s in enumerate(samples)]
        if self.pool is None:
            return samples, list(map(self.job, jobs))
        chunk = max(1, math.ceil(len(jobs) / self.workers))
        return samples, self.pool.map_async(self.job, jobs, chunk)

    def collect(self, pending) -> Decoded:
        samples, results = pending
        if isinstance(results, Decoded):  # decoded on the device at submit
            return results
        results = results if isinstance(results, list) else results.get()
        good, slots, images, failed, sizes = [], [], [], [], []
        for sample, (slot, error, image, size) in zip(samples, results):
            if error is not None:
                failed.append((sample, sample.error or error))
            else:
                good.append(sample)
                slots.append(slot)
                images.append(image)
                sizes.append(size)
        views = self.pinned[:len(slots)]
        if slots:  # contiguous slots (the usual case) are one copy
            first = slots[0]
            if slots == list(range(first, first + len(slots))):
                views.copy_(self.ring[first:first + len(slots)])
            else:
                torch.index_select(self.ring, 0, torch.tensor(slots), out=views)
        return Decoded(good, views, images, failed, sizes)

    def _decode_on_device(self, samples: list, base: int) -> Decoded:
        """The batch's views on `decode_device`, in sample order; the fallbacks decoded at full size (no draft:
        the device decoder has none) with Pillow, here."""
        refusals = [device_decode_refusal(s.data) if s.data is not None else None for s in samples]
        eligible = [i for i, reason in enumerate(refusals) if reason is None and samples[i].data is not None]
        decoded = dict(zip(eligible, decode_jpegs([samples[i].data for i in eligible], self.decode_device)))
        good, views, failed, sizes = [], [], [], []
        for i, sample in enumerate(samples):
            if sample.data is None:  # the sample says why (`Sample.error`)
                failed.append((sample, sample.error or "no image bytes"))
                continue
            image = decoded.get(i)
            if image is not None:  # orientation 1 (others go to the fallback): the file's size is the upright one
                views.append(center_view_tensor(image))
                size = (image.shape[2], image.shape[1])
            else:
                self.fallbacks[refusals[i] or "decode_jpeg failed"] += 1
                try:
                    image, size = decode_sized(sample.data, draft=False)
                    views.append(to_uint8_tensor(center_view(image)).to(self.decode_device))
                except CorruptImage as e:
                    failed.append((sample, str(e)))
                    continue
            good.append(sample)
            sizes.append(size)
        views = torch.stack(views) if views else torch.empty((0, 3, CROP_SIZE, CROP_SIZE), dtype=torch.uint8)
        return Decoded(good, views, self._device_images(good, views, base), failed, sizes)

    def _device_images(self, good: list, views: torch.Tensor, base: int) -> list:
        """The image column of device-decoded views: `crop` PNGs encoded by the workers from the ring."""
        if self.image_mode == "crop":
            slots = list(range(base, base + len(good)))
            self.ring[base:base + len(good)].copy_(views)
            return [{"bytes": png, "path": None} for png in self.map(encode_slot_png, slots)]
        if self.image_mode == "original":
            return [{"bytes": s.data, "path": None} for s in good]
        return [None] * len(good)

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

    def batches_with_next(self, sample_batches):
        """(decoded batch, `start_next`) in order, for a caller whose own work on a batch is a parallel phase (a CPU
        forward pass, every core) then a serial one (selection, bookkeeping): it calls `start_next()` between the
        two, so batch i+1 decodes on the cores the serial phase leaves idle, never beside the forward pass. A batch
        whose caller did not call it starts when the next one is asked for."""
        upcoming = iter(sample_batches)
        pending = self._submit_next(upcoming)
        while pending is not None:
            started = []

            def start_next(started=started):  # this batch's list, not a later one's
                if not started:
                    started.append(self._submit_next(upcoming))

            yield self.collect(pending), start_next
            start_next()
            pending = started[0]

    def _submit_next(self, upcoming):
        samples = next(upcoming, None)
        return None if samples is None else self.submit(samples)

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
