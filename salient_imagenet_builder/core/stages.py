"""Small pipeline pieces every pass wires together: the number of decoding workers, worker pools that leave Ctrl-C
to the main process, a process pool that keeps order, a batcher, and a logger that times each stage."""

import logging
import multiprocessing
import os
import signal
import threading
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
    """Each decoding worker process: one thread (workers must not fight the model for cores)."""
    torch.set_num_threads(1)


def worker_pool(workers: int, initializer: Callable | None = None, initargs: tuple = ()):
    """`workers` forked processes that never see Ctrl-C: a terminal sends SIGINT to the whole process group, and the
    main process alone stops the run (`stop_pool`), so a worker prints no traceback and never dies half-way through
    a message. A worker is born with SIGINT blocked (see `sigint_deferred`) and ignores it before unblocking it;
    a Ctrl-C meanwhile reaches the main process once the pool is made."""
    pool = None
    try:
        with sigint_deferred():
            pool = multiprocessing.get_context("fork").Pool(workers, _start_worker, (initializer, initargs))
    except BaseException:
        if pool is not None:
            stop_pool(pool, abort=True)
        raise
    return pool


def _start_worker(initializer: Callable | None, initargs: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a SIGINT pending since the fork is discarded with this
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    init_worker()
    if initializer is not None:
        initializer(*initargs)


@contextmanager
def sigint_deferred():
    """SIGINT held back while processes are forked: blocked in this thread (children inherit the mask) and, in the
    main thread, recorded instead of raised; afterwards the caller's mask and handler are back and a recorded
    Ctrl-C is raised again (`signal.raise_signal`), so whatever handler the caller had sees it."""
    caught = []
    previous = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    if previous is not None:  # None: not the main thread, or a handler not set from Python (left alone)
        signal.signal(signal.SIGINT, lambda *_: caught.append(True))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)  # runs a handler still pending first: `caught` is complete
    if caught:
        signal.raise_signal(signal.SIGINT)


STOP_SECONDS = 5.0  # how long a stopped pool may take to wind down before its workers are killed


def stop_pool(pool, abort: bool = False) -> None:
    """Done: let the workers finish and join them. `abort` (an error or Ctrl-C): terminate them now. A terminated
    pool can wait forever on a worker killed half-way through a message, so the termination runs beside this thread
    for at most STOP_SECONDS; then the workers are killed and the pool's stuck threads (daemons) are left behind."""
    if not abort:
        pool.close()
        pool.join()
        return
    stopper = threading.Thread(target=pool.terminate, name="stop pool", daemon=True)
    stopper.start()
    stopper.join(STOP_SECONDS)
    if stopper.is_alive():
        log.debug("a worker pool did not stop within %s s: killing its workers", STOP_SECONDS)
        for process in list(pool._pool):
            if process.exitcode is None:
                process.kill()
            process.join(1)


@contextmanager
def ordered_map(fn: Callable, workers: int, chunksize: int = 8):
    """`imap(fn, iterable)` in `workers` forked processes (0 = in this process), results in input order.
    The input iterable is consumed by a feeder thread, so reading overlaps decoding and the model."""
    if workers <= 0:
        yield lambda iterable: map(fn, iterable)
        return
    pool = worker_pool(workers)
    try:
        yield lambda iterable: pool.imap(fn, iterable, chunksize)
    finally:
        stop_pool(pool, abort=True)  # every result was read, or none is wanted any more (an error, Ctrl-C)


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
