"""Pass 1 of discovery: feature importance per class and, for every (class, feature), the top images by r_j(x).

The unit of work is a slice of the source (a file, a row group, N folder images). `scan_unit` turns one slice into
a `ScanResult`, a small result that merges: FI sums and counts per class (as `build.selection.FeatureImportance`),
and for every scanned class and *every* feature (the top features are only known once FI is complete) the k
largest activations with the images that gave them, in [classes, features, k] tensors merged with a sort.
Ties are broken by image id, larger id first, exactly as `build.selection.TopK` does, so the result does not
depend on how the source was cut into units or in which order they were merged.

THE SEAM: `scan_unit(samples, ...)` knows nothing about where its samples come from, and `ScanResult.merge` is
associative; `scan_source` runs the units one after another in this process. The build's unit runner (resumable,
distributed) can call `scan_unit` per unit and `merge` in its reduce instead, with no change here.
"""

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..build.selection import FeatureImportance
from ..constants import NUM_CLASSES
from ..images import to_unit_float
from ..sources import Sample
from ..stages import batched

UNIT_IMAGES = 4096  # images per unit when one process scans the whole source


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

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def of(cls, ids: list[str], refs: list[str], labels: list[int], predictions: list[int]):
        """The table of these images, and each image's position in it."""
        ids = np.array(ids, dtype=str)
        position = id_ranks(ids)
        order = np.argsort(position)
        table = cls(ids[order], np.array(refs, dtype=object)[order], np.array(labels, dtype=np.int64)[order],
                    np.array(predictions, dtype=np.int64)[order])
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
        return self.ids, self.refs, self.labels, self.predictions

    def take(self, keep: np.ndarray) -> "ImageTable":
        return ImageTable(*(a[keep] for a in self.columns()))


def merge_top(act_a, img_a, act_b, img_b, k: int, id_rank: torch.Tensor | None = None):
    """The k best of two candidate sets along the last dimension: by activation, ties by image id, larger first;
    empty slots (-inf, -1) sort last. An image's id order is its position, or `id_rank[position]` when given."""
    act, img = torch.cat([act_a, act_b], -1), torch.cat([img_a, img_b], -1)
    key = img if id_rank is None else torch.where(img >= 0, id_rank[img.clamp_min(0)], -1)
    by_image = torch.argsort(key, dim=-1, descending=True, stable=True)
    act, img = act.gather(-1, by_image), img.gather(-1, by_image)
    by_activation = torch.argsort(act, dim=-1, descending=True, stable=True)[..., :k]
    return act.gather(-1, by_activation), img.gather(-1, by_activation)


@dataclass
class ScanResult:
    classes: list[int]  # the scanned classes; row i of the top tensors is class classes[i]
    k: int  # top images kept per (class, feature)
    context_k: int  # images per class by the class's own logit (context on the panels)
    fi: FeatureImportance
    top_act: torch.Tensor  # [classes, features, k] float32, -inf where empty
    top_img: torch.Tensor  # [classes, features, k] int64 positions in `images`, -1 where empty
    context_score: torch.Tensor  # [classes, 1, context_k] the class logit
    context_img: torch.Tensor  # [classes, 1, context_k]
    images: ImageTable = field(default_factory=ImageTable)
    scanned: int = 0
    skipped: list[str] = field(default_factory=list)  # ids of corrupt images
    unlabelled: Counter = field(default_factory=Counter)  # label (as text) -> samples without an ImageNet label

    @classmethod
    def empty(cls, classes: list[int], num_features: int, k: int, context_k: int) -> "ScanResult":
        c = len(classes)
        return cls(list(classes), k, context_k, FeatureImportance(NUM_CLASSES, num_features),
                   torch.full((c, num_features, k), float("-inf")), torch.full((c, num_features, k), -1),
                   torch.full((c, 1, context_k), float("-inf")), torch.full((c, 1, context_k), -1))

    def rows(self) -> torch.Tensor:
        """class index -> row of the top tensors (-1: not scanned)."""
        rows = torch.full((NUM_CLASSES,), -1)
        rows[self.classes] = torch.arange(len(self.classes))
        return rows

    def merge(self, other: "ScanResult") -> "ScanResult":
        """Fold `other` (disjoint images, same classes and settings) into this result; returns self."""
        if other.classes != self.classes or (other.k, other.context_k) != (self.k, self.context_k):
            raise ValueError("cannot merge scan results of different classes or settings")
        self.fi.sums += other.fi.sums
        self.fi.counts += other.fi.counts
        self.scanned += other.scanned
        self.skipped += other.skipped
        self.unlabelled.update(other.unlabelled)
        self.images, mine, theirs = self.images.union(other.images)
        rows = torch.nonzero(other.fi.counts[self.classes] > 0).flatten()  # only rows the other result touched
        self.top_img = _remap(self.top_img, mine)
        self.context_img = _remap(self.context_img, mine)
        for act, img, o_act, o_img, k in ((self.top_act, self.top_img, other.top_act, other.top_img, self.k),
                                           (self.context_score, self.context_img, other.context_score,
                                            other.context_img, self.context_k)):
            act[rows], img[rows] = merge_top(act[rows], img[rows], o_act[rows], _remap(o_img[rows], theirs), k)
        return self

    def compact(self) -> "ScanResult":
        """Drop images no top list refers to (the table stays sorted, positions are renumbered)."""
        used = torch.cat([self.top_img.flatten(), self.context_img.flatten()])
        keep = torch.unique(used[used >= 0])  # sorted: the order (and the tie-break) is kept
        renumber = torch.full((len(self.images) + 1,), -1)
        renumber[keep] = torch.arange(len(keep))
        self.top_img, self.context_img = renumber[self.top_img], renumber[self.context_img]  # -1 -> last: -1
        self.images = self.images.take(keep.numpy())
        return self

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
            "ids": self.images.ids.astype(str), "refs": self.images.refs.astype(str),
            "labels": self.images.labels, "predictions": self.images.predictions,
        }
        with open(folder / "scan.npz", "wb") as f:
            np.savez(f, **arrays)
        (folder / "scan.json").write_text(json.dumps({"k": self.k, "context_k": self.context_k,
                                                      "scanned": self.scanned, "skipped": self.skipped,
                                                      "unlabelled": self.unlabelled}))

    @classmethod
    def load(cls, folder: Path) -> "ScanResult":
        info = json.loads((folder / "scan.json").read_text())
        with np.load(folder / "scan.npz", allow_pickle=False) as z:
            a = {name: z[name] for name in z.files}
        result = cls.empty([int(c) for c in a["classes"]], a["sums"].shape[1], info["k"], info["context_k"])
        touched, groups = torch.from_numpy(a["touched"]), torch.from_numpy(a["groups"])
        result.fi.sums[groups], result.fi.counts[groups] = torch.from_numpy(a["sums"]), torch.from_numpy(a["counts"])
        for name in ("top_act", "top_img", "context_score", "context_img"):
            getattr(result, name)[touched] = torch.from_numpy(a[name])
        result.images = ImageTable(a["ids"], a["refs"].astype(object), a["labels"], a["predictions"])
        result.scanned, result.skipped = info["scanned"], info["skipped"]
        result.unlabelled = Counter(info.get("unlabelled", {}))
        return result

    def summary(self) -> dict:
        return {"scanned": self.scanned, "skipped": len(self.skipped), "unlabelled": sum(self.unlabelled.values())}

    def top_images(self, class_index: int, feature: int) -> list[tuple[int, float]]:
        """(position in `images`, activation) of a pair's top images, best first."""
        row = self.classes.index(class_index)
        return [(int(i), float(a)) for a, i in zip(self.top_act[row, feature], self.top_img[row, feature]) if i >= 0]

    def context_images(self, class_index: int) -> list[int]:
        row = self.classes.index(class_index)
        return [int(i) for i in self.context_img[row, 0] if i >= 0]


def _remap(img: torch.Tensor, where: np.ndarray) -> torch.Tensor:
    """Positions in an old table -> positions in the merged one (-1 stays -1)."""
    lookup = torch.cat([torch.from_numpy(where).long(), torch.tensor([-1])])  # index -1 reads the trailing -1
    return lookup[img]


class UnitScan:
    """Accumulates one unit batch by batch. Images get positions in reading order (nothing is renumbered per
    batch); ties compare by the ids' current sort ranks; `result()` sorts the table by id once at the end."""

    def __init__(self, classes: list[int], num_features: int, k: int, context_k: int):
        self.acc = ScanResult.empty(classes, num_features, k, context_k)
        self.row_of = self.acc.rows()
        self.ids, self.refs, self.labels, self.predictions = [], [], [], []

    def add(self, samples: list[Sample], pooled: torch.Tensor, logits: torch.Tensor, groups: torch.Tensor) -> None:
        """One batch: pooled features r(x) and logits (CPU, float), the group of each image."""
        acc = self.acc
        acc.scanned += len(samples)
        rows = self.row_of[groups]
        inside = rows >= 0  # images grouped into a class outside the scan count for nothing
        acc.fi.update(groups[inside], pooled[inside])
        first = len(self.ids)
        for sample, prediction, keep in zip(samples, logits.argmax(1).tolist(), inside.tolist()):
            if keep:
                self.ids.append(sample.image_id)
                self.refs.append(sample.ref)
                self.labels.append(sample.label)
                self.predictions.append(prediction)
        if len(self.ids) == first:
            return
        id_rank = torch.from_numpy(id_ranks(self.ids))
        seq = torch.arange(first, len(self.ids))
        pooled, logits, rows = pooled[inside], logits[inside], rows[inside]
        touched, inverse, counts = torch.unique(rows, return_inverse=True, return_counts=True)
        slot = _slots(inverse, counts)  # each image's column among its row's candidates
        candidates = (len(touched), pooled.shape[1], int(counts.max()))
        act, img = torch.full(candidates, float("-inf")), torch.full(candidates, -1)
        act[inverse, :, slot], img[inverse, :, slot] = pooled, seq[:, None].expand_as(pooled)
        acc.top_act[touched], acc.top_img[touched] = merge_top(acc.top_act[touched], acc.top_img[touched], act, img,
                                                               acc.k, id_rank)
        score, score_img = torch.full((len(touched), 1, candidates[2]), float("-inf")), torch.full_like(img[:, :1], -1)
        own_logit = logits[torch.arange(len(rows)), torch.tensor(acc.classes)[rows]]  # the group's own class
        score[inverse, 0, slot], score_img[inverse, 0, slot] = own_logit, seq
        acc.context_score[touched], acc.context_img[touched] = merge_top(
            acc.context_score[touched], acc.context_img[touched], score, score_img, acc.context_k, id_rank)

    def result(self) -> ScanResult:
        acc = self.acc
        acc.images, position = ImageTable.of(self.ids, self.refs, self.labels, self.predictions)
        acc.top_img, acc.context_img = _remap(acc.top_img, position), _remap(acc.context_img, position)
        return acc.compact()


def _slots(inverse: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """0, 1, 2... within each group of equal `inverse` values, in order of appearance."""
    order = torch.argsort(inverse, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(inverse)
    slot[order] = torch.arange(len(inverse)) - starts[inverse[order]]
    return slot


def scan_unit(decoded, model, classes: list[int], k: int, context_k: int, group_by: str, batch_size: int,
              device) -> ScanResult:
    """One unit: `decoded` yields (sample, uint8 224 view or None, error) as `build.rows.Pass1Decoder` does."""
    unit = UnitScan(classes, model.num_features, k, context_k)
    for batch in batched(decoded, batch_size):
        unit.acc.skipped += [s.image_id for s, _, error in batch if error is not None]
        good = [(s, view) for s, view, error in batch if error is None]
        if not good:
            continue
        samples = [s for s, _ in good]
        with torch.inference_mode():
            x = to_unit_float(torch.stack([v for _, v in good]).to(device))
            _, pooled, logits = model(x.contiguous(memory_format=torch.channels_last))
        pooled, logits = pooled.float().cpu(), logits.float().cpu()
        labels = torch.tensor([s.label for s in samples])
        unit.add(samples, pooled, logits, logits.argmax(1) if group_by == "prediction" else labels)
    return unit.result()


def scan_source(samples, decode_map, model, classes, k, context_k, group_by, batch_size, device,
                progress=None, unit_images: int = UNIT_IMAGES) -> ScanResult:
    """Every unit of the source in this process, merged in order (the unit runner's job once it exists)."""
    total = ScanResult.empty(classes, model.num_features, k, context_k)
    for unit in batched(samples, unit_images):
        decoded = decode_map(unit)
        if progress is not None:
            decoded = progress(decoded)
        total.merge(scan_unit(decoded, model, classes, k, context_k, group_by, batch_size, device)).compact()
    return total
