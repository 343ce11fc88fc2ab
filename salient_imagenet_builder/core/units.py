"""Work units: resumable, distributable passes over a source, whose results do not depend on who computed them.

A *plan* is the ordered list of `Unit`s the source is cut into (a block of N folder images of one class, a parquet
row group, a tar shard: `Source.plan_units`), fixed by the data and never by the number of processes. A pass runs
a *unit worker* over every unit not yet done and persists each unit's *result* in the work folder:

    <staging>/work/fingerprint.json          settings, model, annotations and source of the build
    <staging>/work/<pass>/00042/             the unit's result files (written in .00042.partial/, then renamed)
    <staging>/work/<pass>/00042.done.json    the done marker, written last (counts, timings, the fingerprint hash)

Resume = glob the markers (img2dataset's stats files); a unit without a marker is computed again. The reduce reads
results back in unit order (`load_results`), so a dataset does not depend on how many ranks ran or where a run
stopped (streaming's elastic determinism; datasets' "compute in any order, publish in a fixed order").

The seam (for `build` and any other pass over the source, e.g. `discover`):

    def make_worker():                       # builds the stages once per process (model, decoders...)
        return lambda unit: MyResult(...)    # decode -> model -> a result for this unit
    run_units(plan, UnitFolder(work, "mypass"), make_worker, world, log_name="my pass")
    for unit, result in load_results(plan, folder, MyResult): total.merge(result)

A worker may have `close(abort: bool)`: called once its units are done (abort=False), or at once when one fails or
Ctrl-C stops the pass (abort=True), so its processes never outlive the pass.

A result class has `save(folder: Path)` (writes its files into an empty folder), `load(folder) -> result`
(classmethod) and `summary() -> dict` (JSON-able, kept in the marker). `merge` is the caller's business: the
runner only guarantees unit order. Ranks take units round-robin (`World.my_share`); under torchrun every rank
calls `run_units` with the same plan and a shared work folder, and a barrier ends the pass.
"""

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

from tqdm.auto import tqdm

from . import distributed
from .errors import InputError
from .output import write_text_atomic

log = logging.getLogger(__name__)

FINGERPRINT = "fingerprint.json"


@dataclass(frozen=True)
class Unit:
    index: int
    spec: dict  # JSON-able: what the source reads for this unit (see Source.plan_units)


class UnitResult(Protocol):
    def save(self, folder: Path) -> None: ...

    @classmethod
    def load(cls, folder: Path) -> "UnitResult": ...

    def summary(self) -> dict: ...


class WorkMismatch(InputError):
    pass


def fingerprint_hash(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()[:16]


def open_work(work: Path, fingerprint: dict, restart: bool) -> None:
    """Keep a work folder left by the same build, or refuse one left by a different build (unless `restart`).
    Called by rank 0 only, before any pass."""
    path = work / FINGERPRINT
    fingerprint = json.loads(json.dumps(fingerprint, default=str))  # as it reads back from the file
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != fingerprint and not restart:
            differ = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
            raise WorkMismatch(f"{work} holds a partial build with different {', '.join(differ)}; rerun the same "
                               "command to resume it, or pass --restart to discard it and start afresh")
        if restart:
            log.info("discarding the partial build in %s (--restart)", work)
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        write_text_atomic(path, json.dumps(fingerprint, indent=2, sort_keys=True, default=str))


class UnitFolder:
    """One pass's unit results and done markers inside the work folder."""

    def __init__(self, work: Path, name: str):
        self.path = Path(work) / name
        self.fingerprint = fingerprint_hash(json.loads((Path(work) / FINGERPRINT).read_text(encoding="utf-8")))

    def result_dir(self, index: int) -> Path:
        return self.path / f"{index:05d}"

    def marker(self, index: int) -> Path:
        return self.path / f"{index:05d}.done.json"

    def done(self) -> set[int]:
        if not self.path.is_dir():
            return set()
        return {int(p.name.split(".")[0]) for p in self.path.glob("*.done.json")}

    def read_marker(self, index: int) -> dict:
        return json.loads(self.marker(index).read_text(encoding="utf-8"))

    def commit(self, unit: Unit, result: UnitResult, seconds: float) -> None:
        """Result files first (in a temporary folder, renamed), the marker last: a marker means a whole result."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f".{unit.index:05d}.partial"
        final = self.result_dir(unit.index)
        for stale in (tmp, final):  # left by a run killed between the rename and the marker
            if stale.exists():
                shutil.rmtree(stale)
        tmp.mkdir()
        result.save(tmp)
        os.replace(tmp, final)
        marker = {"unit": unit.index, "spec": unit.spec, "fingerprint": self.fingerprint,
                  "seconds": round(seconds, 3), **result.summary()}
        write_text_atomic(self.marker(unit.index), json.dumps(marker, default=str))


def run_units(plan: list[Unit], folder: UnitFolder, make_worker: Callable[[], Callable[[Unit], UnitResult]],
              world: distributed.World, log_name: str = "pass", desc: str | None = None) -> dict:
    """Run this rank's share of the units not yet done; every rank returns after all ranks are done. Rank 0 shows
    a progress bar over its share (`desc`), starting at the units a resumed run already has."""
    done = folder.done()
    if done and world.is_main:
        log.info("%s: resuming from %d of %d units already done (%s)", log_name, len(done), len(plan), folder.path)
    mine = world.my_share(plan)
    todo = [unit for unit in mine if unit.index not in done]
    with tqdm(total=len(mine), initial=len(mine) - len(todo), unit="unit", desc=desc or log_name,
              disable=not world.is_main, dynamic_ncols=True) as bar:  # closed before any error line is printed
        if todo:
            worker = make_worker()
            try:
                for unit in todo:
                    start = time.perf_counter()
                    result = worker(unit)
                    folder.commit(unit, result, time.perf_counter() - start)
                    bar.update()
            except BaseException:  # an error or Ctrl-C: the worker's processes are stopped now, not at exit
                _close(worker, abort=True)
                raise
            _close(worker, abort=False)
    distributed.barrier()
    missing = [u.index for u in plan if not folder.marker(u.index).is_file()]
    if missing:
        raise RuntimeError(f"{log_name}: units {missing[:10]} have no result after every rank finished")
    return {"units": len(plan), "resumed": len(done), "computed_here": len(todo)}


def _close(worker, abort: bool) -> None:
    """A worker's optional `close(abort)`: it owns processes (decoding workers) to finish, or to stop at once."""
    close = getattr(worker, "close", None)
    if close is not None:
        close(abort=abort)


def load_results(plan: list[Unit], folder: UnitFolder, result_class) -> Iterator[tuple[Unit, UnitResult]]:
    """Results in unit order (one in memory at a time), whoever computed them."""
    for unit in plan:
        yield unit, result_class.load(folder.result_dir(unit.index))
