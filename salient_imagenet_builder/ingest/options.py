"""ingest's options (`IngestConfig`) and its command: light, so the command line reads them for `--help`."""

from dataclasses import dataclass

from ..core.constants import ANSWERS_PER_PAIR, MAJORITY
from ..core.options import Options, option, positive_int
from ..core.registry import Command, register_command

__all__ = ["IngestConfig"]


@dataclass(kw_only=True)
class IngestConfig(Options):
    """The options of `salient-imagenet ingest`, as fields."""

    answers: list[str] = option(positional=True, required=True, nargs="+",
                                help="answer CSVs exported from the annotation page (or a crowdsourcing platform)")
    pairs: str | None = option(None, help="the study's pairs.csv (or its folder)",
                               default_text="pairs.csv beside the first answer file")
    answers_per_pair: int = option(ANSWERS_PER_PAIR, type=positive_int, help="answers every pair needs")
    majority: int | None = option(None, type=positive_int,
                                  help="a discovery study: spurious when at least this many answers are "
                                       "separate_object or background; a generalization study: a band's verdict is "
                                       "same when at least this many answers are same",
                                  default_text=f"a majority of --answers-per-pair, {MAJORITY} of {ANSWERS_PER_PAIR}; "
                                               "the build applies a majority")
    out: str = option(required=True, help="the CSV to write (what the build's --annotations, or update's "
                                          "--generalization, reads)")
    overwrite: bool = option(False, help="replace an existing --out file (only a CSV this tool wrote)")


register_command(Command("ingest", "merge annotators' answer CSVs into the annotation CSV the build reads",
                         IngestConfig, "salient_imagenet_builder.ingest.command:run", order=30))
