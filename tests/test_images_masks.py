"""Preprocessing against torchvision's transforms; NAMs and masks against direct computation."""

import io

import numpy as np
import pytest
import torch
from torchvision import transforms

from salient_imagenet_builder.builder.demo import jpeg_bytes, synthetic_image
from salient_imagenet_builder.core.images import CorruptImage, center_view, decode
from salient_imagenet_builder.core.masks import decode_mask, normalized_maps, to_uint8, upsample
from salient_imagenet_builder.core.png import encode_png


@pytest.mark.parametrize("size", [(256, 256), (500, 375), (375, 500), (300, 257)])
def test_center_view_is_torchvision_resize_and_crop(size):
    import random

    image = synthetic_image(random.Random(0), 3, size)
    expected = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])(image)
    np.testing.assert_array_equal(np.asarray(center_view(image)), np.asarray(expected))


def test_draft_decoding_stays_close_to_full_decoding():
    import random

    data = jpeg_bytes(synthetic_image(random.Random(1), 4, (1200, 900)))
    full = np.asarray(center_view(decode(data, draft=False)), dtype=np.float32)
    draft_image = decode(data, draft=True)
    assert min(draft_image.size) >= 256 and draft_image.size[0] < 1200  # decoded at a reduced scale
    draft = np.asarray(center_view(draft_image), dtype=np.float32)
    assert np.abs(full - draft).mean() < 3.0  # out of 255


def test_odd_files_decode_to_rgb():
    import random

    image = synthetic_image(random.Random(2), 1, (300, 300))
    for data in (jpeg_bytes(image.convert("CMYK")), jpeg_bytes(image.convert("L")), jpeg_bytes(image, format="PNG")):
        decoded = decode(data)
        assert decoded.mode == "RGB" and decoded.size == (300, 300)
    with pytest.raises(CorruptImage):
        decode(jpeg_bytes(image)[:300])
    with pytest.raises(CorruptImage):
        decode(b"not an image")


def test_nam_normalisation_upsampling_and_png_round_trip():
    maps = torch.rand(4, 7, 7) * 3
    maps[1] = 0  # a dead channel stays zero
    nams = normalized_maps(maps)
    for i in (0, 2, 3):
        torch.testing.assert_close(nams[i], maps[i] / maps[i].max())
    assert torch.count_nonzero(nams[1]) == 0
    up = upsample(nams)
    assert up.shape == (4, 224, 224) and float(up.min()) >= 0 and float(up.max()) <= 1
    np.testing.assert_allclose(up[2].numpy(), _bilinear(nams[2].numpy(), 224), atol=1e-5)
    quantised = to_uint8(up[0])
    decoded = decode_mask(encode_png(quantised))
    np.testing.assert_array_equal(np.rint(decoded * 255).astype(np.uint8), quantised)
    assert np.abs(decoded - up[0].numpy()).max() <= 0.5 / 255 + 1e-6


def _bilinear(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres and edge clamping, written out by hand."""
    n = grid.shape[0]
    src = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
    low = np.floor(src).astype(int)
    high = np.minimum(low + 1, n - 1)
    w = src - low
    rows = grid[low] * (1 - w)[:, None] + grid[high] * w[:, None]
    return rows[:, low] * (1 - w)[None, :] + rows[:, high] * w[None, :]


# --- every Pillow mode to the right RGB, each against its own formula (not Pillow's convert) -----------------------

def _encoded(image, fmt):
    import io

    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _mode_cases():
    import colorsys

    from PIL import Image

    rng = np.random.default_rng(0)
    shape = (6, 8)
    byte = lambda *s: rng.integers(0, 256, (*shape, *s), dtype=np.uint8)  # noqa: E731
    grey = lambda v: np.repeat(np.asarray(v, dtype=np.float64)[..., None], 3, axis=-1)  # noqa: E731
    over_white = lambda rgb, alpha: rgb * alpha[..., None] / 255 + 255 * (1 - alpha[..., None] / 255)  # noqa: E731

    wide = rng.integers(0, 65536, shape).astype(np.uint16)
    wide[0, :4] = (0, 255, 256 * 200, 65535)  # black, near-black, a mid grey, white: all white before the fix
    yield "I;16 png", _encoded(Image.fromarray(wide), "PNG"), grey(wide / 257)
    yield "I tiff", _encoded(Image.fromarray(wide.astype(np.int32), mode="I"), "TIFF"), grey(wide / 257)
    unit = rng.random(shape).astype(np.float32)
    yield "F tiff", _encoded(Image.fromarray(unit, mode="F"), "TIFF"), grey(unit * 255)
    bits = rng.random(shape) > 0.5
    yield "1 png", _encoded(Image.fromarray(bits), "PNG"), grey(bits * 255.0)
    l = byte()  # noqa: E741
    yield "L png", _encoded(Image.fromarray(l), "PNG"), grey(l)
    la = byte(2)
    yield "LA png", _encoded(Image.fromarray(la, mode="LA"), "PNG"), over_white(grey(la[..., 0]), la[..., 1])
    rgba = byte(4)
    yield "RGBA png", _encoded(Image.fromarray(rgba, mode="RGBA"), "PNG"), over_white(rgba[..., :3] * 1.0,
                                                                                     rgba[..., 3])
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    index = byte()
    index[0, 0] = 7
    p = Image.fromarray(index, mode="P")
    p.putpalette(palette.flatten().tolist())
    p.info["transparency"] = 7
    expected = palette[index].astype(np.float64)
    expected[index == 7] = 255
    yield "P+transparency png", _encoded(p, "PNG"), expected
    cmyk = byte(4)
    k = 1 - cmyk[..., 3:] / 255
    yield "CMYK tiff", _encoded(Image.fromarray(cmyk, mode="CMYK"), "TIFF"), (255 - cmyk[..., :3]) * k
    ycc = byte(3).astype(np.float64)
    y, cb, cr = ycc[..., 0], ycc[..., 1] - 128, ycc[..., 2] - 128
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1).clip(0, 255)
    yield "YCbCr", Image.fromarray(ycc.astype(np.uint8), mode="YCbCr"), rgb
    hsv = byte(3)
    yield "HSV", Image.fromarray(hsv, mode="HSV"), np.array(
        [[colorsys.hsv_to_rgb(*(px / 255)) for px in row] for row in hsv]) * 255
    pm = byte(4)
    pm[..., :3] = np.minimum(pm[..., :3], pm[..., 3:])  # premultiplied: colour <= alpha
    yield "RGBa", Image.fromarray(pm, mode="RGBa"), pm[..., :3] + (255.0 - pm[..., 3:])
    lightness = np.linspace(0, 255, 48).reshape(shape).round()
    neutral = Image.new("L", (shape[1], shape[0]), 128)  # a = b = 0 (stored with an offset of 128): grey
    lab = Image.merge("LAB", (Image.fromarray(lightness.astype(np.uint8)), neutral, neutral))
    Y = np.where(lightness / 2.55 > 8, ((lightness / 2.55 + 16) / 116) ** 3, lightness / 2.55 / 903.3)
    yield "LAB", lab, grey(255 * np.where(Y <= 0.0031308, 12.92 * Y,
                                                                        1.055 * Y ** (1 / 2.4) - 0.055))


@pytest.mark.parametrize("name, data, expected", list(_mode_cases()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_mode_converts_to_the_right_rgb(name, data, expected):
    from salient_imagenet_builder.core.images import to_rgb

    image = decode(data, draft=False) if isinstance(data, bytes) else to_rgb(data)
    assert image.mode == "RGB"
    got = np.asarray(image, dtype=np.float64)
    tolerance = 2.5 if name == "LAB" else 1.01  # rounding; littlecms's Lab->sRGB in 8 bits
    assert np.abs(got - expected).max() <= tolerance, name


def test_exif_orientation_is_applied():
    import io

    from PIL import Image, ImageOps

    upright = np.zeros((40, 60, 3), dtype=np.uint8)
    upright[:10, :20] = (255, 0, 0)  # a red block at the top left of the upright picture
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # what a camera stores for tag 6
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    decoded = decode(buffer.getvalue(), draft=False)
    assert decoded.size == (60, 40)
    assert np.asarray(decoded)[:10, :20, 0].mean() > 200 and np.asarray(decoded)[30:, 40:, 0].mean() < 50
    reference = ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue()))).convert("RGB")
    np.testing.assert_array_equal(np.asarray(decoded), np.asarray(reference))


def test_mask_decoding_equals_pillows():
    """The fast path (encode_png's own files) and the fallback (any other PNG) both decode as Pillow does."""
    from PIL import Image

    from salient_imagenet_builder.core.masks import decode_mask_uint8

    mask = np.random.default_rng(0).integers(0, 256, (37, 53), dtype=np.uint8)
    for data in (encode_png(mask), _png(Image.fromarray(mask)), _png(Image.fromarray(mask).convert("RGB"))):
        expected = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
        np.testing.assert_array_equal(decode_mask_uint8(data), expected)
    np.testing.assert_array_equal(decode_mask_uint8(encode_png(mask)), mask)


def _png(image) -> bytes:
    buffer = io.BytesIO()  # Pillow's own encoder: adaptive filters
    image.save(buffer, format="PNG")
    return buffer.getvalue()
