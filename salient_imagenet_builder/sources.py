"""Readers of ImageNet shards. Each yields `Sample(image_id, label, data, ref)` in a fixed order, and reads the
samples behind a list of refs again (pass 2 of the build reads only the selected images).

Three layouts:
- `FolderSource`: `<root>/<split>/<wnid>/<file>` (torchvision layout);
- `ParquetSource`: Hugging Face parquet (or arrow) shards with an image struct column and a label column, local or
  on the Hub (read through `HfFileSystem`, the filesystem `datasets` streams with);
- `WebDatasetSource`: tar shards with `<key>.jpg` + `<key>.cls` (+ optional `<key>.json`).
Image ids are the original file name without its extension (`n01440764_10026`), whatever the layout; only the last
extension goes, so `x.JPEG` and `x.copy.JPEG` stay two ids (`x`, `x.copy`).
Samples whose label is no ImageNet class (-1 in the Hub's test split, 1000, null) are skipped and counted in
`Source.unlabelled`, never stored as another class.
"""

import functools
import json
import logging
import os
import re
import tarfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .constants import NUM_CLASSES
from .errors import InputError
from .schema import wordnet_ids

log = logging.getLogger(__name__)

SPLIT_ALIASES = {"val": "validation", "validation": "val"}
IMAGE_EXTENSIONS = ("jpg", "jpeg", "jpe", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm", "pgm", "pbm")


class SourceError(InputError):
    pass


@dataclass
class Sample:
    image_id: str
    label: int
    data: bytes
    ref: str


class Source:
    """Base reader. Subclasses implement `_iter(classes)`, `read_many(refs)` and optionally `count(classes)`."""

    kind = "?"
    unlabelled: Counter  # label -> samples skipped for a label outside 0-999 (reset by `samples` and per unit)
    not_images: set[str] = frozenset()  # files a folder source skipped as not images (Thumbs.db, notes.txt)

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

    # work units (build/units.py): specs fixed by the data, in reader order; `unit_samples` reads one back
    def plan_units(self, classes: set[int] | None, limit_per_class: int | None, unit_size: int) -> list[dict]:
        """Default: the whole source is one unit (resume granularity: the whole pass)."""
        return [{"all": True}]

    def unit_samples(self, spec: dict, classes: set[int] | None, limit_per_class: int | None) -> Iterator[Sample]:
        """One unit's samples; labels outside 0-999 are counted in `unlabelled` (reset per unit by the caller)."""
        if spec.get("all"):
            yield from self.samples(classes, limit_per_class)
            return
        for sample in self._unit_iter(spec, classes, limit_per_class):
            if is_class(sample.label):
                yield sample
            else:
                self.unlabelled[sample.label] += 1

    def _unit_iter(self, spec: dict, classes: set[int] | None, limit_per_class: int | None) -> Iterator[Sample]:
        raise NotImplementedError

    def locate(self, image_id: str) -> list[str]:
        """Where the images with this id live, when the layout can tell cheaply (error messages)."""
        return []


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


# --- ImageNet folder ---------------------------------------------------------------------------------------------

class FolderSource(Source):
    kind = "folder"

    def __init__(self, root: str | os.PathLike, split: str):
        root = Path(root)
        candidates = [root / split, root / SPLIT_ALIASES.get(split, split), root]
        wnids = set(wordnet_ids())
        self.dir = next((d for d in candidates if d.is_dir() and any(p.name in wnids for p in d.iterdir())), None)
        if self.dir is None:
            raise SourceError(f"{root}: no ImageNet class folders (<wnid>/) under {root / split} or {root}")
        self.class_dirs = {i: self.dir / w for i, w in enumerate(wordnet_ids()) if (self.dir / w).is_dir()}
        self.not_images: set[str] = set()
        others = sorted(p.name for p in self.dir.iterdir() if p.is_dir() and p.name not in wnids
                        and not p.name.startswith("."))
        if others:
            log.warning("%s: ignoring %d folder(s) that are not ImageNet class ids (wnids such as n01440764): %s%s",
                        self.dir, len(others), ", ".join(others[:10]), " ..." if len(others) > 10 else "")

    @functools.lru_cache(maxsize=None)
    def _files(self, label: int) -> list[str]:
        """The image files of a class folder, by extension: other files (Thumbs.db, notes.txt) are no corrupt
        images but no images at all (counted in `not_images`); hidden files, sub-folders and broken or looping
        symlinks are passed over."""
        names = []
        for entry in os.scandir(self.class_dirs[label]):
            if entry.name.startswith(".") or not _is_file(entry):
                continue
            if "." in entry.name and entry.name.rsplit(".", 1)[1].lower() in IMAGE_EXTENSIONS:
                names.append(entry.name)
            else:
                self.not_images.add(f"{self.class_dirs[label].name}/{entry.name}")
        return sorted(names)

    def _label_counts(self):
        return {label: len(self._files(label)) for label in self.class_dirs}

    def locate(self, image_id):
        return [str(self.class_dirs[label] / name) for label in sorted(self.class_dirs)
                for name in self._files(label) if image_id_from_name(name) == image_id]

    def _iter(self, classes):
        for label in sorted(self.class_dirs):
            if classes is not None and label not in classes:
                continue
            for name in self._files(label):
                ref = f"{self.class_dirs[label].name}/{name}"
                yield Sample(image_id_from_name(name), label, (self.dir / ref).read_bytes(), ref)

    def read_many(self, refs):
        for ref in refs:
            yield ref, (self.dir / ref).read_bytes()

    def plan_units(self, classes, limit_per_class, unit_size):
        units = []
        for label in sorted(self.class_dirs):
            if classes is None or label in classes:
                n = min(len(self._files(label)), limit_per_class or len(self._files(label)))
                units += [{"label": label, "start": s, "stop": min(s + unit_size, n)} for s in range(0, n, unit_size)]
        return units

    def _unit_iter(self, spec, classes, limit_per_class):
        label = spec["label"]
        for name in self._files(label)[spec["start"]:spec["stop"]]:
            ref = f"{self.class_dirs[label].name}/{name}"
            yield Sample(image_id_from_name(name), label, (self.dir / ref).read_bytes(), ref)

    def describe(self):
        return f"ImageNet folder {self.dir}"


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:  # a symlink loop (ELOOP) or a link that vanished
        return False


# --- Parquet / Arrow shards --------------------------------------------------------------------------------------

class ParquetSource(Source):
    """Parquet (or `datasets` arrow) shards. `fs` is an fsspec filesystem (None = local)."""

    kind = "parquet"

    def __init__(self, files: list[str], fs=None, where: str = "", image_column: str | None = None,
                 label_column: str | None = None):
        if not files:
            raise SourceError(f"{where}: no parquet/arrow files")
        self.files, self.fs, self.where = files, fs, where
        schema = self._schema(files[0])
        self.image_column = image_column or _find_image_column(schema, files[0])
        self.label_column = label_column or next((c for c in ("label", "cls", "labels") if c in schema.names), None)
        if self.label_column is None:
            raise SourceError(f"{files[0]}: no label column (looked for label, cls); columns are {schema.names}")

    def _open(self, path):
        return self.fs.open(path, "rb") if self.fs is not None else open(path, "rb")

    def _schema(self, path) -> pa.Schema:
        if path.endswith(".arrow"):
            return self._arrow_table(path).schema
        with self._open(path) as f:
            return pq.ParquetFile(f).schema_arrow

    def _arrow_table(self, path) -> pa.Table:
        if self.fs is not None:
            with self._open(path) as f:
                data = pa.py_buffer(f.read())
        else:
            data = pa.memory_map(path)
        try:
            return pa.ipc.open_stream(data).read_all()
        except pa.ArrowInvalid:
            return pa.ipc.open_file(data).read_all()

    def _row_groups(self, path, columns, only: int | None = None) -> Iterator[tuple[int, pa.Table]]:
        if path.endswith(".arrow"):
            yield 0, self._arrow_table(path).select(columns)
            return
        with self._open(path) as f:
            parquet = pq.ParquetFile(f)
            for i in range(parquet.num_row_groups) if only is None else [only]:
                yield i, parquet.read_row_group(i, columns=columns)

    def _total(self):
        if any(path.endswith(".arrow") for path in self.files):
            return None
        total = 0
        for path in self.files:  # footers only: one small read per file, even on the Hub
            with self._open(path) as f:
                total += pq.ParquetFile(f).metadata.num_rows
        return total

    def _label_counts(self):
        counts: dict[int, int] = defaultdict(int)
        for path in self.files:
            for _, table in self._row_groups(path, [self.label_column]):
                for label in table.column(0).to_pylist():
                    counts[label] += 1
        return counts

    def _iter(self, classes):
        for file_index, path in enumerate(self.files):
            for group, table in self._row_groups(path, [self.label_column, self.image_column]):
                yield from self._table_samples(file_index, path, group, table, classes, None)

    def _table_samples(self, file_index, path, group, table, classes, rows):
        labels = table.column(self.label_column).to_pylist()
        images = table.column(self.image_column)
        for row in range(len(labels)) if rows is None else rows:
            label = labels[row]
            if classes is not None and label not in classes and is_class(label):
                continue  # a label outside 0-999 goes on, to be counted as skipped by the caller's filter
            image = images[row].as_py()
            name = image.get("path") or f"{PurePosixPath(path).stem}_{group}_{row}"
            yield Sample(image_id_from_name(name), label, image["bytes"], f"{file_index}:{group}:{row}")

    def plan_units(self, classes, limit_per_class, unit_size):
        """One unit per row group (per file for .arrow); with a per-class limit, each unit lists its rows."""
        units, seen = [], defaultdict(int)
        for file_index, path in enumerate(self.files):
            for group, table in self._row_groups(path, [self.label_column]):
                if limit_per_class is None:
                    units.append({"file": file_index, "group": group, "rows": None})
                    continue
                rows = []
                for row, label in enumerate(table.column(0).to_pylist()):
                    if (classes is None or label in classes) and seen[label] < limit_per_class:
                        seen[label] += 1
                        rows.append(row)
                if rows:
                    units.append({"file": file_index, "group": group, "rows": rows})
        return units

    def _unit_iter(self, spec, classes, limit_per_class):
        path = self.files[spec["file"]]
        for group, table in self._row_groups(path, [self.label_column, self.image_column], only=spec["group"]):
            yield from self._table_samples(spec["file"], path, group, table, classes, spec["rows"])

    def read_many(self, refs):
        wanted: dict[tuple[int, int], list[tuple[int, str]]] = defaultdict(list)
        for ref in refs:
            file_index, group, row = map(int, ref.split(":"))
            wanted[(file_index, group)].append((row, ref))
        for file_index in sorted({f for f, _ in wanted}):
            for group, table in self._row_groups(self.files[file_index], [self.image_column]):
                for row, ref in wanted.get((file_index, group), ()):
                    yield ref, table.column(0)[row].as_py()["bytes"]

    def describe(self):
        return f"parquet shards {self.where} ({len(self.files)} files)"


def _find_image_column(schema: pa.Schema, path: str) -> str:
    for name in ("image", "jpg", "img"):
        if name in schema.names:
            return name
    for field in schema:
        if pa.types.is_struct(field.type) and {"bytes", "path"} <= {f.name for f in field.type}:
            return field.name
    raise SourceError(f"{path}: no image column (struct of bytes and path); columns are {schema.names}")


# --- WebDataset tar shards ---------------------------------------------------------------------------------------

class WebDatasetSource(Source):
    kind = "webdataset"

    def __init__(self, files: list[str], fs=None, where: str = "", info: dict | None = None, split: str = ""):
        if not files:
            raise SourceError(f"{where}: no tar files")
        self.files, self.fs, self.where, self.info, self.split = files, fs, where, info, split

    def _open(self, path):
        return self.fs.open(path, "rb") if self.fs is not None else open(path, "rb")

    def _label_counts(self):
        return None  # labels live inside the tars; _info.json gives only the total (see count)

    def count(self, classes=None, limit_per_class=None):
        if classes is not None or limit_per_class is not None or not self.info:
            return None
        for split in self.info.get("splits", []):
            if split.get("name") in (self.split, SPLIT_ALIASES.get(self.split)):
                return split.get("num_samples")
        return None

    def _iter(self, classes):
        for file_index, path in enumerate(self.files):
            with self._open(path) as f, tarfile.open(fileobj=f, mode="r|") as tar:
                yield from self._samples(tar, file_index, path)

    def _samples(self, tar, file_index, path):
        key, parts = None, {}
        for member in tar:
            if not member.isfile():
                continue
            name = member.name
            base = PurePosixPath(name)
            member_key = str(base.parent / base.name.split(".")[0])
            ext = base.name.split(".", 1)[1].lower() if "." in base.name else ""
            if member_key != key:
                if key is not None:
                    yield self._sample(key, parts, path)
                key, parts = member_key, {}
            if ext in IMAGE_EXTENSIONS:
                parts["image"] = (tar.extractfile(member).read(), f"{file_index}:{member.offset_data}:{member.size}")
            elif ext in ("cls", "json"):
                parts[ext] = tar.extractfile(member).read()
        if key is not None:
            yield self._sample(key, parts, path)

    @staticmethod
    def _sample(key, parts, path) -> Sample:
        if "image" not in parts:
            raise SourceError(f"{path}: sample {key!r} has no image member ({'/'.join(IMAGE_EXTENSIONS)})")
        meta = json.loads(parts["json"]) if "json" in parts else {}
        if "cls" in parts:
            text = parts["cls"].decode(errors="replace").strip()
        elif "label" in meta:
            text = str(meta["label"])
        else:
            raise SourceError(f"{path}: sample {key!r} has neither a .cls member nor a json label")
        try:
            label = int(text)
        except ValueError:
            raise SourceError(f"{path}: sample {key!r} has the label {text[:40]!r}, "
                              "not an integer class index") from None
        image_id = image_id_from_name(meta.get("filename") or key)
        data, ref = parts["image"]
        return Sample(image_id, label, data, ref)

    def plan_units(self, classes, limit_per_class, unit_size):
        if limit_per_class is not None:  # labels live inside the tars: a per-class limit needs one ordered pass
            return [{"all": True}]
        return [{"file": i} for i in range(len(self.files))]

    def _unit_iter(self, spec, classes, limit_per_class):
        if spec.get("all"):
            yield from self.samples(classes, limit_per_class)
            return
        path = self.files[spec["file"]]
        with self._open(path) as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for sample in self._samples(tar, spec["file"], path):
                if classes is None or sample.label in classes:
                    yield sample

    def read_many(self, refs):
        by_file: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
        for ref in refs:
            file_index, offset, size = map(int, ref.split(":"))
            by_file[file_index].append((offset, size, ref))
        for file_index in sorted(by_file):
            with self._open(self.files[file_index]) as f:
                for offset, size, ref in sorted(by_file[file_index]):
                    f.seek(offset)
                    yield ref, f.read(size)

    def describe(self):
        return f"WebDataset shards {self.where} ({len(self.files)} tar files)"


# --- choosing a reader -------------------------------------------------------------------------------------------

def open_source(source: str, split: str = "train", kind: str | None = None) -> Source:
    """`source` is a local path (folder / parquet / arrow / tar shards, auto-detected) or a Hub dataset id."""
    from .targets import resolve

    where = resolve(source, "--source")  # "no such folder" first; the Hub only for what could be a Hub id
    if isinstance(where, Path):
        return _open_local(where, split, kind)
    return _open_hub(source, split, kind)


def _open_local(path: Path, split: str, kind: str | None) -> Source:
    root = path.parent if path.is_file() else path
    files = [str(path)] if path.is_file() else [str(p) for p in sorted(path.rglob("*")) if p.is_file()]
    by_ext = _group_by_extension(files)
    kind = kind or _detect(path, by_ext)
    if kind == "folder":
        return FolderSource(path, split)
    # one file named on the command line is read whatever its name says; in a folder, the split picks the files
    chosen = files if path.is_file() else _split_files(by_ext, kind, split, path, relative_to=root)
    if kind == "parquet":
        return ParquetSource(chosen, where=str(path))
    info_file = root / "_info.json"
    info = json.loads(info_file.read_text()) if info_file.is_file() else None
    return WebDatasetSource(chosen, where=str(path), info=info, split=split)


def _open_hub(repo_id: str, split: str, kind: str | None) -> Source:
    from huggingface_hub import HfFileSystem

    fs = HfFileSystem()
    base = f"datasets/{repo_id}"
    try:
        files = [f for f in fs.find(base) if not f.rsplit("/", 1)[-1].startswith(".")]
    except Exception as e:
        raise SourceError(f"--source {repo_id}: cannot list the Hub dataset ({type(e).__name__}: {e}); "
                          "is it gated (accept its terms, then `hf auth login`)?") from None
    by_ext = _group_by_extension(files)
    kind = kind or _detect(None, by_ext)
    if kind == "folder":
        raise SourceError(f"--source {repo_id}: a Hub dataset must hold parquet/arrow or tar shards")
    chosen = _split_files(by_ext, kind, split, repo_id, relative_to=base)
    if kind == "parquet":
        return ParquetSource(chosen, fs=fs, where=repo_id)
    info = json.loads(fs.read_text(f"{base}/_info.json")) if fs.exists(f"{base}/_info.json") else None
    return WebDatasetSource(chosen, fs=fs, where=repo_id, info=info, split=split)


def _group_by_extension(files: list[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for f in files:
        name = f.rsplit("/", 1)[-1].lower()
        if name.endswith((".parquet", ".arrow")):
            groups["parquet"].append(f)
        elif name.endswith(".tar"):
            groups["webdataset"].append(f)
    return groups


def _detect(path: Path | None, by_ext: dict[str, list[str]]) -> str:
    found = [k for k in ("parquet", "webdataset") if by_ext.get(k)]
    if path is not None and path.is_dir() and not found:
        return "folder"
    if len(found) != 1:
        where = path or "the Hub dataset"
        raise SourceError(f"{where}: cannot tell the layout (found {found or 'no shards'}); pass --source-type")
    return found[0]


def _split_files(by_ext, kind, split, where, relative_to) -> list[str]:
    files = by_ext.get(kind, [])
    relative = {str(PurePosixPath(f).relative_to(PurePosixPath(str(relative_to)))): f for f in files} \
        if files else {}
    chosen = _files_for_split(list(relative), split, kind, str(where))
    return [relative[f] for f in chosen]


def ref_location(source: Source, ref: str) -> str:
    """Where the sample behind `ref` lives, in words a user can find it by (error messages)."""
    if isinstance(source, FolderSource):
        return str(source.dir / ref)
    if isinstance(source, ParquetSource):
        file_index, group, row = map(int, ref.split(":"))
        return f"{source.files[file_index]} (row group {group}, row {row})"
    if isinstance(source, WebDatasetSource):
        file_index, offset, _ = map(int, ref.split(":"))
        return f"{source.files[file_index]} (member at byte {offset})"
    return ref
