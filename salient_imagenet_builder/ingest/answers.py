"""Answer CSVs (the published results format) read, validated against the study's pairs, and written merged."""

import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..core.annotations import COLUMNS
from ..core.csvfile import csv_reader, is_blank, missing_columns, other_columns, separator_hint
from ..core.constants import ANSWER_CHOICES, CONFIDENCE_RANGE, GENERALIZE_ANSWER_COLUMNS, GENERALIZE_CHOICES
from ..core.errors import InputError


MAX_COLUMNS_NAMED = 8  # a crowdsourcing platform's results have dozens of columns


class IngestError(InputError):
    pass


@dataclass(frozen=True)
class Row:
    worker_id: str
    class_index: int
    feature_index: int
    answer: str
    confidence: float
    reason: str
    where: str  # "file, row N": every message about this answer names it
    band: str | None = None  # a generalization study's band ("61-65"); None in a discovery study

    @property
    def key(self) -> tuple:
        """The study's unit: (class, feature), or (class, feature, band) in a generalization study."""
        return (self.class_index, self.feature_index) + ((self.band,) if self.band is not None else ())


def describe(key: tuple) -> str:
    return f"class {key[0]} feature {key[1]}" + (f" band {key[2]}" if len(key) > 2 else "")


def header_of(kind: str) -> tuple:
    return GENERALIZE_ANSWER_COLUMNS if kind == "generalization" else COLUMNS


def unreadable(paths: list[str], kind: str = "discovery") -> list[str]:
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
        missing = missing_columns(fieldnames, header_of(kind))
        if missing:
            problems.append(f"{path}: missing column(s) {', '.join(missing)} (the answers need "
                            f"{', '.join(header_of(kind))}, in any order){separator_hint(fieldnames)}")
    return problems


def ignored_columns(paths: list[str], kind: str = "discovery") -> list[str]:
    """One line per answer file with columns the study does not read (a platform's `Approve`, a spreadsheet's
    `Notes`), for files `unreadable` passed."""
    lines = []
    for path in map(Path, paths):
        with csv_reader(path, IngestError) as reader:
            others = other_columns(reader.fieldnames, header_of(kind))
        if others:
            shown = ", ".join(name or "(unnamed)" for name in others[:MAX_COLUMNS_NAMED])
            more = f" and {len(others) - MAX_COLUMNS_NAMED} more" if len(others) > MAX_COLUMNS_NAMED else ""
            lines.append(f"{path}: {len(others)} other column(s) ignored: {shown}{more}")
    return lines


def read_answers(paths: list[str], pairs: dict[tuple, dict], kind: str = "discovery") -> tuple[list[Row], list[str]]:
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
                    row = (parse_band_row if kind == "generalization" else parse_row)(record, pairs, where)
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


def _worker(record: dict) -> str:
    worker = (record["WorkerId"] or "").strip()
    if not worker:
        raise IngestError("empty WorkerId")
    return worker


def parse_row(record: dict, pairs: dict, where: str) -> Row:
    worker = _worker(record)
    try:
        class_index, feature_index = int(record["Input.class_index"]), int(record["Input.feature_index"])
        rank = int(float(record["Input.feature_rank"]))
    except (TypeError, ValueError):
        raise IngestError("Input.class_index, Input.feature_index and Input.feature_rank must be integers") from None
    pair = pairs.get((class_index, feature_index))
    if pair is None:
        raise IngestError(f"unknown pair: class {class_index} feature {feature_index} is not in the study's pairs")
    if rank != pair["Input.feature_rank"] or (record["Input.wordnet_id"] or "").strip() != pair["Input.wordnet_id"]:
        raise IngestError(f"class {class_index} feature {feature_index}: wordnet id / rank "
                          f"{record['Input.wordnet_id']} / {rank} differ from the study's "
                          f"{pair['Input.wordnet_id']} / {pair['Input.feature_rank']}")
    answer = _choice(record, "Answer.main", ANSWER_CHOICES)
    return Row(worker, class_index, feature_index, answer, _confidence(record), record["Answer.reasons"] or "",
               where)


def parse_band_row(record: dict, pairs: dict, where: str) -> Row:
    """One answer of a generalization study: (class, feature, band) must be one of the study's pairs.csv rows."""
    worker = _worker(record)
    try:
        class_index, feature_index = int(record["Input.class_index"]), int(record["Input.feature_index"])
    except (TypeError, ValueError):
        raise IngestError("Input.class_index and Input.feature_index must be integers") from None
    band = (record["Input.band"] or "").strip()
    if (class_index, feature_index, band) not in pairs:
        raise IngestError(f"unknown pair: {describe((class_index, feature_index, band))} is not in the study's pairs")
    answer = _choice(record, "Answer.main_question", GENERALIZE_CHOICES)
    reason = (record["Answer.reasons"] or "").strip()
    if not reason:
        raise IngestError("empty Answer.reasons (the study's question 3 is required)")
    return Row(worker, class_index, feature_index, answer, _confidence(record), reason, where, band)


def _choice(record: dict, column: str, choices: tuple) -> str:
    answer = (record[column] or "").strip()
    if answer not in choices:
        raise IngestError(f"bad answer {answer!r}: {column} must be one of {', '.join(choices)}")
    return answer


def _confidence(record: dict) -> float:
    try:
        confidence = float(record["Answer.confidence"])
    except (TypeError, ValueError):
        confidence = float("nan")
    low, high = CONFIDENCE_RANGE
    if not low <= confidence <= high:
        raise IngestError(f"confidence {record['Answer.confidence']!r} out of range: Answer.confidence must be "
                          f"a number from {low:g} to {high:g}")
    return confidence


def by_pair(rows: list[Row]) -> dict[tuple[int, int], list[Row]]:
    grouped = defaultdict(list)
    for row in rows:
        grouped[row.key].append(row)
    return grouped


def check_quorum(grouped: dict, pairs: dict, answers_per_pair: int) -> list[str]:
    """Every pair of the study needs exactly `answers_per_pair` answers (the build reads that many per pair)."""
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


def answers_text(grouped: dict, pairs: dict) -> str:
    """The build's annotation CSV: the published header, rows by (class, feature rank, annotator)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for key in sorted(grouped, key=lambda k: (k[0], pairs[k]["Input.feature_rank"])):
        pair = pairs[key]
        for row in sorted(grouped[key], key=lambda r: r.worker_id):
            writer.writerow([row.worker_id, pair["Input.wordnet_id"], key[0], key[1], pair["Input.feature_rank"],
                             row.answer, f"{row.confidence:.1f}", row.reason])
    return buffer.getvalue()
