"""Opening a source's files and counting the bytes read from them.

Two ways to open, because a remote file pays for what it reads, not for what the caller keeps:
- `random` (parquet footers, label columns, a row group's image column, a tar member by offset): no read-ahead.
  pyarrow asks for the byte ranges it needs; on the Hub each becomes one range request of exactly that size
  (fsspec's default 5 MiB block would turn a 2 KB footer read into 5 MiB).
- `sequential` (streaming a whole tar): buffered, since every byte is read anyway.
Every byte a reader returns is counted in the source's `ReadCounter`, so a build can say what it read per pass.
"""

import io
from contextlib import contextmanager
from typing import Iterator

__all__ = ["CountingFile", "ReadCounter", "Reads", "describe_reads", "open_file"]


class ReadCounter:
    """Bytes read from a source's files by this process: `total` so far, and `measure()` for a stretch of work
    (`with source.io.measure() as read: ...; read.bytes`)."""

    def __init__(self):
        self.total = 0

    @contextmanager
    def measure(self) -> Iterator["Reads"]:
        yield Reads(self, self.total)


class Reads:
    """What was read since it began (its `bytes` counts on while the work goes on)."""

    def __init__(self, counter: ReadCounter, start: int):
        self.counter, self.start = counter, start

    @property
    def bytes(self) -> int:
        return self.counter.total - self.start


class CountingFile(io.RawIOBase):
    """A read-only binary file that counts what it returns; seeks and tells go to the wrapped file."""

    def __init__(self, raw, counter: ReadCounter):
        self.raw, self.counter = raw, counter

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self.raw.seekable()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.counter.total += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.raw.close()
        super().close()


def open_file(path: str, fs, counter: ReadCounter, sequential: bool = False) -> CountingFile:
    """`path` on `fs` (an fsspec filesystem; None = local), counted in `counter`; see the module's docstring."""
    if fs is None:
        raw = open(path, "rb", buffering=-1 if sequential else 0)
    elif sequential:
        raw = fs.open(path, "rb")
    else:
        raw = fs.open(path, "rb", cache_type="none")
    return CountingFile(raw, counter)


def describe_reads(source_bytes: dict, source_size: int | None, whose: str = "the source's") -> str:
    """What a job read from its source, per pass (in MB), against the source's size where known."""
    parts = ", ".join(f"{name} {value / 1e6:.1f} MB" for name, value in source_bytes.items() if name != "total")
    of = f" of {whose} {source_size / 1e6:.1f} MB" if source_size else ""
    return f"Read {source_bytes.get('total', 0) / 1e6:.1f} MB{of} ({parts})."
