"""The annotation CSV: download, validation, and the 3-of-5 majority rule that labels a pair core or spurious."""

import csv
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .constants import (
    ANNOTATIONS_SHA256,
    ANNOTATIONS_URL,
    ANSWER_CHOICES,
    ANSWERS_PER_PAIR,
    CONFIDENCE_RANGE,
    FEATURES_PER_CLASS,
    NUM_CLASSES,
    PUBLISHED_ANNOTATION_STATS,
    SPURIOUS_ANSWERS,
    majority_of,
)
from .csvfile import csv_reader, is_blank, separator_hint
from .download import fetch_pinned
from .errors import InputError, NetworkError  # noqa: F401 (NetworkError: what fetch raises, callers catch it here)
from .output import sha256_file
from .schema import SPURIOUS_TYPES, wordnet_ids

COLUMNS = (
    "WorkerId",
    "Input.wordnet_id",
    "Input.class_index",
    "Input.feature_index",
    "Input.feature_rank",
    "Answer.main",
    "Answer.confidence",
    "Answer.reasons",
)


class AnnotationError(InputError):
    pass


@dataclass(frozen=True)
class Answer:
    worker_id: str
    answer: str
    confidence: float
    reason: str


@dataclass
class Pair:
    class_index: int
    wordnet_id: str
    feature_index: int
    feature_rank: int
    answers: list[Answer] = field(default_factory=list)

    @property
    def votes(self) -> Counter:
        return Counter(a.answer for a in self.answers)

    @property
    def kind(self) -> str:
        return classify(a.answer for a in self.answers)[0]

    @property
    def spurious_type(self) -> str | None:
        return classify(a.answer for a in self.answers)[1]

    @property
    def mean_confidence(self) -> float:
        return sum(a.confidence for a in self.answers) / len(self.answers)


def classify(answers, majority: int | None = None) -> tuple[str, str | None]:
    """(kind, spurious sub-type) of a pair from its answers, by the paper's majority rule: `majority` of them,
    by default a majority of however many there are (3 of 5)."""
    answers = list(answers)
    majority = majority_of(len(answers)) if majority is None else majority
    votes = Counter(answers)
    if sum(votes[a] for a in SPURIOUS_ANSWERS) < majority:
        return "core", None
    for sub_type in SPURIOUS_ANSWERS[::-1]:  # background first, then separate_object
        if votes[sub_type] >= majority:
            return "spurious", sub_type
    return "spurious", "mixed"


@dataclass
class Annotations:
    pairs: dict[tuple[int, int], Pair]  # (class_index, feature_index) -> pair
    source: str
    sha256: str

    def for_class(self, class_index: int) -> list[Pair]:
        return sorted((p for p in self.pairs.values() if p.class_index == class_index), key=lambda p: p.feature_rank)

    @property
    def classes(self) -> list[int]:
        return sorted({c for c, _ in self.pairs})

    def restrict(self, classes) -> "Annotations":
        keep = set(classes)
        return Annotations({k: p for k, p in self.pairs.items() if k[0] in keep}, self.source, self.sha256)

    @property
    def answers_per_pair(self) -> int:
        return len(next(iter(self.pairs.values())).answers) if self.pairs else ANSWERS_PER_PAIR

    @property
    def majority(self) -> int:
        return majority_of(self.answers_per_pair)

    def stats(self) -> dict:
        kinds = Counter(p.kind for p in self.pairs.values())
        sub_types = Counter(p.spurious_type for p in self.pairs.values() if p.kind == "spurious")
        answers = [a for p in self.pairs.values() for a in p.answers]
        return {
            "pairs": len(self.pairs),
            "answers": len(answers),
            "workers": len({a.worker_id for a in answers}),
            "core": kinds["core"],
            "spurious": kinds["spurious"],
            **{f"spurious_{t}": sub_types[t] for t in SPURIOUS_TYPES},
            "classes": len(self.classes),
            "classes_with_spurious": len({p.class_index for p in self.pairs.values() if p.kind == "spurious"}),
            "mean_confidence": round(sum(a.confidence for a in answers) / max(len(answers), 1), 4),
        }


def parse(path: str | os.PathLike, num_features: int = 2048) -> Annotations:
    """Read and validate an annotation CSV in the published format; errors name the file and row."""
    path = Path(path)
    with csv_reader(path, AnnotationError) as reader:
        return _parse_rows(path, reader, num_features)


def _parse_rows(path: Path, reader: csv.DictReader, num_features: int) -> Annotations:
    wnids = wordnet_ids()
    pairs: dict[tuple[int, int], Pair] = {}
    if not reader.fieldnames:
        raise AnnotationError(f"{path}: empty file, expected a CSV with the header {','.join(COLUMNS)}")
    missing = [c for c in COLUMNS if c not in reader.fieldnames]
    if missing:
        raise AnnotationError(f"{path}: missing column(s) {', '.join(missing)}; header is {reader.fieldnames}"
                              f"{separator_hint(reader.fieldnames)}")
    for number, row in enumerate(reader, start=2):  # a spreadsheet's row numbers: a two-line reason is one row
        where = f"{path}, row {number}"
        if is_blank(row):
            continue
        if None in row or None in row.values():
            fields = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None) or [])
            raise AnnotationError(f"{where}: {fields} fields, the header has {len(reader.fieldnames)}")
        try:
            class_index = _int(row, "Input.class_index", 0, NUM_CLASSES - 1)
            feature_index = _int(row, "Input.feature_index", 0, num_features - 1)
            rank = _int(row, "Input.feature_rank", 1, FEATURES_PER_CLASS)
            answer = row["Answer.main"].strip()
            if answer not in ANSWER_CHOICES:
                raise AnnotationError(f"Answer.main {answer!r} is not one of {ANSWER_CHOICES}")
            confidence = _number(row, "Answer.confidence", *CONFIDENCE_RANGE)
            wnid = row["Input.wordnet_id"].strip()
            if wnid != wnids[class_index]:
                raise AnnotationError(f"Input.wordnet_id {wnid} is not class {class_index} ({wnids[class_index]})")
        except (AnnotationError, ValueError, TypeError) as e:
            raise AnnotationError(f"{where}: {e}") from None
        pair = pairs.setdefault((class_index, feature_index), Pair(class_index, wnid, feature_index, rank))
        if pair.feature_rank != rank:
            raise AnnotationError(f"{where}: feature {feature_index} of class {class_index} has rank {rank}, "
                                  f"earlier rows say {pair.feature_rank}")
        pair.answers.append(Answer(row["WorkerId"].strip(), answer, confidence, row["Answer.reasons"] or ""))
    counts = Counter(len(pair.answers) for pair in pairs.values())
    if len(counts) > 1:  # a study's pairs all have its quorum of answers (5 in the published study)
        usual = counts.most_common(1)[0][0]
        odd = next(p for p in pairs.values() if len(p.answers) != usual)
        raise AnnotationError(f"{path}: class {odd.class_index} feature {odd.feature_index} has {len(odd.answers)} "
                              f"answers, the other pairs {usual}: every pair needs the same number of answers")
    per_class = Counter(c for c, _ in pairs)
    too_many = [c for c, n in per_class.items() if n > FEATURES_PER_CLASS]
    if too_many:
        raise AnnotationError(f"{path}: class {too_many[0]} has {per_class[too_many[0]]} annotated features, "
                              f"at most {FEATURES_PER_CLASS} expected")
    return Annotations(pairs, str(path), sha256_file(path))


def _number(row: dict, column: str, low: float, high: float) -> float:
    """A finite number in [low, high] (`inf` and `nan` parse as floats, so they are refused here by name)."""
    text = row[column].strip()
    try:
        value = float(text)
    except ValueError:
        raise AnnotationError(f"{column} {text!r} is not a number") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise AnnotationError(f"{column} {text!r} is not a finite number in [{low}, {high}]")
    return value


def _int(row: dict, column: str, low: int, high: int) -> int:
    value = _number(row, column, low, high)  # the release writes some integers as floats ("3.0")
    if value != int(value):
        raise AnnotationError(f"{column} {row[column].strip()!r} is not an integer in [{low}, {high}]")
    return int(value)


def fetch(path_or_url: str, cache_dir: str | os.PathLike, sha256: str | None = None) -> Path:
    """A local path as is; a URL downloaded once into cache_dir (atomic write). The published file is pinned: its
    download (and its cached copy) must have the pinned sha256. Offline or unreachable: one line that says where the
    cache is and which option to pass, at once."""
    if "://" not in path_or_url:
        path = Path(path_or_url).expanduser()
        if not path.is_file():
            raise AnnotationError(f"--annotations {path_or_url}: no such file")
        return path
    if sha256 is None and path_or_url == ANNOTATIONS_URL:
        sha256 = ANNOTATIONS_SHA256
    return fetch_pinned(path_or_url, cache_dir, sha256, what="the annotation CSV", option="--annotations PATH",
                        error=AnnotationError)


def load(path_or_url: str, cache_dir: str | os.PathLike, num_features: int = 2048, expect_published: bool = False,
         sha256: str | None = None) -> Annotations:
    """Fetch, verify (pinned sha256; published statistics for the published file) and parse."""
    path = fetch(path_or_url, cache_dir, sha256)
    if sha256 and sha256_file(path) != sha256:
        raise AnnotationError(f"{path}: sha256 {sha256_file(path)} does not match the pinned {sha256}")
    annotations = parse(path, num_features)
    if expect_published:
        stats = annotations.stats()
        wrong = {k: (stats[k], v) for k, v in PUBLISHED_ANNOTATION_STATS.items() if stats[k] != v}
        if wrong:
            raise AnnotationError(f"{path}: not the published annotation file (got, expected): {wrong}")
    return annotations
