"""Small pipeline pieces every pass wires together: the number of decoding workers, a process pool that keeps
order, a batcher, and a logger that times each stage."""

import logging
import multiprocessing
import os
import signal
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import torch

log = logging.getLogger(__name__)


def default_workers(device: torch.device | None = None, world=None) -> int:
    """The one `--workers` rule: this process's share of the machine's cores (torchrun ranks on one machine share
    them), one fewer on a GPU, whose feeding needs the main process. On a CPU every core decodes, because decoding
    runs between forward passes, never beside them."""
    cores = max(1, (os.cpu_count() or 1) // (world.local_size if world is not None else 1))
    return cores if device is None or device.type == "cpu" else max(1, cores - 1)


def init_worker() -> None:
    """Each decoding worker process: one thread (workers must not fight the model for cores), and Ctrl-C left to
    the parent (one line, not one traceback per worker)."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def ordered_map(fn: Callable, workers: int, chunksize: int = 8):
    """`imap(fn, iterable)` in `workers` forked processes (0 = in this process), results in input order.
    The input iterable is consumed by a feeder thread, so reading overlaps decoding and the model."""
    if workers <= 0:
        yield lambda iterable: map(fn, iterable)
        return
    with multiprocessing.get_context("fork").Pool(workers, initializer=init_worker) as pool:
        yield lambda iterable: pool.imap(fn, iterable, chunksize)


def batched(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class StageTimer:
    """Wall time per stage; `report()` is logged at the end of a run and stored in the card."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start

    def report(self) -> dict[str, float]:
        return {k: round(v, 2) for k, v in self.seconds.items()}


def timed_iter(iterable: Iterable, timer: StageTimer, stage: str) -> Iterator:
    """Counts the time spent waiting on `iterable` (reading + decoding, seen from the consumer) as `stage`."""
    iterator = iter(iterable)
    while True:
        with timer(stage):
            try:
                item = next(iterator)
            except StopIteration:
                return
        yield item


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
