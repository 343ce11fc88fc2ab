"""show's options (`ShowConfig`) and its command: light, so the command line reads them for `--help`."""

import argparse
from dataclasses import dataclass

from ..core.constants import ANNOTATOR_TOP_IMAGES, NUM_CLASSES
from ..core.options import Options, option, positive_int
from ..core.registry import Command, register_command

__all__ = ["ShowConfig"]


def class_index(text: str) -> int:
    if not text.strip().isdigit() or int(text) >= NUM_CLASSES:
        raise argparse.ArgumentTypeError(f"expected a class index 0-{NUM_CLASSES - 1}, got {text!r}")
    return int(text)


@dataclass(kw_only=True)
class ShowConfig(Options):
    """The options of `salient-imagenet show`, as fields."""

    dataset: str = option(positional=True, required=True, help="a built Salient ImageNet folder or a Hub dataset id")
    class_index: int = option(flags=("--class",), type=class_index, required=True, help="class index (0-999)")
    feature: int | None = option(None, type=int, help="feature index: that pair's panel",
                                 default_text="the class summary")
    images: int = option(ANNOTATOR_TOP_IMAGES, type=positive_int, help="images per row")
    split: str | None = option(None, help="image split", default_text="the build's")
    out: str = option(required=True, help="PNG file to write (an existing PNG there is replaced)")


register_command(Command("show", "render one (class, feature) pair or a class summary of a built dataset as PNG",
                         ShowConfig, "salient_imagenet_builder.show.command:run", order=70))
