#!/usr/bin/env python
"""Evaluation throughput beside the model's forward-only throughput, in the same run.

Builds a small dataset with the real builder on generated inputs (offline: random weights, generated images and
annotations), decodes it once, then times
- evaluation: clean pass + `--draws` noisy passes over every (row, mask) job (core, spurious and single-feature
  masks): noise generation, the model's preprocessing, the forward pass, argmax; images/s over all draws;
- forward only: the same model on already preprocessed batches of the same size on the same device.
Their ratio is the share of the evaluator's time spent in the model itself.

    python benchmarks/bench_evaluate.py                          # CPU-sized defaults (< 3 min on 2 cores)
    python benchmarks/bench_evaluate.py --model resnet50 --classes 10 --per-class 40 --batch-size 256   # GPU
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from salient_imagenet_builder import evaluation as ev
from salient_imagenet_builder.builder import BuildConfig, build
from salient_imagenet_builder.builder.demo import make_annotations, make_checkpoint, make_images
from salient_imagenet_builder.core.model import pick_device
from salient_imagenet_builder.core.stages import synchronize
from salient_imagenet_builder.evaluation.models import prepare_model
from salient_imagenet_builder.evaluation.noise import noisy_batch
from salient_imagenet_builder.evaluation.options import DEFAULT_DRAWS
from salient_imagenet_builder.evaluation.runner import place


def build_dataset(root: Path, classes: list[int], per_class: int) -> Path:
    make_images(root / "imagenet", classes, per_class=per_class, quirks=False)
    make_checkpoint(root / "resnet18.ckpt", arch="resnet18", classes=classes)
    make_annotations(root / "annotations.csv", classes, num_features=512)
    out = root / "salient"
    build(BuildConfig(source=str(root / "imagenet"), out=str(out), model="resnet18",
                      model_checkpoint=str(root / "resnet18.ckpt"), annotations=str(root / "annotations.csv"),
                      classes=classes, top_k=None, group_by="label", workers=0))
    return out


def forward_only(model, preprocess, data, settings: ev.EvalSettings, images: int) -> float:
    """images/s of the model alone on preprocessed batches already on the device (same batch size, AMP rule)."""
    device = pick_device(settings.device)
    rows = np.arange(min(settings.batch_size, len(data)))
    with torch.inference_mode():
        x = preprocess(noisy_batch(data, rows, np.full(len(rows), -1), 0.0, 0, 0, device))
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        done, start = 0, time.perf_counter()
        while done < images:
            with torch.autocast(device.type, dtype=torch.float16, enabled=settings.amp and device.type == "cuda"):
                model(x).argmax(1)
            done += len(rows)
        synchronize(device)
    return done / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18", help="timm architecture (random weights; nothing downloaded)")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--per-class", type=int, default=8)
    parser.add_argument("--draws", type=int, default=DEFAULT_DRAWS)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    classes = list(range(args.classes))
    settings = ev.EvalSettings(draws=args.draws, batch_size=args.batch_size, device=args.device, progress=False)
    device = pick_device(args.device)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="bench_evaluate_") as tmp:
        start = time.perf_counter()
        dataset = build_dataset(Path(tmp), classes, args.per_class)
        build_seconds = time.perf_counter() - start
        start = time.perf_counter()
        data = place(ev.load_eval_data(str(dataset), workers=0, progress=False), device)
        decode_seconds = time.perf_counter() - start
        checkpoint = make_checkpoint(Path(tmp) / "eval.ckpt", arch=args.model, classes=classes)
        classifier = ev.load_classifier(args.model, str(checkpoint))
    model = prepare_model(classifier.module, device)
    preprocess = ev.Preprocess(classifier.data_config).to(device)
    forward_only(model, preprocess, data, settings, settings.batch_size)  # warm-up (lazy init, cudnn choices)
    result = ev.evaluate_model(data, model, classifier.data_config, settings, args.model)
    forward = forward_only(model, preprocess, data, settings, max(result.throughput["images_evaluated"] // 4,
                                                                  2 * settings.batch_size))
    evaluation = result.throughput["images_per_second"]
    numbers = {
        "model": args.model, "device": str(device), "amp": settings.amp and device.type == "cuda",
        "input_size": list(classifier.data_config["input_size"]), "batch_size": settings.batch_size,
        "rows": len(data), "masks": int(data.masks.shape[0]), "jobs_per_draw": len(result.jobs),
        "draws": settings.draws, "images_evaluated": result.throughput["images_evaluated"],
        "evaluation_seconds": result.throughput["seconds"], "evaluation_images_per_second": evaluation,
        "forward_only_images_per_second": round(forward, 2), "ratio": round(evaluation / forward, 3),
        "build_seconds": round(build_seconds, 2), "decode_seconds": round(decode_seconds, 2),
        "torch_threads": torch.get_num_threads(),
    }
    print(f"\nevaluate {args.model} on {device} (batch {settings.batch_size}, AMP {numbers['amp']}, input "
          f"{numbers['input_size'][-1]}): {len(data)} rows, {len(result.jobs)} noisy jobs per draw, "
          f"{settings.draws} draws, {numbers['images_evaluated']} images evaluated; dataset decoded once in "
          f"{numbers['decode_seconds']} s")
    print(f"evaluation throughput (all draws): {evaluation:.1f} images/s")
    print(f"forward-only throughput (same model, batch, device): {forward:.1f} images/s")
    print(f"ratio evaluation / forward-only: {numbers['ratio']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(numbers, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
