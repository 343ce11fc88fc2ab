"""Build throughput beside its ceiling, the model's forward-only throughput, measured in one run.

    python benchmarks/bench_build.py [--images-per-class 12] [--classes 10] [--arch resnet50] [--batch-size 32]

Generates ImageNet-sized JPEGs (500x375), a random-weight checkpoint in the robust-library layout and an
annotation CSV, then (1) times the feature model alone on preprocessed batches (channels_last, inference_mode),
(2) times a full build (decode workers, both passes, parquet, card) of the same images.
"""

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from salient_imagenet_builder.build import BuildConfig, build  # noqa: E402
from salient_imagenet_builder.build.demo import jpeg_bytes, make_annotations, make_checkpoint, synthetic_image  # noqa: E402
from salient_imagenet_builder.images import center_view, decode, to_uint8_tensor, to_unit_float  # noqa: E402
from salient_imagenet_builder.model import create_feature_model, pick_device  # noqa: E402
from salient_imagenet_builder.schema import wordnet_ids  # noqa: E402
from salient_imagenet_builder.stages import default_workers  # noqa: E402


def make_folder(root: Path, classes: int, per_class: int) -> list[bytes]:
    rng, files = random.Random(0), []
    for label in range(classes):
        folder = root / "train" / wordnet_ids()[label]
        folder.mkdir(parents=True)
        for n in range(per_class):
            data = jpeg_bytes(synthetic_image(rng, label, (500, 375)))
            (folder / f"{wordnet_ids()[label]}_{n}.JPEG").write_bytes(data)
            files.append(data)
    return files


def forward_only(model, device, files, batch_size) -> float:
    batch = torch.stack([to_uint8_tensor(center_view(decode(d))) for d in files[:batch_size]])
    x = to_unit_float(batch.to(device)).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        model(x)  # warm-up
        start, seen = time.perf_counter(), 0
        while seen < len(files):
            model(x)
            seen += len(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--images-per-class", type=int, default=12)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=default_workers())
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        classes = list(range(args.classes))
        files = make_folder(tmp / "imagenet", args.classes, args.images_per_class)
        ckpt = make_checkpoint(tmp / "model.ckpt", args.arch, classes=classes)
        csv = make_annotations(tmp / "a.csv", classes, timm.create_model(args.arch).num_features)
        device = pick_device()
        model = create_feature_model(args.arch, str(ckpt))[0].to(device, memory_format=torch.channels_last)
        before = forward_only(model, device, files, args.batch_size)
        stats = build(BuildConfig(source=str(tmp / "imagenet"), out=str(tmp / "out"), model=args.arch,
                                  model_checkpoint=str(ckpt), annotations=str(csv), batch_size=args.batch_size,
                                  workers=args.workers, cache_dir=str(tmp / "cache")))
        after = forward_only(model, device, files, args.batch_size)
    ceiling = (before + after) / 2  # measured on both sides of the build: load drift shows as a spread
    rate = stats["images_scanned"] / stats["seconds_total"]
    print(f"\ndevice {device}, {args.arch}, batch {args.batch_size}, {args.workers} decode workers, "
          f"{stats['images_scanned']} images (500x375 JPEG), {stats['images_written']} selected for masks")
    print(f"model forward-only: {ceiling:.2f} images/s (before the build {before:.2f}, after {after:.2f})")
    print(f"full build:         {rate:.2f} images/s  ({stats['seconds_total']:.1f} s; stages {stats['stage_seconds']})")
    print(f"ratio build / forward-only: {rate / ceiling:.2f}")


if __name__ == "__main__":
    main()
