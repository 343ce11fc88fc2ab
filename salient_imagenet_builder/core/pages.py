"""The pages of a parquet file, read from their headers, and its page index (the OffsetIndex of each column chunk).

pyarrow reads neither for Python, so this reads the Thrift compact protocol they are written in (the parquet
format's `PageHeader`, `FileMetaData` and `OffsetIndex`), just the fields needed: where each page lies, its size,
and what the page index says about it. `check` compares the two; the tests compare the pages of two builds.
"""

import struct
from dataclasses import dataclass
from itertools import pairwise

__all__ = ["Page", "chunk_range", "offset_index", "page_index_problems"]

PAGE_TYPES = {0: "data", 1: "index", 2: "dictionary", 3: "data_v2"}


@dataclass(frozen=True)
class Page:
    offset: int  # of its header, in the file
    header_size: int
    size: int  # compressed size of the page body
    kind: str  # "data", "dictionary", "data_v2", "index"
    num_values: int

    @property
    def end(self) -> int:
        return self.offset + self.header_size + self.size


class _Reader:
    """Thrift compact protocol: structs come back as {field id: value}."""

    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def byte(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def value(self, kind: int):
        if kind in (1, 2):  # booleans inside a struct carry their value in the type
            return kind == 1
        if kind == 3:
            return struct.unpack("b", bytes([self.byte()]))[0]
        if kind in (4, 5, 6):
            return self.zigzag()
        if kind == 7:
            self.pos += 8
            return struct.unpack("<d", self.data[self.pos - 8:self.pos])[0]
        if kind == 8:
            size = self.varint()
            self.pos += size
            return self.data[self.pos - size:self.pos]
        if kind in (9, 10):
            return self.sequence()
        if kind == 11:
            return self.mapping()
        if kind == 12:
            return self.struct()
        raise ValueError(f"not a Thrift compact type: {kind}")

    def sequence(self) -> list:
        head = self.byte()
        size, kind = head >> 4, head & 0x0F
        if size == 15:
            size = self.varint()
        if kind in (1, 2):  # booleans in a list are one byte each
            return [self.byte() == 1 for _ in range(size)]
        return [self.value(kind) for _ in range(size)]

    def mapping(self) -> dict:
        size = self.varint()
        if not size:
            return {}
        kinds = self.byte()
        return {self.value(kinds >> 4): self.value(kinds & 0x0F) for _ in range(size)}

    def struct(self) -> dict:
        fields, last = {}, 0
        while True:
            head = self.byte()
            kind = head & 0x0F
            if kind == 0:
                return fields
            delta = head >> 4
            last = last + delta if delta else self.zigzag()
            fields[last] = self.value(kind)


def chunk_range(column) -> tuple[int, int]:
    """(offset, size) of a column chunk's pages in the file, from pyarrow's ColumnChunkMetaData."""
    first = column.data_page_offset
    if column.has_dictionary_page and column.dictionary_page_offset is not None:
        first = min(first, column.dictionary_page_offset)
    return first, column.total_compressed_size


def _footer(f) -> dict:
    f.seek(0, 2)
    size = f.tell()
    f.seek(size - 8)
    tail = f.read(8)
    if tail[4:] != b"PAR1":
        raise ValueError("not a parquet file (no PAR1 footer)")
    length = struct.unpack("<i", tail[:4])[0]
    f.seek(size - 8 - length)
    return _Reader(f.read(length)).struct()


def offset_index(f) -> list[list[list[tuple[int, int, int]] | None]]:
    """Per row group, per column: the page index's (offset, size with header, first row) of each data page, or None
    where the column chunk has none. `f`: a seekable binary file; the index is read in one piece (it lies between
    the last row group and the footer), so a remote file costs two reads."""
    chunks = [group.get(1, []) for group in _footer(f).get(4, [])]
    spans = [(c[4], c[5]) for group in chunks for c in group if 4 in c and 5 in c]
    if not spans:
        return [[None] * len(group) for group in chunks]
    first = min(offset for offset, _ in spans)
    f.seek(first)
    region = f.read(max(offset + size for offset, size in spans) - first)
    return [[[(loc[1], loc[2], loc[3]) for loc in _Reader(region, c[4] - first).struct().get(1, [])]
             if 4 in c and 5 in c else None for c in group] for group in chunks]


def page_index_problems(f, metadata) -> list[str]:
    """What is wrong with the page index of a parquet file (empty: each column chunk has one, and its pages tile the
    chunk: the first at the chunk's first data page, each next where the one before ends, the last at the chunk's
    end; first rows ascending from 0). Reads the index, not the pages. `metadata`: pyarrow's FileMetaData."""
    index = offset_index(f)
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        for c in range(group.num_columns):
            column = group.column(c)
            where = f"row group {g} column {column.path_in_schema}"
            pages = index[g][c] if g < len(index) and c < len(index[g]) else None
            if not pages:
                return [f"{where}: no page index (the dataset viewer reads single pages through it)"]
            start, size = chunk_range(column)
            ends = [offset + length for offset, length, _ in pages]
            rows = [row for _, _, row in pages]
            if (pages[0][0] != column.data_page_offset or ends[-1] != start + size
                    or any(end != offset for end, (offset, _, _) in zip(ends, pages[1:]))):
                return [f"{where}: the page index does not match the column chunk's pages"]
            if rows[0] != 0 or any(a >= b for a, b in pairwise(rows)) or rows[-1] >= group.num_rows:
                return [f"{where}: the page index's first rows do not ascend from 0"]
    return []
