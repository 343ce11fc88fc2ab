"""Pass 1's result, the one scan that the build and discovery share: what one unit (or several, merged) saw.

A `ScanResult` holds, for the scanned classes (`ScanSpec.classes`, one row each):
- the feature-importance sums (`core.importance.FeatureImportance`);
- for every *tracked* feature of a class (the annotated pairs of a build; every feature in a discovery, whose pairs
  are known only once FI is complete), the k images with the largest r_j(x), in [classes, tracked, k] tensors,
  ties broken by image id (larger id first);
- with `keep_maps`, each kept image's max-normalised maps of its class's tracked features from this very forward
  pass (`image_maps`, in the unit's own result: the reduce never moves them; the build's second pass reads them
  back per unit, so it needs no model);
- with `context_k`, each class's images with the largest logit of the class itself (context on discovery panels);
- the images those lists refer to (`ImageTable`, sorted by id, with each image's size as displayed), corrupt
  images, labels outside 0-999, timings, and the unit's spilled rows where a caller made rows on the way
  (`--top-k all`).
The merge is a total order on (activation, image id), so the result is the same for any number of ranks or unit
cuts. `core.scan_units` scans units into such results and merges them.
"""

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .constants import NUM_CLASSES
from .importance import FeatureImportance
from .units import fingerprint_hash

__all__ = ["ImageTable", "ScanResult", "ScanSpec", "id_ranks", "merge_top"]


@dataclass(frozen=True)
class ScanSpec:
    """What a scan keeps. `features`: class -> its tracked features (None: every feature of every class)."""

    classes: list[int]
    k: int
    group_by: str = "prediction"
    features: dict[int, list[int]] | None = None
    context_k: int = 0
    keep_maps: bool = False

    def tracked(self) -> torch.Tensor | None:
        """[classes, T] feature indices per class row, -1 where a class tracks fewer than T features."""
        if self.features is None:
            return None
        width = max([1, *(len(self.features.get(c, ())) for c in self.classes)])
        tracked = torch.full((len(self.classes), width), -1, dtype=torch.int64)
        for row, c in enumerate(self.classes):
            chosen = sorted(self.features.get(c, ()))
            tracked[row, :len(chosen)] = torch.tensor(chosen, dtype=torch.int64)
        return tracked

    def describe(self) -> dict:
        """For the work folder's fingerprint (k is named by each caller in its own words)."""
        features = None if self.features is None else {str(c): sorted(f) for c, f in sorted(self.features.items())}
        return {"classes": self.classes, "group_by": self.group_by, "context_images": self.context_k,
                "maps": self.keep_maps, "tracked_sha256": fingerprint_hash({"features": features})}


def id_ranks(ids) -> np.ndarray:
    """Each id's position in sorted order (the same order for any subset: ranks only ever compare)."""
    order = np.argsort(np.asarray(ids, dtype=str), kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


@dataclass
class ImageTable:
    """The images a result refers to, sorted by image id, so a position compares like the id (the tie-break)."""

    ids: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))
    refs: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    labels: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    predictions: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    units: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))  # the unit that read it
    unit_positions: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))  # its row in that unit
    widths: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))  # its size as displayed
    heights: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def of(cls, ids: list[str], refs: list[str], labels: list[int], predictions: list[int], unit: int,
           sizes: list[tuple[int, int]]):
        """The table of one unit's images, and each image's position in it."""
        ids = np.array(ids, dtype=str)
        position = id_ranks(ids)
        order = np.argsort(position)
        sizes = np.array(sizes, dtype=np.int64).reshape(len(ids), 2)[order]
        table = cls(ids[order], np.array(refs, dtype=object)[order], np.array(labels, dtype=np.int64)[order],
                    np.array(predictions, dtype=np.int64)[order], np.full(len(ids), unit, dtype=np.int64),
                    np.arange(len(ids), dtype=np.int64), sizes[:, 0].copy(), sizes[:, 1].copy())
        return table, position

    def union(self, other: "ImageTable") -> tuple["ImageTable", np.ndarray, np.ndarray]:
        """The merged sorted table and where each entry of `self` and of `other` went."""
        mine = np.arange(len(self)) + np.searchsorted(other.ids, self.ids, side="left")
        theirs = np.arange(len(other)) + np.searchsorted(self.ids, other.ids, side="right")
        merged = ImageTable(*(np.empty(len(self) + len(other), dtype=np.result_type(a, b))
                              for a, b in zip(self.columns(), other.columns())))
        for target, a, b in zip(merged.columns(), self.columns(), other.columns()):
            target[mine], target[theirs] = a, b
        return merged, mine, theirs

    def columns(self):
        return (self.ids, self.refs, self.labels, self.predictions, self.units, self.unit_positions, self.widths,
                self.heights)

    def size(self, position: int) -> tuple[int, int]:
        """(width, height) of an image as displayed."""
        return int(self.widths[position]), int(self.heights[position])

    def take(self, keep: np.ndarray) -> "ImageTable":
        return ImageTable(*(a[keep] for a in self.columns()))


def merge_top(act_a, img_a, act_b, img_b, k: int, id_rank: torch.Tensor | None = None):
    """The k best of two candidate sets along the last dimension: by activation, ties by image id, larger first;
    empty slots (-inf, -1) sort last. An image's id order is its position, or `id_rank[position]` when given.
    Returns (activations, images, where each came from in the concatenation of a and b) for payloads to follow."""
    act, img = torch.cat([act_a, act_b], -1), torch.cat([img_a, img_b], -1)
    key = img if id_rank is None else torch.where(img >= 0, id_rank[img.clamp_min(0)], -1)
    by_image = torch.argsort(key, dim=-1, descending=True, stable=True)
    by_activation = torch.argsort(act.gather(-1, by_image), dim=-1, descending=True, stable=True)[..., :k]
    chosen = by_image.gather(-1, by_activation)
    return act.gather(-1, chosen), img.gather(-1, chosen), chosen


@dataclass
class ScanResult:
    classes: list[int]  # the scanned classes; row i of the top tensors is class classes[i]
    k: int  # top images kept per tracked (class, feature)
    context_k: int  # images per class by the class's own logit
    tracked: torch.Tensor | None  # [classes, T] tracked feature indices (-1 padding); None: every feature
    fi: FeatureImportance
    top_act: torch.Tensor  # [classes, T, k] float32, -inf where empty
    top_img: torch.Tensor  # [classes, T, k] int64 positions in `images`, -1 where empty
    context_score: torch.Tensor  # [classes, 1, context_k] the class logit
    context_img: torch.Tensor  # [classes, 1, context_k]
    image_maps: torch.Tensor | None = None  # a unit's [images, T, h, w]: each image's tracked features' maps
    images: ImageTable = field(default_factory=ImageTable)
    scanned: int = 0
    skipped: list = field(default_factory=list)  # (image_id, ref, error) of corrupt images
    unlabelled: Counter = field(default_factory=Counter)  # label (as text) -> samples without an ImageNet label
    timings: dict = field(default_factory=lambda: defaultdict(float))  # stage -> seconds
    bytes_read: int = 0  # from the source's files
    rows_paths: list = field(default_factory=list)  # rows spilled on the way (`--top-k all`), in unit order
    decode_fallbacks: Counter = field(default_factory=Counter)  # `--decode gpu`: reason -> files decoded by Pillow

    @classmethod
    def empty(cls, spec: ScanSpec, num_features: int) -> "ScanResult":
        c, tracked = len(spec.classes), spec.tracked()
        width = num_features if tracked is None else tracked.shape[1]
        # no slot yet: the lists grow to k as images come (k may exceed any group, e.g. a build keeping every image)
        return cls(list(spec.classes), spec.k, spec.context_k, tracked, FeatureImportance(NUM_CLASSES, num_features),
                   torch.full((c, width, 0), float("-inf")), torch.full((c, width, 0), -1, dtype=torch.int64),
                   torch.full((c, 1, 0), float("-inf")), torch.full((c, 1, 0), -1, dtype=torch.int64))

    def rows(self) -> torch.Tensor:
        """class index -> row of the top tensors (-1: not scanned)."""
        rows = torch.full((NUM_CLASSES,), -1)
        rows[self.classes] = torch.arange(len(self.classes))
        return rows

    def tracked_activations(self, pooled: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """r(x) of each image's tracked features [n, T]; -inf in padding slots."""
        if self.tracked is None:
            return pooled
        features = self.tracked[rows]
        return torch.where(features >= 0, pooled.gather(1, features.clamp_min(0)), float("-inf"))

    def merge(self, other: "ScanResult") -> "ScanResult":
        """Fold `other` (disjoint images, same classes and settings) into this result; returns self."""
        if other.classes != self.classes or (other.k, other.context_k) != (self.k, self.context_k):
            raise ValueError("cannot merge scan results of different classes or settings")
        self.fi.sums += other.fi.sums
        self.fi.counts += other.fi.counts
        self.scanned += other.scanned
        self.bytes_read += other.bytes_read
        self.skipped += other.skipped
        self.unlabelled.update(other.unlabelled)
        self.decode_fallbacks.update(other.decode_fallbacks)
        for stage, seconds in other.timings.items():
            self.timings[stage] = self.timings.get(stage, 0.0) + seconds
        self.rows_paths += other.rows_paths
        self.images, mine, theirs = self.images.union(other.images)
        rows = torch.nonzero(other.fi.counts[self.classes] > 0).flatten()  # only rows the other result touched
        self.top_img = remap(self.top_img, mine)
        self.context_img = remap(self.context_img, mine)
        self.image_maps = None  # maps stay in the units' own results (`ImageTable.units`, `unit_positions`)
        self.set_top(rows, *merge_top(self.top_act[rows], self.top_img[rows], other.top_act[rows],
                                      remap(other.top_img[rows], theirs), self.k)[:2])
        self.set_context(rows, *merge_top(self.context_score[rows], self.context_img[rows], other.context_score[rows],
                                          remap(other.context_img[rows], theirs), self.context_k)[:2])
        return self

    def set_top(self, rows: torch.Tensor, act: torch.Tensor, img: torch.Tensor) -> None:
        """Rows' merged top lists; the lists of every row widen (empty slots) when these are longer."""
        self.top_act, self.top_img = _widen(self.top_act, act, float("-inf")), _widen(self.top_img, img, -1)
        self.top_act[rows], self.top_img[rows] = act, img

    def set_context(self, rows: torch.Tensor, score: torch.Tensor, img: torch.Tensor) -> None:
        self.context_score = _widen(self.context_score, score, float("-inf"))
        self.context_img = _widen(self.context_img, img, -1)
        self.context_score[rows], self.context_img[rows] = score, img

    def compact(self) -> "ScanResult":
        """Drop images no top list refers to (the table stays sorted, positions are renumbered)."""
        used = torch.cat([self.top_img.flatten(), self.context_img.flatten()])
        keep = torch.unique(used[used >= 0])  # sorted: the order (and the tie-break) is kept
        renumber = torch.full((len(self.images) + 1,), -1)
        renumber[keep] = torch.arange(len(keep))
        self.top_img, self.context_img = renumber[self.top_img], renumber[self.context_img]  # -1 -> last: -1
        self.images = self.images.take(keep.numpy())
        if self.image_maps is not None:
            self.image_maps = self.image_maps[keep]
        return self

    # a pair's lists ----------------------------------------------------------------------------------------------

    def column(self, class_index: int, feature: int) -> tuple[int, int]:
        """(row, column) of a tracked pair in the top tensors (the column also indexes `image_maps`)."""
        row = self.classes.index(class_index)
        if self.tracked is None:
            return row, feature
        where = torch.nonzero(self.tracked[row] == feature).flatten()
        if not len(where):
            raise KeyError(f"feature {feature} of class {class_index} was not tracked by this scan")
        return row, int(where[0])

    def top_images(self, class_index: int, feature: int) -> list[tuple[int, float]]:
        """(position in `images`, activation) of a pair's top images, best first."""
        row, column = self.column(class_index, feature)
        return [(i, a) for a, i in zip(self.top_act[row, column].tolist(), self.top_img[row, column].tolist())
                if i >= 0]

    def context_images(self, class_index: int) -> list[int]:
        row = self.classes.index(class_index)
        return [int(i) for i in self.context_img[row, 0] if i >= 0]

    # persistence: one unit's result in the work folder (the unit runner's `save` / `load` / `summary`) ---------

    def save(self, folder: Path) -> None:
        """Only the rows of classes this result touched are written: a unit sees few classes."""
        touched = torch.nonzero(self.fi.counts[self.classes] > 0).flatten()
        groups = torch.nonzero(self.fi.counts > 0).flatten()
        arrays = {
            "classes": np.array(self.classes, np.int64), "touched": touched.numpy(),
            "groups": groups.numpy(), "sums": self.fi.sums[groups].numpy(), "counts": self.fi.counts[groups].numpy(),
            "top_act": self.top_act[touched].numpy(), "top_img": self.top_img[touched].numpy(),
            "context_score": self.context_score[touched].numpy(), "context_img": self.context_img[touched].numpy(),
            "ids": self.images.ids.astype(str), "refs": self.images.refs.astype(str), "labels": self.images.labels,
            "predictions": self.images.predictions, "units": self.images.units,
            "unit_positions": self.images.unit_positions, "widths": self.images.widths,
            "heights": self.images.heights,
        }
        if self.tracked is not None:
            arrays["tracked"] = self.tracked.numpy()
        if self.image_maps is not None:
            arrays["image_maps"] = self.image_maps.numpy()
        with open(folder / "scan.npz", "wb") as f:
            np.savez(f, **arrays)
        (folder / "scan.json").write_text(json.dumps({
            "k": self.k, "context_k": self.context_k, "scanned": self.scanned, "skipped": self.skipped,
            "unlabelled": self.unlabelled, "timings": self.timings, "bytes_read": self.bytes_read,
            "decode_fallbacks": self.decode_fallbacks}), encoding="utf-8")
        for path in self.rows_paths:  # at most one: this unit's spilled rows
            Path(path).replace(folder / "rows.arrow")

    @classmethod
    def load(cls, folder: Path) -> "ScanResult":
        info = json.loads((folder / "scan.json").read_text(encoding="utf-8"))
        with np.load(folder / "scan.npz", allow_pickle=False) as z:
            a = {name: z[name] for name in z.files}
        tracked = torch.from_numpy(a["tracked"]) if "tracked" in a else None
        classes = [int(c) for c in a["classes"]]
        result = cls(classes, info["k"], info["context_k"], tracked,
                     FeatureImportance(NUM_CLASSES, a["sums"].shape[1]),
                     *(torch.full((len(classes), *a[name].shape[1:]), fill, dtype=torch.from_numpy(a[name]).dtype)
                       for name, fill in (("top_act", float("-inf")), ("top_img", -1), ("context_score", float("-inf")),
                                          ("context_img", -1))))
        touched, groups = torch.from_numpy(a["touched"]), torch.from_numpy(a["groups"])
        result.fi.sums[groups], result.fi.counts[groups] = torch.from_numpy(a["sums"]), torch.from_numpy(a["counts"])
        for name in ("top_act", "top_img", "context_score", "context_img"):
            getattr(result, name)[touched] = torch.from_numpy(a[name])
        if "image_maps" in a:
            result.image_maps = torch.from_numpy(a["image_maps"])
        result.images = ImageTable(a["ids"], a["refs"].astype(object), a["labels"], a["predictions"], a["units"],
                                   a["unit_positions"], a["widths"], a["heights"])
        result.scanned, result.skipped = info["scanned"], [tuple(s) for s in info["skipped"]]
        result.bytes_read = info["bytes_read"]
        result.unlabelled, result.timings = Counter(info["unlabelled"]), defaultdict(float, info["timings"])
        result.decode_fallbacks = Counter(info.get("decode_fallbacks", {}))
        rows = folder / "rows.arrow"
        result.rows_paths = [rows] if rows.is_file() else []
        return result

    def summary(self) -> dict:
        return {"scanned": self.scanned, "skipped": len(self.skipped), "unlabelled": sum(self.unlabelled.values()),
                "bytes_read": self.bytes_read, "timings": dict(self.timings)}


def _widen(values: torch.Tensor, like: torch.Tensor, fill) -> torch.Tensor:
    """`values` with empty slots (`fill`) appended along the last dimension, as long as `like`'s."""
    grow = like.shape[-1] - values.shape[-1]
    return torch.nn.functional.pad(values, (0, grow), value=fill) if grow > 0 else values


def remap(img: torch.Tensor, where: np.ndarray) -> torch.Tensor:
    """Positions in an old table -> positions in the merged one (-1 stays -1)."""
    lookup = torch.cat([torch.from_numpy(where).long(), torch.tensor([-1])])  # index -1 reads the trailing -1
    return lookup[img]
