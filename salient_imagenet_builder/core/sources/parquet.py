"""Hugging Face parquet (or arrow) shards with an image struct column and a label column, local or on the Hub."""

from collections import Counter, defaultdict
from pathlib import PurePosixPath
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ..constants import NUM_CLASSES
from .base import Sample, Source, SourceError, Unnamed, image_id_from_name, is_class
from .labels import declared_names, label_mapping, normalize_label


class ParquetSource(Source):
    """Parquet (or `datasets` arrow) shards. `fs` is an fsspec filesystem (None = local).

    Reads what a job needs: each file's footer and label column once (kept: the plan, the counts and every unit use
    them), then per unit only the image column of one row group; a row group with no wanted row is never read.
    Refs are `file:group:row`."""

    kind = "parquet"

    def __init__(self, files: list[str], fs=None, where: str = "", image_column: str | None = None,
                 label_column: str | None = None):
        if not files:
            raise SourceError(f"{where}: no parquet/arrow files")
        self.files, self.fs, self.where = files, fs, where
        self._footers: dict[int, pq.FileMetaData] = {}
        self._labels: dict[int, list[list]] = {}  # file -> row group -> labels
        self.schema = schema = self._schema(0)
        self.image_column = image_column or _find_image_column(schema, files[0])
        self.label_column = label_column or next((c for c in ("label", "cls", "labels") if c in schema.names), None)
        if self.label_column is None:
            raise SourceError(f"{files[0]}: no label column (looked for label, cls); columns are {schema.names}")
        names = declared_names(schema, self.label_column)
        self.label_map = label_mapping(names, files[0]) if names else None  # a subset's own class names
        self.declares_names = names is not None

    def _is_arrow(self, file_index: int) -> bool:
        return self.files[file_index].endswith(".arrow")

    def _parquet(self, f, file_index: int) -> pq.ParquetFile:
        """The file's reader; its footer is read once per source and passed in afterwards."""
        parquet = pq.ParquetFile(f, metadata=self._footers.get(file_index))
        self._footers[file_index] = parquet.metadata
        return parquet

    def _schema(self, file_index: int) -> pa.Schema:
        if self._is_arrow(file_index):
            return self._arrow_table(file_index).schema
        with self.open(self.files[file_index]) as f:
            return self._parquet(f, file_index).schema_arrow

    def _arrow_table(self, file_index: int) -> pa.Table:
        """A `datasets` arrow file is read whole (it has no row groups to choose from)."""
        path = self.files[file_index]
        if self.fs is None:
            data = pa.memory_map(path)  # no copy; counted as read whole
            self.io.total += data.size()
        else:
            with self.open(path, sequential=True) as f:
                data = pa.py_buffer(f.read())
        try:
            return pa.ipc.open_stream(data).read_all()
        except pa.ArrowInvalid:
            return pa.ipc.open_file(data).read_all()

    def _group_columns(self, file_index: int, groups: list[int], columns: list[str]) -> Iterator[tuple[int, pa.Table]]:
        if self._is_arrow(file_index):
            yield 0, self._arrow_table(file_index).select(columns)
            return
        with self.open(self.files[file_index]) as f:
            parquet = self._parquet(f, file_index)
            for group in groups:
                yield group, parquet.read_row_group(group, columns=columns)

    def _num_groups(self, file_index: int) -> int:
        if self._is_arrow(file_index):
            return 1
        if file_index not in self._footers:
            self._schema(file_index)
        return self._footers[file_index].num_row_groups

    def labels(self, file_index: int) -> list[list]:
        """The label of every row, by row group: the label column alone, read once."""
        if file_index not in self._labels:
            groups = range(self._num_groups(file_index))
            where = f"{self.files[file_index]} (column {self.label_column!r})"
            self._labels[file_index] = [[normalize_label(v, self.label_map, where) for v in table.column(0).to_pylist()]
                                        for _, table in self._group_columns(file_index, list(groups),
                                                                            [self.label_column])]
            self._check_range(file_index, where)
        return self._labels[file_index]

    def _check_range(self, file_index: int, where: str) -> None:
        """Labels beyond 999 without class names are some other label set, not ImageNet's (-1 and null: no label,
        as in a test split, are skipped and counted)."""
        if self.declares_names:
            return
        beyond = [v for labels in self._labels[file_index] for v in labels if isinstance(v, int) and v >= NUM_CLASSES]
        if beyond:
            raise SourceError(f"{where}: holds labels up to {max(beyond)}, beyond ImageNet's 0-{NUM_CLASSES - 1}, and "
                              "the file declares no class names (a datasets ClassLabel) to map them by: cannot tell "
                              "which ImageNet class its images show")

    def _total(self):
        if any(self._is_arrow(i) for i in range(len(self.files))):
            return None
        for i in range(len(self.files)):  # footers only: one small read per file, even on the Hub
            self._num_groups(i)
        return sum(meta.num_rows for meta in self._footers.values())

    def _label_counts(self):
        counts: dict[int, int] = defaultdict(int)
        for file_index in range(len(self.files)):
            for labels in self.labels(file_index):
                for label in labels:
                    counts[label] += 1
        return counts

    def _iter(self, classes):
        for file_index in range(len(self.files)):
            for spec in self._file_units(file_index, classes, None, defaultdict(int)):
                yield from self.unit_samples(spec, classes, None)

    def plan_units(self, classes, limit_per_class, unit_size):
        """One unit per row group that holds a wanted row (per file for .arrow). A unit lists its rows when not
        all of them are wanted, and the labels outside 0-999 it passes over (counted without reading an image)."""
        seen: dict[int, int] = defaultdict(int)
        return [spec for file_index in range(len(self.files))
                for spec in self._file_units(file_index, classes, limit_per_class, seen)]

    def _file_units(self, file_index, classes, limit_per_class, seen) -> Iterator[dict]:
        for group, labels in enumerate(self.labels(file_index)):
            rows, unlabelled = [], Counter()
            for row, label in enumerate(labels):
                if not is_class(label):
                    unlabelled[str(label)] += 1
                elif (classes is None or label in classes) and (limit_per_class is None
                                                                 or seen[label] < limit_per_class):
                    seen[label] += 1
                    rows.append(row)
            if rows or unlabelled:
                yield {"file": file_index, "group": group, "rows": None if len(rows) == len(labels) else rows,
                       **({"unlabelled": dict(unlabelled)} if unlabelled else {})}

    def _unit_iter(self, spec, classes, limit_per_class):
        file_index, group, rows = spec["file"], spec["group"], spec["rows"]
        labels = self.labels(file_index)[group]
        if rows is not None and not rows:
            return
        for _, table in self._group_columns(file_index, [group], [self.image_column]):
            images = table.column(0)
            for row in range(len(labels)) if rows is None else rows:
                image = _as_struct(images[row].as_py())
                ref = f"{file_index}:{group}:{row}"
                data, error = self._image_bytes(file_index, image)
                yield Sample(self._image_id(file_index, group, row, image), labels[row], data, ref, error)

    def _image_id(self, file_index, group, row, image) -> str:
        name = (image or {}).get("path") or f"{PurePosixPath(self.files[file_index]).stem}_{group}_{row}"
        return image_id_from_name(name)

    def _image_bytes(self, file_index: int, image: dict | None) -> tuple[bytes | None, str | None]:
        """The image's bytes, or why there are none: a null cell, or (an `Image()` column of files, as
        `Dataset.to_parquet` writes it) the file its path names, absolute or relative to the parquet file."""
        if image is None or (image.get("bytes") is None and not image.get("path")):
            return None, "the row holds no image (null)"
        if image.get("bytes") is not None:
            return image["bytes"], None
        path = image["path"]
        if not PurePosixPath(path).is_absolute():
            path = str(PurePosixPath(self.files[file_index]).parent / path)
        try:
            with self.open(path, sequential=True) as f:
                return f.read(), None
        except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
            return None, f"the file its row names cannot be read: {path} ({type(e).__name__})"

    def read_many(self, refs):
        """Only the row groups that hold the refs, the image column alone."""
        wanted: dict[int, dict[int, list[tuple[int, str]]]] = defaultdict(lambda: defaultdict(list))
        for ref in refs:
            file_index, group, row = map(int, ref.split(":"))
            wanted[file_index][group].append((row, ref))
        for file_index in sorted(wanted):
            groups = wanted[file_index]
            for group, table in self._group_columns(file_index, sorted(groups), [self.image_column]):
                images = table.column(0)
                for row, ref in groups[group]:
                    data, error = self._image_bytes(file_index, _as_struct(images[row].as_py()))
                    if error is not None:
                        raise SourceError(f"{self.files[file_index]} (row group {group}, row {row}): {error}")
                    yield ref, data

    def read_blocks(self, refs):
        """One block per row group (per file for .arrow): reading an image reads its row group's image column."""
        blocks: dict[tuple[int, int], list[tuple[int, str]]] = defaultdict(list)
        for ref in refs:
            file_index, group, row = map(int, ref.split(":"))
            blocks[file_index, group].append((row, ref))
        return {f"{f}:{g}": [ref for _, ref in sorted(blocks[f, g])] for f, g in sorted(blocks)}

    def index_ids(self, ids):
        """image id -> ref for the ids found, from the image column's `path` field alone (no image bytes, no label:
        the footer gives the row counts). Rows that name no file are counted in `unnamed`."""
        found, rows, unnamed, first = {}, 0, 0, None
        for file_index in range(len(self.files)):
            for group, paths in self._paths(file_index):
                for row, path in enumerate(paths):
                    rows += 1
                    if not path:
                        unnamed, first = unnamed + 1, first or (file_index, group, row)
                    image_id = self._image_id(file_index, group, row, {"path": path})
                    if image_id in ids:
                        found.setdefault(image_id, f"{file_index}:{group}:{row}")
        self.unnamed = Unnamed(unnamed, rows, self._unnamed_how(first))
        return found

    def _has_paths(self) -> bool:
        kind = self.schema.field(self.image_column).type
        return pa.types.is_struct(kind) and kind.get_field_index("path") >= 0

    def _paths(self, file_index: int) -> Iterator[tuple[int, list]]:
        """The image column's `path` field, by row group (the whole column of an .arrow file, read anyway); a
        column with no `path` field (plain binary) gives None for every row, its row counts from the footer."""
        groups = list(range(self._num_groups(file_index)))
        if not self._has_paths():
            for group in groups:
                rows = self._arrow_table(file_index).num_rows if self._is_arrow(file_index) else \
                    self._footers[file_index].row_group(group).num_rows
                yield group, [None] * rows
            return
        column = self.image_column if self._is_arrow(file_index) else f"{self.image_column}.path"
        for group, table in self._group_columns(file_index, groups, [column]):
            yield group, table.column(0).combine_chunks().field("path").to_pylist() if table.num_rows else []

    def _unnamed_how(self, first: tuple[int, int, int] | None) -> str:
        if first is None:
            return ""
        if not self._has_paths():
            return f"column {self.image_column!r} holds the image bytes alone, no file name"
        file_index, group, row = first
        return (f"their `{self.image_column}.path` is empty, e.g. {self.files[file_index]} (row group {group}, "
                f"row {row})")

    def describe(self):
        return f"parquet shards {self.where} ({len(self.files)} files)"


def _as_struct(value) -> dict | None:
    """A cell of the image column as `{"bytes", "path"}`: a plain binary column holds the bytes alone."""
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value), "path": None}
    return value


def _find_image_column(schema: pa.Schema, path: str) -> str:
    for name in ("image", "jpg", "img"):
        if name in schema.names:
            return name
    for field in schema:
        if pa.types.is_struct(field.type) and {"bytes", "path"} <= {f.name for f in field.type}:
            return field.name
    raise SourceError(f"{path}: no image column (struct of bytes and path); columns are {schema.names}")
