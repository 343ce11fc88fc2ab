"""`--decode gpu` and the CUDA paths.

On any machine: the device decoder's logic (batched `torchvision.io.decode_jpeg`, the tensor resize, the Pillow
fallback and its counts, the image column) runs with device cpu and is checked against the Pillow path; a build
with `--decode gpu` on the CPU equals the default build within the resize's rounding.
With CUDA (`pytest -m cuda`, run by benchmarks/gpu_check.sh): nvjpeg against libjpeg-turbo, a build on cuda
against the same build on cpu, `--decode gpu` on cuda, and the bf16/tf32 paths."""

import io
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from salient_imagenet_builder.builder import build
from salient_imagenet_builder.builder.demo import jpeg_bytes, synthetic_image
from salient_imagenet_builder.core.card import read_build_info
from salient_imagenet_builder.core.decoding import BatchDecoder, decode_jpegs
from salient_imagenet_builder.core.errors import InputError
from salient_imagenet_builder.core.images import center_view, center_view_tensor, decode, to_uint8_tensor
from salient_imagenet_builder.core.sources import Sample

CPU = torch.device("cpu")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# Sizes around every branch of the geometry: landscape, portrait, square at 256, upscaled, much larger.
SIZES = [(500, 375), (375, 500), (256, 256), (200, 150), (100, 300), (1000, 750), (257, 1000)]


def pillow_view(data: bytes) -> torch.Tensor:
    """The reference: Pillow, full-size decode (no draft), `center_view`."""
    return to_uint8_tensor(center_view(decode(data, draft=False)))


def jpegs(sizes=SIZES, seed=0) -> list[bytes]:
    rng = random.Random(seed)
    return [jpeg_bytes(synthetic_image(rng, i % 3, size)) for i, size in enumerate(sizes)]


def rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    return jpeg_bytes(synthetic_image(random.Random(5), 1, (320, 256)), exif=exif)


def test_tensor_view_matches_pillow_within_one_level():
    """libjpeg-turbo through torchvision decodes exactly as Pillow does; the antialiased tensor resize then
    differs from Pillow's BILINEAR by rounding only: at most 1 of 255, on a small share of the pixels."""
    for data, size in zip(jpegs(), SIZES):
        image = decode_jpegs([data], CPU)[0]
        assert torch.equal(image, torch.from_numpy(np.array(decode(data, draft=False))).permute(2, 0, 1)), size
        diff = (center_view_tensor(image).int() - pillow_view(data).int()).abs()
        assert diff.shape == (3, 224, 224) and diff.max() <= 1 and diff.float().mean() < 0.05, size


def samples_with_quirks() -> tuple[list[Sample], dict]:
    rng = random.Random(1)
    image = synthetic_image(rng, 0, (300, 280))
    files = {
        "plain0": jpegs([(500, 375)], seed=2)[0],
        "grey": jpeg_bytes(image.convert("L")),
        "cmyk": jpeg_bytes(image.convert("CMYK")),
        "png": jpeg_bytes(image, format="PNG"),
        "rotated": rotated_jpeg(),
        "truncated": jpeg_bytes(image)[:-600],
        "plain1": jpegs([(333, 500)], seed=3)[0],
    }
    return [Sample(name, 0, data, name) for name, data in files.items()], files


@pytest.mark.parametrize("workers", [0, 1])
def test_device_decoder_on_cpu_falls_back_to_pillow_and_counts(workers):
    """The `--decode gpu` path with device cpu: JPEGs through decode_jpeg, the rest through Pillow one by one
    (counted by reason), the truncated file failed as the Pillow path fails it, the order kept, and the `crop`
    image column the PNG of exactly the view the model gets."""
    samples, files = samples_with_quirks()
    decoder = BatchDecoder(workers, 8, draft=True, image_mode="crop", decode_device=CPU)
    try:
        (decoded,) = list(decoder.batches([samples], overlap=False))
    finally:
        decoder.close()
    assert [s.image_id for s in decoded.good] == ["plain0", "grey", "cmyk", "png", "rotated", "plain1"]
    assert [(s.image_id, error.split(":")[0]) for s, error in decoded.failed] == [("truncated", "OSError")]
    assert dict(decoder.fallbacks) == {"JPEG mode L": 1, "JPEG mode CMYK": 1, "not a JPEG (PNG)": 1,
                                       "EXIF orientation 6": 1, "no JPEG end marker": 1}
    for sample, view, image in zip(decoded.good, decoded.views, decoded.images):
        reference = pillow_view(files[sample.image_id])
        if sample.image_id.startswith("plain"):
            assert (view.int() - reference.int()).abs().max() <= 1, sample.image_id
        else:  # Pillow decoded it, at full size
            assert torch.equal(view, reference), sample.image_id
        stored = torch.from_numpy(np.array(Image.open(io.BytesIO(image["bytes"])))).permute(2, 0, 1)
        assert torch.equal(stored, view), sample.image_id
    assert decoded.views[4].shape == (3, 224, 224)  # the rotated 320x256 file stood up: 256x320, cropped


def rows_by_id(out) -> dict:
    table = pq.read_table(sorted((out / "data").glob("train-*.parquet")))
    return {row["image_id"]: row for row in table.to_pylist()}


def assert_close_builds(got, expected, activation_tol: float, map_tol: float, view_levels: int,
                        map_share: float = 1.0) -> None:
    """Same rows; each mask's activation within `activation_tol` (relative to the largest); every map within
    `map_tol` of its [0, 1] range on average, and `map_share` of them at every cell (another decoder can move a
    random-weight model's single hot cell to its near-tied neighbour); stored crops within `view_levels` of 255."""
    a, b = rows_by_id(got), rows_by_id(expected)
    assert a.keys() == b.keys() and a
    scale = max(f["activation"] for row in b.values() for f in row["features"])
    cells_close = []
    for image_id, row in a.items():
        other = b[image_id]
        assert [f["feature_index"] for f in row["features"]] == [f["feature_index"] for f in other["features"]]
        for f, g in zip(row["features"], other["features"]):
            assert abs(f["activation"] - g["activation"]) <= activation_tol * scale, (image_id, f["feature_index"])
            diff = np.abs(np.array(f["nam"]) - np.array(g["nam"]))
            assert diff.mean() <= map_tol, (image_id, f["feature_index"])
            cells_close.append(diff.max() <= map_tol)
        crops = [np.asarray(Image.open(io.BytesIO(r["image"]["bytes"])), dtype=int) for r in (row, other)]
        assert np.abs(crops[0] - crops[1]).max() <= view_levels, image_id
    assert np.mean(cells_close) >= map_share, f"{np.mean(cells_close):.3f} of the maps close at every cell"


def all_rows(config, tmp_path, name, **fields):
    out = tmp_path / name
    stats = build(config(out=str(out), top_k=None, group_by="label", **fields))  # every image gets a row
    return out, stats


def test_decode_gpu_build_on_cpu_equals_the_default_build_and_is_recorded(config, tmp_path):
    default, _ = all_rows(config, tmp_path, "default")
    device, stats = all_rows(config, tmp_path, "device", decode="gpu", workers=1)
    assert_close_builds(device, default, activation_tol=0.02, map_tol=0.1, view_levels=1)
    fallbacks = {"JPEG mode L": 1, "JPEG mode CMYK": 1, "not a JPEG (PNG)": 1, "unreadable header (OSError)": 1}
    assert stats.decode_fallbacks == fallbacks and stats.skipped_images == 1  # the truncated file, as by default
    info = read_build_info(device)
    assert info["provenance"]["constants"]["decode"] == "gpu"
    assert info["provenance"]["constants"]["jpeg_draft"] is False
    assert read_build_info(default)["provenance"]["constants"]["decode"] == "cpu"
    card = (device / "README.md").read_text()
    assert "JPEGs decoded on the model's device (`--decode gpu`" in card
    line = next(x for x in card.splitlines() if x.startswith("| images decoded by Pillow instead of the device"))
    assert line.startswith("| images decoded by Pillow instead of the device (`--decode gpu`) | 4 (reason: count ")
    assert all(reason.replace("(", "\\(").replace(")", "\\)") in line for reason in fallbacks)
    assert "decoded by Pillow" not in (default / "README.md").read_text()


def test_decode_must_be_cpu_or_gpu(config):
    with pytest.raises(InputError, match=r"^--decode must be one of \('cpu', 'gpu'\), got 'tpu'$"):
        config(decode="tpu")


# --- with CUDA -------------------------------------------------------------------------------------------------

@pytest.mark.cuda
@cuda
def test_nvjpeg_matches_libjpeg_within_idct_tolerance():
    """nvjpeg and libjpeg-turbo differ in IDCT and chroma upsampling: a few levels at edges, under one on average;
    after the resize, the views stay as close."""
    data = jpegs()
    on_gpu, on_cpu = decode_jpegs(data, torch.device("cuda")), decode_jpegs(data, CPU)
    for size, g, c in zip(SIZES, on_gpu, on_cpu):
        assert g.device.type == "cuda" and g.shape == c.shape, size
        diff = (g.cpu().int() - c.int()).abs()
        print(f"{size}: decode max {diff.max().item()}, mean {diff.float().mean().item():.3f}")
        assert diff.float().mean() < 1.0 and diff.max() <= 48, size  # measured on an H200: up to 36
        views = (center_view_tensor(g).cpu().int() - center_view_tensor(c).int()).abs()
        assert views.float().mean() < 1.0 and views.max() <= 48, size  # a 256x256 image is only cropped


@pytest.mark.cuda
@cuda
def test_build_on_cuda_equals_build_on_cpu(config, tmp_path):
    on_cpu, _ = all_rows(config, tmp_path, "cpu", device="cpu")
    on_gpu, _ = all_rows(config, tmp_path, "gpu", device="cuda")
    assert_close_builds(on_gpu, on_cpu, activation_tol=1e-3, map_tol=1e-3, view_levels=0)  # the same decode: the same crops
    assert read_build_info(on_gpu)["provenance"]["device"].startswith("cuda")


@pytest.mark.cuda
@cuda
def test_decode_gpu_build_on_cuda_is_close_to_the_default(config, tmp_path):
    default, _ = all_rows(config, tmp_path, "cpu", device="cpu")
    device, stats = all_rows(config, tmp_path, "gpu", device="cuda", decode="gpu", workers=1)
    assert_close_builds(device, default, activation_tol=0.05, map_tol=0.25, view_levels=32, map_share=0.9)
    assert sum(stats.decode_fallbacks.values()) == 4 and stats.skipped_images == 1


@pytest.mark.cuda
@cuda
def test_bf16_and_tf32_builds_on_cuda_run_and_stay_close(config, tmp_path):
    exact, _ = all_rows(config, tmp_path, "fp32", device="cuda")
    fast, _ = all_rows(config, tmp_path, "fast", device="cuda", bf16=True, tf32=True)
    assert_close_builds(fast, exact, activation_tol=0.1, map_tol=0.25, view_levels=0)
    assert read_build_info(fast)["provenance"]["numerics"] == {"tf32": True, "bf16": True, "compile": False}


# --- the CPU scan's decode schedule (not GPU-specific; beside the decoder's other tests) ----------------------

@pytest.mark.parametrize("call_start_next", [True, False])
def test_batches_with_next_gives_the_same_batches_and_keeps_the_callers_views(call_start_next):
    """Batch i+1 decoding (started by `start_next`, or by asking for it) never changes the views of batch i the
    caller holds, and the batches, their order and their failures are those of the plain schedule."""
    samples, _ = samples_with_quirks()
    samples = [Sample(f"{s.image_id}{n}", 0, s.data, s.ref) for n in range(3) for s in samples]  # 21: 6 batches
    plain = BatchDecoder(0, 4, draft=True)
    expected = [(d.views.clone(), [s.image_id for s in d.good], len(d.failed))
                for d in plain.batches([samples[i:i + 4] for i in range(0, len(samples), 4)], overlap=False)]
    decoder = BatchDecoder(2, 4, draft=True)
    got = []
    try:
        for decoded, start_next in decoder.batches_with_next(samples[i:i + 4] for i in range(0, len(samples), 4)):
            held = decoded.views.clone()
            if call_start_next:
                start_next()
                decoder.map(abs, [0, 0])  # the pool has done the next batch's decoding by now
            assert torch.equal(decoded.views, held)
            got.append((held, [s.image_id for s in decoded.good], len(decoded.failed)))
    finally:
        decoder.close()
    assert len(got) == len(expected) == 6
    for (views, ids, failed), (want_views, want_ids, want_failed) in zip(got, expected):
        assert ids == want_ids and failed == want_failed and torch.equal(views, want_views)
