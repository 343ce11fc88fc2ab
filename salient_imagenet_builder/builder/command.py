"""`python build_dataset.py` / `salient-imagenet build`: a build (or the offline demo); `cli` adds the push.

Every local input (`--out`, `--source`, `--model-checkpoint`, `--annotations`) is checked before anything is
downloaded or computed; failures are `UserError`s that `cli.dispatch` turns into one line and an exit code.
"""

import logging
import shlex
import sys
import tempfile
from pathlib import Path

from ..core import distributed
from ..core.card import BuildStats, read_build_info
from ..core.constants import ANNOTATIONS_URL, DEFAULT_OUT
from ..core.errors import InputError
from ..core.output import check_out, interruptible, is_build
from ..core.sources import describe_reads
from ..core.targets import resolve
from .demo import DEMO_CLASSES, make_inputs
from .pipeline import BuildConfig, build

log = logging.getLogger("salient_imagenet_builder")
DEMO_OUT = "salient_imagenet_demo"


def run(args) -> int:
    """A build, or the demo; with --push and no --source nothing is built (the command line then pushes --out)."""
    if args.demo:
        refuse_demo_inputs(args)
        args.out = args.out or DEMO_OUT
        with interruptible(Path(args.out)):  # Ctrl-C: one line that says whether finished work was kept
            run_demo(args)
    elif args.source is not None or not args.push:
        with interruptible(Path(args.out or DEFAULT_OUT)):
            run_build(args)
    return 0


def refuse_demo_inputs(args) -> None:
    """The demo makes its own images, weights and annotations: an input given with it would be silently ignored."""
    given = [(flag, value) for flag, value in (("--source", args.source), ("--model-checkpoint", args.model_checkpoint),
                                               ("--annotations", args.annotations))
             if value is not None and not (flag == "--annotations" and value == ANNOTATIONS_URL)]
    if given:
        flag, value = given[0]
        raise InputError(f"{flag} {value}: --demo builds from generated inputs and would ignore it; drop --demo to "
                         f"build from your {flag[2:].replace('-', ' ')}, or drop {flag} to run the demo")


def config_from_args(args, **overrides) -> BuildConfig:
    fields = dict(
        source=args.source, split=args.split, out=args.out or DEFAULT_OUT, model=args.model,
        model_checkpoint=args.model_checkpoint, arch=args.arch, annotations=args.annotations, classes=args.classes,
        limit=args.limit, top_k=args.top_k, group_by=args.group_by, image_mode=args.image_mode,
        batch_size=args.batch_size, device=args.device, overwrite=args.overwrite, source_type=args.source_type,
        draft=not args.no_draft, unit_size=args.unit_size, restart=args.restart, tf32=args.tf32, bf16=args.bf16,
        compile=args.compile, decode=args.decode, command=shlex.join(["python", "build_dataset.py", *sys.argv[1:]]),
    )
    if args.workers is not None:
        fields["workers"] = args.workers
    if args.cache_dir:
        fields["cache_dir"] = str(Path(args.cache_dir).expanduser())
    fields.update(overrides)
    return BuildConfig(**fields)


def check_local_inputs(args) -> None:
    """What can be checked on this machine before any download or model: --out, then the local inputs."""
    if args.source is None:
        raise InputError("--source is required: an ImageNet folder, shards or a Hub dataset id (or run the offline "
                         "demo with --demo)")
    check_out(Path(args.out or DEFAULT_OUT), args.overwrite, args.source)
    if args.model_checkpoint is not None and not Path(args.model_checkpoint).expanduser().is_file():
        raise InputError(f"--model-checkpoint {args.model_checkpoint}: no such file")
    if "://" not in args.annotations and not Path(args.annotations).expanduser().is_file():
        raise InputError(f"--annotations {args.annotations}: no such file")
    resolve(args.source, "--source")  # a folder, or a Hub dataset that exists: asked before any download


def run_build(args) -> None:
    check_local_inputs(args)
    config = config_from_args(args)
    distributed.share_cores()
    stats = build(config)
    if stats.rank == 0:  # under torchrun, one rank reports
        print_summary(config.out, stats, config.split)


def run_demo(args) -> None:
    out = Path(args.out)
    # only ever replace an older demo without being asked; anything else goes through the usual --out rules
    overwrite = args.overwrite or (is_build(out) and _is_demo(out))
    check_out(out, overwrite)
    with tempfile.TemporaryDirectory(prefix="salient_demo_") as tmp:
        print("Demo: generating images, a random-weight ResNet-50 checkpoint and an annotation CSV (offline) ...")
        inputs = make_inputs(Path(tmp), DEMO_CLASSES, per_class=6)
        config = config_from_args(args, source=inputs["source"], model="resnet50_l2_eps3",
                                  model_checkpoint=inputs["checkpoint"], annotations=inputs["annotations"],
                                  classes=args.classes or DEMO_CLASSES, out=str(out), overwrite=overwrite,
                                  demo=True, workers=args.workers if args.workers is not None else 1)
        stats = build(config)
    print_summary(str(out), stats, config.split, demo=True)
    print("NOTE: this demo used generated images, RANDOM weights and generated annotations, so its masks and "
          "core/spurious labels are meaningless. For the real dataset, run with --source pointing at ImageNet "
          "(weights and annotations are downloaded).")


def _is_demo(out: Path) -> bool:
    try:
        return bool(read_build_info(out)["provenance"].get("demo"))
    except (OSError, ValueError, KeyError, AttributeError):
        return False


def print_summary(out: str, stats: BuildStats, split: str, demo: bool = False) -> None:
    agreement = stats.top5_agreement
    groups = stats.groups
    filled = sum(1 for n in groups.values() if n)
    print(f"\nBuilt {out}: {stats.images_written} images with {stats.masks_written} masks, "
          f"{stats.annotation_stats['pairs']} annotated pairs "
          f"({stats.annotation_stats['spurious']} spurious); read {stats.images_scanned} images, "
          f"skipped {stats.skipped_images} corrupt; {stats.seconds_total} s "
          f"({stats.images_per_second} images/s).")
    print(f"Groups: the images fell into {filled} of the {len(groups)} built classes.")
    print(describe_reads(stats.source_bytes, stats.source_size))
    print(f"Top-5 self-check: {agreement['agree']} of {agreement['pairs_with_images']} annotated pairs (of classes "
          "that received images) are among the 5 most important features this build computed for their class. "
          "With the published robust model and a full split this is (nearly) all of them; a low count means "
          "other weights or preprocessing, or too few images per class.")
    if demo:
        print("With random weights, expect a low self-check count, and few classes receiving images: a random model "
              "predicts only a few classes, so the other classes get no rows.")
    print("Load it with:\n"
          f"  from datasets import load_dataset\n"
          f"  images = load_dataset({str(out)!r}, split={split!r})\n"
          f"  pairs = load_dataset({str(out)!r}, 'annotations', split='train')")
