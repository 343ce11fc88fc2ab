"""`core.png`: the PNGs a build writes (masks: Sub; crop views: Up) decode without Pillow to exactly what Pillow
reads from them, and any other PNG is left to Pillow (decode_png says None), so older builds read as before."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from salient_imagenet_builder.core.decoding import view_png
from salient_imagenet_builder.core.images import CorruptImage, view_hwc
from salient_imagenet_builder.core.masks import decode_mask_uint8
from salient_imagenet_builder.core.png import FILTER_SUB, FILTER_UP, PNG_SIGNATURE, decode_png, encode_png


def pillow(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def pillow_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()  # Pillow's own encoder: adaptive filters, mostly Paeth on photos
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def handmade(pixels: np.ndarray, filters: list[int], idat_parts: int = 1, extra: bytes = b"") -> bytes:
    """A PNG assembled by hand (PNG spec section 9): per-row filters computed here, the zlib stream split over
    `idat_parts` IDAT chunks, `extra` chunks before the first."""
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else 3
    rows, previous = [], np.zeros(width * channels, np.int32)
    for row, kind in zip(pixels.reshape(height, -1).astype(np.int32), filters):
        left = np.concatenate([np.zeros(channels, np.int32), row[:-channels]])
        predicted = {0: 0, 1: left, 2: previous, 4: None}[kind]
        if kind == 4:  # Paeth, byte by byte
            above_left = np.concatenate([np.zeros(channels, np.int32), previous[:-channels]])
            p = left + previous - above_left
            pa, pb, pc = abs(p - left), abs(p - previous), abs(p - above_left)
            predicted = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, previous, above_left))
        rows.append(bytes([kind]) + ((row - predicted) % 256).astype(np.uint8).tobytes())
        previous = row
    stream = zlib.compress(b"".join(rows))
    cuts = np.linspace(0, len(stream), idat_parts + 1).astype(int)
    header = struct.pack(">IIBBBBB", width, height, 8, 0 if channels == 1 else 2, 0, 0, 0)
    return (PNG_SIGNATURE + chunk(b"IHDR", header) + extra
            + b"".join(chunk(b"IDAT", stream[a:b]) for a, b in zip(cuts[:-1], cuts[1:])) + chunk(b"IEND", b""))


@pytest.mark.parametrize("shape", [(37, 53), (37, 53, 3), (1, 1), (224, 224, 3)])
@pytest.mark.parametrize("row_filter", [FILTER_SUB, FILTER_UP])
def test_own_files_decode_as_pillow_reads_them(shape, row_filter):
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    data = encode_png(pixels, row_filter, level=6, strategy=zlib.Z_FILTERED)
    np.testing.assert_array_equal(pillow(data), pixels)
    got = decode_png(data, channels=shape[2] if len(shape) == 3 else 1)
    assert got is not None and got.dtype == np.uint8 and got.flags.writeable
    np.testing.assert_array_equal(got, pixels)


def test_uniform_filters_over_several_idat_chunks_decode():
    pixels = np.random.default_rng(1).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    for kind in (0, 1, 2):
        data = handmade(pixels, [kind] * 9, idat_parts=3, extra=chunk(b"tEXt", b"Comment\0made by hand"))
        np.testing.assert_array_equal(pillow(data), pixels)
        np.testing.assert_array_equal(decode_png(data, channels=3), pixels)


@pytest.mark.parametrize("case", ["paeth", "mixed filters", "grey asked as RGB", "exif", "palette", "truncated",
                                  "bad zlib", "not a png", "bomb header"])
def test_files_it_does_not_read_are_left_to_pillow(case):
    pixels = np.random.default_rng(2).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    data = {"paeth": lambda: handmade(pixels, [4] * 6),
            "mixed filters": lambda: handmade(pixels, [1, 2, 1, 2, 1, 2]),
            "grey asked as RGB": lambda: encode_png(pixels[..., 0]),
            "exif": lambda: handmade(pixels, [2] * 6, extra=chunk(b"eXIf", b"MM\0*\0\0\0\x08\0\0")),
            "palette": lambda: pillow_png_palette(pixels),
            "truncated": lambda: encode_png(pixels, FILTER_UP)[:-30],
            "bad zlib": lambda: corrupt_idat(encode_png(pixels, FILTER_UP)),
            "not a png": lambda: b"GIF89a" + bytes(40),
            "bomb header": lambda: bomb()}[case]()
    assert decode_png(data, channels=3) is None
    if case in ("paeth", "mixed filters", "exif"):  # valid files: the callers' fallback reads them as Pillow does
        np.testing.assert_array_equal(decode_png(handmade(pixels, [2] * 6), 3), pixels)
        assert np.array_equal(pillow(data), pixels)


def pillow_png_palette(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).quantize(16).save(buffer, format="PNG")
    return buffer.getvalue()


def corrupt_idat(data: bytes) -> bytes:
    start = data.index(b"IDAT") + 4
    return data[:start + 10] + bytes(b ^ 0xFF for b in data[start + 10:start + 20]) + data[start + 20:]


def bomb() -> bytes:
    """A header asking for 100000 x 100000 RGB pixels over a tiny stream."""
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(100))) + chunk(b"IEND", b"")


def test_crop_views_and_masks_read_the_same_either_way():
    """A build's crop PNG (Up) and an older build's (Pillow's adaptive filters) give one view; masks likewise; a
    file that is no image is still one CorruptImage."""
    rng = np.random.default_rng(3)
    view = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    ours, theirs = view_png(view), pillow_png(view)
    assert decode_png(ours, 3) is not None and decode_png(theirs, 3) is None
    for data in (ours, theirs):
        np.testing.assert_array_equal(view_hwc(data, "crop", True), view)
        np.testing.assert_array_equal(view_hwc(data, None, True), view)
    mask = rng.integers(0, 256, (224, 224), dtype=np.uint8)
    for data in (encode_png(mask), pillow_png(mask), pillow_png(np.stack([mask] * 3, axis=2))):
        np.testing.assert_array_equal(decode_mask_uint8(data), np.asarray(Image.open(io.BytesIO(data)).convert("L")))
    with pytest.raises(CorruptImage):
        view_hwc(ours[:60], "crop", True)
