"""Stage 1: the dataset's rows decoded once per run into uint8 tensors (224 views and every mask the run needs)."""

import json
import math
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
from tqdm.auto import tqdm

from ..core.card import BUILD_INFO, read_build_info
from ..core.constants import CROP_SIZE
from ..core.images import CorruptImage, view_uint8
from ..core.masks import decode_mask
from ..core.sources import Sample, open_source
from ..core.stages import ordered_map
from .options import EVAL_IN_MEMORY_BYTES
from .settings import EvaluationError, log

REQUIRED_COLUMNS = ("image_id", "label", "group", "core_mask", "spurious_mask")
ROW_BATCH = 64  # dataset rows handed to the decoders at a time

@dataclass
class Pairs:
    """The annotated (class, feature) pairs the rows carry, one entry per pair."""
    group: np.ndarray
    feature_index: np.ndarray
    feature_rank: np.ndarray
    kind: list[str]

    def __len__(self) -> int:
        return len(self.group)


@dataclass
class EvalData:
    image_ids: list[str]
    labels: np.ndarray  # [N] true class
    groups: np.ndarray  # [N] the class whose annotated features the row carries
    images: torch.Tensor  # uint8 [N, 3, 224, 224], the center views
    masks: torch.Tensor  # uint8 [M, 224, 224], every mask the run needs (decode_mask(png) * 255, exactly)
    core_mask: np.ndarray  # [N] index into masks; -1: the row carries no core feature
    spurious_mask: np.ndarray  # [N] likewise for spurious features
    feature_row: np.ndarray  # [F] one entry per (row, feature) for the single-feature test: the row,
    feature_pair: np.ndarray  # the pair (index into `pairs`)
    feature_mask: np.ndarray  # and the feature's mask (index into masks)
    pairs: Pairs
    feature_image_rank: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # [F] `rank`
    source: dict = field(default_factory=dict)  # dataset, split, rows, the build's provenance
    spill: object = None  # keeps the temporary folder of memory-mapped tensors alive

    def __len__(self) -> int:
        return len(self.image_ids)

    def to(self, device: torch.device) -> "EvalData":
        return replace(self, images=self.images.to(device), masks=self.masks.to(device))


def open_dataset(dataset: str, split: str):
    from datasets import load_dataset

    from ..core.targets import resolve

    where = resolve(dataset, "--dataset")  # "no such folder" first; the Hub only for what could be a Hub id
    try:
        return load_dataset(str(where), split=split)
    except Exception as e:  # datasets raises many types (not found, unknown split, bad files...)
        raise EvaluationError(f"--dataset {dataset}: cannot load split {split!r}: {type(e).__name__}: {e}") from None


def dataset_provenance(dataset: str) -> dict | None:
    """The build's `build_info.json` provenance, from the folder or the Hub repo; None when absent."""
    try:
        if Path(dataset).exists():
            return read_build_info(Path(dataset))["provenance"]
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(dataset, BUILD_INFO, repo_type="dataset")
        return json.loads(Path(path).read_text(encoding="utf-8"))["provenance"]
    except Exception as e:
        log.info("%s: no build provenance (%s: %s)", dataset, type(e).__name__, e)
        return None


def check_columns(columns: list[str], dataset: str, single_feature: bool, imagenet: str | None) -> None:
    needed = [*REQUIRED_COLUMNS, *(["features"] if single_feature else []), *([] if imagenet else ["image"])]
    missing = [c for c in needed if c not in columns]
    if missing:
        hint = " (or pass --imagenet PATH to read the images by image_id)" if missing == ["image"] else ""
        raise EvaluationError(f"--dataset {dataset}: not a Salient ImageNet image table: missing column(s) "
                              f"{missing}{hint}; it has {columns}")


def load_eval_data(dataset: str, split: str = "train", imagenet: str | None = None, imagenet_type: str | None = None,
                   workers: int = 0, single_feature: bool = True, progress: bool = True) -> EvalData:
    """The dataset's rows as tensors: images from the `image` column (or from `imagenet` by image_id) and masks."""
    ds = open_dataset(dataset, split)
    check_columns(ds.column_names, dataset, single_feature, imagenet)
    if not len(ds):
        raise EvaluationError(f"--dataset {dataset}: split {split!r} has no rows")
    provenance = dataset_provenance(dataset)
    columns = [*REQUIRED_COLUMNS, *(["features"] if single_feature else []), *(["image"] if not imagenet else [])]
    meta = ds.select_columns(columns).with_format("arrow")[:]  # memory-mapped: no bytes are copied here
    if not imagenet and meta.column("image").null_count:
        raise EvaluationError(f"--dataset {dataset}: {meta.column('image').null_count} of {len(ds)} rows have no "
                              "image (an --image-mode none build): pass --imagenet PATH to read them by image_id")
    data, offsets = layout(meta, single_feature)
    data.source = {"dataset": dataset, "split": split, "rows": len(ds), "imagenet": imagenet,
                   "provenance": provenance}
    constants = (provenance or {}).get("constants", {})
    view = (None if imagenet else constants.get("image_mode"), constants.get("jpeg_draft", True))
    tables = ds.select_columns(columns).with_format("arrow").iter(batch_size=ROW_BATCH)
    decode_rows(data, offsets, tables, view, with_images=not imagenet, workers=workers, progress=progress)
    if imagenet:
        read_imagenet(data, imagenet, split, imagenet_type, view[1], workers, progress)
    return data


def _valid(table, column: str) -> np.ndarray:
    return table.column(column).is_valid().to_numpy(zero_copy_only=False).astype(np.int64)


def layout(table, single_feature: bool) -> tuple[EvalData, np.ndarray]:
    """Index every mask the run needs. Row r's masks are masks[offsets[r]:], in the order: core, spurious, then its
    features. Returns the EvalData with empty (allocated) tensors, and the offsets."""
    n = table.num_rows
    has_core, has_spurious = _valid(table, "core_mask"), _valid(table, "spurious_mask")
    per_row = np.zeros(n, dtype=np.int64)
    flat = None
    if single_feature:
        features = table.column("features")
        per_row = pc.list_value_length(features).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        flat = pc.list_flatten(features)
        if pc.struct_field(flat, "mask").null_count:
            raise EvaluationError("a feature entry has no mask; the dataset is incomplete")
    counts = has_core + has_spurious + per_row
    offsets = np.cumsum(counts) - counts
    feature_row = np.repeat(np.arange(n), per_row)
    position = np.arange(len(feature_row)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    groups = table.column("group").to_numpy().astype(np.int64)
    pairs, feature_pair = _pairs(flat, groups[feature_row])
    image_rank = (np.zeros(0, dtype=np.int64) if flat is None else
                  pc.struct_field(flat, "rank").to_numpy(zero_copy_only=False).astype(np.int64))
    images, masks, spill = allocate(n, int(counts.sum()))
    data = EvalData(
        image_ids=table.column("image_id").to_pylist(), labels=table.column("label").to_numpy().astype(np.int64),
        groups=groups, images=images, masks=masks,
        core_mask=np.where(has_core > 0, offsets, -1), spurious_mask=np.where(has_spurious > 0, offsets + has_core, -1),
        feature_row=feature_row, feature_pair=feature_pair,
        feature_mask=offsets[feature_row] + has_core[feature_row] + has_spurious[feature_row] + position,
        pairs=pairs, feature_image_rank=image_rank, spill=spill,
    )
    return data, offsets


def _pairs(flat, feature_groups: np.ndarray) -> tuple[Pairs, np.ndarray]:
    if flat is None or not len(feature_groups):
        empty = np.zeros(0, dtype=np.int64)
        return Pairs(empty, empty, empty, []), empty
    index = pc.struct_field(flat, "feature_index").to_numpy(zero_copy_only=False).astype(np.int64)
    keys = np.stack([feature_groups, index], axis=1)
    unique, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    ranks = pc.struct_field(flat, "feature_rank").to_numpy(zero_copy_only=False).astype(np.int64)
    kinds = pc.struct_field(flat, "kind").to_pylist()
    return Pairs(unique[:, 0], unique[:, 1], ranks[first], [kinds[i] for i in first]), inverse.reshape(-1)


def allocate(rows: int, masks: int):
    """uint8 tensors for the views and masks: in memory, or memory-mapped in a temporary folder when large."""
    shapes = {"images": (rows, 3, CROP_SIZE, CROP_SIZE), "masks": (masks, CROP_SIZE, CROP_SIZE)}
    if sum(math.prod(s) for s in shapes.values()) <= EVAL_IN_MEMORY_BYTES:
        return *(torch.empty(s, dtype=torch.uint8) for s in shapes.values()), None
    spill = tempfile.TemporaryDirectory(prefix="salient_eval_")
    log.info("decoded rows exceed %d bytes: memory-mapping them in %s", EVAL_IN_MEMORY_BYTES, spill.name)
    arrays = [np.lib.format.open_memmap(Path(spill.name) / f"{name}.npy", mode="w+", dtype=np.uint8, shape=s)
              for name, s in shapes.items()]
    return *(torch.from_numpy(a) for a in arrays), spill


def mask_uint8(data: bytes) -> np.ndarray:
    """A stored mask as uint8: decode_mask's values times 255, exactly (a quarter of float32's memory)."""
    return np.rint(decode_mask(data) * 255.0).astype(np.uint8)


def _decode_row(job):
    image_id, image, masks, (mode, draft) = job
    try:
        view = None if image is None else view_uint8(image, mode, draft)
        return image_id, view, [mask_uint8(m) for m in masks], None
    except (CorruptImage, OSError, ValueError) as e:
        return image_id, None, None, f"{type(e).__name__}: {e}"


def _struct_bytes(table, column: str) -> list:
    return pc.struct_field(table.column(column), "bytes").to_pylist()


def _row_jobs(table, view, with_images: bool):
    n = table.num_rows
    images = _struct_bytes(table, "image") if with_images else [None] * n
    core, spurious = _struct_bytes(table, "core_mask"), _struct_bytes(table, "spurious_mask")
    features = [[]] * n
    if "features" in table.column_names:
        column = table.column("features")
        lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
        masks = pc.struct_field(pc.struct_field(pc.list_flatten(column), "mask"), "bytes").to_pylist()
        starts = np.cumsum(lengths) - lengths
        features = [masks[start:start + length] for start, length in zip(starts, lengths)]
    ids = table.column("image_id").to_pylist()
    for i in range(n):
        masks = [m for m in (core[i], spurious[i]) if m is not None] + features[i]
        yield ids[i], images[i], masks, view


def decode_rows(data: EvalData, offsets: np.ndarray, tables, view, with_images: bool, workers: int,
                progress: bool) -> None:
    jobs = (job for table in tables for job in _row_jobs(table, view, with_images))
    with tqdm(total=len(data), unit="row", desc="decode dataset (once per run)", disable=not progress) as bar, \
            ordered_map(_decode_row, workers) as imap:
        for row, (image_id, image, masks, error) in enumerate(imap(jobs)):
            if error is not None:
                raise EvaluationError(f"row {row} ({image_id}): cannot decode: {error}")
            if image is not None:
                data.images[row] = torch.from_numpy(image)
            if masks:
                data.masks[offsets[row]:offsets[row] + len(masks)] = torch.from_numpy(np.stack(masks))
            bar.update(1)


class _ImageNetView:
    def __init__(self, draft: bool):
        self.draft = draft

    def __call__(self, sample):
        try:
            return sample.image_id, view_uint8(sample.data, "original", self.draft), None
        except CorruptImage as e:
            return sample.image_id, None, str(e)


def read_imagenet(data: EvalData, path: str, split: str, kind: str | None, draft: bool, workers: int,
                  progress: bool) -> None:
    """Images of an --image-mode none build, read from the user's ImageNet copy by image_id: the copy is indexed
    by file name (or id column) first, then only the images the dataset names are read."""
    source = open_source(path, split, kind)
    rows: dict[str, list[int]] = {}
    for row, image_id in enumerate(data.image_ids):
        rows.setdefault(image_id, []).append(row)
    refs = source.index_ids(set(rows))
    missing = sorted(set(rows) - set(refs))
    if missing:
        raise EvaluationError(f"--imagenet {path} (split {split!r}): {len(missing)} of {len(rows)} image ids not "
                              f"found, e.g. {missing[:5]}")
    samples = (Sample(image_id, -1, data, refs[image_id]) for image_id, data in source.read_ids(refs))
    with tqdm(total=len(rows), unit="img", desc=f"read images from {path}", disable=not progress) as bar, \
            ordered_map(_ImageNetView(draft), workers) as imap:
        for image_id, view, error in imap(samples):
            if error is not None:
                raise EvaluationError(f"--imagenet {path}: {image_id}: {error}")
            for row in rows[image_id]:
                data.images[row] = torch.from_numpy(view)
            bar.update(1)
