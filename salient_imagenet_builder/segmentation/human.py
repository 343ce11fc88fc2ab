"""Human masks on disk -> (object, counted) maps in the dataset's 224 view."""

import io
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.constants import CROP_SIZE
from ..core.constants import HUMAN_MASK_FORMATS as FORMATS
from ..core.errors import InputError
from ..core.images import CorruptImage, check_size, view_geometry

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

    def view(self, path: Path, image: bytes | None) -> tuple[np.ndarray, np.ndarray]:
        """(H, counted): boolean 224 x 224 maps of the object and of the pixels that count (not ignored).
        `image`: the original image file when the build kept it (its size is checked and its EXIF orientation
        applied to the mask); None for a build that kept only the 224 view or no image."""
        ids = _read_ids(path, self.format)
        ids = _orient(ids, path, image)
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


EXIF_ORIENTATION = 0x0112
TRANSPOSES = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}  # what ImageOps.exif_transpose does to the image for each orientation


def _orient(ids: np.ndarray, path: Path, image: bytes | None) -> np.ndarray:
    """The mask in the image's upright pixel grid. With the original image: a mask of its stored size is turned by
    its EXIF orientation, as the image was when the build decoded it; a mask of its upright size is kept; any other
    size is refused. Without it (a build that kept the 224 view or no image), the mask is taken as upright."""
    if image is None:
        return ids
    with Image.open(io.BytesIO(image)) as original:
        stored, orientation = original.size, int(original.getexif().get(EXIF_ORIENTATION, 1))
    turn = TRANSPOSES.get(orientation)
    upright = stored[::-1] if orientation in (5, 6, 7, 8) else stored
    height, width = ids.shape
    if (width, height) == stored and turn is not None:
        return np.asarray(Image.fromarray(ids).transpose(turn), dtype=np.int32)
    if (width, height) in (stored, upright):
        return ids
    raise InputError(f"human mask {path}: {width}x{height} pixels, but its image is {upright[0]}x{upright[1]}")


def _nearest_view(ids: np.ndarray) -> np.ndarray:
    """The view of the dataset's masks (core.images.view_geometry), resized by nearest neighbour: ids stay ids."""
    height, width = ids.shape
    size, (left, top) = view_geometry(width, height)
    resized = np.asarray(Image.fromarray(ids).resize(size, Image.NEAREST), dtype=np.int32)
    return resized[top:top + CROP_SIZE, left:left + CROP_SIZE]
