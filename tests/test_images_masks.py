"""Preprocessing against torchvision's transforms; NAMs and masks against direct computation."""


import numpy as np
import pytest
import torch
from torchvision import transforms

from salient_imagenet_builder.build.demo import jpeg_bytes, synthetic_image
from salient_imagenet_builder.images import CorruptImage, center_view, decode
from salient_imagenet_builder.masks import decode_mask, encode_png, normalized_maps, to_uint8, upsample


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
