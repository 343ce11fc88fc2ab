"""Command line: `python build_dataset.py ...` (the build) and `salient-imagenet <command> ...`."""

import argparse
import logging
import shlex
import sys
import tempfile
from pathlib import Path

from .constants import ANNOTATIONS_URL, DEFAULT_MODEL, DEFAULT_OUT, DEFAULT_TOP_K, ROBUST_MODELS

log = logging.getLogger("salient_imagenet_builder")
DEMO_OUT = "salient_imagenet_demo"


def parse_classes(text: str) -> list[int]:
    """`0-9,325` -> [0, ..., 9, 325]."""
    classes = set()
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            low, _, high = part.partition("-")
            classes.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--classes {text!r}: expected indices and ranges like 0-9,325") from None
    if not classes or min(classes) < 0 or max(classes) > 999:
        raise argparse.ArgumentTypeError(f"--classes {text!r}: class indices must lie in 0-999")
    return sorted(classes)


def positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def parse_top_k(text: str) -> int | None:
    if text == "all":
        return None
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"--top-k {text!r}: expected a positive integer or 'all'") from None


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", help="ImageNet folder, parquet/arrow or WebDataset tar shards (path), "
                                         "or a Hub dataset id such as ILSVRC/imagenet-1k")
    parser.add_argument("--source-type", choices=("folder", "parquet", "webdataset"),
                        help="layout of --source when auto-detection cannot tell")
    parser.add_argument("--split", default="train", help="split to read (default: train)")
    parser.add_argument("--out", default=None, help=f"output folder (default: ./{DEFAULT_OUT})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"robust model ({', '.join(ROBUST_MODELS)}) or any timm model name "
                             f"(default: {DEFAULT_MODEL})")
    parser.add_argument("--model-checkpoint", help="local weights (robust-library .ckpt or a state dict)")
    parser.add_argument("--arch", help="timm architecture for --model-checkpoint (default: from --model)")
    parser.add_argument("--annotations", default=ANNOTATIONS_URL,
                        help="annotation CSV path or URL (default: the published release)")
    parser.add_argument("--classes", type=parse_classes, help="only these classes, e.g. 0-9,325")
    parser.add_argument("--limit", type=positive_int, help="read at most N images of each class")
    parser.add_argument("--top-k", type=parse_top_k, default=DEFAULT_TOP_K,
                        help=f"top images per (class, feature) pair, or 'all' (default: {DEFAULT_TOP_K})")
    parser.add_argument("--group-by", choices=("prediction", "label"), default="prediction",
                        help="group images by the robust model's prediction (the paper) or the true label")
    parser.add_argument("--image-mode", choices=("crop", "original", "none"), default="crop",
                        help="image column: the 224 center view aligned with the masks, the original file, or none")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (0: decode in-process)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-draft", action="store_true", help="decode JPEGs at full size (slower)")
    parser.add_argument("--cache-dir", default=None, help="download cache (default: ~/.cache/salient_imagenet)")


def config_from_args(args, **overrides):
    from .build import BuildConfig

    fields = dict(
        source=args.source, split=args.split, out=args.out or DEFAULT_OUT, model=args.model,
        model_checkpoint=args.model_checkpoint, arch=args.arch, annotations=args.annotations, classes=args.classes,
        limit=args.limit, top_k=args.top_k, group_by=args.group_by, image_mode=args.image_mode,
        batch_size=args.batch_size, device=args.device, overwrite=args.overwrite, source_type=args.source_type,
        draft=not args.no_draft, command=shlex.join(["python", "build_dataset.py", *sys.argv[1:]]),
    )
    if args.workers is not None:
        fields["workers"] = args.workers
    if args.cache_dir:
        fields["cache_dir"] = args.cache_dir
    fields.update(overrides)
    return BuildConfig(**fields)


def run_build(args) -> int:
    from .build import build

    if args.source is None:
        raise SystemExit("error: --source is required (or run the offline demo with --demo)")
    config = config_from_args(args)
    stats = build(config)
    print_summary(config.out, stats, config.split)
    return 0


def run_demo(args) -> int:
    from .build import build
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
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="build_dataset.py", description="Build Salient ImageNet: robust-model soft masks labelled core or "
                                             "spurious, written as a Hugging Face dataset (parquet + card).")
    add_build_arguments(parser)
    parser.add_argument("--demo", action="store_true", help="offline demo build on generated inputs")
    add_push_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def add_push_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--push", action="store_true",
                        help="publish to the Hugging Face Hub (after building, or the existing --out folder)")
    parser.add_argument("--repo-id", help="Hub dataset repo (default: <logged-in user>/salient_imagenet)")
    parser.add_argument("--public", action="store_true",
                        help="make a new repo public (default: private, as ImageNet's terms restrict its images)")


def run_push(out: str, repo_id: str | None, public: bool) -> int:
    from .hub import PushError, push

    try:
        repo_id = push(out, repo_id, private=not public)
    except PushError as e:
        log.error("%s", e)
        return 3
    print(f"Pushed {out} to https://huggingface.co/datasets/{repo_id} "
          f"({'public' if public else 'private'}). Load it with load_dataset({repo_id!r}).")
    return 0


def build_main(argv=None) -> int:
    """`python build_dataset.py`."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        if args.demo:
            args.out = args.out or DEMO_OUT
            run_demo(args)
        elif args.source is not None or not args.push:
            run_build(args)
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        log.error("%s", e)
        return 2
    return run_push(args.out or DEFAULT_OUT, args.repo_id, args.public) if args.push else 0


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "httpcore", "urllib3", "filelock", "fsspec", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv=None) -> int:
    """`salient-imagenet <command>`."""
    parser = argparse.ArgumentParser(prog="salient-imagenet", description="Salient ImageNet tools")
    commands = parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser("build", help="build the dataset (same options as build_dataset.py)")
    add_build_arguments(build_cmd)
    build_cmd.add_argument("--demo", action="store_true", help="offline demo build on generated inputs")
    add_push_arguments(build_cmd)
    build_cmd.add_argument("-v", "--verbose", action="store_true")
    push_cmd = commands.add_parser("push", help="publish a built folder to the Hub")
    push_cmd.add_argument("out", nargs="?", default=DEFAULT_OUT, help=f"built folder (default: ./{DEFAULT_OUT})")
    push_cmd.add_argument("--repo-id", help="Hub dataset repo (default: <logged-in user>/salient_imagenet)")
    push_cmd.add_argument("--public", action="store_true", help="make a new repo public (default: private)")
    check_cmd = commands.add_parser("check", help="validate a dataset folder or Hub repo for load_dataset and "
                                                  "the dataset viewer")
    check_cmd.add_argument("target", help="a built folder or a Hub dataset repo id")
    check_cmd.add_argument("--no-stream", action="store_true", help="skip streaming the first rows")
    from . import evaluate

    evaluate_cmd = commands.add_parser("evaluate", help="evaluate classifiers: core / spurious accuracy, RCS")
    evaluate.add_arguments(evaluate_cmd)
    args = parser.parse_args(argv)
    if args.command == "build":
        return build_main(sys.argv[2:] if argv is None else list(argv)[1:])
    if args.command == "evaluate":
        setup_logging(args.verbose)
        return evaluate.run(args)
    setup_logging(False)
    if args.command == "push":
        return run_push(args.out, args.repo_id, args.public)
    return run_check(args.target, stream=not args.no_stream)


def run_check(target: str, stream: bool = True) -> int:
    from .check import check

    problems = check(target, stream=stream)
    for problem in problems:
        print(f"FAIL {problem}")
    print(f"{target}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
