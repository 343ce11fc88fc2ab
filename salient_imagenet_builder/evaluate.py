"""Evaluate classifiers on Salient ImageNet: core accuracy, spurious accuracy, relative core sensitivity (RCS) and a
single-feature sensitivity test (Singla & Feizi, ICLR 2022; RCS from "Core Risk Minimization using Salient ImageNet").

For class c (the rows' `group`): *spurious accuracy* = accuracy on the rows carrying a core feature of c, with noise
inside their `core_mask`; *core accuracy* = accuracy on the rows carrying a spurious feature of c, with noise inside
their `spurious_mask`; *clean accuracy* = the same rows without noise. Noise: x' = clamp(x + mask * N(0, sigma^2), 0, 1)
on the [0, 1] 224 view. Class-balanced = the mean over the classes that have such rows.

The stages, each small:
1. `load_eval_data`: the rows decoded once per run into uint8 tensors (224 views and every mask the run needs).
2. `plan_jobs`: which (row, mask) pairs get noise: core masks, spurious masks, and one job per (row, feature).
3. `unit_noise` / `add_noise`: z ~ N(0, 1) drawn per (seed, draw, image_id) with its own generator, so results depend
   neither on batch size nor on model order; an image's z is shared by all its masks within a draw (common random
   numbers: differences between conditions come from the masks, not from different noise).
4. `Preprocess` + `predict`: each model's own timm preprocessing on the noisy view; batched, `torch.inference_mode`,
   CUDA and AMP when present.
5. `class_metrics` / `pair_metrics`: per-class and class-balanced accuracies per draw, then mean and std over draws.
6. Writers: per-class CSV, per-(class, feature) CSV, summary.json, plots, the printed table.
"""

import argparse
import csv
import difflib
import hashlib
import json
import logging
import math
import platform
import re
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import timm
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import __version__
from .card import BUILD_INFO, read_build_info
from .constants import (
    CROP_SIZE, DEFAULT_DRAWS, DEFAULT_EVAL_BATCH_SIZE, DEFAULT_NOISE_STD, DEFAULT_RESULTS_DIR, DEFAULT_SEED,
    DEFAULT_TOP_PAIRS, EVAL_IN_MEMORY_BYTES, NUM_CLASSES,
)
from .images import CorruptImage, center_view, decode, to_uint8_tensor, to_unit_float
from .masks import decode_mask
from .model import CheckpointError, extract_state_dict, load_checkpoint, load_weights, pick_device, sha256_file
from .schema import class_names, wordnet_ids
from .sources import SourceError, open_source
from .stages import StageTimer, default_workers, ordered_map, synchronize

log = logging.getLogger(__name__)

# What a noisy job measures.
NOISE_ON_CORE, NOISE_ON_SPURIOUS, NOISE_ON_FEATURE = 0, 1, 2
REQUIRED_COLUMNS = ("image_id", "label", "group", "core_mask", "spurious_mask")
ROW_BATCH = 64  # dataset rows handed to the decoders at a time
INTERPOLATION = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest-exact"}


class EvaluationError(ValueError):
    pass


@dataclass
class EvalSettings:
    noise_std: float = DEFAULT_NOISE_STD
    draws: int = DEFAULT_DRAWS
    seed: int = DEFAULT_SEED
    batch_size: int = DEFAULT_EVAL_BATCH_SIZE
    device: str | None = None
    amp: bool = True  # float16 autocast on CUDA (never on CPU, where it is slower)
    single_feature: bool = True
    top_pairs: int = DEFAULT_TOP_PAIRS
    progress: bool = True

    def __post_init__(self):
        if not (self.noise_std >= 0 and math.isfinite(self.noise_std)):
            raise EvaluationError(f"--noise-std must be a finite number >= 0, got {self.noise_std}")
        if self.draws < 1 or self.batch_size < 1:
            raise EvaluationError(f"--draws and --batch-size must be >= 1, got {self.draws}, {self.batch_size}")


# --- 1. rows -> tensors, decoded once -----------------------------------------------------------------------------

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
    source: dict = field(default_factory=dict)  # dataset, split, rows, the build's provenance
    spill: object = None  # keeps the temporary folder of memory-mapped tensors alive

    def __len__(self) -> int:
        return len(self.image_ids)

    def to(self, device: torch.device) -> "EvalData":
        return replace(self, images=self.images.to(device), masks=self.masks.to(device))


def open_dataset(dataset: str, split: str):
    from datasets import load_dataset

    try:
        return load_dataset(dataset, split=split)
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
    images, masks, spill = allocate(n, int(counts.sum()))
    data = EvalData(
        image_ids=table.column("image_id").to_pylist(), labels=table.column("label").to_numpy().astype(np.int64),
        groups=groups, images=images, masks=masks,
        core_mask=np.where(has_core > 0, offsets, -1), spurious_mask=np.where(has_spurious > 0, offsets + has_core, -1),
        feature_row=feature_row, feature_pair=feature_pair,
        feature_mask=offsets[feature_row] + has_core[feature_row] + has_spurious[feature_row] + position,
        pairs=pairs, spill=spill,
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


def view_uint8(data: bytes, mode: str | None, draft: bool) -> np.ndarray:
    """The 224 view as CHW uint8: `crop` builds store it; `original` builds store the file (resize + crop it again,
    as the builder did); unknown mode: crop when the image is not already 224 x 224."""
    image = decode(data, draft=draft and mode != "crop")
    if mode == "original" or (mode is None and image.size != (CROP_SIZE, CROP_SIZE)):
        image = center_view(image)
    if image.size != (CROP_SIZE, CROP_SIZE):
        raise CorruptImage(f"image is {image.size}, expected the {CROP_SIZE} x {CROP_SIZE} view")
    return to_uint8_tensor(image).numpy()


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
    bar = tqdm(total=len(data), unit="row", desc="decode dataset (once per run)", disable=not progress)
    with ordered_map(_decode_row, workers) as imap:
        for row, (image_id, image, masks, error) in enumerate(imap(jobs)):
            if error is not None:
                raise EvaluationError(f"row {row} ({image_id}): cannot decode: {error}")
            if image is not None:
                data.images[row] = torch.from_numpy(image)
            if masks:
                data.masks[offsets[row]:offsets[row] + len(masks)] = torch.from_numpy(np.stack(masks))
            bar.update(1)
    bar.close()


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
    """Images of an --image-mode none build, read from the user's ImageNet copy by image_id."""
    source = open_source(path, split, kind)
    rows: dict[str, list[int]] = {}
    for row, image_id in enumerate(data.image_ids):
        rows.setdefault(image_id, []).append(row)
    found = set()
    samples = (s for s in source.samples(set(data.labels.tolist())) if s.image_id in rows)
    bar = tqdm(total=len(rows), unit="img", desc=f"read images from {path}", disable=not progress)
    with ordered_map(_ImageNetView(draft), workers) as imap:
        for image_id, view, error in imap(samples):
            if error is not None:
                raise EvaluationError(f"--imagenet {path}: {image_id}: {error}")
            for row in rows[image_id]:
                data.images[row] = torch.from_numpy(view)
            found.add(image_id)
            bar.update(1)
    bar.close()
    missing = sorted(set(rows) - found)
    if missing:
        raise EvaluationError(f"--imagenet {path} (split {split!r}): {len(missing)} of {len(rows)} image ids not "
                              f"found, e.g. {missing[:5]}")


# --- 2. jobs --------------------------------------------------------------------------------------------------------

@dataclass
class Jobs:
    """One noisy forward pass per entry: noise inside masks[mask] on images[row]."""
    row: np.ndarray
    mask: np.ndarray
    condition: np.ndarray  # NOISE_ON_CORE / NOISE_ON_SPURIOUS / NOISE_ON_FEATURE
    pair: np.ndarray  # index into data.pairs for NOISE_ON_FEATURE, else -1

    def __len__(self) -> int:
        return len(self.row)


def plan_jobs(data: EvalData, single_feature: bool = True) -> Jobs:
    """Core-mask jobs (spurious accuracy), spurious-mask jobs (core accuracy), then one job per (row, feature);
    ordered by row, so an image's masks share a batch and its noise is drawn once there."""
    core, spurious = np.flatnonzero(data.core_mask >= 0), np.flatnonzero(data.spurious_mask >= 0)
    parts = [(core, data.core_mask[core], NOISE_ON_CORE, np.full(len(core), -1)),
             (spurious, data.spurious_mask[spurious], NOISE_ON_SPURIOUS, np.full(len(spurious), -1))]
    if single_feature:
        parts.append((data.feature_row, data.feature_mask, NOISE_ON_FEATURE, data.feature_pair))
    rows, masks, conditions, pairs = zip(*parts)
    order = np.argsort(np.concatenate(rows), kind="stable")

    def joined(arrays):
        return np.concatenate(arrays).astype(np.int64)[order]

    return Jobs(joined(rows), joined(masks), joined([np.full(len(r), c) for r, c in zip(rows, conditions)]),
                joined(pairs))


# --- 3. noise -------------------------------------------------------------------------------------------------------

def row_seed(seed: int, draw: int, image_id: str) -> int:
    """The generator seed of one image in one draw: a hash, so it depends on nothing else (batch, order, model)."""
    digest = hashlib.blake2b(f"{seed}:{draw}:{image_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def unit_noise(image_ids: list[str], seed: int, draw: int, device: torch.device) -> torch.Tensor:
    """N(0, 1) noise [B, 3, 224, 224], one generator seeded per (seed, draw, image_id)."""
    generator = torch.Generator(device=device)
    out = torch.empty((len(image_ids), 3, CROP_SIZE, CROP_SIZE), device=device)
    for i, image_id in enumerate(image_ids):
        generator.manual_seed(row_seed(seed, draw, image_id))
        torch.randn(out.shape[1:], generator=generator, device=device, out=out[i])
    return out


def add_noise(x: torch.Tensor, masks: torch.Tensor, noise: torch.Tensor, noise_std: float) -> torch.Tensor:
    """x' = clamp(x + mask * sigma * z, 0, 1); x [B, 3, H, W] in [0, 1], masks [B, H, W] in [0, 1]."""
    return (x + masks[:, None] * (noise_std * noise)).clamp_(0, 1)


def noisy_batch(data: EvalData, rows: np.ndarray, masks: np.ndarray, noise_std: float, seed: int, draw: int,
                device: torch.device) -> torch.Tensor:
    """The [0, 1] views of `rows`, with noise inside masks[masks] (none where the mask index is -1)."""
    x = to_unit_float(data.images[torch.from_numpy(rows)].to(device, non_blocking=True))
    noisy = masks >= 0
    if noise_std == 0 or not noisy.any():
        return x
    unique, inverse = np.unique(rows, return_inverse=True)
    z = unit_noise([data.image_ids[r] for r in unique], seed, draw, device)[torch.from_numpy(inverse).to(device)]
    m = torch.zeros((len(rows), CROP_SIZE, CROP_SIZE), device=device)
    m[torch.from_numpy(noisy).to(device)] = data.masks[torch.from_numpy(masks[noisy])].to(device).float() / 255.0
    return add_noise(x, m, z, noise_std)


# --- 4. models ------------------------------------------------------------------------------------------------------

class Preprocess(nn.Module):
    """A model's own preprocessing of the [0, 1] 224 view: resize to its input size with its interpolation, then
    normalise with its mean / std (from `timm.data.resolve_data_config`)."""

    def __init__(self, data_config: dict):
        super().__init__()
        self.size = tuple(data_config["input_size"][-2:])
        interpolation = data_config.get("interpolation", "bilinear")
        self.mode = INTERPOLATION.get(interpolation, "bicubic")
        if interpolation not in INTERPOLATION:
            log.warning("interpolation %r not available on tensors; using bicubic", interpolation)
        self.register_buffer("mean", torch.tensor(data_config["mean"], dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(data_config["std"], dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            smooth = self.mode in ("bilinear", "bicubic")
            x = F.interpolate(x, size=self.size, mode=self.mode, antialias=smooth,
                              align_corners=False if smooth else None).clamp_(0, 1)
        return (x - self.mean) / self.std


@dataclass
class Classifier:
    label: str  # names the output folder and the table row
    module: nn.Module
    data_config: dict
    info: dict  # name, checkpoint, sha256


def check_model_name(name: str) -> None:
    if timm.is_model(name):
        return
    candidates = timm.list_models(pretrained=True) if "." in name else timm.list_models()
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    raise EvaluationError(f"--model {name!r}: timm does not know this model"
                          + (f"; close matches: {', '.join(close)}" if close else "")
                          + " (timm.list_models() lists them all)")


def checkpoint_normalization(ckpt) -> dict:
    """mean / std stored inside a robust-library checkpoint (its normaliser), if any."""
    state = ckpt.get("model", ckpt.get("state_dict", ckpt)) if isinstance(ckpt, dict) else {}
    keys = {"mean": "module.normalizer.new_mean", "std": "module.normalizer.new_std"}
    if not isinstance(state, dict) or not all(k in state for k in keys.values()):
        return {}
    return {name: tuple(state[key].flatten().float().tolist()) for name, key in keys.items()}


def load_classifier(name: str, checkpoint: str | None = None, label: str | None = None) -> Classifier:
    """A timm model: its pretrained weights (fetched by timm), or local weights loaded like the builder loads them
    (no pickled code runs; robust-library layout included). Preprocessing from timm's data config."""
    check_model_name(name)
    try:
        net = timm.create_model(name, pretrained=checkpoint is None)
    except Exception as e:
        raise EvaluationError(f"--model {name!r}: cannot create it{'' if checkpoint else ' with pretrained weights'}"
                              f": {type(e).__name__}: {e}") from None
    data_config = dict(timm.data.resolve_data_config({}, model=net))
    info = {"name": name, "checkpoint": checkpoint, "checkpoint_sha256": None}
    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint)
        load_weights(net, extract_state_dict(ckpt, checkpoint), checkpoint)
        data_config.update(checkpoint_normalization(ckpt))
        info["checkpoint_sha256"] = sha256_file(checkpoint)
    if net.num_classes != NUM_CLASSES:
        raise EvaluationError(f"--model {name!r} predicts {net.num_classes} classes, not the {NUM_CLASSES} "
                              "ImageNet classes")
    return Classifier(label or name, net.eval(), data_config, info)


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    model = model.eval().to(device)
    return model.to(memory_format=torch.channels_last) if device.type == "cuda" else model


def predict(model: nn.Module, preprocess: Preprocess, data: EvalData, rows: np.ndarray, masks: np.ndarray, *,
            noise_std: float, seed: int, draw: int, batch_size: int, device: torch.device, amp: bool,
            bar=None) -> np.ndarray:
    """argmax predictions for each (row, mask) job; mask -1 = no noise. Predictions stay on the device until the
    end, so a GPU never waits for the host between batches."""
    predictions = []
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            stop = min(start + batch_size, len(rows))
            x = preprocess(noisy_batch(data, rows[start:stop], masks[start:stop], noise_std, seed, draw, device))
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
                predictions.append(model(x).argmax(1))
            if bar is not None:
                bar.update(stop - start)
    return torch.cat(predictions).cpu().numpy() if predictions else np.zeros(0, dtype=np.int64)


# --- 5. metrics -----------------------------------------------------------------------------------------------------

def relative_core_sensitivity(core_acc, spurious_acc):
    """RCS = (core - spurious) / (2 min(a, 1 - a)), a = (core + spurious) / 2; 0 when a is 0 or 1; NaN if undefined."""
    core, spurious = np.asarray(core_acc, dtype=np.float64), np.asarray(spurious_acc, dtype=np.float64)
    a = (core + spurious) / 2
    denominator = 2 * np.minimum(a, 1 - a)
    with np.errstate(divide="ignore", invalid="ignore"):
        rcs = np.where(denominator > 0, np.clip((core - spurious) / denominator, -1, 1), 0.0)
    rcs = np.where(np.isnan(a), np.nan, rcs)
    return float(rcs) if rcs.ndim == 0 else rcs


def group_mean(keys: np.ndarray, values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(count, mean) of `values` per key in 0..size-1; mean NaN where a key has no value."""
    counts = np.bincount(keys, minlength=size)
    sums = np.bincount(keys, weights=values.astype(np.float64), minlength=size)
    with np.errstate(divide="ignore", invalid="ignore"):
        return counts, np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def balanced(values: np.ndarray, counts: np.ndarray):
    """Class-balanced mean over the classes with rows (last axis); NaN when none has."""
    chosen = values[..., counts > 0]
    return chosen.mean(-1) if chosen.shape[-1] else np.full(chosen.shape[:-1], np.nan)


def mean_std(per_draw) -> dict:
    """Mean and sample standard deviation (ddof 1; 0 for a single draw) over draws."""
    per_draw = np.asarray(per_draw, dtype=np.float64)
    std = per_draw.std(axis=0, ddof=1) if len(per_draw) > 1 else np.zeros(per_draw.shape[1:])
    return {"mean": per_draw.mean(axis=0), "std": std, "per_draw": per_draw}


def class_metrics(data: EvalData, jobs: Jobs, clean_correct: np.ndarray, noisy_correct: np.ndarray) -> dict:
    """Per class (arrays over the 1,000 classes; per draw where noise is involved)."""
    out = {}
    for name, mask_index, condition in (("core", data.core_mask, NOISE_ON_CORE),
                                        ("spurious", data.spurious_mask, NOISE_ON_SPURIOUS)):
        rows = mask_index >= 0
        out[f"{name}_images"], out[f"clean_acc_{name}_images"] = group_mean(
            data.groups[rows], clean_correct[rows], NUM_CLASSES)
        chosen = jobs.condition == condition
        keys = data.groups[jobs.row[chosen]]
        # noise on the core mask measures spurious accuracy, and the other way round
        accuracy = "spurious_acc" if name == "core" else "core_acc"
        out[accuracy] = np.stack([group_mean(keys, draw[chosen], NUM_CLASSES)[1] for draw in noisy_correct])
    out["rcs"] = relative_core_sensitivity(out["core_acc"], out["spurious_acc"])
    return out


def summarize_classes(per_class: dict) -> dict:
    core_counts, spurious_counts = per_class["core_images"], per_class["spurious_images"]
    core = balanced(per_class["core_acc"], spurious_counts)  # per draw
    spurious = balanced(per_class["spurious_acc"], core_counts)
    return {
        "classes_with_core_features": int((core_counts > 0).sum()),
        "classes_with_spurious_features": int((spurious_counts > 0).sum()),
        "core_feature_images": int(core_counts.sum()), "spurious_feature_images": int(spurious_counts.sum()),
        "clean_acc_core_images": balanced(per_class["clean_acc_core_images"], core_counts),
        "clean_acc_spurious_images": balanced(per_class["clean_acc_spurious_images"], spurious_counts),
        "core_acc": mean_std(core), "spurious_acc": mean_std(spurious),
        "rcs": mean_std(relative_core_sensitivity(core, spurious)),
    }


def pair_metrics(data: EvalData, jobs: Jobs, clean_correct: np.ndarray, noisy_correct: np.ndarray) -> dict:
    """Single-feature test: per (class, feature) pair, clean accuracy on its images, accuracy with noise on that
    feature's mask only, and the drop."""
    chosen = jobs.condition == NOISE_ON_FEATURE
    keys, size = jobs.pair[chosen], len(data.pairs)
    images, clean = group_mean(keys, clean_correct[jobs.row[chosen]], size)
    noisy = np.stack([group_mean(keys, draw[chosen], size)[1] for draw in noisy_correct])
    return {"images": images, "clean_acc": clean, "noisy_acc": noisy, "drop": clean[None] - noisy}


def summarize_pairs(pairs: Pairs, per_pair: dict) -> dict:
    """Mean drop over the pairs of each kind (per draw, then mean and std over draws)."""
    kinds = np.array(pairs.kind, dtype=object)
    by_kind = {}
    for kind in ("core", "spurious"):
        chosen = (kinds == kind) & (per_pair["images"] > 0)
        if chosen.any():
            by_kind[kind] = {"pairs": int(chosen.sum()), **mean_std(per_pair["drop"][:, chosen].mean(1))}
    return {"pairs": int((per_pair["images"] > 0).sum()), "mean_drop_by_kind": by_kind}


# --- the evaluation of one model ------------------------------------------------------------------------------------

@dataclass
class ModelResult:
    label: str
    per_class: dict  # class_metrics
    per_pair: dict | None  # pair_metrics (None without the single-feature test)
    metrics: dict  # class-balanced summary (+ single-feature summary)
    throughput: dict
    jobs: Jobs
    clean_predictions: np.ndarray  # [N]
    noisy_predictions: np.ndarray  # [draws, len(jobs)]


def evaluate_model(data: EvalData, model: nn.Module, data_config: dict, settings: EvalSettings | None = None,
                   label: str = "model") -> ModelResult:
    """Evaluate one classifier (any nn.Module mapping normalised images to logits, plus its timm data config)."""
    settings = settings or EvalSettings()
    device = pick_device(settings.device)
    model, preprocess = prepare_model(model, device), Preprocess(data_config).to(device)
    data = place(data, device)
    jobs = plan_jobs(data, settings.single_feature)
    bar = tqdm(total=len(data) + settings.draws * len(jobs), unit="img", desc=f"evaluate {label}",
               disable=not settings.progress)
    run = dict(batch_size=settings.batch_size, device=device, amp=settings.amp, bar=bar, seed=settings.seed)
    start = time.perf_counter()
    clean = predict(model, preprocess, data, np.arange(len(data)), np.full(len(data), -1), noise_std=0.0, draw=0,
                    **run)
    noisy = np.stack([predict(model, preprocess, data, jobs.row, jobs.mask, noise_std=settings.noise_std, draw=d,
                              **run) for d in range(settings.draws)]).reshape(settings.draws, len(jobs))
    synchronize(device)
    seconds = time.perf_counter() - start
    bar.close()
    return reduce_result(label, data, jobs, clean, noisy, seconds)


def reduce_result(label: str, data: EvalData, jobs: Jobs, clean: np.ndarray, noisy: np.ndarray,
                  seconds: float) -> ModelResult:
    clean_correct, noisy_correct = clean == data.labels, noisy == data.labels[jobs.row][None]
    per_class = class_metrics(data, jobs, clean_correct, noisy_correct)
    metrics = {"images": len(data), **summarize_classes(per_class)}
    per_pair = None
    if (jobs.condition == NOISE_ON_FEATURE).any():
        per_pair = pair_metrics(data, jobs, clean_correct, noisy_correct)
        metrics["single_feature"] = summarize_pairs(data.pairs, per_pair)
    evaluated = int(clean.size + noisy.size)
    throughput = {"images_evaluated": evaluated, "draws": len(noisy), "seconds": round(seconds, 3),
                  "images_per_second": round(evaluated / max(seconds, 1e-9), 2)}
    return ModelResult(label, per_class, per_pair, metrics, throughput, jobs, clean, noisy)


def place(data: EvalData, device: torch.device) -> EvalData:
    """Keep the decoded rows on the GPU when they fit comfortably (no copy per batch); else batches are copied."""
    if device.type != "cuda" or data.images.device.type == "cuda":
        return data
    free, _ = torch.cuda.mem_get_info(device)
    return data.to(device) if data.images.nbytes + data.masks.nbytes < 0.4 * free else data


# --- 6. outputs -----------------------------------------------------------------------------------------------------

CLASS_COLUMNS = ["class", "wordnet_id", "class_name", "core_feature_images", "spurious_feature_images",
                 "clean_acc_core_images", "spurious_acc", "spurious_acc_std", "clean_acc_spurious_images", "core_acc",
                 "core_acc_std", "rcs", "rcs_std"]
PAIR_COLUMNS = ["class", "wordnet_id", "class_name", "feature_index", "feature_rank", "kind", "images", "clean_acc",
                "noisy_acc", "noisy_acc_std", "drop", "drop_std"]


def class_rows(per_class: dict) -> list[dict]:
    names, wnids = class_names(), wordnet_ids()
    stats = {k: mean_std(per_class[k]) for k in ("core_acc", "spurious_acc", "rcs")}
    rows = []
    for c in np.flatnonzero((per_class["core_images"] > 0) | (per_class["spurious_images"] > 0)):
        row = {"class": int(c), "wordnet_id": wnids[c], "class_name": names[c],
               "core_feature_images": int(per_class["core_images"][c]),
               "spurious_feature_images": int(per_class["spurious_images"][c])}
        row["clean_acc_core_images"] = per_class["clean_acc_core_images"][c]
        row["clean_acc_spurious_images"] = per_class["clean_acc_spurious_images"][c]
        for k, s in stats.items():
            row[k], row[f"{k}_std"] = s["mean"][c], s["std"][c]
        rows.append(row)
    return rows


def pair_rows(pairs: Pairs, per_pair: dict) -> list[dict]:
    """One row per (class, feature) pair, the most harmful noise first."""
    names, wnids = class_names(), wordnet_ids()
    noisy, drop = mean_std(per_pair["noisy_acc"]), mean_std(per_pair["drop"])
    rows = []
    for p in np.flatnonzero(per_pair["images"] > 0):
        c = int(pairs.group[p])
        rows.append({"class": c, "wordnet_id": wnids[c], "class_name": names[c],
                     "feature_index": int(pairs.feature_index[p]), "feature_rank": int(pairs.feature_rank[p]),
                     "kind": pairs.kind[p], "images": int(per_pair["images"][p]),
                     "clean_acc": per_pair["clean_acc"][p], "noisy_acc": noisy["mean"][p],
                     "noisy_acc_std": noisy["std"][p], "drop": drop["mean"][p], "drop_std": drop["std"][p]})
    return sorted(rows, key=lambda r: (-r["drop"], -r["images"], r["class"], r["feature_index"]))


def _plain(value):
    """JSON/CSV-ready: numpy -> Python, NaN -> None, floats rounded to 6 digits."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else round(float(value), 6)
    return value


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in _plain(row).items()})


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(_plain(value), indent=2) + "\n", encoding="utf-8")


def _figure(width: float, height: float, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(1, ncols)


def plot_core_vs_spurious(path: Path, result: ModelResult) -> None:
    """Per class: core accuracy (noise on spurious features) against spurious accuracy (noise on core features)."""
    core, spurious = mean_std(result.per_class["core_acc"])["mean"], mean_std(result.per_class["spurious_acc"])["mean"]
    both = ~np.isnan(core) & ~np.isnan(spurious)
    figure, ax = _figure(5.5, 5.5)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="core = spurious")
    ax.scatter(spurious[both], core[both], s=18, alpha=0.7, label=f"{int(both.sum())} classes")
    m = result.metrics
    ax.set(xlim=(-0.03, 1.03), ylim=(-0.03, 1.03), xlabel="spurious accuracy (noise on core features)",
           ylabel="core accuracy (noise on spurious features)",
           title=f"{result.label}\ncore {m['core_acc']['mean']:.3f}, spurious {m['spurious_acc']['mean']:.3f}, "
                 f"RCS {m['rcs']['mean']:.3f} (class-balanced)")
    ax.legend(loc="lower right")
    figure.savefig(path, dpi=120)


def plot_feature_drops(path: Path, rows: list[dict], label: str, top: int) -> None:
    """The (class, feature) pairs whose noise hurts most, coloured by kind."""
    rows = rows[:top][::-1]
    figure, ax = _figure(8, 1.2 + 0.35 * max(len(rows), 1))
    colours = {"core": "tab:blue", "spurious": "tab:red"}
    ax.barh(range(len(rows)), [r["drop"] for r in rows], xerr=[r["drop_std"] for r in rows],
            color=[colours.get(r["kind"], "grey") for r in rows])
    ax.set_yticks(range(len(rows)), [f"{r['class_name'][:28]} / #{r['feature_index']} ({r['kind']})" for r in rows],
                  fontsize=8)
    ax.set(xlabel="accuracy drop with noise on this feature only", title=f"{label}: most harmful single features")
    figure.savefig(path, dpi=120)


def plot_comparison(path: Path, results: list[ModelResult]) -> None:
    """Clean / noisy accuracies (mean and std over draws) and RCS, one group of bars per model."""
    figure, (ax, ax_rcs) = _figure(3 + 2.2 * len(results), 4.5, ncols=2)
    bars = [("clean, core-feature images", "clean_acc_core_images", "#9ecae1"),
            ("spurious acc (noise on core)", "spurious_acc", "#de2d26"),
            ("clean, spurious-feature images", "clean_acc_spurious_images", "#c6dbef"),
            ("core acc (noise on spurious)", "core_acc", "#3182bd")]
    x, width = np.arange(len(results)), 0.8 / len(bars)
    for i, (name, key, colour) in enumerate(bars):
        values = [r.metrics[key] for r in results]
        means = [v["mean"] if isinstance(v, dict) else v for v in values]
        errors = [v["std"] if isinstance(v, dict) else 0 for v in values]
        ax.bar(x + (i - 1.5) * width, means, width, yerr=errors, label=name, color=colour)
    ax.set_xticks(x, [r.label for r in results], rotation=15, ha="right")
    ax.set(ylim=(0, 1.45), yticks=np.linspace(0, 1, 6), ylabel="class-balanced accuracy", title="accuracy")
    ax.legend(fontsize=6, loc="upper left")  # in the headroom above 1
    ax_rcs.bar(x, [r.metrics["rcs"]["mean"] for r in results], yerr=[r.metrics["rcs"]["std"] for r in results])
    ax_rcs.axhline(0, color="grey", linewidth=1)
    ax_rcs.set_xticks(x, [r.label for r in results], rotation=15, ha="right")
    ax_rcs.set(ylim=(-1, 1), ylabel="relative core sensitivity", title="RCS")
    figure.savefig(path, dpi=120)


def write_model_outputs(folder: Path, result: ModelResult, summary: dict, pairs: Pairs, top_pairs: int) -> None:
    """classes.csv, features.csv, summary.json and the model's plots in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(folder / "classes.csv", class_rows(result.per_class), CLASS_COLUMNS)
    plot_core_vs_spurious(folder / "core_vs_spurious.png", result)
    if result.per_pair is not None:
        rows = pair_rows(pairs, result.per_pair)
        write_csv(folder / "features.csv", rows, PAIR_COLUMNS)
        plot_feature_drops(folder / "feature_drops.png", rows, result.label, top_pairs)
        summary["metrics"]["single_feature"]["most_harmful"] = rows[:top_pairs]
    write_json(folder / "summary.json", summary)


def write_comparison(folder: Path, results: list[ModelResult]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [table_row(r) for r in results]
    write_csv(folder / "comparison.csv", rows, list(rows[0]))
    plot_comparison(folder / "comparison.png", results)


def table_row(result: ModelResult) -> dict:
    m = result.metrics
    return {"model": result.label, "clean_acc_core_images": m["clean_acc_core_images"],
            "spurious_acc": m["spurious_acc"]["mean"], "spurious_acc_std": m["spurious_acc"]["std"],
            "clean_acc_spurious_images": m["clean_acc_spurious_images"], "core_acc": m["core_acc"]["mean"],
            "core_acc_std": m["core_acc"]["std"], "rcs": m["rcs"]["mean"], "rcs_std": m["rcs"]["std"],
            "images_per_second": result.throughput["images_per_second"]}


def format_table(results: list[ModelResult]) -> str:
    def pm(mean, std):
        return "n/a" if mean is None or np.isnan(mean) else f"{mean:.3f} ± {std:.3f}"

    def num(value):
        return "n/a" if value is None or np.isnan(value) else f"{value:.3f}"

    header = ["model", "clean (core imgs)", "spurious acc", "clean (spur. imgs)", "core acc", "RCS", "img/s"]
    lines = [[r["model"], num(r["clean_acc_core_images"]), pm(r["spurious_acc"], r["spurious_acc_std"]),
              num(r["clean_acc_spurious_images"]), pm(r["core_acc"], r["core_acc_std"]), pm(r["rcs"], r["rcs_std"]),
              f"{r['images_per_second']:.1f}"] for r in map(table_row, results)]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in [header, *lines])


def format_top_pairs(result: ModelResult, pairs: Pairs, top: int) -> str:
    if result.per_pair is None:
        return ""
    rows = pair_rows(pairs, result.per_pair)[:top]
    lines = [f"  drop {r['drop']:+.3f} ± {r['drop_std']:.3f}  {r['kind']:<8}  class {r['class']} "
             f"({r['class_name'][:30]}), feature {r['feature_index']}, {r['images']} images" for r in rows]
    return f"{result.label}: noise on one feature that hurts most\n" + "\n".join(lines)


# --- command line ---------------------------------------------------------------------------------------------------

def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def add_arguments(parser) -> None:
    from .cli import positive_int

    parser.add_argument("--dataset", required=True, help="built Salient ImageNet folder, or a Hub dataset repo id")
    parser.add_argument("--split", default="train", help="dataset split (default: train)")
    parser.add_argument("--model", action="append", required=True,
                        help="timm model name, e.g. resnet50.a1_in1k (repeat to compare several models)")
    parser.add_argument("--checkpoint", action="append",
                        help="local weights for the --model at the same position (repeat once per --model)")
    parser.add_argument("--imagenet", help="ImageNet copy (folder, parquet or WebDataset, path or Hub id) supplying "
                                           "the images of an --image-mode none build by image_id")
    parser.add_argument("--imagenet-type", choices=("folder", "parquet", "webdataset"),
                        help="layout of --imagenet when auto-detection cannot tell")
    parser.add_argument("--noise-std", type=_non_negative_float, default=DEFAULT_NOISE_STD,
                        help=f"Gaussian noise standard deviation on [0, 1] pixels (default: {DEFAULT_NOISE_STD})")
    parser.add_argument("--draws", type=positive_int, default=DEFAULT_DRAWS,
                        help=f"seeded noise draws, reported as mean and std (default: {DEFAULT_DRAWS})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"noise seed (default: {DEFAULT_SEED})")
    parser.add_argument("--batch-size", type=positive_int, default=DEFAULT_EVAL_BATCH_SIZE)
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-amp", action="store_true", help="no float16 autocast on CUDA")
    parser.add_argument("--no-single-feature", action="store_true",
                        help="skip the single-feature test (noise on one (class, feature) mask at a time)")
    parser.add_argument("--top-pairs", type=positive_int, default=DEFAULT_TOP_PAIRS,
                        help=f"most harmful (class, feature) pairs to list and plot (default: {DEFAULT_TOP_PAIRS})")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (0: decode in-process)")
    parser.add_argument("--out", default=DEFAULT_RESULTS_DIR,
                        help=f"results folder: <out>/<model>/ per model, comparison in <out> "
                             f"(default: {DEFAULT_RESULTS_DIR})")
    parser.add_argument("-v", "--verbose", action="store_true")


def model_specs(models: list[str], checkpoints: list[str] | None) -> list[tuple[str, str | None, str]]:
    """(name, checkpoint, label) per model, checked before the dataset is decoded."""
    checkpoints = checkpoints or [None] * len(models)
    if len(checkpoints) != len(models):
        raise EvaluationError(f"{len(checkpoints)} --checkpoint for {len(models)} --model: give one per model "
                              "(in the same order) or none")
    specs, labels = [], set()
    for name, checkpoint in zip(models, checkpoints):
        check_model_name(name)
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise EvaluationError(f"--checkpoint {checkpoint}: no such file")
        label = re.sub(r"[^\w.+-]+", "_", name if checkpoint is None else f"{name}-{Path(checkpoint).stem}")
        while label in labels:
            label += "_"
        labels.add(label)
        specs.append((name, checkpoint, label))
    return specs


def settings_from_args(args) -> EvalSettings:
    return EvalSettings(noise_std=args.noise_std, draws=args.draws, seed=args.seed, batch_size=args.batch_size,
                        device=args.device, amp=not args.no_amp, single_feature=not args.no_single_feature,
                        top_pairs=args.top_pairs)


def run(args) -> int:
    try:
        return _run(args)
    except (EvaluationError, CheckpointError, SourceError) as e:
        log.error("%s", e)
        return 2


def _run(args) -> int:
    specs = model_specs(args.model, args.checkpoint)
    settings = settings_from_args(args)
    timer, out = StageTimer(), Path(args.out)
    with timer("decode dataset"):
        data = load_eval_data(args.dataset, args.split, args.imagenet, args.imagenet_type,
                              default_workers() if args.workers is None else args.workers, settings.single_feature)
    data = place(data, pick_device(settings.device))
    results = []
    for name, checkpoint, label in specs:
        with timer(f"load {label}"):
            classifier = load_classifier(name, checkpoint, label)
        with timer(f"evaluate {label}"):
            result = evaluate_model(data, classifier.module, classifier.data_config, settings, label)
        summary = make_summary(result, classifier, settings, data, args, timer)
        write_model_outputs(out / label, result, summary, data.pairs, settings.top_pairs)
        results.append(result)
        del classifier
    write_comparison(out, results)
    print("\n" + format_table(results))
    for result in results:
        print("\n" + format_top_pairs(result, data.pairs, min(5, settings.top_pairs)))
    print(f"\nResults in {out}/ ({', '.join(r.label for r in results)}; comparison.csv, comparison.png)")
    return 0


def make_summary(result: ModelResult, classifier: Classifier, settings: EvalSettings, data: EvalData, args,
                 timer: StageTimer) -> dict:
    device = pick_device(settings.device)
    return {
        "model": {"label": result.label, **classifier.info, "data_config": classifier.data_config},
        "settings": {
            "noise_std": settings.noise_std, "draws": settings.draws, "seed": settings.seed,
            "batch_size": settings.batch_size, "device": str(device), "amp": settings.amp and device.type == "cuda",
            "single_feature": settings.single_feature, "arguments": vars(args),
            "noise": "x' = clamp(x + mask * sigma * z, 0, 1), z ~ N(0, 1) seeded per (seed, draw, image_id)",
            "std": "sample standard deviation over draws (ddof 1; 0 for one draw)",
            "package_version": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "timm": timm.__version__,
        },
        "dataset": data.source,
        "metrics": result.metrics,
        "throughput": result.throughput,
        "stage_seconds": timer.report(),
    }
