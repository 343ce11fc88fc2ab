"""Train with the masks: the `default` config as torch tensors, and core-risk noise (Singla & Feizi's follow-up,
"Core Risk Minimization using Salient ImageNet": Gaussian noise outside the core region, or inside the spurious one).

    ds = load_dataset("you/salient-imagenet", split="train")
    ds.set_transform(torch_transform)            # image [3,224,224], core_mask / spurious_mask [1,224,224], label
    loader = DataLoader(ds, batch_size=64, num_workers=8, shuffle=True)
    for batch in loader:
        x = core_noise(batch["image"].cuda(), batch["core_mask"].cuda(), std=0.25)

`prepare(ds)` does the same on undecoded columns: faster (no per-feature mask is decoded, nor any column the
transform does not read), and for `--image-mode original` builds it cuts the exact view the model saw. The raw maps
(`features[].nam`, fixed-shape float32 arrays) become masks on any device with `masks_from_maps`, the same bilinear
upsampling as the stored PNGs, so a loop need not decode PNG masks at all. The fastest path decodes one PNG per row:

    ds = prepare(load_dataset("you/salient-imagenet", split="train"), masks="maps")
    for batch in loader(ds, batch_size=64, num_workers=8):     # whole batches, no re-stacking collate
        core = combined_masks(batch["core_maps"].cuda())         # [B, 1, 224, 224], the stored core_mask +- 1/255

A library module, like `datasets`' formatters: nothing here changes process-wide state.
"""

import numpy as np
import torch

from .core.constants import CROP_SIZE, FEATURES_PER_CLASS, MAP_SHAPE
from .core.images import center_view, to_rgb, view_uint8
from .core.masks import add_noise, decode_mask_uint8, normalized_maps, upsample

__all__ = ["TrainingTransform", "combined_masks", "core_noise", "loader", "make_transform", "masks_from_maps",
           "prepare", "spurious_noise", "torch_transform"]

MASK_COLUMNS = ("core_mask", "spurious_mask")
MASK_SOURCES = ("png", "maps")  # the stored core/spurious PNGs, or the raw maps they were made from


class TrainingTransform:
    """A `set_transform` function for the `default` config: a batch (dict of columns) -> float tensors
    `image` [B, 3, 224, 224] and `core_mask` / `spurious_mask` [B, 1, 224, 224] in [0, 1], `label` [B] (int64).
    A missing mask (no core, or no spurious, feature listed for the row) is all zeros.

    `features`: also `nams` (one float32 [F, H, W] tensor per row: its features' raw maps, in `features` order) and
    `feature_index` / `feature_kind` (per row); the per-feature PNG masks are never decoded.
    `image_mode`: the build's (`crop`, `original`; None: a 224 x 224 image is the view, anything else is cut as the
    builder cut it); `draft`: the build's JPEG draft decoding (on unless it was built with `--no-draft`).

    Cells arrive decoded (PIL, from a plain `set_transform`) or as `{"bytes": ...}` (`prepare`). An original file
    that `datasets` decoded is cut from its full-size decoding, while the builder (unless `--no-draft`) decoded
    JPEGs at a reduced scale: the views differ slightly; `prepare` gives the exact one.
    A plain object: picklable, so DataLoader workers get their own copy."""

    def __init__(self, features: bool = False, image_mode: str | None = None, draft: bool = True, masks: str = "png"):
        if masks not in MASK_SOURCES:
            raise ValueError(f"masks must be one of {MASK_SOURCES}, got {masks!r}")
        self.features, self.image_mode, self.draft, self.masks = features, image_mode, draft, masks

    @property
    def columns(self) -> list[str]:
        """The columns it reads (`set_transform(..., columns=...)`): no other is decoded."""
        masks = list(MASK_COLUMNS) if self.masks == "png" else []
        return ["image", *masks, "label", *(["features"] if self.features or self.masks == "maps" else [])]

    def __call__(self, batch: dict) -> dict:
        out = {"image": _unit_float(np.stack([self._view(cell) for cell in batch["image"]]))}
        if self.masks == "maps":  # no PNG decoded: `combined_masks` makes the masks where the batch goes
            out["core_maps"], out["spurious_maps"] = (_kind_maps(batch["features"], kind)
                                                      for kind in ("core", "spurious"))
        for column in MASK_COLUMNS if self.masks == "png" else ():
            out[column] = _unit_float(np.stack([_mask(cell) for cell in batch[column]])[..., None])
        out["label"] = torch.as_tensor(batch["label"], dtype=torch.int64)
        if self.features:
            out["nams"] = [_nams(row) for row in batch["features"]]
            out["feature_index"] = [torch.as_tensor([f["feature_index"] for f in row], dtype=torch.int64)
                                    for row in batch["features"]]
            out["feature_kind"] = [[f["kind"] for f in row] for row in batch["features"]]
        return out

    def _view(self, cell) -> np.ndarray:
        """The model's 224 view as HWC uint8."""
        if cell is None:
            raise ValueError("a row has no image (a masks-only build, --image-mode none): join your own ImageNet "
                             "by image_id first")
        if isinstance(cell, dict):
            return view_uint8(cell["bytes"], self.image_mode, self.draft).transpose(1, 2, 0)
        image = to_rgb(cell)
        if self.image_mode == "original" or (self.image_mode is None and image.size != (CROP_SIZE, CROP_SIZE)):
            image = center_view(image)
        return np.asarray(image, dtype=np.uint8)


def _unit_float(hwc: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, C] -> float [B, C, H, W] / 255, in one contiguous copy (stacking CHW views per row first
    costs several times more: a strided copy per row)."""
    nchw = torch.from_numpy(hwc).permute(0, 3, 1, 2)
    return nchw.to(torch.float32, memory_format=torch.contiguous_format).div_(255)


def _mask(cell) -> np.ndarray:
    """A stored mask as uint8 [224, 224]; none stored: zeros."""
    if cell is None:
        return np.zeros((CROP_SIZE, CROP_SIZE), dtype=np.uint8)
    if isinstance(cell, dict):
        return decode_mask_uint8(cell["bytes"])
    return np.asarray(cell if cell.mode == "L" else cell.convert("L"), dtype=np.uint8)


def _nams(features: list[dict]) -> torch.Tensor:
    if not features:
        return torch.zeros((0, 0, 0))
    return torch.stack([torch.as_tensor(np.asarray(f["nam"], dtype=np.float32)) for f in features])


def _kind_maps(rows: list[list[dict]], kind: str) -> torch.Tensor:
    """The raw maps of each row's features of `kind`, zero-padded: float32 [B, K, H, W], K = 5 (more if a row has
    more). A zero map makes a zero mask, so padding never changes the maximum `combined_masks` takes."""
    chosen = [[f["nam"] for f in row if f["kind"] == kind] for row in rows]
    first = next((m for maps in chosen for m in maps), None)
    shape = np.shape(first) if first is not None else MAP_SHAPE
    out = np.zeros((len(rows), max(FEATURES_PER_CLASS, *map(len, chosen)), *shape), dtype=np.float32)
    for i, maps in enumerate(chosen):
        for j, nam in enumerate(maps):
            out[i, j] = nam
    return torch.from_numpy(out)


def make_transform(features: bool = False, image_mode: str | None = None, draft: bool = True,
                   masks: str = "png") -> TrainingTransform:
    """`masks="maps"`: `core_maps` / `spurious_maps` [K, H, W] per row instead of the two mask PNGs decoded; turn
    them into the stored masks on the GPU with `combined_masks`."""
    return TrainingTransform(features, image_mode, draft, masks)


torch_transform = TrainingTransform()


def prepare(dataset, features: bool = False, image_mode: str | None = None, draft: bool = True, masks: str = "png"):
    """`dataset` (the `default` config) with the training transform on undecoded image columns: `datasets` decodes
    nothing, the transform decodes only what it returns. A new dataset; `dataset` is left as it was."""
    from datasets import Image as ImageFeature

    transform = make_transform(features, image_mode, draft, masks)
    undecoded = dataset.cast_column("image", ImageFeature(decode=False))
    for column in MASK_COLUMNS:
        undecoded = undecoded.cast_column(column, ImageFeature(decode=False))
    if "features" in transform.columns:
        listed = undecoded.features["features"]
        listed.feature["mask"] = ImageFeature(decode=False)
        undecoded = undecoded.cast_column("features", listed)
    return undecoded.with_transform(transform, columns=transform.columns)


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
