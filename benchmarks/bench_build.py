"""Build throughput beside its ceiling (the model's forward-only throughput), the decode pipeline alone, and peak
memory at two dataset sizes 4x apart, for a bounded top-k build and a `--top-k all` build, in one run.

    python benchmarks/bench_build.py [--classes 2] [--images-per-class 32] [--arch resnet50] [--batch-size 32]
    python benchmarks/bench_build.py --device cuda --decode gpu --classes 8 --images-per-class 256 --batch-size 256

Generates ImageNet-sized JPEGs (500x375), a random-weight checkpoint in the robust-library layout whose BatchNorm
statistics are calibrated on those images (an uncalibrated random ResNet-50 drifts into denormal numbers and runs
~2x slower on CPU, which would skew the ratio), and an annotation CSV. Then:
1. forward-only: the feature model alone on preprocessed batches (channels_last, inference_mode), before and after;
2. two full builds (subprocesses, so each has its own peak RSS), of N and 4N images (`--limit`), with
   `--group-by label` and top-k = k/N of ImageNet's (65 of ~1281 images per class), so the share of images that
   get masks matches a full build; the build rate is the marginal one, (4N - N) / (t(4N) - t(N)): start-up cancels;
   the same two with `--top-k all` (every image gets masks, in one pass; `--modes` picks);
3. the decode pipeline alone (read + decode + shared-memory hand-over, no model) and the row stage alone (masks and
   PNG encoding of one selected image), per worker: how many cores one GPU needs.
"""

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from salient_imagenet_builder.builder import BuildConfig, build  # noqa: E402
from salient_imagenet_builder.builder.demo import jpeg_bytes, make_annotations, make_checkpoint, synthetic_image  # noqa: E402
from salient_imagenet_builder.builder.rows import ImageMeta, make_row_job  # noqa: E402
from salient_imagenet_builder.core.decoding import BatchDecoder  # noqa: E402
from salient_imagenet_builder.core.images import center_view, decode, to_uint8_tensor, to_unit_float  # noqa: E402
from salient_imagenet_builder.core.masks import normalized_maps  # noqa: E402
from salient_imagenet_builder.core.model import create_feature_model  # noqa: E402
from salient_imagenet_builder.core.runner import Numerics, backend_flags  # noqa: E402
from salient_imagenet_builder.core.schema import wordnet_ids  # noqa: E402
from salient_imagenet_builder.core.sources import Sample  # noqa: E402
from salient_imagenet_builder.core.stages import batched, synchronize  # noqa: E402

IMAGENET_TOP_K_SHARE = 65 / 1281  # k over the images of an average train class


def make_folder(root: Path, classes: int, per_class: int) -> list[bytes]:
    rng, files = random.Random(0), []
    for label in range(classes):
        folder = root / "train" / wordnet_ids()[label]
        folder.mkdir(parents=True)
        for n in range(per_class):
            data = jpeg_bytes(synthetic_image(rng, label, (500, 375)))
            (folder / f"{wordnet_ids()[label]}_{n:05d}.JPEG").write_bytes(data)
            files.append(data)
    return files


def calibrated_checkpoint(path: Path, arch: str, classes: list[int], files: list[bytes]) -> Path:
    """make_checkpoint's random weights, with BatchNorm running statistics measured on the bench's images."""
    make_checkpoint(path, arch, classes=classes)
    model = create_feature_model(arch, str(path))[0]
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batches
    batch = torch.stack([to_uint8_tensor(center_view(decode(d))) for d in files[:64]])
    model.train()
    with torch.no_grad():
        for chunk in batch.split(32):
            model(to_unit_float(chunk))
    ckpt = torch.load(path, weights_only=True)
    for prefix in ("module.model.", "module.attacker.model."):
        ckpt["model"].update({prefix + k: v.clone() for k, v in model.net.state_dict().items()})
    torch.save(ckpt, path)
    return path


def forward_only(model, files, batch_size, device) -> tuple[float, float]:
    """(images per wall second, images per CPU second of this process), at least 4 batches."""
    batch = torch.stack([to_uint8_tensor(center_view(decode(d))) for d in files[:batch_size]])
    x = to_unit_float(batch.to(device)).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), backend_flags(device, Numerics()):
        model(x)  # warm-up (CUDA context, cuDNN handles)
        synchronize(device)
        start, cpu, seen = time.perf_counter(), time.process_time(), 0
        while seen < max(len(files), 4 * len(x)):
            model(x)
            seen += len(x)
        synchronize(device)
    return seen / (time.perf_counter() - start), seen / (time.process_time() - cpu)


def decode_alone(files, workers, batch_size) -> float:
    decoder = BatchDecoder(workers, batch_size, draft=True)
    samples = [Sample(str(i), 0, data, str(i)) for i, data in enumerate(files)]
    start = time.perf_counter()
    for _ in decoder.batches(batched(samples, batch_size), overlap=True):
        pass
    rate = len(files) / (time.perf_counter() - start)
    decoder.close()
    return rate


def rows_alone(n, workers, batch_size, features=5) -> float:
    """Masks + PNG of `n` selected images with `features` annotated features each (decode not included)."""
    decoder = BatchDecoder(workers, batch_size, draft=True)
    nams = normalized_maps(torch.relu(torch.randn(n, features, 7, 7, generator=torch.Generator().manual_seed(0))))
    jobs = [(ImageMeta(str(i), 0, 0, 0, str(i), (500, 375)), None,
             [{"feature_index": j, "feature_rank": j + 1, "kind": "core", "activation": 1.0, "rank": 1,
               "nam": nams[i, j].numpy()} for j in range(features)]) for i in range(n)]
    start = time.perf_counter()
    for chunk in batched(jobs, batch_size):
        decoder.map(make_row_job, chunk)
    rate = n / (time.perf_counter() - start)
    decoder.close()
    return rate


def child_build(spec: str) -> None:
    stats = build(BuildConfig(**json.loads(spec)))
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
    print("BENCH " + json.dumps({"stats": stats.to_dict(), "peak_rss_mb": peak_rss_mb(), "peak_gpu_mb": gpu},
                                default=str))


def peak_rss_mb() -> float:
    """VmHWM: this process's peak resident set (ru_maxrss would carry over the parent's peak through fork+exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_build(fields: dict) -> dict:
    """The build in a subprocess: its stats, its peak RSS and the CPU seconds of it and its decode workers."""
    cpu = children_cpu()
    result = subprocess.run([sys.executable, __file__, "--child-build", json.dumps(fields)], capture_output=True,
                            text=True, check=False)
    line = next((x for x in result.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(line[len("BENCH "):]) | {"cpu_seconds": children_cpu() - cpu}


def report_mode(small: dict, large: dict, ceiling: float, cpu_ceiling: float) -> dict:
    """Prints one mode's two builds, marginal rate, ratios and peak memory; returns the headline figures."""
    s, b = small["stats"], large["stats"]
    for run in (small, large):
        st = run["stats"]
        gpu = f", peak GPU memory {run['peak_gpu_mb']:.0f} MB" if run.get("peak_gpu_mb") else ""
        print(f"build of {st['images_scanned']:4d} images (top-k {run['k']}, {st['images_written']} with masks): "
              f"{st['seconds_total']:.1f} s, {st['images_per_second']:.2f} images/s overall, "
              f"peak RSS {run['peak_rss_mb']:.0f} MB{gpu}")
        print(f"    stages (s): {st['stage_seconds']}")
    marginal = (b["images_scanned"] - s["images_scanned"]) / (b["seconds_total"] - s["seconds_total"])
    share = b["images_written"] / b["images_scanned"]
    cpu_marginal = (b["images_scanned"] - s["images_scanned"]) / (large["cpu_seconds"] - small["cpu_seconds"])
    print(f"top-k {large['k']}: build, marginal: {marginal:.2f} images/s (({b['images_scanned']} - "
          f"{s['images_scanned']}) images / ({b['seconds_total']:.1f} - {s['seconds_total']:.1f}) s), "
          f"{share:.0%} of images get masks")
    print(f"top-k {large['k']}: ratio build / forward-only: {marginal / ceiling:.2f}")
    print(f"top-k {large['k']}: same in CPU time (less sensitive to other load): forward-only {cpu_ceiling:.2f} "
          f"images per CPU-second, build (marginal, incl. workers) {cpu_marginal:.2f}; ratio "
          f"{cpu_marginal / cpu_ceiling:.2f}")
    print(f"top-k {large['k']}: peak RSS {small['peak_rss_mb']:.0f} MB at {s['images_scanned']} images, "
          f"{large['peak_rss_mb']:.0f} MB at {b['images_scanned']} images (4x)")
    return {"ratio": marginal / ceiling, "cpu_ratio": cpu_marginal / cpu_ceiling, "rate": marginal, "share": share,
            "rss": (small["peak_rss_mb"], large["peak_rss_mb"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--images-per-class", type=int, default=32,
                        help="N / classes, a multiple of --batch-size (the model's peak memory grows with the batch)")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="decode workers (default: the build's own)")
    parser.add_argument("--modes", default="bounded,all",
                        help="builds to time: bounded (top-k at ImageNet's share), all (--top-k all), or both")
    parser.add_argument("--device", default="cpu", help="the builds' and forward-only's device (cpu, cuda)")
    parser.add_argument("--decode", default="cpu", choices=("cpu", "gpu"), help="the builds' --decode")
    parser.add_argument("--child-build", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_build:
        return child_build(args.child_build)
    cores = os.cpu_count() or 1
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        classes = list(range(args.classes))
        small, large = args.images_per_class, 4 * args.images_per_class
        files = make_folder(tmp / "imagenet", args.classes, large)
        ckpt = calibrated_checkpoint(tmp / "model.ckpt", args.arch, classes, files)
        csv = make_annotations(tmp / "a.csv", classes, timm.create_model(args.arch).num_features)
        device = torch.device(args.device)
        model = create_feature_model(args.arch, str(ckpt))[0].to(device, memory_format=torch.channels_last).eval()
        before, cpu_before = forward_only(model, files, args.batch_size, device)
        runs = {}
        for mode in args.modes.split(","):
            for per_class in (small, large):
                k = None if mode == "all" else max(1, round(IMAGENET_TOP_K_SHARE * per_class))
                fields = dict(source=str(tmp / "imagenet"), out=str(tmp / f"out-{mode}-{per_class}"),
                              model=args.arch, model_checkpoint=str(ckpt), annotations=str(csv), batch_size=args.batch_size,
                              workers=args.workers, cache_dir=str(tmp / "cache"), limit=per_class, top_k=k,
                              group_by="label", device=args.device)
                if args.decode != "cpu":
                    fields["decode"] = args.decode
                runs[mode, per_class] = run_build(fields) | {"k": k or "all"}
        after, cpu_after = forward_only(model, files, args.batch_size, device)
        decode_1 = decode_alone(files, 1, args.batch_size)
        decode_all = decode_alone(files, cores, args.batch_size)
        rows_1 = rows_alone(64, 1, args.batch_size)
    ceiling = (before + after) / 2  # measured on both sides of the builds: load drift shows as a spread
    cpu_ceiling = (cpu_before + cpu_after) / 2
    print(f"\nmachine: {cores} cores, load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, after "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads")
    print(f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
          f"--decode {args.decode}, {args.arch} (calibrated BatchNorm), batch {args.batch_size}, group-by label, "
          f"500x375 JPEGs")
    print(f"model forward-only:  {ceiling:.2f} images/s (before the builds {before:.2f}, after {after:.2f})")
    figures = {mode: report_mode(runs[mode, small], runs[mode, large], ceiling, cpu_ceiling)
               for mode in args.modes.split(",")}
    print(f"SUMMARY forward-only {ceiling:.2f} images/s; " + "; ".join(
        f"top-k {mode}: build {f['rate']:.2f} images/s, ratio {f['ratio']:.2f} (CPU time {f['cpu_ratio']:.2f}), "
        f"peak RSS {f['rss'][0]:.0f} -> {f['rss'][1]:.0f} MB at 1x -> 4x images" for mode, f in figures.items()))
    print(f"decode pipeline alone (read + decode + hand-over, no model): {decode_1:.0f} images/s with 1 worker, "
          f"{decode_all:.0f} images/s with {cores} workers ({decode_all / cores:.0f} per worker)")
    print(f"row stage alone (5 masks + PNG per selected image): {rows_1:.0f} images/s per worker")
    share = figures["bounded"]["share"] if "bounded" in figures else 1.0
    per_image = 1 / decode_1 + share * (1 / decode_1 + 1 / rows_1)  # worker-seconds per image read, both passes
    print(f"cores per 5,000 images/s (decode both passes + rows at this share): {5000 * per_image:.1f}; "
          f"15 workers (16 cores, one for the model loop) sustain {15 / per_image:.0f} images/s")


if __name__ == "__main__":
    main()
