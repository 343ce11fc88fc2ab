"""The training loader's throughput: rows per second per core through `set_transform(torch_transform)` and a torch
DataLoader (batch 64), `prepare`, the package's batched `loader`, `masks="maps"` (one PNG decoded per row; the masks
made on the GPU by `combined_masks`) and `dtype=torch.uint8` (images sent as bytes, divided by 255 on the GPU), on a
generated `crop` build of a few hundred rows. Target: 500 rows/s per core.

    python benchmarks/bench_loader.py [--rows 320] [--workers 0 2] [--epochs 2] [--dataset BUILT_FOLDER]

The build is a real one (`--top-k all --group-by label`, every image gets a row; a random resnet10t, whose maps
are what a ResNet-50's would be for the loader: 7 x 7, one to five features per row) of 500 x 375 JPEGs. Per
setting, the whole build is read `--epochs` times after a warm-up epoch; "per core" divides by the processes that
decode (the workers, or the main process with 0 workers). "Rows per CPU-second" divides by the CPU time the
decoding processes used in the timed epochs (and, "in all", the main process's too): it stays honest on a shared
machine, where 2 workers and the main process contend for 2 cores."""

import argparse
import os
import random
import resource
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import timm
import torch
from datasets import load_dataset
from PIL import Image
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from salient_imagenet_builder.builder import BuildConfig, build
from salient_imagenet_builder.builder.demo import jpeg_bytes, make_annotations, make_checkpoint, synthetic_image
from salient_imagenet_builder.core.schema import wordnet_ids
from salient_imagenet_builder.training import loader, prepare, torch_transform

TARGET = 500  # rows per second per core
ARCH = "resnet10t"
GRAIN = 16  # pixel noise (std, of 255)


def textured(rng: random.Random, label: int, noise: np.random.Generator) -> Image.Image:
    """A synthetic photo with grain: its 224 view's PNG weighs what a real ImageNet crop's does (~100 kB; without
    grain, ~2 kB, and far cheaper to decode than a real one)."""
    pixels = np.asarray(synthetic_image(rng, label, (500, 375)), dtype=np.float32)
    return Image.fromarray((pixels + noise.normal(0, GRAIN, pixels.shape)).clip(0, 255).astype(np.uint8))


def make_build(root: Path, rows: int) -> Path:
    classes = [0, 1]
    rng, noise = random.Random(0), np.random.default_rng(0)
    for label in classes:
        folder = root / "imagenet" / "train" / wordnet_ids()[label]
        folder.mkdir(parents=True)
        for n in range(rows // len(classes)):
            (folder / f"{wordnet_ids()[label]}_{n:05d}.JPEG").write_bytes(jpeg_bytes(textured(rng, label, noise)))
    features = timm.create_model(ARCH, pretrained=False).num_features
    out = root / "build"
    build(BuildConfig(source=str(root / "imagenet"), out=str(out), model=ARCH,
                      model_checkpoint=str(make_checkpoint(root / "model.ckpt", ARCH, seed=0, classes=classes)),
                      annotations=str(make_annotations(root / "annotations.csv", classes, features, seed=0)),
                      top_k=None, group_by="label", image_mode="crop", workers=0, batch_size=32))
    return out


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds used so far by this process, and by its live children (the DataLoader's persistent workers; read
    from /proc, so their start and the warm-up epoch are not counted when subtracted)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = 0.0
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for pid in (task / "children").read_text().split():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            children += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return own.ru_utime + own.ru_stime, children


def measure(dataset, workers: int, epochs: int, batched: bool = False) -> dict:
    """`batched`: the package's `loader` (whole batches fetched, no re-stacking collate), else a plain DataLoader."""
    make = loader if batched else partial(DataLoader, shuffle=True)
    loader_ = make(dataset, batch_size=64, num_workers=workers, persistent_workers=workers > 0)
    for _ in loader_:  # warm-up: workers started, files in the page cache
        pass
    start_wall, start_cpu, rows = time.perf_counter(), cpu_seconds(), 0
    for _ in range(epochs):
        for batch in loader_:
            rows += len(batch["label"])
    wall = time.perf_counter() - start_wall
    (main, workers_cpu), (main_0, workers_0) = cpu_seconds(), start_cpu
    decoding = workers_cpu - workers_0 if workers else main - main_0
    return {"rows": rows, "rows_per_s": rows / wall, "per_core": rows / wall / max(workers, 1),
            "per_decode_cpu_s": rows / decoding, "per_cpu_s": rows / (main - main_0 + workers_cpu - workers_0)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=320)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--dataset", help="an existing crop build to read instead of a generated one")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # per core: one thread in the main process too, as in each DataLoader worker (two
    # threads on a shared machine spin against other processes: the collate's stack then costs 10x its CPU time)
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
        out = Path(args.dataset) if args.dataset else make_build(Path(tmp), args.rows)
        image_bytes = pc.mean(pc.binary_length(pc.struct_field(
            load_dataset(str(out), split="train").data.column("image"), "bytes"))).as_py()
        print(f"build: {out}, mean image PNG {image_bytes / 1e3:.1f} kB; load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores")
        paths = {"set_transform(torch_transform)": lambda ds: ds.set_transform(torch_transform) or ds,
                 "prepare(ds)": prepare, "prepare(ds) + loader": prepare,
                 "prepare(ds, masks='maps') + loader": partial(prepare, masks="maps"),
                 "prepare(ds, masks='maps', dtype=uint8) + loader": partial(prepare, masks="maps", dtype=torch.uint8)}
        for name, make in paths.items():
            for workers in args.workers:
                ds = make(load_dataset(str(out), split="train"))
                r = measure(ds, workers, args.epochs, batched=name.endswith("loader"))
                print(f"{name:50s} workers={workers}: {r['rows']} rows, {r['rows_per_s']:.0f} rows/s, "
                      f"{r['per_core']:.0f} rows/s per core ({r['per_core'] / TARGET:.2f}x the {TARGET} target); "
                      f"rows per CPU-second: {r['per_decode_cpu_s']:.0f} decoding "
                      f"({r['per_decode_cpu_s'] / TARGET:.2f}x), {r['per_cpu_s']:.0f} in all")


if __name__ == "__main__":
    main()
