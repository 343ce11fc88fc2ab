"""The build's options (`BuildConfig`, the command line's option table), its command and its output kind: light
(no torch), so the command line reads them for `--help`."""

import argparse
from dataclasses import dataclass

from ..core.constants import ANNOTATIONS_URL, DEFAULT_OUT, DEFAULT_TOP_K, MAX_SHARD_BYTES
from ..core.options import (
    IMAGE_MODES,
    CacheOption,
    ModelOptions,
    OverwriteOption,
    PushOptions,
    RestartOption,
    ScanOptions,
    SourceOptions,
    SpeedOptions,
    option,
    positive_int,
)
from ..core.registry import Command, register_command

__all__ = ["BuildConfig"]

DECODE = ("cpu", "gpu")
DEMO_OUT = "salient_imagenet_demo"


def top_k(text: str) -> int | str:
    if text == "all":
        return "all"
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"--top-k {text!r}: expected a positive integer or 'all'") from None


@dataclass(kw_only=True)
class BuildConfig(SourceOptions, ScanOptions, ModelOptions, SpeedOptions, RestartOption, OverwriteOption, CacheOption,
                  PushOptions):
    """The options of `python build_dataset.py` (`salient-imagenet build`), as fields."""

    source: str | None = option(None, help="ImageNet in any layout: a folder (`train/<wnid>/*.JPEG`), parquet/arrow "
                                           "or WebDataset tar shards, a path or a Hub dataset id such as "
                                           "ILSVRC/imagenet-1k (required, but with --demo, or --push of a built --out)")
    out: str | None = option(None, help="output folder",
                             default_text=f"./{DEFAULT_OUT}; the demo's: ./{DEMO_OUT}")
    annotations: str = option(ANNOTATIONS_URL, metavar="PATH_OR_URL",
                              help="annotation CSV path or URL",
                              default_text="the published release at a pinned commit, checked by sha256")
    top_k: int | str | None = option(DEFAULT_TOP_K, type=top_k,
                                     help="top images per annotated (class, feature) pair, or 'all' (every image of "
                                          "the class: Salient ImageNet-1M)")
    image_mode: str = option("crop", choices=IMAGE_MODES,
                             help="image column: the 224 center view aligned with the masks, the original file, or "
                                  "none (masks only: join your ImageNet with attach)")
    decode: str = option("cpu", choices=DECODE,
                         help="where JPEGs are decoded: cpu (Pillow in the --workers processes) or gpu "
                              "(torchvision.io.decode_jpeg, batched, on the --device; Pillow for files it cannot take; "
                              "opt-in: the views differ slightly from Pillow's, so it is recorded in the output)")
    demo: bool = option(False, help="the offline demo build, on generated inputs")
    push: bool = option(False, help="publish to the Hugging Face Hub after building (or the existing --out when no "
                                    "--source is given)")
    command: str = ""  # the command line that made it (provenance; the command line sets it)
    max_shard_bytes: int = MAX_SHARD_BYTES

    def __post_init__(self):
        if self.top_k == "all":
            self.top_k = None  # every image of the group
        if self.out is None:
            self.out = DEMO_OUT if self.demo else DEFAULT_OUT
        super().__post_init__()


register_command(Command("build", "build the dataset (same options as python build_dataset.py)", BuildConfig,
                         "salient_imagenet_builder.builder.command:run", order=0,
                         description="Build Salient ImageNet: robust-model soft masks labelled core or spurious, "
                                     "written as a Hugging Face dataset (parquet + card)."))
