"""Persisting rows: an Arrow spill file in reader order, then sorted, bounded parquet shards.

Everything is written inside a staging folder next to the output; the output appears only by a final rename,
so an interrupted build never leaves a shard that `load_dataset` would read.
"""

import json
import logging
import mmap
import os
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import Features

from .constants import CDC_OPTIONS, MAX_ROW_GROUP_BYTES, MAX_SHARD_BYTES, ROW_GROUP_ROWS

log = logging.getLogger(__name__)


def encode_rows(rows: list[dict], features: Features) -> pa.Table:
    """Python rows -> Arrow table of exactly the declared schema (features metadata included). Built on the
    storage types, then cast: pyarrow cannot build an extension type (`Array2D`, the raw maps) from Python lists."""
    encoded = [features.encode_example(row) for row in rows]
    schema = features.arrow_schema
    storage = pa.schema([field.with_type(storage_type(field.type)) for field in schema], metadata=schema.metadata)
    return pa.Table.from_pylist(encoded, schema=storage).cast(schema)


def storage_type(arrow_type: pa.DataType) -> pa.DataType:
    """The type with every extension type (datasets' `Array2D` ...) replaced by its storage type, at any depth."""
    if isinstance(arrow_type, pa.ExtensionType):
        return storage_type(arrow_type.storage_type)
    if pa.types.is_struct(arrow_type):
        return pa.struct([field.with_type(storage_type(field.type)) for field in arrow_type])
    if pa.types.is_list(arrow_type):
        return pa.list_(arrow_type.value_field.with_type(storage_type(arrow_type.value_type)))
    if pa.types.is_large_list(arrow_type):
        return pa.large_list(arrow_type.value_field.with_type(storage_type(arrow_type.value_type)))
    return arrow_type


class Spill:
    """Rows appended in any order to an uncompressed Arrow IPC file; `sorted_batches` reads them back sorted,
    memory-mapped, so sorting a large build needs disk, not memory."""

    def __init__(self, path: Path, features: Features):
        self.path, self.features = path, features
        self._writer = pa.ipc.new_file(str(path), features.arrow_schema)
        self.rows = 0

    def append(self, rows: list[dict]) -> None:
        if rows:
            self._writer.write_table(encode_rows(rows, self.features))
            self.rows += len(rows)

    def close(self) -> None:
        self._writer.close()

    def sorted_batches(self, keys: list[str], batch_rows: int = ROW_GROUP_ROWS):
        table = pa.ipc.open_file(pa.memory_map(str(self.path))).read_all()
        order = pc.sort_indices(table.select(keys), sort_keys=[(k, "ascending") for k in keys])
        for start in range(0, len(order), batch_rows):
            yield table.take(order[start:start + batch_rows])


class SpilledRows:
    """Several spill files (one per unit, in unit order) read back as one table, memory-mapped. `release()` drops
    the pages read so far from this process (they stay in the page cache), so peak RSS does not grow with the build.
    """

    def __init__(self, paths: list[Path]):
        self._maps, tables = [], []
        for path in paths:
            with open(path, "rb") as f:
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._maps.append(mapped)
            tables.append(pa.ipc.open_file(pa.py_buffer(mapped)).read_all())
        self.table = pa.concat_tables(tables) if tables else None

    def sorted_batches(self, keys: list[str], batch_rows: int = ROW_GROUP_ROWS, fill=None):
        """Batches in `keys` order; `fill(table, row_indices)` may complete each batch (e.g. pair ranks)."""
        order = pc.sort_indices(self.table.select(keys), sort_keys=[(k, "ascending") for k in keys]).to_numpy()
        order = order.astype(np.int64)  # uint64 + int is a float under NumPy 1.x: indices must stay integers
        for n, start in enumerate(range(0, len(order), batch_rows)):
            indices = order[start:start + batch_rows]
            batch = self.table.take(pa.array(indices))
            yield batch if fill is None else fill(batch, indices)
            if n % 20 == 19:
                self.release()

    def release(self) -> None:
        for mapped in self._maps:
            if hasattr(mapped, "madvise") and len(mapped):
                mapped.madvise(mmap.MADV_DONTNEED)


class ShardWriter:
    """Writes `<split>-NNNNN-of-MMMMM.parquet` shards of bounded size with small row groups, the page index, the
    `huggingface` features metadata, and uncompressed image bytes (they are already compressed).

    Data pages are cut by content (`cdc`: content-defined chunking, CDC_OPTIONS by default; False: by size), and with
    `group_column` no row group spans two values of that column: a rebuild that adds or drops a group (a class) then
    leaves the row groups, and so the pages, of every other group byte-identical, which the Hub deduplicates."""

    def __init__(self, folder: Path, split: str, features: Features, max_shard_bytes: int = MAX_SHARD_BYTES,
                 max_row_group_bytes: int = MAX_ROW_GROUP_BYTES, row_group_rows: int = ROW_GROUP_ROWS,
                 group_column: str | None = None, cdc: dict | bool = True, page_bytes: int | None = None):
        self.folder, self.split, self.features = Path(folder), split, features
        self.max_shard_bytes, self.max_row_group_bytes = max_shard_bytes, max_row_group_bytes
        self.row_group_rows, self.group_column = row_group_rows, group_column
        self.cdc = dict(CDC_OPTIONS if cdc is True else cdc or {}) or None
        self.page_bytes = page_bytes  # the data page size where pages are not cut by content (pyarrow's default)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.paths: list[Path] = []
        self._writer = None
        self._held = None  # the last group's rows, which the next table may continue
        self._shard_bytes = 0
        self.rows = 0
        self.bytes = 0

    def _open(self) -> None:
        path = self.folder / f".{self.split}-{len(self.paths):05d}.parquet.partial"
        schema = self.features.arrow_schema
        self._writer = pq.ParquetWriter(str(path), schema, compression=_compression(schema),
                                        write_page_index=True, use_dictionary=False,
                                        use_content_defined_chunking=self.cdc or False,
                                        data_page_size=self.page_bytes)
        if self.cdc:  # as `datasets` marks its CDC shards
            self._writer.add_key_value_metadata({"content_defined_chunking": json.dumps(self.cdc)})
        self.paths.append(path)
        self._shard_bytes = 0

    def write(self, table: pa.Table) -> None:
        """Append rows: row groups of at most `row_group_rows` rows and about `max_row_group_bytes`, each within one
        group of `group_column` (the last group's rows wait for the next table or `close`)."""
        if self.group_column is None:
            self._write_rows(table)
            return
        if self._held is not None:
            table = pa.concat_tables([self._held, table])
        if len(table) == 0:
            return
        starts = _run_starts(table.column(self.group_column))
        for start, stop in pairwise(starts[:-1]):
            self._write_rows(table.slice(start, stop - start))
        self._held = table.slice(starts[-2])

    def _write_rows(self, table: pa.Table) -> None:
        limit = min(self.max_row_group_bytes, self.max_shard_bytes)
        start = 0
        while start < len(table):
            stop = min(start + self.row_group_rows, len(table))
            while stop - start > 1 and table.slice(start, stop - start).nbytes > limit:
                stop = start + (stop - start) // 2
            chunk = table.slice(start, stop - start)
            if self._writer is None or self._shard_bytes + chunk.nbytes > self.max_shard_bytes:
                self._close_current()
                self._open()
            self._writer.write_table(chunk, row_group_size=len(chunk))
            self._shard_bytes += chunk.nbytes
            self.bytes += chunk.nbytes
            self.rows += len(chunk)
            start = stop

    def _close_current(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> list[Path]:
        """Close and give the shards their final names (the count is known only now)."""
        if self._held is not None:
            self._write_rows(self._held)
            self._held = None
        self._close_current()
        if not self.paths:
            raise ValueError(f"no rows to write for split {self.split!r}")
        final = []
        for i, path in enumerate(self.paths):
            target = self.folder / f"{self.split}-{i:05d}-of-{len(self.paths):05d}.parquet"
            os.replace(path, target)
            final.append(target)
        return final


def _run_starts(values: pa.ChunkedArray) -> list[int]:
    """Where each run of equal values starts, then the length: [0, ..., len]."""
    array = values.combine_chunks().to_numpy(zero_copy_only=False)
    changes = np.flatnonzero(array[1:] != array[:-1]) + 1
    return [0, *changes.tolist(), len(array)]


def _compression(schema: pa.Schema) -> dict[str, str]:
    """Per leaf column: none for image bytes, zstd for the rest."""
    codecs = {}
    for path, leaf_type in _leaves(schema):
        codecs[path] = "none" if pa.types.is_binary(leaf_type) or pa.types.is_large_binary(leaf_type) else "zstd"
    return codecs


def _leaves(fields, prefix=""):
    """(parquet column path, arrow type) of every leaf; lists are `<name>.list.element` in parquet."""
    for field in fields:
        name = f"{prefix}{field.name}"
        field = field.with_type(storage_type(field.type))  # an extension type is stored as its storage type
        if pa.types.is_struct(field.type):
            yield from _leaves(list(field.type), name + ".")
        elif pa.types.is_list(field.type) or pa.types.is_large_list(field.type):
            yield from _leaves([field.type.value_field.with_name("element")], name + ".list.")
        else:
            yield name, field.type
