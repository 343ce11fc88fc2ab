"""Decoding and the paper's preprocessing: shorter side to 256 (bilinear), center-crop 224, pixels in [0, 1]."""

import io

import numpy as np
import torch
from PIL import Image, ImageCms, ImageOps

from .constants import CROP_SIZE, RESIZE_SIZE
from .png import decode_png


class CorruptImage(ValueError):
    pass


def decode(data: bytes, draft: bool = True) -> Image.Image:
    """Bytes -> upright RGB PIL image (see `to_rgb` for the modes; PNG files named .JPEG are read by content).

    The EXIF orientation is applied (`ImageOps.exif_transpose`), as `datasets` does when it decodes an image: the
    model, the masks, the stored center view and an `--image-mode original` image loaded back all see one
    upright picture.

    With `draft`, a JPEG is decoded at the smallest 1/2, 1/4 or 1/8 scale whose shorter side stays >= 256:
    several times cheaper, and the bilinear resize that follows then starts from fewer pixels.
    """
    return decode_sized(data, draft)[0]


def decode_sized(data: bytes, draft: bool = True) -> tuple[Image.Image, tuple[int, int]]:
    """`decode`, and the image's full size as displayed: (width, height) of the file's pixels with its EXIF
    orientation applied, whatever scale `draft` decoded it at (the frame a human mask of the image is drawn in)."""
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size  # from the header, before any pixel is decoded
        check_size(width, height)
        if draft and image.format == "JPEG":
            scale = RESIZE_SIZE / max(1, min(width, height))
            image.draft("RGB", (max(1, int(width * scale) + 1), max(1, int(height * scale) + 1)))
        image.load()
        upright = ImageOps.exif_transpose(image)
        turned = upright.size != image.size  # orientations 5-8 swap the axes
        return to_rgb(upright), ((height, width) if turned else (width, height))
    except CorruptImage:
        raise
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, DecompressionBombError...)
        raise CorruptImage(f"{type(e).__name__}: {e}") from None


def displayed_size(data: bytes) -> tuple[int, int]:
    """(width, height) of an image file as displayed (its EXIF orientation applied), from its header alone."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        turned = image.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8)  # a quarter turn: the axes swap
    return (height, width) if turned else (width, height)


MAX_PIXELS = 89_478_485  # Pillow's default MAX_IMAGE_PIXELS (its decompression-bomb warning), fixed here: the
# library never reads or changes that process-wide setting of its caller
MAX_ASPECT = 64  # longer side / shorter side: beyond it the 256 resize of the shorter side alone is a huge image


def check_size(width: int, height: int) -> None:
    """Refuse (as a corrupt image: skipped and counted) what would cost far more than an ImageNet photo to view:
    more pixels than Pillow's decompression-bomb limit, or so elongated that resizing the shorter side to 256 makes
    a giant (a 1x20000 PNG of 162 bytes would become 256 x 5,120,000 pixels)."""
    if width < 1 or height < 1:
        raise CorruptImage(f"{width}x{height} pixels: an empty image")
    if width * height > MAX_PIXELS:
        raise CorruptImage(f"{width}x{height} pixels: more than {MAX_PIXELS:,} (a decompression bomb?), not decoded")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise CorruptImage(f"{width}x{height} pixels: too elongated to view (sides more than {MAX_ASPECT}:1 apart), "
                           "not decoded")


WHITE = (255, 255, 255, 255)  # what transparent pixels become: a page's usual background
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")  # "I": how Pillow < 10.? opens 16-bit PNGs
ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB by what its pixels mean (Pillow's own `convert("RGB")` clips integer modes
    at 255, so a 16-bit PNG would come out all white, and drops alpha, showing whatever colour hides under it):
    - 16/32-bit integer greyscale (`I;16*`, `I`): the 16-bit range 0-65535 scaled to 0-255 (v / 257, rounded);
    - float greyscale (`F`): values in [0, 1] scaled to 0-255; values beyond 1 taken as 0-255, clipped;
    - transparency (alpha band, premultiplied alpha, a palette or tRNS transparency): composited on white;
    - CIE Lab through littlecms (sRGB); every other mode (1, L, P, CMYK, YCbCr, HSV, RGBX) by Pillow.
    """
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "F":
        return Image.fromarray(_grey_to_uint8(image), mode="L").convert("RGB")
    if image.mode == "La":  # premultiplied L + alpha: Pillow converts it only by way of RGBa
        grey, alpha = image.split()
        image = Image.merge("RGBa", (grey, grey, grey, alpha))
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", image.size, WHITE), rgba).convert("RGB")
    if image.mode == "LAB":
        lab_to_srgb = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"),
                                              "LAB", "RGB")
        return ImageCms.applyTransform(image, lab_to_srgb)
    return image.convert("RGB")


def _grey_to_uint8(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        scale = 255.0 if np.nanmax(pixels, initial=0.0) <= 1.0 else 1.0
    else:
        scale = 1 / 257
    return np.rint(np.nan_to_num(pixels * scale).clip(0, 255)).astype(np.uint8)


def view_geometry(w: int, h: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The one definition of the center view's geometry for a w x h image: the resized (width, height), shorter
    side RESIZE_SIZE, and the crop's (left, top) (torchvision's Resize + CenterCrop)."""
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(RESIZE_SIZE * long / short)
    size = (RESIZE_SIZE, new_long) if w <= h else (new_long, RESIZE_SIZE)
    return size, (int(round((size[0] - CROP_SIZE) / 2.0)), int(round((size[1] - CROP_SIZE) / 2.0)))


def center_view(image: Image.Image) -> Image.Image:
    """Resize the shorter side to RESIZE_SIZE (bilinear), then center-crop CROP_SIZE."""
    size, (left, top) = view_geometry(*image.size)
    image = image.resize(size, Image.BILINEAR)
    return image.crop((left, top, left + CROP_SIZE, top + CROP_SIZE))


def center_view_tensor(image: torch.Tensor) -> torch.Tensor:
    """`center_view` of a CHW uint8 tensor on any device: antialiased bilinear resize (Pillow's BILINEAR filter
    when shrinking; the two agree within 1 level of 255), rounded back to uint8, then the same crop."""
    (width, height), (left, top) = view_geometry(image.shape[2], image.shape[1])
    resized = torch.nn.functional.interpolate(image[None].float(), size=(height, width), mode="bilinear",
                                              antialias=True, align_corners=False)[0]
    view = resized[:, top:top + CROP_SIZE, left:left + CROP_SIZE]
    return view.round_().clamp_(0, 255).to(torch.uint8)


def device_decode_refusal(data: bytes) -> str | None:
    """Why a file goes to the CPU fallback of `--decode gpu` rather than to `torchvision.io.decode_jpeg` (None: it
    does not). Only the header is read: not a JPEG (e.g. the PNG named .JPEG), not 3-component (CMYK, greyscale:
    Pillow's conversions are the reference), an EXIF orientation to apply (the device decoder ignores it), or no
    end-of-image marker near the end (a truncated file, which nvjpeg may fill in where Pillow refuses it)."""
    try:
        image = Image.open(io.BytesIO(data))
        if image.format != "JPEG":
            return f"not a JPEG ({image.format})"
        if image.mode != "RGB":
            return f"JPEG mode {image.mode}"
        if END_OF_IMAGE not in data[-TAIL:]:
            return "no JPEG end marker"
        orientation = image.getexif().get(ORIENTATION, 1)
    except Exception as e:  # a header Pillow cannot read: the fallback reports the error
        return f"unreadable header ({type(e).__name__})"
    return None if orientation == 1 else f"EXIF orientation {orientation}"


ORIENTATION = 0x0112  # the EXIF tag
END_OF_IMAGE, TAIL = b"\xff\xd9", 1024  # a JPEG's EOI marker, looked for in its last TAIL bytes (data may follow)


def to_uint8_tensor(image: Image.Image) -> torch.Tensor:
    """HWC RGB image -> CHW uint8 tensor (what DataLoader workers send: 4x smaller than float)."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def to_unit_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> float NCHW in [0, 1]."""
    return batch.float().div_(255)


def view_uint8(data: bytes, mode: str | None, draft: bool) -> np.ndarray:
    """A built row's 224 view as CHW uint8 (a view of `view_hwc`'s array)."""
    return view_hwc(data, mode, draft).transpose(2, 0, 1)


def view_hwc(data: bytes, mode: str | None, draft: bool) -> np.ndarray:
    """A built row's 224 view as HWC uint8 (its own, writable array): `crop` builds store it; `original` builds store
    the file (resize + crop it again, as the builder did); unknown mode: crop when the image is not already
    224 x 224."""
    if mode != "original":
        pixels = decode_png(data, channels=3)  # a crop build's own PNG, without Pillow
        if pixels is not None and pixels.shape[:2] == (CROP_SIZE, CROP_SIZE):
            return pixels
    image = decode(data, draft=draft and mode != "crop")
    if mode == "original" or (mode is None and image.size != (CROP_SIZE, CROP_SIZE)):
        image = center_view(image)
    if image.size != (CROP_SIZE, CROP_SIZE):
        raise CorruptImage(f"image is {image.size}, expected the {CROP_SIZE} x {CROP_SIZE} view")
    return np.array(image, dtype=np.uint8)
