"""The generalization study's options (`GeneralizeConfig`), its command and its output, the study folder: light
(no torch), so the command line reads them for `--help`."""

from dataclasses import dataclass

from ..core.constants import PAIRS_FILE
from ..core.options import ClassesOption, ImageNetOptions, OverwriteOption, option
from ..core.registry import Command, OutputKind, Study, register_command, register_output, register_study

__all__ = ["GENERALIZE_INFO", "GeneralizeConfig"]

GENERALIZE_INFO = "generalize_info.json"  # the study folder's marker (it names the package)
DEFAULT_GENERALIZE_DIR = "generalization_study"
DEFAULT_BANDS = ("6-10", "31-35", "61-65")  # Section B's ranks: just below the top 5, the middle, the end of 65


@dataclass(kw_only=True)
class GeneralizeConfig(ClassesOption, ImageNetOptions, OverwriteOption):
    """The options of `salient-imagenet generalize`, as fields."""

    dataset: str = option(positional=True, required=True, help="a built Salient ImageNet folder or a Hub dataset id")
    out: str = option(DEFAULT_GENERALIZE_DIR, help="study folder")
    bands: str | tuple = option(DEFAULT_BANDS, help="Section B's ranks within each pair's top-k, comma-separated "
                                                    "FIRST-LAST ranges")
    split: str | None = option(None, help="image split", default_text="the build's")
    title: str | None = option(None, help="the annotation page's title",
                               default_text="Do the features of DATASET generalize?")
    command: str = ""  # the command line that made it (provenance; the command line sets it)


register_output(OutputKind(
    name="generalization study", noun="a generalization study", label="generalization study", marker=GENERALIZE_INFO,
    example=DEFAULT_GENERALIZE_DIR, command="generalize",
    owns=(GENERALIZE_INFO, "index.html", PAIRS_FILE, "panels/*.png"), last="index.html"))

register_command(Command("generalize", "make the generalization study of a build: panels of top-5 vs lower-ranked "
                         "images, pairs.csv and an annotation page", GeneralizeConfig,
                         "salient_imagenet_builder.generalize.command:run", order=40))
register_study(Study("band comparison", marker_column="Input.band",
                     format="salient_imagenet_builder.generalize.study_format:GENERALIZATION", order=20))
