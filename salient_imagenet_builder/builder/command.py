"""`python build_dataset.py` / `salient-imagenet build`: a build, the offline demo, and `--push` after it (or of an
existing `--out` when no `--source` is given).

Every local input (`--out`, `--source`, `--model-checkpoint`, `--annotations`) is checked before anything is
downloaded or computed; failures are `UserError`s that `cli.dispatch` turns into one line and an exit code.
"""

import logging
import tempfile
from dataclasses import replace
from pathlib import Path

from ..core import distributed
from ..core.card import BuildStats, read_build_info
from ..core.constants import ANNOTATIONS_URL
from ..core.errors import InputError
from ..core.output import check_out, kind_of
from ..core.sources import describe_reads
from .options import BuildConfig

log = logging.getLogger("salient_imagenet_builder")


def run(config: BuildConfig) -> int:
    """A build, or the demo; with --push and no --source nothing is built; then --push publishes --out."""
    if config.demo:
        refuse_demo_inputs(config)
        run_demo(config)
    elif config.source is not None or not config.push:
        run_build(config)
    if config.push:  # the command line composes a build and a push
        from ..publish import run_push

        return run_push(config.out, config.repo_id, config.public)
    return 0


def refuse_demo_inputs(config: BuildConfig) -> None:
    """The demo makes its own images, weights and annotations: an input given with it would be silently ignored."""
    given = [(flag, value) for flag, value in (("--source", config.source),
                                               ("--model-checkpoint", config.model_checkpoint),
                                               ("--annotations", config.annotations))
             if value is not None and not (flag == "--annotations" and value == ANNOTATIONS_URL)]
    if given:
        flag, value = given[0]
        raise InputError(f"{flag} {value}: --demo builds from generated inputs and would ignore it; drop --demo to "
                         f"build from your {flag[2:].replace('-', ' ')}, or drop {flag} to run the demo")


def run_build(config: BuildConfig) -> None:
    from ..core.job import run_command
    from .job import BuildJob

    if config.source is None:
        raise InputError("--source is required: an ImageNet folder, shards or a Hub dataset id (or run the offline "
                         "demo with --demo)")
    distributed.share_cores()
    stats = run_command(BuildJob(config))
    if stats.rank == 0:  # under torchrun, one rank reports
        print_summary(config.out, stats, config.split)


def run_demo(config: BuildConfig) -> None:
    from ..core.job import run_command
    from .demo import DEMO_CLASSES, make_inputs
    from .job import BuildJob

    out = Path(config.out)
    # only ever replace an older demo without being asked; anything else goes through the usual --out rules
    overwrite = config.overwrite or (kind_of(out) == "build" and _is_demo(out))
    check_out(out, overwrite, None, "build")
    with tempfile.TemporaryDirectory(prefix="salient_demo_") as tmp:
        print("Demo: generating images, a random-weight ResNet-50 checkpoint and an annotation CSV (offline) ...")
        inputs = make_inputs(Path(tmp), DEMO_CLASSES, per_class=6)
        demo = replace(config, source=inputs["source"], model="resnet50_l2_eps3",
                       model_checkpoint=inputs["checkpoint"], annotations=inputs["annotations"],
                       classes=config.classes or DEMO_CLASSES, out=str(out), overwrite=overwrite,
                       workers=config.workers if config.workers is not None else 1)
        stats = run_command(BuildJob(demo))
    print_summary(str(out), stats, demo.split, demo=True)
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
