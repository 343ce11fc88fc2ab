"""Human masks on disk -> (object, counted) maps in the dataset's 224 view."""

from pathlib import Path

import numpy as np
from PIL import Image

from ..core.constants import CROP_SIZE
from ..core.errors import InputError
from ..core.images import CorruptImage, check_size, view_geometry
from .options import FORMATS

IMAGENET_S_OTHER = 0  # ImageNet-S: class id R + 256 * G; 0 = no object, 1000 = ignore (boundaries, unsure)
IMAGENET_S_IGNORE = 1000


class HumanMasks:
    """The human masks of one folder: `DIR/<wnid>/<image_id>.png` (both formats) or `DIR/<image_id>.png` (binary)."""

    def __init__(self, folder: str, fmt: str):
        self.folder, self.format = Path(folder), fmt
        if fmt not in FORMATS:
            raise InputError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
        if not self.folder.is_dir():
            raise InputError(f"--human-masks {folder}: not a folder")

    def path(self, wordnet_id: str, image_id: str) -> Path | None:
        """The image's mask file, or None when there is none (counted, not an error)."""
        candidates = [self.folder / wordnet_id / f"{image_id}.png"]
        if self.format == "binary":
            candidates.append(self.folder / f"{image_id}.png")
        return next((p for p in candidates if p.is_file()), None)

    def view(self, path: Path, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
        """(H, counted): boolean 224 x 224 maps of the object and of the pixels that count (not ignored).
        A human mask is drawn on the image as displayed (EXIF orientation applied, as ImageNet-S draws them and as
        the build decoded the image): `size`, the image's (width, height) so, is the size the mask must have; None
        where the build does not tell (builds from before the size columns), unchecked."""
        ids = _read_ids(path, self.format)
        height, width = ids.shape
        if size is not None and (width, height) != tuple(size):
            raise InputError(f"human mask {path}: {width}x{height} pixels, but its image is {size[0]}x{size[1]} (as "
                             "displayed, EXIF orientation applied: the frame human masks are drawn in)")
        ids = _nearest_view(ids)
        if self.format == "imagenet-s":
            return (ids != IMAGENET_S_OTHER) & (ids != IMAGENET_S_IGNORE), ids != IMAGENET_S_IGNORE
        return ids != 0, np.ones_like(ids, dtype=bool)


def _read_ids(path: Path, fmt: str) -> np.ndarray:
    """The mask's pixels as integers: ImageNet-S class ids (R + 256 * G), or non-zero = object for binary."""
    try:
        with Image.open(path) as picture:
            check_size(*picture.size)
            picture.load()
            if fmt == "imagenet-s":
                rgb = np.asarray(picture.convert("RGB"), dtype=np.int32)
                return rgb[..., 0] + 256 * rgb[..., 1]
            pixels = np.asarray(picture)
    except (CorruptImage, OSError, SyntaxError, ValueError) as e:
        raise InputError(f"human mask {path}: cannot be read ({type(e).__name__}: {e})") from None
    if pixels.ndim == 3:  # an RGB(A) binary mask: any colour channel set; alpha says nothing about the object
        pixels = pixels[..., :3].any(axis=-1) if pixels.shape[-1] >= 3 else pixels[..., 0]
    return (pixels != 0).astype(np.int32)


def _nearest_view(ids: np.ndarray) -> np.ndarray:
    """The view of the dataset's masks (core.images.view_geometry), resized by nearest neighbour: ids stay ids."""
    height, width = ids.shape
    size, (left, top) = view_geometry(width, height)
    resized = np.asarray(Image.fromarray(ids).resize(size, Image.NEAREST), dtype=np.int32)
    return resized[top:top + CROP_SIZE, left:left + CROP_SIZE]
