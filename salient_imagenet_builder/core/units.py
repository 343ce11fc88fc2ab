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

import fcntl
import hashlib
import json
import logging
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

from tqdm.auto import tqdm

from . import distributed
from .errors import InputError
from .interrupts import stop_if_interrupted
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


# A fingerprint's keys in the user's words: the option that sets each (its values are shown) or what changed.
FINGERPRINT_WORDS = {
    "package_version": "the package version", "source": "--source", "split": "--split", "model": "--model",
    "arch": "--arch", "checkpoint_sha256": "the model's weights", "limit": "--limit", "draft": "--no-draft",
    "unit_size": "--unit-size", "numerics": "--tf32/--bf16/--compile", "classes": "--classes",
    "group_by": "--group-by", "maps": "--top-k", "top_k": "--top-k", "image_mode": "--image-mode",
    "annotations_sha256": "the --annotations file", "tracked_sha256": "the annotated pairs",
    "top_images": "--top-images", "context_images": "the context images",
    "dataset": "DATASET", "build_info_sha256": "DATASET's build", "imagenet": "--imagenet",
    "index_sha256": "the images found in --imagenet",
}
SHOWN = ("package_version", "source", "split", "model", "arch", "limit", "draft", "unit_size", "numerics", "classes",
         "group_by", "top_k", "image_mode", "top_images", "dataset", "imagenet")  # short values, shown as "was ..., now ..."
PLAN_INPUTS = ("source", "split", "classes", "limit", "unit_size")  # besides the files, what the plan depends on


def describe_differences(old: dict, new: dict) -> str:
    """What differs between two fingerprints, in the user's words: "--group-by was prediction, now label; the
    source's files changed"."""
    differ = [k for k in dict.fromkeys([*new, *old]) if old.get(k) != new.get(k)]
    said, phrases = set(), []
    for key in differ:
        if key == "plan_sha256":
            if not any(k in differ for k in PLAN_INPUTS):
                phrases.append("the source's files changed")
            continue
        words = FINGERPRINT_WORDS.get(key, key)
        if words in said or (key == "tracked_sha256" and "annotations_sha256" in differ):
            continue
        said.add(words)
        if key in SHOWN:
            phrases.append(f"{words} was {_short(old.get(key))}, now {_short(new.get(key))}")
        else:
            phrases.append(f"{words} changed")
    return "; ".join(phrases) or "its settings changed"


def _short(value) -> str:
    if value is None:
        return "not given"
    if isinstance(value, list) and len(value) > 6:
        return f"[{', '.join(map(str, value[:3]))}, ... {value[-1]}] ({len(value)})"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def open_work(work: Path, fingerprint: dict, restart: bool) -> None:
    """Keep a work folder left by the same build, or refuse one left by a different build (unless `restart`).
    Called by rank 0 only, before any pass."""
    path = work / FINGERPRINT
    fingerprint = json.loads(json.dumps(fingerprint, default=str))  # as it reads back from the file
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != fingerprint and not restart:
            raise WorkMismatch(f"{work.parent} holds the finished units of an interrupted run with other settings "
                               f"({describe_differences(old, fingerprint)}); rerun that command to resume it, or "
                               "pass --restart to discard its units and start afresh")
        if restart:
            log.info("discarding the partial build in %s (--restart)", work)
            for entry in work.iterdir():  # all but the lock this run holds
                if entry.name != LOCK:
                    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    work.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        write_text_atomic(path, json.dumps(fingerprint, indent=2, sort_keys=True, default=str))


LOCK = "lock"


class WorkLock:
    """One writer per work folder: a lock on `<work>/lock`, held until `release` or until the process ends (a killed
    run never leaves a stale lock). The file names its holder (pid and command) for the next one's message.

    A POSIX record lock (`fcntl.lockf`), not `flock`: an `flock` is shared with the forked decoding workers, so a
    killed build's orphaned workers would go on holding it; a record lock belongs to the process that took it."""

    def __init__(self, work: Path, what: str):
        work.mkdir(parents=True, exist_ok=True)
        self.file = open(work / LOCK, "a+", encoding="utf-8")  # noqa: SIM115 (held open: the lock lives with it)
        try:
            fcntl.lockf(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise InputError(f"{what}: another run is writing it ({holder}); wait for it to finish, or stop it "
                             "and rerun this command to resume from its finished units") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()}: {shlex.join(sys.argv) if sys.argv and sys.argv[0] else 'python'}")
        self.file.flush()

    def release(self) -> None:
        if not self.file.closed:
            fcntl.lockf(self.file, fcntl.LOCK_UN)
            self.file.close()


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
        """Units whose marker and result files are there: a marker whose result folder (or one of the files it
        lists) is missing is not trusted, and the unit is computed again."""
        if not self.path.is_dir():
            return set()
        done = set()
        for marker in self.path.glob("*.done.json"):
            index = int(marker.name.split(".")[0])
            if self._complete(index, marker):
                done.add(index)
        return done

    def _complete(self, index: int, marker: Path) -> bool:
        try:
            files = json.loads(marker.read_text(encoding="utf-8")).get("files", [])
        except (OSError, ValueError):
            return False  # a marker cut short
        result = self.result_dir(index)
        complete = result.is_dir() and all((result / name).is_file() for name in files)
        if not complete:
            log.warning("unit %d of %s: its result is missing; computing it again", index, self.path.name)
        return complete

    def read_marker(self, index: int) -> dict:
        return json.loads(self.marker(index).read_text(encoding="utf-8"))

    def discard(self, index: int) -> None:
        """A finished unit to compute again: its marker goes (the next `commit` replaces its result files)."""
        self.marker(index).unlink(missing_ok=True)

    def discard_changed(self, plan: list["Unit"]) -> list["Unit"]:
        """Discard the finished units whose spec is not the plan's any more (what they read changed); returns them."""
        done = self.done()
        changed = [unit for unit in plan if unit.index in done
                   and self.read_marker(unit.index).get("spec") != json.loads(json.dumps(unit.spec, default=str))]
        for unit in changed:
            self.discard(unit.index)
        return changed

    def commit(self, unit: Unit, result: UnitResult, seconds: float, ran_with: dict | None = None) -> None:
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
                  "files": sorted(p.name for p in final.iterdir() if p.is_file()),
                  "ran_with": ran_with or {}, "seconds": round(seconds, 3), **result.summary()}
        write_text_atomic(self.marker(unit.index), json.dumps(marker, default=str))


def run_units(plan: list[Unit], folder: UnitFolder, make_worker: Callable[[], Callable[[Unit], UnitResult]],
              world: distributed.World, log_name: str = "pass", desc: str | None = None,
              ran_with: dict | None = None) -> dict:
    """Run this rank's share of the units not yet done; every rank returns after all ranks are done. Rank 0 shows
    a progress bar over its share (`desc`), starting at the units a resumed run already has. `ran_with`: the speed
    settings of this run (options that may change on a resume, e.g. {"--batch-size": 64}), kept in each marker."""
    done = folder.done()
    if done and world.is_main:
        log.info("%s: resuming from %d of %d units already done (%s)%s", log_name, len(done), len(plan), folder.path,
                 _settings_change(folder, done, ran_with))
    mine = world.my_share(plan)
    todo = [unit for unit in mine if unit.index not in done]
    # every rank learns whether the others finished their share (a rank that failed stops them all)
    distributed.together(world, lambda: _run_share(todo, len(mine), folder, make_worker, world, desc or log_name,
                                                   ran_with))
    finished = folder.done()
    missing = [u.index for u in plan if u.index not in finished]
    if missing:
        raise RuntimeError(f"{log_name}: units {missing[:10]} have no result after every rank finished")
    return {"units": len(plan), "resumed": len(done), "computed_here": len(todo)}


def _run_share(todo: list[Unit], share: int, folder: UnitFolder, make_worker, world, desc: str,
               ran_with: dict | None) -> None:
    with tqdm(total=share, initial=share - len(todo), unit="unit", desc=desc, disable=not world.is_main,
              dynamic_ncols=True) as bar:  # closed before any error line is printed
        if not todo:
            return
        worker = make_worker()
        try:
            for unit in todo:
                start = time.perf_counter()
                result = worker(unit)
                stop_if_interrupted()  # a Ctrl-C some library swallowed during the unit: not committed
                folder.commit(unit, result, time.perf_counter() - start, ran_with)
                bar.update()
        except BaseException:  # an error or Ctrl-C: the worker's processes are stopped now, not at exit
            _close(worker, abort=True)
            raise
        _close(worker, abort=False)


def _close(worker, abort: bool) -> None:
    """A worker's optional `close(abort)`: it owns processes (decoding workers) to finish, or to stop at once."""
    close = getattr(worker, "close", None)
    if close is not None:
        close(abort=abort)


def _settings_change(folder: UnitFolder, done: set[int], ran_with: dict | None) -> str:
    """The resume line's tail when the speed settings changed: which the finished units ran with."""
    earlier = ran_with_counts(folder, done)
    if not ran_with or all(settings == ran_with for settings, _ in earlier):
        return ""
    before = "; ".join(f"{n} with {_options(settings)}" for settings, n in earlier)
    return f"; the finished units ran {before}, the rest run with {_options(ran_with)}"


def _options(settings: dict) -> str:
    return " ".join(f"{k} {v}" for k, v in settings.items()) or "unrecorded settings"


def ran_with_counts(folder: UnitFolder, indices) -> list[tuple[dict, int]]:
    """The speed settings the given finished units ran with, and how many units ran with each."""
    counts: dict[str, int] = {}
    for index in sorted(indices):
        try:
            settings = folder.read_marker(index).get("ran_with", {})
        except (OSError, ValueError):
            continue
        key = json.dumps(settings, sort_keys=False)
        counts[key] = counts.get(key, 0) + 1
    return [(json.loads(key), n) for key, n in counts.items()]


def load_results(plan: list[Unit], folder: UnitFolder, result_class) -> Iterator[tuple[Unit, UnitResult]]:
    """Results in unit order (one in memory at a time), whoever computed them."""
    for unit in plan:
        yield unit, result_class.load(folder.result_dir(unit.index))
