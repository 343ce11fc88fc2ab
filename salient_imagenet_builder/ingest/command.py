"""`salient-imagenet ingest`: answer CSVs -> validated, merged CSV (the annotation CSV a build reads, or the
generalization CSV `update` records) + the study's statistics, in the format of the study the pairs.csv belongs to."""

import logging
from pathlib import Path

from ..core.constants import PAIRS_FILE, majority_of
from ..core.output import check_out_file, write_text_atomic
from ..core.registry import study_format, study_formats
from ..core.studies import format_of, read_pairs
from .answers import IngestError, by_pair, check_quorum, ignored_columns, read_answers, unreadable
from .options import IngestConfig

log = logging.getLogger(__name__)
MAX_PROBLEMS_SHOWN = 100


def run(config: IngestConfig) -> int:
    out = Path(config.out)
    config.majority = config.majority or majority_of(config.answers_per_pair)
    if config.majority > config.answers_per_pair:
        raise IngestError(f"--majority {config.majority} is more than --answers-per-pair {config.answers_per_pair}")
    config.pairs = config.pairs or str(Path(config.answers[0]).parent / PAIRS_FILE)
    check_out(out, config.overwrite, [*config.answers, config.pairs])
    study = format_of(config.pairs)
    report(unreadable(config.answers, study), out)
    for line in ignored_columns(config.answers, study):
        print(line)
    pairs = read_pairs(config.pairs, study)
    rows, problems = read_answers(config.answers, pairs, study)
    grouped = by_pair(rows)
    report(problems + check_quorum(grouped, pairs, config.answers_per_pair), out)
    text, next_step = study.merge(grouped, pairs, config)  # everything validated before anything is written
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, text)
    print(f"\nWrote {out}: {len(rows)} answers to {next_step}")
    return 0


def first_line(path: Path) -> list[str]:
    with open(path, "rb") as f:
        return f.readline().decode("utf-8-sig", "replace").strip().split(",")


def is_ingest_output(path: Path) -> bool:
    """A CSV ingest writes, for any kind of study (its first line is that study's header)."""
    return first_line(path) in [list(study_format(s.name).output_header) for s in study_formats()]


def check_out(out: Path, overwrite: bool, inputs: list) -> None:
    """--out is a CSV file to write; never a folder, never one of the inputs, and --overwrite replaces only a CSV
    ingest writes."""
    check_out_file(out, what="the CSV file to write", example="annotations.csv", is_ours=is_ingest_output,
                   foreign="an annotation CSV (its first line is not the published header); --overwrite only "
                           "replaces one", overwrite=overwrite, inputs=inputs)


def report(problems: list[str], out: Path) -> None:
    """Each problem on its own line, then one line that says nothing was written."""
    if not problems:
        return
    for problem in problems[:MAX_PROBLEMS_SHOWN]:
        log.error("%s", problem)
    more = f", the first {MAX_PROBLEMS_SHOWN} listed above" if len(problems) > MAX_PROBLEMS_SHOWN else " (listed above)"
    raise IngestError(f"{len(problems)} problem(s) in the answers{more}; {out} not written")
