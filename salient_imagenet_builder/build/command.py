"""`python build_dataset.py` / `salient-imagenet build`: a build (or the offline demo), then an optional push."""

import logging
import shlex
import sys
import tempfile
from pathlib import Path

from ..constants import DEFAULT_OUT
from .pipeline import BuildConfig, build

log = logging.getLogger("salient_imagenet_builder")
DEMO_OUT = "salient_imagenet_demo"


def run(args) -> int:
    try:
        if args.demo:
            args.out = args.out or DEMO_OUT
            run_demo(args)
        elif args.source is not None or not args.push:
            run_build(args)
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        log.error("%s", e)
        return 2
    if not args.push:
        return 0
    from ..publish.command import run_push

    return run_push(args.out or DEFAULT_OUT, args.repo_id, args.public)


def config_from_args(args, **overrides) -> BuildConfig:
    fields = dict(
        source=args.source, split=args.split, out=args.out or DEFAULT_OUT, model=args.model,
        model_checkpoint=args.model_checkpoint, arch=args.arch, annotations=args.annotations, classes=args.classes,
        limit=args.limit, top_k=args.top_k, group_by=args.group_by, image_mode=args.image_mode,
        batch_size=args.batch_size, device=args.device, overwrite=args.overwrite, source_type=args.source_type,
        draft=not args.no_draft, unit_size=args.unit_size, restart=args.restart, tf32=args.tf32, bf16=args.bf16,
        compile=args.compile, command=shlex.join(["python", "build_dataset.py", *sys.argv[1:]]),
    )
    if args.workers is not None:
        fields["workers"] = args.workers
    if args.cache_dir:
        fields["cache_dir"] = args.cache_dir
    fields.update(overrides)
    return BuildConfig(**fields)


def run_build(args) -> None:
    if args.source is None:
        raise SystemExit("error: --source is required (or run the offline demo with --demo)")
    config = config_from_args(args)
    stats = build(config)
    if stats["rank"] == 0:  # under torchrun, one rank reports
        print_summary(config.out, stats, config.split)


def run_demo(args) -> None:
    from .card import read_build_info
    from .demo import DEMO_CLASSES, make_inputs

    out = Path(args.out)
    overwrite = args.overwrite
    if out.exists() and not overwrite:
        try:
            overwrite = bool(read_build_info(out)["provenance"].get("demo"))  # only ever replace an older demo
        except (OSError, ValueError, KeyError):
            overwrite = False
    with tempfile.TemporaryDirectory(prefix="salient_demo_") as tmp:
        print("Demo: generating images, a random-weight ResNet-50 checkpoint and an annotation CSV (offline) ...")
        inputs = make_inputs(Path(tmp), DEMO_CLASSES, per_class=6)
        config = config_from_args(args, source=inputs["source"], model="resnet50_l2_eps3",
                                  model_checkpoint=inputs["checkpoint"], annotations=inputs["annotations"],
                                  classes=args.classes or DEMO_CLASSES, out=str(out), overwrite=overwrite,
                                  demo=True, workers=args.workers if args.workers is not None else 1)
        stats = build(config)
    print_summary(str(out), stats, config.split)
    print("NOTE: this demo used generated images, RANDOM weights and generated annotations, so its masks and "
          "core/spurious labels are meaningless. For the real dataset, run with --source pointing at ImageNet "
          "(weights and annotations are downloaded).")


def print_summary(out: str, stats: dict, split: str) -> None:
    agreement = stats["top5_agreement"]
    print(f"\nBuilt {out}: {stats['images_written']} images with {stats['masks_written']} masks, "
          f"{stats['annotation_stats']['pairs']} annotated pairs "
          f"({stats['annotation_stats']['spurious']} spurious); read {stats['images_scanned']} images, "
          f"skipped {stats['skipped_images']} corrupt; {stats['seconds_total']} s "
          f"({stats['images_per_second']} images/s).")
    print(f"Top-5 self-check: {agreement['agree']} of {agreement['pairs_with_images']} annotated pairs are in the "
          "computed top 5.")
    print("Load it with:\n"
          f"  from datasets import load_dataset\n"
          f"  images = load_dataset({str(out)!r}, split={split!r})\n"
          f"  pairs = load_dataset({str(out)!r}, 'annotations', split='train')")
