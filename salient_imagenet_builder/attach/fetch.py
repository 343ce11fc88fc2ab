"""The copy's blocks read once each, before the join: where reading one image reads its whole block (a parquet row
group's image column), two shards of the dataset that need images of one block would each read it. This pass
reads every block that holds an image of the dataset once (one resumable unit per block), keeps those images'
bytes in the work folder (`images.arrow`: ref, data), and the join reads them from there (`FetchedImages`)."""

from collections import defaultdict
from pathlib import Path

import pyarrow as pa

from ..core.distributed import World
from ..core.sources import Source
from ..core.units import Unit, UnitFolder, run_units
from .errors import reading_copy
from .join import JoinResult

PASS = "fetch"


class FetchResult(JoinResult):
    """A block's wanted images (the marker keeps the bytes read for them)."""

    file = "images.arrow"


class FetchWorker:
    """`worker(unit)`: the images of one block (`unit.spec["refs"]`), in that order, read with one read of it."""

    def __init__(self, source: Source, spill_dir: Path, imagenet: str):
        self.source, self.spill_dir, self.imagenet = source, spill_dir, imagenet

    def __call__(self, unit: Unit) -> FetchResult:
        refs = unit.spec["refs"]
        with self.source.io.measure() as read, reading_copy(self.imagenet):
            data = dict(self.source.read_many(refs))
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        spill = self.spill_dir / f".{unit.index:05d}.{FetchResult.file}.partial"
        table = pa.table({"ref": refs, "data": pa.array([data[ref] for ref in refs], pa.binary())})
        with pa.ipc.new_file(str(spill), table.schema) as out:
            out.write_table(table)
        return FetchResult(spill, {"images": len(refs), "bytes_read": read.bytes})


class FetchedImages(Source):
    """The images the pass kept, read by their refs in the copy: the join's source (local reads, counted nowhere:
    the copy's bytes were counted when the pass read them)."""

    kind = "fetched"

    def __init__(self, plan: list[Unit], folder: UnitFolder, copy: Source):
        self.folder, self.copy = folder, copy
        self.where = {ref: (unit.index, row) for unit in plan for row, ref in enumerate(unit.spec["refs"])}

    def read_many(self, refs):
        by_unit: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for ref in refs:
            unit, row = self.where[ref]
            by_unit[unit].append((row, ref))
        for unit in sorted(by_unit):
            with pa.memory_map(str(self.folder.result_dir(unit) / FetchResult.file)) as f:
                data = pa.ipc.open_file(f).read_all().column("data")
                for row, ref in by_unit[unit]:
                    yield ref, data[row].as_py()

    def describe(self):
        return f"{self.copy.describe()}, as fetched into {self.folder.path}"


def fetch_blocks(source: Source, refs: dict[str, str], work: Path, imagenet: str,
                 again: set[str]) -> tuple[Source, int]:
    """The source the join reads (`source` itself where each image is read alone) and the bytes the blocks' reads
    took, this run and the runs it resumes. `again`: refs whose finished block is read again (their images changed)."""
    blocks = source.read_blocks(refs.values())
    if blocks is None:
        return source, 0
    plan = [Unit(i, {"block": key, "refs": block}) for i, (key, block) in enumerate(blocks.items())]
    folder = UnitFolder(work, PASS)
    folder.discard_changed(plan)  # the copy holds the images elsewhere now: other blocks
    for unit in plan:
        if again.intersection(unit.spec["refs"]):
            folder.discard(unit.index)
    run_units(plan, folder, lambda: FetchWorker(source, folder.path, imagenet), World(), "attach (row groups)",
              desc=f"attach: the {len(plan)} row group(s) of {imagenet} that hold the images, each read once")
    return FetchedImages(plan, folder, source), sum(folder.read_marker(u.index)["bytes_read"] for u in plan)
