"""Command line: `python build_dataset.py ...` (the build) and `salient-imagenet <command> ...`.

This module only parses and dispatches: each subcommand's arguments are declared here (with light imports only),
and its handler module, which pulls in torch and timm, is imported when that subcommand runs, so `--help` is instant.
"""

import argparse
import atexit
import importlib
import logging
import math
import os
import sys
import warnings

from .core.constants import (
    ANNOTATIONS_URL,
    ANNOTATOR_TOP_IMAGES,
    ANSWERS_PER_PAIR,
    DEFAULT_ATTACK_STEPS,
    DEFAULT_BANDS,
    DEFAULT_CACHE_DIR,
    DEFAULT_DRAWS,
    DEFAULT_EVAL_BATCH_SIZE,
    DEFAULT_GENERALIZE_DIR,
    DEFAULT_MODEL,
    DEFAULT_NOISE_STD,
    DEFAULT_OUT,
    DEFAULT_RESULTS_DIR,
    DEFAULT_SEED,
    DEFAULT_STUDY_DIR,
    DEFAULT_TOP_K,
    DEFAULT_TOP_PAIRS,
    DEFAULT_UNIT_SIZE,
    FEATURES_PER_CLASS,
    HUMAN_MASK_FORMATS,
    MAJORITY,
    NUM_CLASSES,
    ROBUST_MODELS,
)
from .core.errors import EXIT_INTERRUPTED, UserError
from .core.interrupts import ctrl_c_stops_once, is_interrupt

log = logging.getLogger("salient_imagenet_builder")

# subcommand -> the module whose `run(args) -> int` handles it
HANDLERS = {
    "build": "salient_imagenet_builder.builder.command",
    "push": "salient_imagenet_builder.publish.command",
    "check": "salient_imagenet_builder.publish.command",
    "evaluate": "salient_imagenet_builder.evaluation.command",
    "discover": "salient_imagenet_builder.discovery.command",
    "ingest": "salient_imagenet_builder.ingest.command",
    "show": "salient_imagenet_builder.show.command",
    "validate": "salient_imagenet_builder.segmentation.command",
    "update": "salient_imagenet_builder.update.command",
    "generalize": "salient_imagenet_builder.generalize.command",
    "attach": "salient_imagenet_builder.attach.command",
}


# --- argument types ----------------------------------------------------------------------------------------------

def parse_classes(text: str) -> list[int]:
    """`0-9,325` -> [0, ..., 9, 325]."""
    classes = set()
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            low, dash, high = part.partition("-")
            if dash and not high.strip():  # "4-" is not "4": say so rather than guess an end
                raise argparse.ArgumentTypeError(f"--classes {text!r}: the range {part!r} has no end; give both "
                                                 f"ends, e.g. {low.strip()}-{NUM_CLASSES - 1}")
            low, high = int(low), int(high or low)
            if high < low:
                raise argparse.ArgumentTypeError(f"--classes {text!r}: the range {part!r} ends before it starts")
            classes.update(range(low, high + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--classes {text!r}: expected indices and ranges like 0-9,325") from None
    if not classes:
        raise argparse.ArgumentTypeError(f"--classes {text!r}: no class index given, e.g. 0-9,325")
    if min(classes) < 0 or max(classes) >= NUM_CLASSES:
        raise argparse.ArgumentTypeError(f"--classes {text!r}: class indices must lie in 0-{NUM_CLASSES - 1}")
    return sorted(classes)


def positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def workers(text: str) -> int:
    """--workers: decoding processes, 0 (decode in-process) or more."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"--workers {text!r}: expected 0 (decode in this process) or a positive "
                                         "number of decoding processes")
    return int(text)


def class_index(text: str) -> int:
    if not text.strip().isdigit() or int(text) >= NUM_CLASSES:
        raise argparse.ArgumentTypeError(f"expected a class index 0-{NUM_CLASSES - 1}, got {text!r}")
    return int(text)


def parse_top_k(text: str) -> int | None:
    if text == "all":
        return None
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"--top-k {text!r}: expected a positive integer or 'all'") from None


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


# --- arguments of each subcommand --------------------------------------------------------------------------------

def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", help="ImageNet folder, parquet/arrow or WebDataset tar shards (path), "
                                         "or a Hub dataset id such as ILSVRC/imagenet-1k")
    parser.add_argument("--source-type", choices=("folder", "parquet", "webdataset"),
                        help="layout of --source when auto-detection cannot tell (default: detected)")
    parser.add_argument("--split", default="train", help="split to read: train, or validation/val")
    parser.add_argument("--out", default=None, help=f"output folder (default: ./{DEFAULT_OUT}; the demo: "
                                                    "./salient_imagenet_demo)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier build in --out (only a build of this tool; it stays whole until the "
                             "new build is complete)")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"robust model ({', '.join(ROBUST_MODELS)}, weights downloaded once) or any timm model "
                             "name")
    parser.add_argument("--model-checkpoint", metavar="PATH",
                        help="local weights (robust-library .ckpt or a state dict) instead of the download "
                             "(default: the --model download, cached by huggingface_hub)")
    parser.add_argument("--arch", help="timm architecture of --model-checkpoint (default: the --model's)")
    parser.add_argument("--annotations", default=ANNOTATIONS_URL, metavar="PATH_OR_URL",
                        help="annotation CSV path or URL (default: the published release at a pinned commit, "
                             "checked by sha256)")
    parser.add_argument("--classes", type=parse_classes, help="only these classes, e.g. 0-9,325 (default: all "
                                                              "annotated classes)")
    parser.add_argument("--limit", type=positive_int, metavar="N",
                        help="read at most N images of each class (default: all)")
    parser.add_argument("--top-k", type=parse_top_k, default=DEFAULT_TOP_K,
                        help="top images per (class, feature) pair, or 'all' (every image of the class)")
    parser.add_argument("--group-by", choices=("prediction", "label"), default="prediction",
                        help="group images by the robust model's prediction (the paper) or the true label")
    parser.add_argument("--image-mode", choices=("crop", "original", "none"), default="crop",
                        help="image column: the 224 center view aligned with the masks, the original file, or none")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per model forward pass")
    parser.add_argument("--workers", type=workers, default=None,
                        help="decoding processes, 0: decode in-process (default: CPU count - 1, at most 8)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-draft", action="store_true",
                        help="decode JPEGs at full size (slower; default: JPEG draft decoding)")
    parser.add_argument("--decode", choices=("cpu", "gpu"), default="cpu",
                        help="where JPEGs are decoded: cpu (Pillow in the --workers processes) or gpu "
                             "(torchvision.io.decode_jpeg, batched, on the --device; Pillow for files it cannot "
                             "take; opt-in: the views differ slightly from Pillow's, so it is recorded in the output)")
    parser.add_argument("--cache-dir", default=None, metavar="PATH",
                        help=f"where the annotation download is kept (default: {DEFAULT_CACHE_DIR}; the model is "
                             "cached by huggingface_hub in its own cache, HF_HOME)")
    parser.add_argument("--unit-size", type=positive_int, default=DEFAULT_UNIT_SIZE,
                        help="images per work unit of a folder source (parquet: a row group, WebDataset: a tar); "
                             f"a stopped build resumes from its finished units (default: {DEFAULT_UNIT_SIZE})")
    parser.add_argument("--restart", action="store_true",
                        help="discard the finished units of an interrupted build of --out and start afresh")
    add_numerics_arguments(parser)
    parser.add_argument("--demo", action="store_true", help="offline demo build on generated inputs")
    add_push_arguments(parser, with_flag=True)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def add_numerics_arguments(parser: argparse.ArgumentParser) -> None:
    """The opt-in faster numerics of the model runner (build and discover share it)."""
    parser.add_argument("--tf32", action="store_true", help="TF32 matmuls/convolutions on CUDA (opt-in: changes "
                                                            "activations slightly; recorded in the output)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (opt-in, recorded in the output)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (opt-in, recorded)")


def add_push_arguments(parser: argparse.ArgumentParser, with_flag: bool = False) -> None:
    if with_flag:
        parser.add_argument("--push", action="store_true",
                            help="publish to the Hugging Face Hub (after building, or the existing --out folder "
                                 "when no --source is given)")
    parser.add_argument("--repo-id", help="Hub dataset repo (default: <logged-in user>/salient_imagenet)")
    parser.add_argument("--public", action="store_true",
                        help="make a new repo public (default: private, as ImageNet's terms restrict its images)")


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="a built folder or a Hub dataset repo id")
    parser.add_argument("--no-stream", action="store_true", help="skip streaming the first rows (default: stream them)")


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="built Salient ImageNet folder, or a Hub dataset repo id")
    parser.add_argument("--split", default="train", help="dataset split")
    parser.add_argument("--model", action="append", required=True,
                        help="timm model name, e.g. resnet50.a1_in1k (repeat to compare several models)")
    parser.add_argument("--checkpoint", action="append",
                        help="local weights for the --model at the same position, repeated once per --model "
                             "(default: timm's pretrained weights)")
    parser.add_argument("--zero-shot-head", action="append", metavar="PATH.npy",
                        help="a (D, 1000) .npy of class text embeddings (sorted wnids) that makes the --model at the "
                             "same position a zero-shot classifier: logits = 100 * normalize(embedding) @ head; "
                             "repeated once per --model, 'default' for a model that keeps its own (default: the "
                             "authors' published head for the CLIP towers vit_base_patch16_clip_224.openai and "
                             "vit_base_patch32_clip_224.openai, downloaded once into --cache-dir)")
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, metavar="PATH",
                        help=f"where the published zero-shot heads are kept (default: {DEFAULT_CACHE_DIR})")
    parser.add_argument("--imagenet", help="ImageNet copy (folder, parquet or WebDataset, path or Hub id) supplying "
                                           "the images of an --image-mode none build by image_id (default: the "
                                           "dataset's image column)")
    parser.add_argument("--imagenet-type", choices=("folder", "parquet", "webdataset"),
                        help="layout of --imagenet when auto-detection cannot tell (default: detected)")
    parser.add_argument("--noise-std", type=non_negative_float, default=DEFAULT_NOISE_STD,
                        help="Gaussian noise standard deviation on [0, 1] pixels")
    parser.add_argument("--draws", type=positive_int, default=DEFAULT_DRAWS,
                        help="seeded noise draws, reported as mean and std")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="noise seed")
    parser.add_argument("--batch-size", type=positive_int, default=DEFAULT_EVAL_BATCH_SIZE,
                        help="images per model forward pass")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-amp", action="store_true", help="no float16 autocast on CUDA (default: autocast on CUDA)")
    parser.add_argument("--no-single-feature", action="store_true",
                        help="skip the single-feature test (noise on one (class, feature) mask at a time)")
    parser.add_argument("--top-pairs", type=positive_int, default=DEFAULT_TOP_PAIRS,
                        help="most harmful (class, feature) pairs to list and plot")
    parser.add_argument("--workers", type=workers, default=None,
                        help="decoding processes, 0: decode in-process (default: CPU count - 1, at most 8)")
    parser.add_argument("--generalized-only", action="store_true",
                        help="use a pair's masks only up to its generalizes_to_rank (recorded by update "
                             "--generalization); pairs not studied are left out")
    parser.add_argument("--out", default=DEFAULT_RESULTS_DIR,
                        help="results folder: <out>/<label>/ per model (the label is the model name, plus the "
                             "checkpoint's name when given), comparison in <out>")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def features_per_class(text: str) -> int:
    value = positive_int(text)
    if value > FEATURES_PER_CLASS:  # the annotation CSV's Input.feature_rank is 1-5
        raise argparse.ArgumentTypeError(f"--features-per-class {text}: at most {FEATURES_PER_CLASS}")
    return value


def non_negative_int(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return int(text)


def add_discover_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, help="images in any layout the build reads (path or Hub id)")
    parser.add_argument("--source-type", choices=("folder", "parquet", "webdataset"),
                        help="layout of --source when auto-detection cannot tell (default: detected)")
    parser.add_argument("--split", default="train", help="split to read (default: train)")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"robust model ({', '.join(ROBUST_MODELS)}) or any timm model name "
                             f"(default: {DEFAULT_MODEL})")
    parser.add_argument("--model-checkpoint", metavar="PATH",
                        help="local weights (robust-library .ckpt or a state dict) instead of the download "
                             "(default: the --model download, cached by huggingface_hub)")
    parser.add_argument("--arch", help="timm architecture for --model-checkpoint (default: from --model)")
    parser.add_argument("--classes", type=parse_classes, help="only these classes, e.g. 0-49 (default: all)")
    parser.add_argument("--limit", type=positive_int, metavar="N",
                        help="read at most N images of each class (default: all)")
    parser.add_argument("--group-by", choices=("prediction", "label"), default="prediction",
                        help="group images by the model's prediction (the paper) or the true label")
    parser.add_argument("--features-per-class", type=features_per_class, default=FEATURES_PER_CLASS,
                        help=f"top features by importance to annotate per class (default: {FEATURES_PER_CLASS})")
    parser.add_argument("--top-images", type=positive_int, default=ANNOTATOR_TOP_IMAGES,
                        help=f"top images per pair on its panel (default: {ANNOTATOR_TOP_IMAGES})")
    parser.add_argument("--attack-steps", type=non_negative_int, default=DEFAULT_ATTACK_STEPS,
                        help=f"feature-attack steps (default: {DEFAULT_ATTACK_STEPS}; fewer for quick runs)")
    parser.add_argument("--title", help="the annotation page's title (default: Salient features of <model>)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="images per model forward pass")
    parser.add_argument("--workers", type=workers, default=None,
                        help="decoding processes, 0: decode in-process (default: CPU count - 1, at most 8)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-draft", action="store_true", help="decode JPEGs at full size (slower)")
    parser.add_argument("--unit-size", type=positive_int, default=DEFAULT_UNIT_SIZE,
                        help="images per work unit of a folder source (parquet: a row group, WebDataset: a tar); "
                             f"a stopped discovery resumes from its finished units (default: {DEFAULT_UNIT_SIZE})")
    parser.add_argument("--restart", action="store_true",
                        help="discard the finished units of an interrupted discovery of --out and start afresh")
    add_numerics_arguments(parser)
    parser.add_argument("--out", default=DEFAULT_STUDY_DIR, help=f"study folder (default: ./{DEFAULT_STUDY_DIR})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing study folder")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def add_ingest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("answers", nargs="+", help="answer CSVs exported from the annotation page")
    parser.add_argument("--pairs", help="the study's pairs.csv (default: pairs.csv beside the first answer file)")
    parser.add_argument("--answers-per-pair", type=positive_int, default=ANSWERS_PER_PAIR,
                        help=f"answers every pair needs (default: {ANSWERS_PER_PAIR})")
    parser.add_argument("--majority", type=positive_int,
                        help=f"spurious when at least this many answers are separate_object or background; in a "
                             "generalization study, a band's verdict is same when at least this many are same "
                             f"(default: a majority of --answers-per-pair, {MAJORITY} of {ANSWERS_PER_PAIR}; the build "
                             "applies a majority)")
    parser.add_argument("--out", required=True,
                        help="the annotation CSV to write (what the build's --annotations reads)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def add_update_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="a local build to record the study in")
    parser.add_argument("--generalization", help="the generalization CSV `ingest` wrote from a generalization study "
                                                 "(default: none)")
    parser.add_argument("--validation", metavar="REPORT/validation.csv",
                        help="the scores `validate` wrote: their summary goes into the card (default: none; give at "
                             "least one of --generalization and --validation)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def add_generalize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="a built Salient ImageNet folder or a Hub dataset repo id")
    parser.add_argument("--bands", default=",".join(DEFAULT_BANDS),
                        help="Section B's ranks within each pair's top-k, comma-separated FIRST-LAST ranges")
    parser.add_argument("--classes", type=parse_classes, help="only these classes, e.g. 0-49 (default: all)")
    parser.add_argument("--imagenet", metavar="DIR_OR_ID",
                        help="your ImageNet copy (folder, parquet or WebDataset; path or Hub id), read by image_id: "
                             "the images of an --image-mode none build (default: the build's own images)")
    parser.add_argument("--imagenet-type", choices=("folder", "parquet", "webdataset"),
                        help="layout of --imagenet when auto-detection cannot tell (default: detected)")
    parser.add_argument("--split", default=None, help="image split (default: the build's)")
    parser.add_argument("--title", help="the annotation page's title (default: Do the features of DATASET generalize?)")
    parser.add_argument("--out", default=DEFAULT_GENERALIZE_DIR,
                        help=f"study folder (default: ./{DEFAULT_GENERALIZE_DIR})")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier generalization study there")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def add_attach_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="a build (local folder or Hub dataset id), typically a masks-only "
                                        "--image-mode none build")
    parser.add_argument("--imagenet", required=True, help="your ImageNet copy (folder, parquet or WebDataset, path or "
                                                          "Hub id); its images are joined to the rows by image_id")
    parser.add_argument("--out", required=True, help="the folder of the dataset with images")
    parser.add_argument("--image-mode", choices=("crop", "original"), default="crop",
                        help="image column: crop = the 224x224 view the model saw (PNG), original = the copy's bytes")
    parser.add_argument("--allow-missing", action="store_true",
                        help="rows whose image the copy lacks (or cannot decode) keep no image and are counted in "
                             "the card (default: such images fail the command)")
    parser.add_argument("--split", help="split of the ImageNet copy (default: the build's split)")
    parser.add_argument("--imagenet-type", choices=("folder", "parquet", "webdataset"),
                        help="layout of --imagenet when auto-detection cannot tell (default: detected)")
    parser.add_argument("--workers", type=workers, default=None,
                        help="decoding processes, 0: decode in-process (default: the CPU count)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier build or attach in --out")
    parser.add_argument("--restart", action="store_true",
                        help="discard the finished shards of an interrupted attach with other settings")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def add_show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="a built Salient ImageNet folder or a Hub dataset repo id")
    parser.add_argument("--class", dest="class_index", type=class_index, required=True, help="class index (0-999)")
    parser.add_argument("--feature", type=int, help="feature index: that pair's panel (default: the class summary)")
    parser.add_argument("--images", type=positive_int, default=ANNOTATOR_TOP_IMAGES,
                        help=f"images per row (default: {ANNOTATOR_TOP_IMAGES})")
    parser.add_argument("--split", default=None, help="image split (default: the build's)")
    parser.add_argument("--out", required=True, help="PNG file to write (an existing PNG there is replaced)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def add_validate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="a built Salient ImageNet folder or a Hub dataset repo id")
    parser.add_argument("--human-masks", required=True, metavar="DIR",
                        help="human segmentations: DIR/<wnid>/<image_id>.png (binary also DIR/<image_id>.png)")
    parser.add_argument("--format", required=True, choices=HUMAN_MASK_FORMATS,
                        help="imagenet-s: RGB, class id = R + 256*G, 0 = other, 1000 = ignore; binary: non-zero = "
                             "object")
    parser.add_argument("--split", default=None, help="image split (default: the build's)")
    parser.add_argument("--out", required=True, metavar="REPORT",
                        help="report folder: validation.csv, summary.json, energy_inside.png (replaced if there)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


# --- parsers and dispatch ----------------------------------------------------------------------------------------

class HelpFormatter(argparse.HelpFormatter):
    """Every option's default in its help: the value argparse holds, unless the help already says it in words."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" in text or "%(default)" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def _parser(parent=None, **kwargs) -> argparse.ArgumentParser:
    kwargs.setdefault("formatter_class", HelpFormatter)
    return parent.add_parser(**kwargs) if parent is not None else argparse.ArgumentParser(**kwargs)


def build_parser() -> argparse.ArgumentParser:
    """`python build_dataset.py`."""
    parser = _parser(
        prog="build_dataset.py", description="Build Salient ImageNet: robust-model soft masks labelled core or "
                                             "spurious, written as a Hugging Face dataset (parquet + card).")
    add_build_arguments(parser)
    return parser


def main_parser() -> argparse.ArgumentParser:
    """`salient-imagenet <command>`."""
    parser = _parser(prog="salient-imagenet", description="Salient ImageNet tools. Exit codes: 0 ok, 1 check found "
                                                          "problems, 2 usage or input, 3 Hub refused, 4 network, "
                                                          "130 interrupted.")
    commands = parser.add_subparsers(dest="command", required=True)
    add_build_arguments(_parser(commands, name="build", help="build the dataset (same options as build_dataset.py)"))
    push = _parser(commands, name="push", help="publish a built folder to the Hub")
    push.add_argument("out", nargs="?", default=DEFAULT_OUT, help="built folder")
    add_push_arguments(push)
    add_check_arguments(_parser(
        commands, name="check", help="validate a dataset folder or Hub repo for load_dataset and the dataset viewer"))
    add_evaluate_arguments(_parser(
        commands, name="evaluate", help="evaluate classifiers: core / spurious accuracy, RCS"))
    add_discover_arguments(_parser(
        commands, name="discover", help="rank features per class and make panels and an annotation page for a study"))
    add_generalize_arguments(_parser(
        commands, name="generalize", help="make the generalization study of a build: panels of top-5 vs lower-ranked "
                                          "images, pairs.csv and an annotation page"))
    add_ingest_arguments(_parser(
        commands, name="ingest", help="merge annotators' answer CSVs into the annotation CSV the build reads"))
    add_show_arguments(_parser(
        commands, name="show", help="render one (class, feature) pair or a class summary of a built dataset as PNG"))
    add_validate_arguments(_parser(
        commands, name="validate", help="score a build's soft masks against human segmentations of its images"))
    add_update_arguments(_parser(
        commands, name="update", help="record studies (--generalization, --validation) in a local build without "
                                      "recomputing it"))
    add_attach_arguments(_parser(
        commands, name="attach", help="join your ImageNet copy's images to a masks-only build, by image_id"))
    return parser


def dispatch(command: str, args: argparse.Namespace, owns_process: bool = False) -> int:
    """Run a subcommand's handler; the one place that turns known failures into one line and an exit code.
    `owns_process`: the command line of this very process (not a caller's in-process call), which ends after it."""
    setup_logging(getattr(args, "verbose", False))
    quiet_library_warnings()
    with ctrl_c_stops_once(owns_process):
        code = _dispatch(command, args)
    if owns_process and code == EXIT_INTERRUPTED:
        exit_now(code)
    return code


def _dispatch(command: str, args: argparse.Namespace) -> int:
    try:
        code = importlib.import_module(HANDLERS[command]).run(args)
        if code == 0 and command == "build" and args.push:  # build --push: the command line composes the two
            push = argparse.Namespace(command="push", out=args.out or DEFAULT_OUT, repo_id=args.repo_id,
                                      public=args.public)
            code = importlib.import_module(HANDLERS["push"]).run(push)
        return code
    except UserError as e:
        log.error("%s", e)
        return e.exit_code
    except BaseException as error:
        if not is_interrupt(error) or isinstance(error, SystemExit):
            raise  # anything else is a bug: it keeps its traceback
        log.debug("stopped by Ctrl-C", exc_info=True)
        pushing = command == "push" or getattr(args, "push", False)
        log.error("interrupted; run the same command again to start over%s",
                  " (a push resumes where it stopped)" if pushing else "")
        return EXIT_INTERRUPTED


def exit_now(code: int) -> None:
    """End this process after Ctrl-C without the interpreter's teardown: with torch loaded, its garbage collection
    of every module takes seconds (4 s on 2 busy cores) after the line that said the command stopped. The exit
    handlers still run (logging's flush, multiprocessing's clean-up of any child process); the command's own
    clean-up ran before its line was printed."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing left to say
            pass
    os._exit(code)


def build_main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.command = "build"
    return dispatch("build", args, owns_process=argv is None)


def main(argv=None) -> int:
    args = main_parser().parse_args(argv)
    return dispatch(args.command, args, owns_process=argv is None)


QUIET_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2", "urllib3", "filelock", "fsspec", "PIL", "matplotlib")
# torch configures its own loggers (TORCH_LOGS) once `import torch` completes; a command stopped before that would
# still print torch's exit-time INFO lines (e.g. FakeTensor cache stats) after its last line
OWN_LEVEL_LOGGERS = ("torch",)
LIBRARY_LOGGERS = ("huggingface_hub", "datasets")  # they print their own warnings (retries, cache notes)


class _OncePerRecord(logging.Filter):
    """Libraries such as huggingface_hub and datasets attach their own stderr handler and still propagate to the
    root: the root's handler skips what such a handler printed already, so no line appears twice."""

    def filter(self, record: logging.LogRecord) -> bool:
        logger = logging.getLogger(record.name)
        while logger is not None and logger is not logging.root:
            if logger.handlers:
                return False
            if not logger.propagate:
                break
            logger = logger.parent
        return True


def quiet_library_warnings() -> None:
    """The command line owns its process, so it may filter warnings (the library never does). timm 1.0.3 (our lowest
    supported) decorates a model (hrnet) with `torch.jit.interface`, which torch 2.14 reports on every `import timm`:
    a stray line on stderr that says nothing to our users, whose errors are one line."""
    warnings.filterwarnings("ignore", message="`torch.jit.interface` is deprecated", category=FutureWarning)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for handler in logging.root.handlers:
        if not any(isinstance(f, _OncePerRecord) for f in handler.filters):
            handler.addFilter(_OncePerRecord())
    for noisy in QUIET_LOGGERS:  # per-request HTTP lines and file locks: noise at the default level
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
    for library in OWN_LEVEL_LOGGERS:
        logging.getLogger(library).setLevel(logging.WARNING)
    for library in LIBRARY_LOGGERS:  # their failures reach us as exceptions, said once by `dispatch`
        logging.getLogger(library).setLevel(logging.INFO if verbose else logging.ERROR)
    if not verbose:  # they set their level again when first imported (after this): tell them through the environment
        os.environ.setdefault("HF_HUB_VERBOSITY", "error")
        os.environ.setdefault("DATASETS_VERBOSITY", "error")


if __name__ == "__main__":
    sys.exit(main())
