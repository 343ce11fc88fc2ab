"""The reader interface every layout implements: `Sample`, `Source` (samples, counts, work units), image ids."""

import logging
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Iterable, Iterator

from ..constants import NUM_CLASSES
from ..errors import InputError
from .io import ReadCounter, open_file

log = logging.getLogger(__name__)

SPLIT_ALIASES = {"val": "validation", "validation": "val"}
IMAGE_EXTENSIONS = ("jpg", "jpeg", "jpe", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm", "pgm", "pbm")


class SourceError(InputError):
    pass


@dataclass
class Sample:
    image_id: str
    label: int
    data: bytes | None
    ref: str
    error: str | None = None  # why there are no bytes to decode (a missing file a row names): a counted skip


@dataclass(frozen=True)
class Unnamed:
    """Rows of a copy that name no file (a parquet image column without `path`), as `Source.index_ids` found them:
    their ids are made up from where they sit (`<file>_<group>_<row>`), so a join by file name cannot find them."""

    rows: int = 0
    of: int = 0  # the rows indexed
    how: str = ""  # what holds no name, in words, with the first such row's place


class Source:
    """Base reader. Subclasses implement `_iter(classes)`, `read_many(refs)` and optionally `count(classes)`."""

    kind = "?"
    fs = None  # an fsspec filesystem for remote files (None: local)
    unlabelled: Counter  # label -> samples skipped for a label outside 0-999 (reset by `samples` and per unit)
    not_images: set[str] = frozenset()  # files a folder source skipped as not images (Thumbs.db, notes.txt)
    unnamed = Unnamed()  # rows the last `index_ids` met that name no file (a folder's or a tar's files all have names)

    @property
    def io(self) -> ReadCounter:
        """Bytes read from the source's files by this process (`io.total`; `io.measure()` for a stretch of work)."""
        if "_io" not in self.__dict__:
            self._io = ReadCounter()
        return self._io

    def open(self, path: str, sequential: bool = False):
        """One of the source's files, counted; random access without read-ahead unless `sequential`."""
        return open_file(path, self.fs, self.io, sequential)

    def samples(self, classes: set[int] | None = None, limit_per_class: int | None = None) -> Iterator[Sample]:
        seen: dict[int, int] = defaultdict(int)
        self.unlabelled = Counter()
        for sample in self._iter(classes):
            if not is_class(sample.label):
                self.unlabelled[sample.label] += 1
                continue
            if classes is not None and sample.label not in classes:
                continue
            if limit_per_class is not None:
                if seen[sample.label] >= limit_per_class:
                    continue
                seen[sample.label] += 1
            yield sample

    def count(self, classes: set[int] | None = None, limit_per_class: int | None = None) -> int | None:
        total = self._total() if classes is None and limit_per_class is None else None
        if total is not None:
            return total
        counts = self._label_counts()
        if counts is None:
            return None
        keys = counts if classes is None else [c for c in counts if c in classes]
        return sum(min(counts[c], limit_per_class or counts[c]) for c in keys)

    def _label_counts(self) -> dict[int, int] | None:
        return None

    def _total(self) -> int | None:
        """All samples, when cheaper to know than the per-class counts."""
        return None

    def _iter(self, classes: set[int] | None) -> Iterator[Sample]:
        raise NotImplementedError

    def read_many(self, refs: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def size(self) -> int | None:
        """Bytes of the source's files (of the split), when the listing tells it without reading them."""
        files = getattr(self, "files", None)
        if files is None:
            return None
        if self.fs is None:
            return sum(os.path.getsize(f) for f in files)
        return sum(int(self.fs.size(f)) for f in files)

    # work units (core/units.py): specs fixed by the data, in reader order; `unit_samples` reads one back
    def plan_units(self, classes: set[int] | None, limit_per_class: int | None, unit_size: int) -> list[dict]:
        """Default: the whole source is one unit (resume granularity: the whole pass)."""
        return [{"all": True}]

    def unit_samples(self, spec: dict, classes: set[int] | None, limit_per_class: int | None) -> Iterator[Sample]:
        """One unit's samples; labels outside 0-999 are counted in `unlabelled` (reset per unit by the caller)."""
        if spec.get("all"):
            yield from self.samples(classes, limit_per_class)
            return
        if not hasattr(self, "unlabelled"):  # a caller that never reset it (discover) still gets a count
            self.unlabelled = Counter()
        for text, n in spec.get("unlabelled", {}).items():  # a plan that knew the labels counted them unread
            self.unlabelled[_label_value(text)] += n
        for sample in self._unit_iter(spec, classes, limit_per_class):
            if is_class(sample.label):
                yield sample
            else:
                self.unlabelled[sample.label] += 1

    def _unit_iter(self, spec: dict, classes: set[int] | None, limit_per_class: int | None) -> Iterator[Sample]:
        raise NotImplementedError

    def index_ids(self, ids: set[str]) -> dict[str, str]:
        """image id -> ref for the ids this source holds, found without reading image bytes (joins by id read
        only what they join). Default: a pass over the samples (readers override it)."""
        return {s.image_id: s.ref for s in self.samples() if s.image_id in ids}

    def read_blocks(self, refs: Iterable[str]) -> dict[str, list[str]] | None:
        """The refs by the block that reading any one of them reads whole (a parquet row group), in file order;
        None where each image is read alone (a file, a tar member by offset)."""
        return None

    def read_ids(self, refs: dict[str, str]) -> Iterator[tuple[str, bytes]]:
        """(image id, bytes) of `refs` (what `index_ids` found), in the source's file order: the join's read."""
        ids = {ref: image_id for image_id, ref in refs.items()}
        for ref, data in self.read_many(list(ids)):
            yield ids[ref], data

    def locate(self, image_id: str) -> list[str]:
        """Where the images with this id live, when the layout can tell cheaply (error messages)."""
        return []


def _label_value(text: str):
    """A skipped label as a plan keeps it (JSON keys are text) back to the value the source holds (-1, 1000, None)."""
    if text == "None":
        return None
    try:
        return int(text)
    except ValueError:
        return text


def is_class(label) -> bool:
    return isinstance(label, int) and not isinstance(label, bool) and 0 <= label < NUM_CLASSES


def image_id_from_name(name: str) -> str:
    """The file name without its last extension: unique wherever the file names are."""
    return PurePosixPath(name).stem


def _split_pattern(split: str) -> re.Pattern:
    names = {split, SPLIT_ALIASES.get(split, split)}
    return re.compile(r"(^|[/_.-])(" + "|".join(map(re.escape, sorted(names))) + r")([/_.-]|$)")


def _files_for_split(files: list[str], split: str, what: str, where: str) -> list[str]:
    pattern = _split_pattern(split)
    chosen = sorted(f for f in files if pattern.search(f))
    if not chosen:
        raise SourceError(f"{where}: no {what} file for split {split!r} among {len(files)} file(s), "
                          f"e.g. {sorted(files)[:3]}")
    return chosen
