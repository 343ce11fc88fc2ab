"""A built dataset read back (local folder or Hub repo), as `show` and the build's gallery draw it: the annotations
config and one class's rows, straight from the parquet shards (only the row groups whose statistics admit the class are
read, on the Hub by byte range).
"""

import json
import re
from dataclasses import dataclass
from fnmatch import fnmatch

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from . import render
from .card import BUILD_INFO
from .constants import ANNOTATIONS_CONFIG, CROP_SIZE
from .errors import InputError, UserError
from .images import center_view, decode
from .masks import decode_mask
from .targets import Target


@dataclass
class Shown:
    """One image of a pair: its 224 view (None in an --image-mode none build), the pair's mask, its rank."""

    image_id: str
    view: np.ndarray | None
    mask: np.ndarray
    rank: int
    activation: float

    def overlay_cell(self) -> tuple:
        """(the view with the mask overlaid, its caption): one cell of an image row."""
        return render.overlay(self.view, self.mask), f"#{self.rank} {self.image_id}"


class DatasetView:
    def __init__(self, dataset: str, split: str | None = None, command: str = "reading"):
        try:
            self.target = Target(dataset, command)  # `command`: the one its messages name
        except UserError:
            raise  # already one line, with its exit code (a Hub that cannot be reached is a network error)
        except Exception as e:
            raise InputError(f"{command} {dataset}: cannot open the dataset ({type(e).__name__}: {e})") from None
        self.name = dataset
        if split is None:
            split = json.loads(self.target.read_text(BUILD_INFO))["split"] if BUILD_INFO in self.target.files \
                else "train"
        self.image_files = self._files(f"data/{split}-*.parquet")
        self.annotation_files = self._files(f"data/{ANNOTATIONS_CONFIG}-*.parquet")
        splits = self._splits()
        if self.annotation_files and splits and not self.image_files:
            raise InputError(f"{dataset}: has no split {split!r}; its image split(s): {', '.join(splits)} (pass "
                             f"--split {splits[0]})")
        if not self.image_files or not self.annotation_files:
            raise InputError(f"{dataset}: not a Salient ImageNet build (no data/{split}-*.parquet or "
                             f"data/{ANNOTATIONS_CONFIG}-*.parquet)")

    def _splits(self) -> list[str]:
        """The image splits of the build (data/<split>-*.parquet besides the annotations config)."""
        shards = (re.fullmatch(r"data/(.+)-\d+-of-\d+\.parquet", f) for f in self.target.files)
        return sorted({m.group(1) for m in shards if m} - {ANNOTATIONS_CONFIG})

    def _files(self, pattern: str) -> list[str]:
        return sorted(f for f in self.target.files if fnmatch(f, pattern))

    def _read(self, files: list[str], columns: list[str] | None, where: tuple[str, int] | None = None) -> list[dict]:
        """Rows whose column `where[0]` equals `where[1]` (all rows without `where`): only the row groups whose
        statistics admit the value are read (the build writes rows sorted by class), on the Hub by byte range."""
        rows = []
        for path in files:
            with self.target.open(path, random=True) as f:
                parquet = pq.ParquetFile(f)
                for group in _row_groups(parquet, where):
                    table = parquet.read_row_group(group, columns=None if columns is None else
                                                   sorted(set(columns) | ({where[0]} if where else set())))
                    if where is not None:
                        table = table.filter(pc.equal(table.column(where[0]), where[1]))
                    rows += table.select(columns or table.column_names).to_pylist()
        return rows

    def pairs(self, class_index: int | None = None) -> list[dict]:
        """Annotation rows (one per pair), by class then feature rank."""
        rows = self._read(self.annotation_files, None, None if class_index is None else ("class_index", class_index))
        return sorted(rows, key=lambda r: (r["class_index"], r["feature_rank"]))

    def image_columns(self) -> list[str]:
        """The `default` config's columns (from the first shard's footer): older builds lack some."""
        with self.target.open(self.image_files[0], random=True) as f:
            return pq.ParquetFile(f).schema_arrow.names

    def group_rows(self, class_index: int, columns: list[str]) -> list[dict]:
        """The image rows grouped into `class_index` (their `features` are that class's pairs), `columns` only."""
        return self._read(self.image_files, columns, ("group", class_index))

    def pair_images(self, class_index: int, feature_index: int, n: int) -> list[Shown]:
        """The pair's top `n` images of the `group` it belongs to, best first."""
        return self.class_images(class_index, n).get(feature_index, [])

    def class_images(self, class_index: int, n: int) -> dict[int, list[Shown]]:
        """feature index -> its top `n` images in the class's rows, best first."""
        rows = self.group_rows(class_index, ["image", "image_id", "features"])
        found: dict[int, list[tuple]] = {}
        for row in rows:
            for entry in row["features"]:
                found.setdefault(entry["feature_index"], []).append((entry["rank"], row, entry))
        return {j: [_shown(row, entry) for _, row, entry in sorted(items, key=lambda t: t[0])[:n]]
                for j, items in found.items()}


def _row_groups(parquet: pq.ParquetFile, where: tuple[str, int] | None) -> list[int]:
    """The row groups that may hold rows with `column == value`, by their min/max statistics."""
    meta = parquet.metadata
    if where is None:
        return list(range(meta.num_row_groups))
    column, value = where
    leaves = [parquet.schema.column(i).path for i in range(meta.num_columns)]  # statistics are kept per leaf column
    index = leaves.index(column) if column in leaves else -1
    chosen = []
    for group in range(meta.num_row_groups):
        stats = meta.row_group(group).column(index).statistics if index >= 0 else None
        if stats is None or not stats.has_min_max or stats.min <= value <= stats.max:
            chosen.append(group)
    return chosen


def _shown(row: dict, entry: dict) -> Shown:
    mask = decode_mask(entry["mask"]["bytes"])
    image = row.get("image")
    view = None
    if image and image.get("bytes"):
        picture = decode(image["bytes"], draft=False)
        if picture.size != (CROP_SIZE, CROP_SIZE):  # --image-mode original: the view the masks are aligned with
            picture = center_view(picture)
        view = np.asarray(picture.convert("RGB").resize(mask.shape[::-1], Image.BILINEAR))
    return Shown(row["image_id"], view, mask, entry["rank"], entry["activation"])
