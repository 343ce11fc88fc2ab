#!/usr/bin/env python
"""The scan's own cost (pass 1 without the model): selecting each batch's top-k candidates and merging unit results,
at full scale (1,000 classes), with synthetic model outputs and batches whose images fall into many classes (the
worst case: a shuffled parquet row group grouped by prediction).

Printed beside its ceiling: the time a GPU spends on a batch at 5,000 images/s (the project's throughput goal), which
the selection must stay well under; and, for the reduce, the seconds the merge adds to a full train-split build.

    python benchmarks/bench_scan.py [--units 12] [--batch-size 64]
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from salient_imagenet_builder.core.scan import ScanResult, ScanSpec  # noqa: E402
from salient_imagenet_builder.core.scan_units import MERGE_GROUP, UnitScan  # noqa: E402
from salient_imagenet_builder.core.sources import Sample  # noqa: E402

CLASSES, FEATURES, UNIT_IMAGES, TRAIN_UNITS = 1000, 2048, 1000, 1282
GOAL_IMAGES_PER_SECOND = 5000


def unit_result(spec: ScanSpec, unit: int, batch_size: int) -> tuple[ScanResult, float, int]:
    scan, seconds, batches = UnitScan(spec, FEATURES, unit), 0.0, 0
    for start in range(0, UNIT_IMAGES, batch_size):
        n = min(batch_size, UNIT_IMAGES - start)
        samples = [Sample(f"n{unit:05d}_{start + i:05d}", 0, b"", f"{unit}/{start + i}") for i in range(n)]
        pooled, logits = torch.rand(n, FEATURES), torch.randn(n, CLASSES)
        spatial = torch.rand(n, FEATURES, 7, 7) if spec.keep_maps else None
        began = time.perf_counter()
        scan.add(samples, pooled, logits, logits.argmax(1), spatial)
        seconds, batches = seconds + time.perf_counter() - began, batches + 1
    return scan.result(), seconds, batches


def measure(name: str, spec: ScanSpec, units: int, batch_size: int) -> None:
    results, add_seconds, batches = [], 0.0, 0
    for unit in range(units):
        result, seconds, n = unit_result(spec, unit, batch_size)
        results.append(result)
        add_seconds, batches = add_seconds + seconds, batches + n
    began = time.perf_counter()
    total = ScanResult.empty(spec, FEATURES)
    for first in range(0, units, MERGE_GROUP):
        partial = results[first]
        for result in results[first + 1:first + MERGE_GROUP]:
            partial.merge(result)
        total.merge(partial.compact()).compact()
    merge_per_unit = (time.perf_counter() - began) / units
    per_batch_ms = add_seconds / batches * 1000
    budget_ms = batch_size / GOAL_IMAGES_PER_SECOND * 1000
    print(f"{name}: selection {per_batch_ms:.1f} ms per batch of {batch_size} "
          f"(GPU time per batch at {GOAL_IMAGES_PER_SECOND} images/s: {budget_ms:.1f} ms; ratio "
          f"{per_batch_ms / budget_ms:.2f}); merge {merge_per_unit * 1000:.1f} ms per unit of {UNIT_IMAGES} images "
          f"-> {merge_per_unit * TRAIN_UNITS:.0f} s for the train split's {TRAIN_UNITS} units")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    pairs = {c: torch.randperm(FEATURES, generator=generator)[:5].tolist() for c in range(CLASSES)}
    print(f"machine: torch {torch.__version__}, {torch.get_num_threads()} threads; {CLASSES} classes, random groups")
    measure("build (5 annotated pairs per class, top-k 65, maps kept)",
            ScanSpec(list(range(CLASSES)), 65, "prediction", pairs, keep_maps=True), args.units, args.batch_size)
    measure("discover (every feature tracked, top 5, 3 context images)",
            ScanSpec(list(range(CLASSES)), 5, "prediction", None, context_k=3), args.units, args.batch_size)


if __name__ == "__main__":
    main()
