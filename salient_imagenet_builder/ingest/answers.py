"""Answer CSVs read and validated against the study's pairs, in whichever study format the pairs.csv is
(`core.studies.StudyFormat`, registered by the capability that made the study): every problem named by file and row,
all of them at once."""

from collections import defaultdict
from pathlib import Path

from ..core.csvfile import csv_reader, is_blank, missing_columns, other_columns, separator_hint
from ..core.studies import StudyAnswer, StudyError, StudyFormat, describe

__all__ = ["IngestError", "by_pair", "check_quorum", "ignored_columns", "read_answers", "unreadable"]

MAX_COLUMNS_NAMED = 8  # a crowdsourcing platform's results have dozens of columns
IngestError = StudyError


def unreadable(paths: list[str], study: StudyFormat) -> list[str]:
    """File-level problems (missing, a folder, not UTF-8 CSV, a required column missing), reported before any row:
    a file that cannot be read would otherwise show up only as every pair's missing answers. Columns are found by
    name, in any order; other columns are ignored (`ignored_columns` says which)."""
    problems = []
    for path in map(Path, paths):
        if not path.exists():
            hint = " (no file matched the pattern)" if any(c in path.name for c in "*?[") else ""
            problems.append(f"{path}: no such file{hint}")
            continue
        try:
            with csv_reader(path, IngestError) as reader:
                fieldnames = reader.fieldnames
                for _ in reader:  # decode it all: a bad byte may come late
                    pass
        except IngestError as e:
            problems.append(str(e))
            continue
        missing = missing_columns(fieldnames, study.answer_columns)
        if missing:
            problems.append(f"{path}: missing column(s) {', '.join(missing)} (the answers need "
                            f"{', '.join(study.answer_columns)}, in any order){separator_hint(fieldnames)}")
    return problems


def ignored_columns(paths: list[str], study: StudyFormat) -> list[str]:
    """One line per answer file with columns the study does not read (a platform's `Approve`, a spreadsheet's
    `Notes`), for files `unreadable` passed."""
    lines = []
    for path in map(Path, paths):
        with csv_reader(path, IngestError) as reader:
            others = other_columns(reader.fieldnames, study.answer_columns)
        if others:
            shown = ", ".join(name or "(unnamed)" for name in others[:MAX_COLUMNS_NAMED])
            more = f" and {len(others) - MAX_COLUMNS_NAMED} more" if len(others) > MAX_COLUMNS_NAMED else ""
            lines.append(f"{path}: {len(others)} other column(s) ignored: {shown}{more}")
    return lines


def read_answers(paths: list[str], pairs: dict[tuple, dict], study: StudyFormat) -> tuple[list[StudyAnswer],
                                                                                          list[str]]:
    """Every valid answer of files `unreadable` passed, and one message per problem (file and row named); nothing
    raises on a bad row, so the user sees all the problems at once."""
    rows, problems, seen = [], [], {}
    for path in map(Path, paths):
        with csv_reader(path, IngestError) as reader:
            for number, record in enumerate(reader, start=2):  # a spreadsheet's rows: the header is row 1
                if is_blank(record):
                    continue  # padding rows (",,,,,,,") a spreadsheet leaves, as the build's parser skips them
                where = f"{path}, row {number}"
                try:
                    row = study.parse_answer(record, pairs, where)
                except IngestError as e:
                    problems.append(f"{where}: {e}")
                    continue
                key = (row.worker_id, *row.key)
                if key in seen:
                    problems.append(f"{where}: annotator {row.worker_id!r} already answered {describe(row.key)} "
                                    f"({seen[key]})")
                    continue
                seen[key] = where
                rows.append(row)
    return rows, problems


def by_pair(rows: list[StudyAnswer]) -> dict[tuple, list[StudyAnswer]]:
    grouped = defaultdict(list)
    for row in rows:
        grouped[row.key].append(row)
    return grouped


def check_quorum(grouped: dict, pairs: dict, answers_per_pair: int) -> list[str]:
    """Every task of the study needs exactly `answers_per_pair` answers (what is recorded reads that many)."""
    problems = []
    for key in sorted(pairs):
        count = len(grouped.get(key, ()))
        if count < answers_per_pair:
            problems.append(f"{describe(key)}: {count} answer(s), fewer than the quorum of "
                            f"{answers_per_pair}")
        elif count > answers_per_pair:
            problems.append(f"{describe(key)}: {count} answers, more than {answers_per_pair} "
                            f"(from {', '.join(r.where for r in grouped[key][answers_per_pair:])}); drop the extra "
                            "answers or raise --answers-per-pair")
    return problems
