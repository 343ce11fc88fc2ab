"""Pass 2 (bounded `--top-k` only): the selected images of one unit read again, their rows made from the maps kept
in pass 1 (no model: masks and PNG encoding only), spilled to the unit's `rows.arrow`. Only the images are read
again, and only where the rows carry one: an `--image-mode none` build reads nothing from the source here."""

import os
from pathlib import Path

from datasets import Features

from ..core.decoding import BatchDecoder, Decoded
from ..core.scan import ScanResult
from ..core.sources import Sample
from ..core.stages import StageTimer, batched, timed_iter
from ..core.units import Unit
from ..core.writer import Spill
from .rows import make_row_job


class RowsResult:
    def __init__(self, rows: int, masks: int, timings: dict, rows_path: Path | None = None, bytes_read: int = 0):
        self.rows, self.masks, self.timings, self.rows_path = rows, masks, timings, rows_path
        self.bytes_read = bytes_read

    def summary(self) -> dict:
        return {"rows": self.rows, "masks": self.masks, "bytes_read": self.bytes_read, "timings": self.timings}

    def save(self, folder: Path) -> None:
        os.replace(self.rows_path, folder / "rows.arrow")

    @classmethod
    def load(cls, folder: Path) -> "RowsResult":
        return cls(0, 0, {}, folder / "rows.arrow")  # counts and timings live in the done marker


class RowsWorker:
    """`worker(unit)`: rows of the unit's selected images (`selected[unit] = {row: (meta, entries)}`, the row of
    each image in the unit's pass-1 result in `scan_folder` (a `UnitFolder`), whose `image_maps` hold its maps)."""

    def __init__(self, source, config, workers: int, selected: dict, scan_folder, spill_dir: Path,
                 features: Features, decode_device=None):
        self.source, self.config, self.selected, self.spill_dir = source, config, selected, spill_dir
        self.features = features
        self.scan_folder = scan_folder
        # the image column is cut as pass 1 saw the image (`--decode gpu`: on the same device)
        self.decoder = BatchDecoder(workers, config.batch_size, config.draft, image_mode=config.image_mode,
                                    decode_device=decode_device)

    def close(self, abort: bool = False) -> None:
        self.decoder.close(abort)

    def __call__(self, unit: Unit) -> RowsResult:
        timer = StageTimer()
        chosen = self.selected.get(unit.index, {})
        maps = ScanResult.load(self.scan_folder.result_dir(unit.index)).image_maps
        by_ref = {meta.ref: (meta, [{**entry, "nam": maps[row, entry["column"]].numpy()} for entry in entries])
                  for row, (meta, entries) in chosen.items()}
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        spill = Spill(self.spill_dir / f".{unit.index:05d}.rows.arrow.partial", self.features)
        with self.source.io.measure() as read:
            masks = self._rows(by_ref, spill, timer)
        spill.close()
        return RowsResult(spill.rows, masks, timer.report(), spill.path, read.bytes)

    def _rows(self, by_ref: dict, spill: Spill, timer: StageTimer) -> int:
        masks = 0
        for decoded in timed_iter(self._decoded(by_ref), timer, "read+decode (pass 2)"):
            if decoded.failed:  # it decoded in pass 1: the source changed under the build
                sample, error = decoded.failed[0]
                raise RuntimeError(f"{sample.image_id} ({sample.ref}) decoded in pass 1 but not in pass 2: {error}")
            jobs = [(by_ref[s.ref][0], None, by_ref[s.ref][1]) for s in decoded.good]
            with timer("masks+encode"):
                rows = self.decoder.map(make_row_job, jobs)
                for row, image in zip(rows, decoded.images):
                    row["image"] = image
            with timer("spill"):
                spill.append(rows)
            masks += sum(len(entries) for _, _, entries in jobs)
        return masks

    def _decoded(self, by_ref: dict):
        """The unit's selected images decoded in batches; without an image column, their metadata alone."""
        if self.config.image_mode == "none":
            samples = [Sample(meta.image_id, meta.label, None, ref) for ref, (meta, _) in by_ref.items()]
            for batch in batched(samples, self.config.batch_size):
                yield Decoded(batch, None, [None] * len(batch), [])
            return
        samples = (Sample(by_ref[ref][0].image_id, by_ref[ref][0].label, data, ref)
                   for ref, data in self.source.read_many(list(by_ref)))
        yield from self.decoder.batches(batched(samples, self.config.batch_size), overlap=False)
