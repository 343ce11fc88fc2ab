"""Discovery's options (`DiscoverConfig`, the command line's option table), its command and its output, the study
folder: light (no torch), so the command line reads them for `--help`."""

import argparse
from dataclasses import dataclass

from ..core.constants import ANNOTATOR_TOP_IMAGES, FEATURES_PER_CLASS, PAIRS_FILE
from ..core.options import (
    ModelOptions,
    OverwriteOption,
    RestartOption,
    ScanOptions,
    SourceOptions,
    SpeedOptions,
    non_negative_int,
    option,
    positive_int,
)
from ..core.registry import Command, OutputKind, Study, register_command, register_output, register_study

__all__ = ["DISCOVER_INFO", "DiscoverConfig", "STUDY"]

DISCOVER_INFO = "discover_info.json"  # the study folder's marker (it names the package)
DEFAULT_STUDY_DIR = "study"
DEFAULT_ATTACK_STEPS = 100
ATTACK_STEP_SIZE = 10.0  # feature attack: x <- clamp(x + step * g / ||g||_2, 0, 1)
ATTACK_BATCH = 32  # images attacked at once: each keeps its graph, ~4 GB at 32 on a CPU
CONTEXT_IMAGES = 3  # images of the class (most confident by its logit) shown for context on each panel


def features_per_class(text: str) -> int:
    value = positive_int(text)
    if value > FEATURES_PER_CLASS:  # the annotation CSV's Input.feature_rank is 1-5
        raise argparse.ArgumentTypeError(f"--features-per-class {text}: at most {FEATURES_PER_CLASS}")
    return value


@dataclass(kw_only=True)
class DiscoverConfig(SourceOptions, ScanOptions, ModelOptions, SpeedOptions, RestartOption, OverwriteOption):
    """The options of `salient-imagenet discover`, as fields."""

    source: str = option(help="images in any layout the build reads (a path or a Hub id)", required=True)
    out: str = option(DEFAULT_STUDY_DIR, help="study folder")
    features_per_class: int = option(FEATURES_PER_CLASS, type=features_per_class,
                                     help="top features by importance to annotate per class")
    top_images: int = option(ANNOTATOR_TOP_IMAGES, type=positive_int, help="top images per pair on its panel")
    attack_steps: int = option(DEFAULT_ATTACK_STEPS, type=non_negative_int,
                               help="feature-attack steps (fewer for a quick run)")
    title: str | None = option(None, help="the annotation page's title", default_text="Salient features of <model>")
    command: str = ""  # the command line that made it (provenance; the command line sets it)


STUDY = register_output(OutputKind(
    name="study", noun="a discovery study", label="study", marker=DISCOVER_INFO, example=DEFAULT_STUDY_DIR,
    command="discover", owns=(DISCOVER_INFO, "index.html", PAIRS_FILE, "panels/*.png"), last="index.html"))

register_command(Command("discover", "rank features per class and make panels and an annotation page for a study",
                         DiscoverConfig, "salient_imagenet_builder.discovery.command:run", order=20))
register_study(Study("feature labels", marker_column=None,
                     format="salient_imagenet_builder.discovery.study_format:DISCOVERY", order=10))
