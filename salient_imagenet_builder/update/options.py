"""update's options (`UpdateConfig`), its command and its sections of a dataset card: light (no torch), so the
command line reads them for `--help`."""

from dataclasses import dataclass

from ..core.options import Options, option
from ..core.registry import CardPart, Command, register_card_part, register_command
from .card import generalization_section, validation_section

__all__ = ["UpdateConfig"]


@dataclass(kw_only=True)
class UpdateConfig(Options):
    """The options of `salient-imagenet update`, as fields."""

    dataset: str = option(positional=True, required=True, help="a local build to record the study in")
    generalization: str | None = option(None, metavar="generalization.csv",
                                        help="the generalization CSV `ingest` wrote from a generalization study",
                                        default_text="none")
    validation: str | None = option(None, metavar="REPORT/validation.csv",
                                    help="the scores `validate` wrote: their summary goes into the card (give at "
                                         "least one of --generalization and --validation)", default_text="none")


register_card_part(CardPart("generalization studies", data=lambda stats, provenance: stats.updates.get("generalization"),
                            section=generalization_section, order=10))
register_card_part(CardPart("validation report", data=lambda stats, provenance: stats.updates.get("validation"),
                            section=validation_section, order=20))
register_command(Command("update", "record studies (--generalization, --validation) in a local build without "
                         "recomputing it", UpdateConfig, "salient_imagenet_builder.update.command:run", order=80))
