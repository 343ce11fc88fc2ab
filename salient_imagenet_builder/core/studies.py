"""Annotation studies, the mechanism: a study folder's `pairs.csv` (one row per task), the answer CSVs annotators
export, and the format each study-making capability registers (`StudyFormat`, found through `core.registry`): which
columns its files have, how one row is read, and how its answers merge into the file that records them. `ingest`
runs any registered format; the engine names none.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from .constants import CONFIDENCE_RANGE, FEATURES_PER_CLASS, NUM_CLASSES, PAIRS_FILE
from .csvfile import csv_reader, is_blank, missing_columns, separator_hint
from .errors import InputError

__all__ = ["StudyAnswer", "StudyError", "StudyFormat", "choice_of", "confidence_of", "describe", "fleiss_kappa",
           "format_of", "pair_of", "pairs_path", "read_pairs", "worker_of"]


class StudyError(InputError):
    pass


@dataclass(frozen=True)
class StudyAnswer:
    """One annotator's answer to one task of a study."""

    worker_id: str
    class_index: int
    feature_index: int
    answer: str
    confidence: float
    reason: str
    where: str  # "file, row N": every message about this answer names it
    band: str | None = None  # a task's extra key (a generalization study's band, "61-65")

    @property
    def key(self) -> tuple:
        """The study's task: (class, feature), and its extra key where the format has one."""
        return (self.class_index, self.feature_index) + ((self.band,) if self.band is not None else ())


def describe(key: tuple) -> str:
    return f"class {key[0]} feature {key[1]}" + (f" band {key[2]}" if len(key) > 2 else "")


class StudyFormat:
    """What a capability that makes studies tells `ingest` (subclass it and register an instance)."""

    name = ""
    pair_columns: tuple = ()  # the columns pairs.csv must have
    answer_columns: tuple = ()  # the columns every answer CSV must have (others are ignored)
    output_header: tuple = ()  # the first line of the file ingest writes for it

    def pair_key(self, row: dict) -> tuple:
        """A pairs.csv row's task key, its values checked (and normalised in `row`); InputError names the problem."""
        raise NotImplementedError

    def parse_answer(self, record: dict, pairs: dict, where: str) -> StudyAnswer:
        """One answer CSV row, checked against the study's tasks; StudyError names the problem."""
        raise NotImplementedError

    def merge(self, grouped: dict, pairs: dict, config) -> tuple[str, str]:
        """The answers by task (every task has its quorum) -> (the text ingest writes, checked to read back as it
        will be read; what to do with it next, one line). Prints the study's statistics."""
        raise NotImplementedError


def pairs_path(path: str | os.PathLike) -> Path:
    """A study's pairs.csv, given itself or its folder."""
    path = Path(path)
    if path.is_dir() and (path / PAIRS_FILE).is_file():  # the study folder itself
        path = path / PAIRS_FILE
    if not path.exists():
        raise InputError(f"pairs file not found: {path} (a study writes it into its --out folder)")
    return path


def format_of(path: str | os.PathLike) -> StudyFormat:
    """The registered format whose pairs.csv has these columns (the one with a column of its own, else the one
    without)."""
    from .registry import study_format, study_formats

    with csv_reader(pairs_path(path)) as reader:
        columns = set(reader.fieldnames or ())
    chosen = next((s for s in study_formats() if s.marker_column and s.marker_column in columns), None) or \
        next(s for s in study_formats() if s.marker_column is None)
    return study_format(chosen.name)


def read_pairs(path: str | os.PathLike, study: StudyFormat) -> dict[tuple, dict]:
    """The rows of a study's pairs.csv, by task key; errors name the file and row."""
    path = pairs_path(path)
    with csv_reader(path) as reader:
        missing = missing_columns(reader.fieldnames, study.pair_columns)
        if missing:
            raise InputError(f"{path}: not a pairs.csv: missing column(s) {', '.join(missing)}"
                             f"{separator_hint(reader.fieldnames)}")
        pairs = {}
        for number, row in enumerate(reader, start=2):  # a spreadsheet's row numbers: the header is row 1
            if is_blank(row):
                continue
            try:
                key = study.pair_key(row)
            except InputError as e:
                raise InputError(f"{path} (the study's pairs), row {number}: {e}") from None
            pairs[key] = row
    return pairs


def pair_of(row: dict, ranked: bool) -> tuple[int, int]:
    """A pairs.csv row's (class, feature), its wordnet id checked, and its feature rank where the study ranks
    features (normalised in `row`)."""
    from .schema import wordnet_ids

    try:
        key = (int(row["Input.class_index"]), int(row["Input.feature_index"]))
        if ranked:
            row["Input.feature_rank"] = int(row["Input.feature_rank"])
    except (TypeError, ValueError):
        raise InputError("class, feature and rank must be integers") from None
    rank_ok = not ranked or 1 <= row["Input.feature_rank"] <= FEATURES_PER_CLASS
    if not 0 <= key[0] < NUM_CLASSES or not rank_ok:
        raise InputError(f"class {key[0]} rank {row.get('Input.feature_rank')}: classes are 0-{NUM_CLASSES - 1}, "
                         f"ranks 1-{FEATURES_PER_CLASS}")
    row["Input.wordnet_id"] = (row["Input.wordnet_id"] or "").strip()
    wnid = wordnet_ids()[key[0]]
    if row["Input.wordnet_id"] != wnid:
        raise InputError(f"Input.wordnet_id {row['Input.wordnet_id']} is not class {key[0]} ({wnid})")
    return key


def worker_of(record: dict) -> str:
    worker = (record["WorkerId"] or "").strip()
    if not worker:
        raise StudyError("empty WorkerId")
    return worker


def choice_of(record: dict, column: str, choices: tuple) -> str:
    answer = (record[column] or "").strip()
    if answer not in choices:
        raise StudyError(f"bad answer {answer!r}: {column} must be one of {', '.join(choices)}")
    return answer


def confidence_of(record: dict) -> float:
    try:
        confidence = float(record["Answer.confidence"])
    except (TypeError, ValueError):
        confidence = float("nan")
    low, high = CONFIDENCE_RANGE
    if not low <= confidence <= high:
        raise StudyError(f"confidence {record['Answer.confidence']!r} out of range: Answer.confidence must be "
                         f"a number from {low:g} to {high:g}")
    return confidence


def fleiss_kappa(counts: list[list[int]]) -> float:
    """Fleiss' kappa (Fleiss 1971). counts[i][j]: answers of choice j for item i, the same total n >= 2 for every
    item; with P_i = (sum_j n_ij^2 - n) / (n (n - 1)) and p_j = sum_i n_ij / (N n), kappa = (mean P_i - sum p_j^2) /
    (1 - sum p_j^2). NaN when undefined (every answer the same choice: no disagreement to measure against)."""
    if not counts:
        return float("nan")
    n = sum(counts[0])
    if n < 2 or any(sum(row) != n for row in counts):
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of answers for every item")
    items = len(counts)
    p_bar = sum((sum(c * c for c in row) - n) / (n * (n - 1)) for row in counts) / items
    shares = [sum(row[j] for row in counts) / (items * n) for j in range(len(counts[0]))]
    p_e = sum(p * p for p in shares)
    return float("nan") if p_e == 1 else (p_bar - p_e) / (1 - p_e)
