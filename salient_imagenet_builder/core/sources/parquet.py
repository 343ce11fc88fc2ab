"""Hugging Face parquet (or arrow) shards with an image struct column and a label column, local or on the Hub."""

from collections import defaultdict
from pathlib import PurePosixPath
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .base import Sample, Source, SourceError, image_id_from_name, is_class


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
