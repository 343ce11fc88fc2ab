"""The reduce: pass-1 unit results merged in unit order into the build's feature importance, each annotated pair's
top-k and the selection for pass 2; and, for `--top-k all`, each pair's ranks from the spilled activations.

Nothing here depends on which rank computed a unit or in which order: FI sums are added unit by unit in plan
order (float64, so the same sums for any number of ranks), and candidates are ordered by (activation, image id),
a total order, so the merged top-k is the same in any order.
"""

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ..constants import NUM_CLASSES
from ..sources import SourceError
from .pass1 import ScanResult
from .rows import ImageMeta
from .selection import Candidate, FeatureImportance, TopK
from .units import UnitFolder, load_results


@dataclass
class Reduced:
    fi: FeatureImportance
    topk: TopK
    metas: dict = field(default_factory=dict)  # (unit, seq) -> ImageMeta of every kept candidate
    skipped: list = field(default_factory=list)
    scanned: int = 0
    timings: dict = field(default_factory=lambda: defaultdict(float))
    rows_files: list = field(default_factory=list)  # `all` mode: each unit's rows.arrow, in unit order
    unlabelled: Counter = field(default_factory=Counter)  # label (as text) -> samples without an ImageNet label


def merge_scans(plan, folder: UnitFolder, pairs, k: int, num_features: int) -> Reduced:
    reduced = Reduced(FeatureImportance(NUM_CLASSES, num_features), TopK(pairs, k))
    for unit, result in load_results(plan, folder, ScanResult):
        if len(result.classes):
            classes = torch.from_numpy(result.classes)
            reduced.fi.sums[classes] += torch.from_numpy(result.sums)
            reduced.fi.counts[classes] += torch.from_numpy(result.counts)
        for key, candidate in result.candidates:
            if key in reduced.topk.heaps and reduced.topk.would_keep(key, candidate.activation):
                candidate.seq = (unit.index, candidate.seq)
                reduced.topk.offer(key, candidate)
                reduced.metas[candidate.seq] = result.metas[candidate.seq[1]]
        reduced.skipped += result.skipped
        reduced.scanned += result.scanned
        reduced.unlabelled.update(result.unlabelled)
        for stage, seconds in result.timings.items():
            reduced.timings[stage] += seconds
        if result.rows_path is not None:
            reduced.rows_files.append(result.rows_path)
    kept = {c.seq for heap in reduced.topk.heaps.values() for c in heap}
    reduced.metas = {seq: meta for seq, meta in reduced.metas.items() if seq in kept}
    return reduced


def select(reduced: Reduced, pairs) -> dict[int, dict[int, tuple[ImageMeta, list[dict]]]]:
    """unit -> seq -> (meta, entries): one entry per pair whose top-k holds the image, with its rank and map."""
    selected: dict[int, dict] = defaultdict(dict)
    for key, pair in pairs.items():
        for rank, candidate in enumerate(reduced.topk.ranked(key), start=1):
            unit, seq = candidate.seq
            _, entries = selected[unit].setdefault(seq, (reduced.metas[candidate.seq], []))
            entries.append({"feature_index": pair.feature_index, "feature_rank": pair.feature_rank,
                            "kind": pair.kind, "activation": candidate.activation, "rank": rank,
                            "nam": candidate.nam})
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


def top_image_ids(reduced: Reduced, key, n: int) -> list[str]:
    return [c.image_id for c in reduced.topk.ranked(key)[:n]]


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


__all__ = ["Candidate", "PairRanks", "Reduced", "merge_scans", "select", "top_image_ids"]


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
