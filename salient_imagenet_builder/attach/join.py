"""One work unit of `attach`: an image shard of the build, its rows with the image column joined from the user's
ImageNet copy, spilled to the unit's Arrow file in the shard's row order (the masks and every other column are the
build's own values, untouched)."""

import os
from contextlib import ExitStack
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import Features

from ..core.dataset import DatasetView
from ..core.decoding import image_column
from ..core.images import CorruptImage, center_view, decode_sized
from ..core.layouts import SIZE_COLUMNS, upgrade_table
from ..core.sources import Source
from ..core.stages import StageTimer, ordered_map
from ..core.units import Unit
from .errors import AttachError, reading_copy


class JoinResult:
    """A unit's rows (`rows.arrow`); the marker keeps the counts and the images it could not attach."""

    file = "rows.arrow"

    def __init__(self, rows_path: Path, summary: dict):
        self.rows_path, self._summary = rows_path, summary

    def summary(self) -> dict:
        return self._summary

    def save(self, folder: Path) -> None:
        os.replace(self.rows_path, folder / self.file)

    @classmethod
    def load(cls, folder: Path) -> "JoinResult":
        return cls(folder / cls.file, {})  # counts live in the done marker


class ImageJob:
    """(image_id, bytes) -> (image_id, (image column, size as displayed), error): the column a build of `image_mode`
    stores, from a view decoded as the build decoded it (`draft`); an image that does not decode is reported, not
    attached."""

    def __init__(self, image_mode: str, draft: bool):
        self.image_mode, self.draft = image_mode, draft

    def __call__(self, item):
        image_id, data = item
        try:
            image, size = decode_sized(data, self.draft)
            view = center_view(image)
        except CorruptImage as e:
            return image_id, None, str(e)
        return image_id, (image_column(view, data, self.image_mode), size), None


class JoinWorker:
    """`worker(unit)`: unit i is the build's image shard `dataset.image_files[i]`; `refs` maps an image id to where
    the ImageNet copy holds it (`Source.index_ids`). The rows are written in this version's layout (`features`), an
    older build's included: their image sizes, where the build did not record them, are the joined images'."""

    def __init__(self, dataset: DatasetView, source: Source, refs: dict[str, str], image_mode: str, draft: bool,
                 workers: int, spill_dir: Path, imagenet: str, features: Features):
        self.dataset, self.source, self.refs, self.spill_dir = dataset, source, refs, spill_dir
        self.imagenet, self.features = imagenet, features
        self.schema = features.arrow_schema
        self._stack = ExitStack()
        self.imap = self._stack.enter_context(ordered_map(ImageJob(image_mode, draft), workers))

    def close(self, abort: bool = False) -> None:
        self._stack.close()

    def __call__(self, unit: Unit) -> JoinResult:
        timer, path = StageTimer(), self.dataset.image_files[unit.index]
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        spill = self.spill_dir / f".{unit.index:05d}.rows.arrow.partial"
        counts = {"rows": 0, "attached": 0, "missing": [], "unreadable": []}
        with self.source.io.measure() as read, self.dataset.target.open(path, random=True) as f, \
                pa.ipc.new_file(str(spill), self.schema) as out:
            parquet = pq.ParquetFile(f)
            for group in range(parquet.metadata.num_row_groups):
                with timer("read dataset"):
                    table = self._conform(parquet.read_row_group(group), path)
                with timer("read+decode images"):
                    images = self._images(table.column("image_id").to_pylist(), counts)
                out.write_table(self._joined(table, images))
                counts["rows"] += len(table)
        counts["attached"] = counts["rows"] - len(counts["missing"]) - len(counts["unreadable"])
        return JoinResult(spill, {**counts, "shard": path, "bytes_read": read.bytes, "timings": timer.report()})

    def _joined(self, table: pa.Table, images: list[tuple | None]) -> pa.Table:
        """The rows with their image column, and the images' sizes where the build has none."""
        column = [None if i is None else i[0] for i in images]
        table = table.set_column(table.schema.get_field_index("image"), self.schema.field("image"),
                                 pa.array(column, self.schema.field("image").type))
        for axis, name in enumerate(SIZE_COLUMNS):
            joined = pa.array([None if i is None else i[1][axis] for i in images], pa.int32())
            table = table.set_column(table.schema.get_field_index(name), self.schema.field(name),
                                     pc.coalesce(table.column(name), joined))
        return table

    def _conform(self, table: pa.Table, path: str) -> pa.Table:
        """The shard's rows in this version's schema (metadata included), or one line saying why not."""
        try:
            return upgrade_table(table, self.features)
        except (KeyError, ValueError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise AttachError(f"{self.dataset.name}: {path} does not have the columns of a Salient ImageNet build "
                              f"of this version ({type(e).__name__}: {e})") from None

    def _images(self, image_ids: list[str], counts: dict) -> list[dict | None]:
        """The image column of these rows: only the images they name are read; an id the copy lacks, or an image
        that does not decode, stays null and is listed in `counts`."""
        found = {i: self.refs[i] for i in dict.fromkeys(image_ids) if i in self.refs}
        counts["missing"] += [i for i in image_ids if i not in self.refs]
        columns = {}
        for image_id, column, error in self.imap(self._read(found)):
            if error is not None:
                counts["unreadable"].append({"image_id": image_id, "error": error})
            columns[image_id] = column
        return [columns.get(i) for i in image_ids]

    def _read(self, found: dict[str, str]):
        """(image_id, bytes) of the ids in `found` (id -> ref), as the source yields them (in its file order)."""
        with reading_copy(self.imagenet):
            yield from self.source.read_ids(found)
