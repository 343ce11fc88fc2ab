"""The reduce, after the merged scan (`core.scan.scan_units`): the selection of each annotated pair's top-k images
for pass 2, with their maps from pass 1; and, for `--top-k all`, each pair's ranks from the spilled activations.

Nothing here depends on which rank computed a unit or in which order: the merged scan is a total order on
(activation, image id), and the selection is read from it pair by pair.
"""

from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..core.scan import ScanResult
from ..core.sources import SourceError
from .rows import ImageMeta


def select(scan: ScanResult, pairs) -> dict[int, dict[int, tuple[ImageMeta, list[dict]]]]:
    """unit -> the image's row in that unit's scan result -> (meta, entries): one entry per pair whose top-k holds
    the image, with its rank and the column of its map in the unit's `image_maps` (pass 2 reads the maps there)."""
    images = scan.images
    selected: dict[int, dict] = defaultdict(dict)
    for (c, j), pair in pairs.items():
        if c not in scan.classes:
            continue
        _, column = scan.column(c, j)
        for rank, (position, activation) in enumerate(scan.top_images(c, j), start=1):
            meta = ImageMeta(str(images.ids[position]), int(images.labels[position]),
                             int(images.predictions[position]), c, str(images.refs[position]), images.size(position))
            unit, row = int(images.units[position]), int(images.unit_positions[position])
            _, entries = selected[unit].setdefault(row, (meta, []))
            entries.append({"feature_index": pair.feature_index, "feature_rank": pair.feature_rank,
                            "kind": pair.kind, "activation": activation, "rank": rank, "column": column})
    return selected


def check_unique_ids(selected, where) -> None:
    """Two rows with one id could not be told apart: refuse, naming both files (`where(ref)` says where a
    sample lives)."""
    first = {}
    for meta in (meta for unit in selected.values() for meta, _ in unit.values()):
        other = first.setdefault(meta.image_id, meta)
        if other is not meta:
            raise SourceError(f"two images have the id {meta.image_id!r}: {where(other.ref)} and {where(meta.ref)}; "
                              "an id is the file name without its extension and must be unique: rename or remove "
                              "one of them")


def top_image_ids(scan: ScanResult, key, n: int) -> list[str]:
    c, j = key
    if c not in scan.classes:
        return []
    return [str(scan.images.ids[position]) for position, _ in scan.top_images(c, j)[:n]]


class PairRanks:
    """`--top-k all`: the rank of every (row, feature) of the spilled rows, from their activations alone.

    Rank r of pair (group, feature) = position among the pair's images by activation (descending), ties by image
    id (larger first), as the bounded top-k orders them. Only four small columns are read; the masks stay on disk."""

    def __init__(self, table: pa.Table):
        features = table.column("features")
        lengths = pc.list_value_length(features).to_numpy(zero_copy_only=False).astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        parents = np.repeat(np.arange(len(lengths)), lengths)
        flat = pa.concat_arrays([pc.list_flatten(chunk) for chunk in features.chunks]) if features.num_chunks \
            else pa.array([], features.type.value_type)
        keys = pa.table({
            "group": pc.take(table.column("group"), pa.array(parents)),
            "feature": flat.field("feature_index"),
            "activation": flat.field("activation"),
            "image_id": pc.take(table.column("image_id"), pa.array(parents)),
        })
        order = pc.sort_indices(keys, sort_keys=[("group", "ascending"), ("feature", "ascending"),
                                                 ("activation", "descending"), ("image_id", "descending")]).to_numpy()
        group = keys.column("group").to_numpy()[order]
        feature = keys.column("feature").to_numpy()[order]
        position = np.arange(len(order))
        new_run = np.ones(len(order), bool)
        new_run[1:] = (group[1:] != group[:-1]) | (feature[1:] != feature[:-1])
        run_start = np.maximum.accumulate(np.where(new_run, position, 0)) if len(order) else position
        self.ranks = np.empty(len(order), np.int32)
        self.ranks[order] = position - run_start + 1

    def apply(self, rows: pa.Table, row_indices: np.ndarray) -> pa.Table:
        """`rows` = the spilled rows at `row_indices`, with their features' rank filled in."""
        features = rows.column("features").combine_chunks()
        ranks = np.concatenate([self.ranks[self.offsets[r]:self.offsets[r + 1]] for r in row_indices]) \
            if len(row_indices) else np.zeros(0, np.int32)
        values = features.flatten()
        struct_type = values.type
        arrays = [pa.array(ranks, struct_type.field("rank").type) if struct_type.field(i).name == "rank"
                  else values.field(i) for i in range(struct_type.num_fields)]
        new_values = pa.StructArray.from_arrays(arrays, fields=list(struct_type))
        offsets = pc.subtract(features.offsets, features.offsets[0])
        new_features = pa.ListArray.from_arrays(offsets, new_values, type=features.type)
        return rows.set_column(rows.schema.get_field_index("features"), rows.schema.field("features"),
                               new_features)



def check_unique_rows(table, locate) -> None:
    """The rows about to be written have unique ids (in `all` mode every image of a group is a row);
    `locate(image_id)` names the files of a duplicate where the source can tell."""
    ids = table.column("image_id")
    if pc.count_distinct(ids).as_py() == len(ids):
        return
    twice = [v["values"].as_py() for v in pc.value_counts(ids) if v["counts"].as_py() > 1]
    files = locate(twice[0])
    where = f": {' and '.join(files)}" if files else f" ({len(twice)} such id(s))"
    raise SourceError(f"two images have the id {twice[0]!r}{where}; an id is the file name without its extension "
                      "and must be unique: rename or remove one of them")
