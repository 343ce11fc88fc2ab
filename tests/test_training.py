"""The training loader (`salient_imagenet_builder.training`) on real builds, against an independent decoding of the
stored columns (pyarrow -> PIL -> numpy / 255), the noise formulas computed by hand with the same draws, and the
stored PNG masks for the maps upsampled on the fly."""

import io
import re
import shutil
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torchvision
from conftest import ARCH, as_legacy_build, built_once
from datasets import load_dataset
from packaging.version import Version
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms

from salient_imagenet_builder.builder import BuildConfig, build
from salient_imagenet_builder.core.card import read_build_info
from salient_imagenet_builder.core.constants import MAP_SHAPE
from salient_imagenet_builder.core.schema import LEGACY_LAYOUTS, layout_of
from salient_imagenet_builder.publish.validate import check
from salient_imagenet_builder.training import (
    combined_masks,
    core_noise,
    loader,
    make_transform,
    masks_from_maps,
    prepare,
    spurious_noise,
    torch_transform,
)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _build(inputs, root, mode: str):
    out = root / mode
    build(BuildConfig(source=str(inputs["folder"]), out=str(out), model=ARCH, model_checkpoint=str(inputs["checkpoint"]),
                      annotations=str(inputs["annotations"]), workers=0, batch_size=8, top_k=3, group_by="label",
                      image_mode=mode, draft=False, cache_dir=str(root / "cache")))
    return out


@pytest.fixture(scope="module")
def crop(inputs, tmp_path_factory):
    return built_once(tmp_path_factory, "training_crop", lambda root: _build(inputs, root, "crop"))


@pytest.fixture(scope="module")
def original(inputs, tmp_path_factory):
    return built_once(tmp_path_factory, "training_original", lambda root: _build(inputs, root, "original"))


def stored_rows(out) -> list[dict]:
    """The shard's rows as pyarrow reads them: bytes, no `datasets` decoding."""
    return pq.read_table(next((out / "data").glob("train-*.parquet"))).to_pylist()


def png(cell, mode="L") -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(cell["bytes"])).convert(mode), dtype=np.float32) / 255


def test_transform_equals_independent_decoding(crop):
    rows = stored_rows(crop)
    plain = load_dataset(str(crop), split="train")
    plain.set_transform(torch_transform)
    fast = prepare(load_dataset(str(crop), split="train"))
    assert len(plain) == len(rows) > 0
    for got in (plain[:], fast[:]):
        assert got["image"].shape == (len(rows), 3, 224, 224) and got["image"].dtype == torch.float32
        assert got["core_mask"].shape == got["spurious_mask"].shape == (len(rows), 1, 224, 224)
        assert got["label"].tolist() == [r["label"] for r in rows]
        for i, row in enumerate(rows):
            np.testing.assert_array_equal(got["image"][i].permute(1, 2, 0).numpy(), png(row["image"], "RGB"))
            for column in ("core_mask", "spurious_mask"):
                expected = png(row[column]) if row[column] else np.zeros((224, 224), np.float32)  # none: no region
                np.testing.assert_array_equal(got[column][i, 0].numpy(), expected)
        assert set(got) == {"image", "core_mask", "spurious_mask", "label"}  # the feature list stays undecoded
    assert any(r["spurious_mask"] is None for r in rows) or any(r["core_mask"] is None for r in rows)


def test_prepared_rows_follow_the_datasets_order_and_types(crop):
    """`prepare` reads Arrow rows through the dataset's own index (select / shuffle), one row by an int, a batch by
    a list; `dtype=torch.uint8` gives the 0-255 values the float path divides by 255."""
    rows = stored_rows(crop)
    full = prepare(load_dataset(str(crop), split="train"))[:]
    order = [3, 0, len(rows) - 1, 2]
    chosen = prepare(load_dataset(str(crop), split="train").select(order))
    batch = chosen[:]
    for key in full:
        assert torch.equal(batch[key], full[key][order]), key
    one = chosen[1]
    assert one["image"].shape == (3, 224, 224) and int(one["label"]) == rows[0]["label"]
    assert torch.equal(one["core_mask"], full["core_mask"][0])
    as_bytes = prepare(load_dataset(str(crop), split="train"), dtype=torch.uint8)[[order[0], order[2]]]
    for key in ("image", "core_mask", "spurious_mask"):
        assert as_bytes[key].dtype == torch.uint8
        assert torch.equal(as_bytes[key].float() / 255, full[key][[order[0], order[2]]]), key
    with pytest.raises(ValueError, match="dtype must be"):
        prepare(load_dataset(str(crop), split="train"), dtype=torch.int32)
    for whole in (load_dataset(str(crop)), load_dataset(str(crop), split="train", streaming=True)):
        with pytest.raises(TypeError, match=f"one split .*got {type(whole).__name__}"):
            prepare(whole)


def test_an_older_builds_pillow_written_crops_read_the_same(crop, tmp_path):
    """Crop PNGs written by Pillow's adaptive filters (builds before core.png) take Pillow's path: equal tensors."""
    older = tmp_path / "older"
    shutil.copytree(crop, older)
    shard = next((older / "data").glob("train-*.parquet"))
    table = pq.read_table(shard)
    column = [{"bytes": _pillow_png(cell["bytes"]), "path": None} for cell in table.column("image").to_pylist()]
    assert column[0]["bytes"] != table.column("image")[0].as_py()["bytes"]
    table = table.set_column(table.schema.get_field_index("image"), "image",
                             pa.array(column, type=table.schema.field("image").type))
    pq.write_table(table, shard)
    got = prepare(load_dataset(str(older), split="train"))[:]
    want = prepare(load_dataset(str(crop), split="train"))[:]
    assert all(torch.equal(got[key], want[key]) for key in want)


def _pillow_png(data: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def test_original_build_gives_the_models_view(original):
    """An `original` build stores the file; the transform cuts the view the model saw (torchvision's, here)."""
    view = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])
    rows = stored_rows(original)
    plain = load_dataset(str(original), split="train")
    plain.set_transform(make_transform(image_mode="original"))
    fast = prepare(load_dataset(str(original), split="train"), image_mode="original", draft=False)
    for got in (plain[:], fast[:]):
        for i, row in enumerate(rows):
            expected = np.asarray(view(Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")), np.float32)
            np.testing.assert_array_equal(got["image"][i].permute(1, 2, 0).numpy(), expected / 255)


def masks_and_images(crop, n=6):
    got = prepare(load_dataset(str(crop), split="train"))[:n]
    return got["image"], got["core_mask"], got["spurious_mask"]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, cuda])])
def test_noise_is_the_formula_with_the_same_draws(crop, device):
    images, core, spurious = (t.to(device) for t in masks_and_images(crop))
    binary = (core > 0.5).float()  # a hard region too: exactly unchanged inside
    for masks in (core, binary):
        out = core_noise(images, masks, 0.25, torch.Generator(device).manual_seed(7))
        eps = torch.randn(images.shape, generator=torch.Generator(device).manual_seed(7), device=device)
        torch.testing.assert_close(out, (images + 0.25 * eps * (1 - masks)).clamp(0, 1), atol=1e-6, rtol=0)
        assert out.device == images.device
        inside = (masks == 1).expand_as(images)
        assert torch.equal(out[inside], images[inside])  # the core region is left as it was
        assert not torch.equal(out[~inside], images[~inside])
    binary = (spurious > 0.5).float()
    for masks in (spurious, binary):
        out = spurious_noise(images, masks, 0.5, torch.Generator(device).manual_seed(3))
        eps = torch.randn(images.shape, generator=torch.Generator(device).manual_seed(3), device=device)
        torch.testing.assert_close(out, (images + 0.5 * eps * masks).clamp(0, 1), atol=1e-6, rtol=0)
        outside = (masks == 0).expand_as(images)
        assert torch.equal(out[outside], images[outside])  # nothing outside the spurious region moves
        assert out.min() >= 0 and out.max() <= 1
    assert spurious.amax() > 0.5  # the fixture has a spurious region to noise


@pytest.mark.parametrize("path", ["set_transform", "prepare"])
def test_dataloader_with_workers_gives_the_same_tensors(crop, path):
    ds = load_dataset(str(crop), split="train")
    if path == "prepare":  # its rows fetched a batch at a time (__getitems__), in workers into shared memory
        ds = prepare(ds)
    else:
        ds.set_transform(torch_transform)
    batches = {}
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=4, num_workers=workers)
        batches[workers] = list(loader)
    assert len(batches[0]) == len(batches[2]) > 1
    for a, b in zip(batches[0], batches[2]):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key])


def test_maps_mode_through_the_batched_loader_gives_the_stored_masks(crop):
    """`prepare(masks="maps")` through `loader` (workers 0 and 2, whole batches): the same images and labels as the
    default path, and `combined_masks` of the padded per-kind maps within 1/255 of the stored core / spurious PNGs
    (decoded here with PIL); a row without a feature of a kind gets zeros, as the stored column's null does."""
    rows = stored_rows(crop)
    plain = prepare(load_dataset(str(crop), split="train"))
    maps = prepare(load_dataset(str(crop), split="train"), masks="maps")
    for workers in (0, 2):
        batches = list(loader(maps, batch_size=4, shuffle=False, num_workers=workers))
        assert [len(b["label"]) for b in batches] == [min(4, len(rows) - i) for i in range(0, len(rows), 4)]
        got = {key: torch.cat([b[key] for b in batches]) for key in ("image", "label", "core_maps", "spurious_maps")}
        want = plain[:]
        assert torch.equal(got["image"], want["image"]) and torch.equal(got["label"], want["label"])
        assert "core_mask" not in batches[0] and got["core_maps"].shape[1:] == (5, *MAP_SHAPE)
        for kind in ("core", "spurious"):
            masks = combined_masks(got[f"{kind}_maps"])
            assert masks.shape == (len(rows), 1, 224, 224)
            for i, row in enumerate(rows):
                stored = png(row[f"{kind}_mask"]) if row[f"{kind}_mask"] else np.zeros((224, 224), np.float32)
                assert np.abs(masks[i, 0].numpy() - stored).max() <= 1 / 255 + 1e-6, (kind, i)
    with pytest.raises(ValueError, match="masks must be one of"):
        make_transform(masks="jpeg")


def test_raw_maps_reach_torch_as_arrays_and_upsample_to_the_stored_masks(crop):
    rows = stored_rows(crop)
    # datasets 4.0's numpy and torch formatters import torchvision.io.VideoReader, gone from torchvision 0.2x: there
    # they fail in any process that imported torchvision (timm does), whatever the columns
    formats = Version(datasets.__version__) > Version("4.0.0") or hasattr(torchvision.io, "VideoReader")
    arrays = load_dataset(str(crop), split="train").with_format("numpy") if formats else None
    maps = load_dataset(str(crop), split="train").with_format("torch") if formats else None
    got = prepare(load_dataset(str(crop), split="train"), features=True)[:]
    for i, row in enumerate(rows):
        nams = got["nams"][i]
        assert nams.shape == (len(row["features"]), *MAP_SHAPE) and nams.dtype == torch.float32
        assert [f["feature_index"] for f in row["features"]] == got["feature_index"][i].tolist()
        if formats:  # each map an H x W array / tensor
            assert np.array_equal(np.stack([f["nam"] for f in arrays[i]["features"]]), nams.numpy().reshape(len(nams), -1))
            assert torch.equal(torch.stack([f["nam"] for f in maps[i]["features"]]), nams.reshape(len(nams), -1))
        masks = masks_from_maps(nams)
        stored = np.stack([png(f["mask"]) for f in row["features"]])
        assert np.abs(masks.numpy() - stored).max() <= 1 / 255 + 1e-6
        for kind in ("core", "spurious"):
            chosen = [k == kind for k in got["feature_kind"][i]]
            if any(chosen):  # the combined mask is the max of the kind's masks
                combined = masks[torch.tensor(chosen)].amax(0)
                assert np.abs(combined.numpy() - png(row[f"{kind}_mask"])).max() <= 1 / 255 + 1e-6


def test_masks_from_maps_normalises_raw_maps_on_their_device():
    raw = torch.rand(2, 3, *MAP_SHAPE) * 5
    masks = masks_from_maps(raw, size=32)
    assert masks.shape == (2, 3, 32, 32)
    expected = torch.nn.functional.interpolate((raw / raw.amax((-2, -1), keepdim=True)).reshape(6, 1, *MAP_SHAPE),
                                               size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(masks, expected.reshape(2, 3, 32, 32))
    assert torch.equal(masks_from_maps(torch.zeros(1, *MAP_SHAPE)), torch.zeros(1, 224, 224))  # a dead channel


def test_a_masks_only_build_says_what_is_missing():
    with pytest.raises(ValueError, match="no image .*--image-mode none"):
        torch_transform({"image": [None], "core_mask": [None], "spurious_mask": [None], "label": [0]})


@pytest.mark.parametrize("legacy", LEGACY_LAYOUTS)
def test_check_passes_new_builds_and_older_layouts_train_the_same(crop, tmp_path, legacy):
    """A build's raw maps are fixed-size lists of its model's map shape, with each image's size; older builds' layouts
    (Array2D maps, nested lists; no sizes) stay valid and give the same tensors."""
    assert check(str(crop)) == []
    assert read_build_info(crop)["stats"]["map_shape"] == list(MAP_SHAPE)
    older = as_legacy_build(crop, tmp_path / "older", legacy)
    assert check(str(older)) == []
    ds = load_dataset(str(older), split="train")
    assert layout_of(ds.features) == ((None, "lists") if legacy == "lists" else (MAP_SHAPE, "array2d"))
    assert "original_width" not in ds.column_names
    got = prepare(ds, features=True)[:]
    new = prepare(load_dataset(str(crop), split="train"), features=True)[:]
    assert all(torch.equal(a, b) for a, b in zip(got["nams"], new["nams"]))
    assert torch.equal(got["image"], new["image"])


def test_the_readmes_training_example_runs(crop):
    """README's "Use in training" loop as written, on the CPU, with a small timm model and the fixture build: each
    batch gets core-risk noise and one SGD step (the loss is finite; the last batch's input is noised)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "core_noise, loader" in block)
    for old, new in ((".cuda()", ""), ('"salient_imagenet"', repr(str(crop))), ('"resnet50"', repr(ARCH)),
                     ("num_workers=8", "num_workers=0")):
        assert old in code, old
        code = code.replace(old, new)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    batch, x = namespace["batch"], namespace["x"]
    assert torch.isfinite(namespace["loss"]) and x.shape == batch["image"].shape
    outside = (batch["core_mask"] < 1).expand_as(x)
    assert not torch.equal(x[outside], batch["image"][outside])
