"""Train with the masks: the `default` config as torch tensors, and core-risk noise (Singla & Feizi's follow-up,
"Core Risk Minimization using Salient ImageNet": Gaussian noise outside the core region, or inside the spurious one).

    ds = load_dataset("you/salient-imagenet", split="train")
    ds.set_transform(torch_transform, columns=torch_transform.columns)  # no other column decoded
    for batch in DataLoader(ds, batch_size=64, num_workers=8, shuffle=True):  # image [B,3,224,224], label [B],
        # core_mask / spurious_mask [B,1,224,224]
        x = core_noise(batch["image"].cuda(), batch["core_mask"].cuda(), std=0.25)

`prepare(ds)` does the same on the rows' Arrow columns: faster (`datasets` decodes nothing; the transform decodes
only what it returns, the crop PNGs without Pillow), and for `--image-mode original` builds it cuts the exact view
the model saw; `dtype=torch.uint8` keeps images as bytes, to divide by 255 on the GPU. The raw maps
(`features[].nam`, fixed-shape float32 arrays) become masks on any device with `masks_from_maps`, the same bilinear
upsampling as the stored PNGs, so a loop need not decode PNG masks at all. The fastest path decodes one PNG per row:

    ds = prepare(load_dataset("you/salient-imagenet", split="train"), masks="maps")
    for batch in loader(ds, batch_size=64, num_workers=8):     # whole batches, no re-stacking collate
        core = combined_masks(batch["core_maps"].cuda())         # [B, 1, 224, 224], the stored core_mask +- 1/255

A library module, like `datasets`' formatters: nothing here changes process-wide state.
"""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from .core.compat import shared_storage
from .core.constants import CROP_SIZE, FEATURES_PER_CLASS, MAP_SHAPE
from .core.images import center_view, to_rgb, view_hwc
from .core.masks import add_noise, decode_mask_uint8, map_shape_of, normalized_maps, upsample

__all__ = ["TrainingRows", "TrainingTransform", "combined_masks", "core_noise", "loader", "make_transform",
           "masks_from_maps", "prepare", "spurious_noise", "torch_transform"]

MASK_COLUMNS = ("core_mask", "spurious_mask")
MASK_SOURCES = ("png", "maps")  # the stored core/spurious PNGs, or the raw maps they were made from


class TrainingTransform:
    """A `set_transform` function for the `default` config: a batch (dict of columns) -> float tensors
    `image` [B, 3, 224, 224] and `core_mask` / `spurious_mask` [B, 1, 224, 224] in [0, 1], `label` [B] (int64).
    A missing mask (no core, or no spurious, feature listed for the row) is all zeros. `dtype`: the images' and
    masks' (a floating type: values in [0, 1]; torch.uint8: 0-255, a quarter of the bytes to move).

    `features`: also `nams` (one float32 [F, H, W] tensor per row: its features' raw maps, in `features` order) and
    `feature_index` / `feature_kind` (per row); the per-feature PNG masks are never decoded.
    `image_mode`: the build's (`crop`, `original`; None: a 224 x 224 image is the view, anything else is cut as the
    builder cut it); `draft`: the build's JPEG draft decoding (on unless it was built with `--no-draft`).

    A batch arrives decoded (PIL cells, from a plain `set_transform`) or as the Arrow table of its rows (`prepare`:
    nothing decoded but what is returned, the raw maps read without a copy). An original file that `datasets`
    decoded is cut from its full-size decoding, while the builder (unless `--no-draft`) decoded JPEGs at a reduced
    scale: the views differ slightly; `prepare` gives the exact one.
    A plain object: picklable, so DataLoader workers get their own copy."""

    def __init__(self, features: bool = False, image_mode: str | None = None, draft: bool = True, masks: str = "png",
                 dtype: torch.dtype = torch.float32):
        if masks not in MASK_SOURCES:
            raise ValueError(f"masks must be one of {MASK_SOURCES}, got {masks!r}")
        if not (dtype.is_floating_point or dtype == torch.uint8):
            raise ValueError(f"dtype must be a floating type (values in [0, 1]) or torch.uint8 (0-255), got {dtype}")
        self.features, self.image_mode, self.draft, self.masks, self.dtype = features, image_mode, draft, masks, dtype

    @property
    def columns(self) -> list[str]:
        """The columns it reads (`set_transform(..., columns=...)`): no other is decoded."""
        masks = list(MASK_COLUMNS) if self.masks == "png" else []
        return ["image", *masks, "label", *(["features"] if self.features or self.masks == "maps" else [])]

    def __call__(self, batch: dict | pa.Table) -> dict:
        out = {"image": self._images(_cells(batch, "image"))}
        for column in MASK_COLUMNS if self.masks == "png" else ():
            out[column] = _masks(_cells(batch, column), self.dtype)
        labels = batch.column("label").to_numpy() if isinstance(batch, pa.Table) else batch["label"]
        out["label"] = torch.from_numpy(np.array(labels, dtype=np.int64))  # its own copy: Arrow's is read-only
        if "features" in self.columns:
            features = (FeatureColumns.from_arrow(batch.column("features")) if isinstance(batch, pa.Table)
                        else FeatureColumns.from_rows(batch["features"]))
            if self.masks == "maps":  # no PNG decoded: `combined_masks` makes the masks where the batch goes
                out["core_maps"], out["spurious_maps"] = features.kind_maps("core"), features.kind_maps("spurious")
            if self.features:
                out.update(features.per_row())
        return out

    def _images(self, cells: list) -> torch.Tensor:
        """The rows' 224 views as [B, 3, 224, 224] in `dtype` (/ 255 unless uint8), converted row by row into the
        batch (while each row's pixels are still in the cache: converting a whole uint8 batch costs several times
        more)."""
        out = _new_batch((len(cells), 3, CROP_SIZE, CROP_SIZE), self.dtype)
        for row, cell in zip(out, cells):
            _unit(row.copy_(torch.from_numpy(self._view(cell)).permute(2, 0, 1)))
        return out

    def _view(self, cell) -> np.ndarray:
        """The model's 224 view as HWC uint8."""
        if cell is None:
            raise ValueError("a row has no image (a masks-only build, --image-mode none): join your own ImageNet "
                             "by image_id first")
        if isinstance(cell, (bytes, dict)):
            return view_hwc(cell["bytes"] if isinstance(cell, dict) else cell, self.image_mode, self.draft)
        image = to_rgb(cell)
        if self.image_mode == "original" or (self.image_mode is None and image.size != (CROP_SIZE, CROP_SIZE)):
            image = center_view(image)
        return np.array(image, dtype=np.uint8)


def _cells(batch: dict | pa.Table, column: str) -> list:
    """An image column's cells: as `datasets` gave them, or, from an Arrow batch, their bytes (None: no image)."""
    if isinstance(batch, pa.Table):
        return [data for chunk in batch.column(column).chunks for data in chunk.field("bytes").to_pylist()]
    return batch[column]


def _masks(cells: list, dtype: torch.dtype) -> torch.Tensor:
    """Stored masks as [B, 1, 224, 224] in `dtype` (/ 255 unless uint8); none stored: zeros."""
    out = _new_batch((len(cells), 1, CROP_SIZE, CROP_SIZE), dtype)
    for row, cell in zip(out, cells):
        if cell is None:
            row.zero_()
        else:
            _unit(row[0].copy_(torch.from_numpy(_mask(cell))))
    return out


def _unit(pixels: torch.Tensor) -> None:
    """0-255 values in place -> [0, 1], unless kept as uint8."""
    if pixels.dtype.is_floating_point:
        pixels.div_(255)


def _new_batch(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised batch. In a DataLoader worker, in shared memory, where it has to go (as torch's default
    collate does): sent as it is, not copied there (copying into fresh shared pages costs ~0.6 ms a float row).
    Elsewhere from numpy's allocator, which asks the kernel for transparent huge pages on large blocks: first
    writes to a fresh float batch cost ~0.1 ms a row, against ~0.4 ms in torch.empty's 4 kB pages."""
    from torch.utils.data import get_worker_info

    nbytes = int(np.prod(shape)) * dtype.itemsize
    if get_worker_info() is None:
        return torch.from_numpy(np.empty(nbytes, dtype=np.uint8)).view(dtype).view(shape)
    return torch.empty(0, dtype=dtype).set_(shared_storage(nbytes), 0, shape)


def _mask(cell) -> np.ndarray:
    """A stored mask (PNG bytes, `{"bytes": ...}` or PIL) as uint8 [224, 224]."""
    if isinstance(cell, (bytes, dict)):
        return decode_mask_uint8(cell["bytes"] if isinstance(cell, dict) else cell)
    return np.array(cell if cell.mode == "L" else cell.convert("L"), dtype=np.uint8)


class FeatureColumns:
    """A batch's `features` lists, flat: the raw maps float32 [N, H, W], `feature_index` [N] and kinds [N] of all its
    features in row order, and `offsets` [B + 1] (row i's are offsets[i]:offsets[i + 1])."""

    def __init__(self, offsets: np.ndarray, nams: np.ndarray, index: np.ndarray, kinds: np.ndarray):
        self.offsets, self.nams, self.index, self.kinds = offsets, nams, index, kinds

    @classmethod
    def from_rows(cls, rows: list[list[dict]]) -> "FeatureColumns":
        """From python rows (`set_transform`)."""
        flat = [f for row in rows for f in row]
        shape = np.shape(flat[0]["nam"]) if flat else MAP_SHAPE
        shape = map_shape_of(shape[0]) if len(shape) == 1 else shape  # this version's flat maps
        return cls(np.cumsum([0, *map(len, rows)]),
                   np.array([f["nam"] for f in flat], dtype=np.float32).reshape(len(flat), *shape),
                   np.array([f["feature_index"] for f in flat], dtype=np.int64),
                   np.array([f["kind"] for f in flat], dtype=object))

    @classmethod
    def from_arrow(cls, column: pa.ChunkedArray) -> "FeatureColumns":
        """From the Arrow column (`prepare`): the maps' float32 values are read in place, no Python object made per
        value. Every layout alike: this version's flat fixed-size lists (square maps), older builds' Array2D (its
        storage) and nested lists (lists of H lists of W floats)."""
        lists = pa.concat_arrays(column.chunks) if column.num_chunks != 1 else column.chunk(0)
        flat = lists.flatten()  # the struct of every feature of the batch, in row order
        rows = flat.field("nam")
        rows = rows.storage if isinstance(rows, pa.ExtensionArray) else rows
        if rows.null_count:
            raise ValueError("a feature has no raw map (nam): not a build of this tool?")
        values = rows.flatten()
        if not len(rows):
            shape = MAP_SHAPE
        elif pa.types.is_floating(values.type):  # flat maps
            shape = map_shape_of(pc.list_value_length(rows)[0].as_py())
        else:
            shape = (pc.list_value_length(rows)[0].as_py(), pc.list_value_length(values)[0].as_py())
            values = values.flatten()
        offsets = lists.offsets.to_numpy()
        return cls(offsets - offsets[0],
                   values.to_numpy(zero_copy_only=False).reshape(len(rows), *shape),
                   flat.field("feature_index").to_numpy(zero_copy_only=False).astype(np.int64),
                   np.array(flat.field("kind").to_pylist(), dtype=object))

    def kind_maps(self, kind: str) -> torch.Tensor:
        """The raw maps of each row's features of `kind`, zero-padded: float32 [B, K, H, W], K = 5 (more if a row
        has more). A zero map makes a zero mask, so padding never changes the maximum `combined_masks` takes."""
        chosen = np.flatnonzero(self.kinds == kind)
        rows = np.searchsorted(self.offsets, chosen, side="right") - 1
        slots = np.arange(len(chosen)) - np.searchsorted(rows, rows)  # position among the row's features of `kind`
        width = max(FEATURES_PER_CLASS, int(slots.max(initial=-1)) + 1)
        out = np.zeros((len(self.offsets) - 1, width, *self.nams.shape[1:]), dtype=np.float32)
        out[rows, slots] = self.nams[chosen]
        return torch.from_numpy(out)

    def per_row(self) -> dict:
        """`nams` (float32 [F, H, W]), `feature_index` (int64 [F]) and `feature_kind` (F strings), a list per row."""
        spans = list(zip(self.offsets[:-1], self.offsets[1:]))
        return {"nams": [torch.from_numpy(self.nams[a:b].copy()) for a, b in spans],
                "feature_index": [torch.from_numpy(self.index[a:b].copy()) for a, b in spans],
                "feature_kind": [list(self.kinds[a:b]) for a, b in spans]}


def make_transform(features: bool = False, image_mode: str | None = None, draft: bool = True,
                   masks: str = "png", dtype: torch.dtype = torch.float32) -> TrainingTransform:
    """`masks="maps"`: `core_maps` / `spurious_maps` [K, H, W] per row instead of the two mask PNGs decoded; turn
    them into the stored masks on the GPU with `combined_masks`. `dtype=torch.uint8`: images (and PNG masks) as
    0-255, a quarter of the bytes for workers to send; divide by 255 on the GPU."""
    return TrainingTransform(features, image_mode, draft, masks, dtype)


torch_transform = TrainingTransform()


class TrainingRows:
    """`prepare`'s dataset for torch: `rows[i]` is one row's tensors, `rows[indices]` (a list or a slice) a batch's,
    and `__getitems__` serves a DataLoader's batch as rows for its collate. Each fetch takes the rows' Arrow table
    from `dataset` (nothing decoded by `datasets`) and hands it to the transform. Picklable."""

    def __init__(self, dataset, transform: TrainingTransform):
        from datasets import Dataset

        if not isinstance(dataset, Dataset):
            raise TypeError(f"prepare takes one split of the dataset, a datasets.Dataset (load_dataset(..., "
                            f"split=\"train\"), without streaming=True); got {type(dataset).__name__}")
        self.dataset, self.transform = dataset, transform
        self._arrow = dataset.with_format("arrow", columns=transform.columns)

    def __len__(self) -> int:
        return len(self._arrow)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return _split(self.transform(self._arrow[int(key)]))[0]
        return self.transform(self._arrow[key])

    def __getitems__(self, indices: list[int]) -> list[dict]:
        return _split(self.transform(self._arrow[list(indices)]))


def _split(batch: dict) -> list[dict]:
    """A batch -> its rows (tensors indexed, lists picked)."""
    return [{key: value[i] for key, value in batch.items()} for i in range(len(batch["label"]))]


def prepare(dataset, features: bool = False, image_mode: str | None = None, draft: bool = True,
            masks: str = "png", dtype: torch.dtype = torch.float32) -> TrainingRows:
    """`dataset` (the `default` config, a `datasets.Dataset`) as `TrainingRows`: the training transform on the rows'
    Arrow columns, so `datasets` decodes nothing and the transform only what it returns. `dataset` is left as it
    was."""
    return TrainingRows(dataset, make_transform(features, image_mode, draft, masks, dtype))


def masks_from_maps(maps: torch.Tensor, size: int = CROP_SIZE) -> torch.Tensor:
    """Raw maps (..., H, W) -> soft masks (..., size, size) in [0, 1] on the maps' device: each map divided by its
    maximum, then bilinear upsampling, the builder's own two steps (`core.masks`), so the stored PNG masks are these
    rounded to 1/255. Stored maps are already max-normalised (dividing again changes nothing)."""
    flat = maps.reshape(-1, *maps.shape[-2:])
    return upsample(normalized_maps(flat.float()), size).reshape(*maps.shape[:-2], size, size)


def combined_masks(kind_maps: torch.Tensor, size: int = CROP_SIZE) -> torch.Tensor:
    """`core_maps` / `spurious_maps` [B, K, H, W] -> the row's mask [B, 1, size, size] as the build stores it: the
    pixelwise maximum of its features' masks (`masks_from_maps`), on the maps' device; zeros without a feature."""
    if kind_maps.shape[1] == 0:
        return kind_maps.new_zeros((kind_maps.shape[0], 1, size, size))
    return masks_from_maps(kind_maps, size).amax(dim=1, keepdim=True)


def loader(dataset, batch_size: int, shuffle: bool = True, drop_last: bool = False, generator=None, **kwargs):
    """A DataLoader that fetches whole batches (`dataset[indices]`: the transform runs once per batch and its tensors
    are passed on as they are, not split into rows and stacked again by the default collate). `kwargs` go to
    `torch.utils.data.DataLoader` (num_workers, pin_memory, persistent_workers, ...)."""
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

    order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, batch_size=None, sampler=BatchSampler(order, batch_size, drop_last), **kwargs)


def core_noise(images: torch.Tensor, core_masks: torch.Tensor, std: float,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """clamp(x + std * eps * (1 - m), 0, 1): noise outside the core region. images [B, 3, H, W] in [0, 1], masks
    [B, 1, H, W] or [B, H, W]; eps ~ N(0, 1) drawn on the images' device (from `generator`, which lives there)."""
    return add_noise(images, 1 - _plane(core_masks), _eps(images, generator), std)


def spurious_noise(images: torch.Tensor, spurious_masks: torch.Tensor, std: float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """clamp(x + std * eps * m, 0, 1): noise inside the spurious region (the paper's core-accuracy test)."""
    return add_noise(images, _plane(spurious_masks), _eps(images, generator), std)


def _plane(masks: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W] or [B, H, W] -> [B, H, W] (what `add_noise` takes)."""
    return masks[:, 0] if masks.dim() == 4 else masks


def _eps(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
