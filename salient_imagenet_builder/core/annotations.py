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
    ANNOTATOR_TOP_IMAGES,
    ANSWER_CHOICES,
    ANSWERS_PER_PAIR,
    CONFIDENCE_RANGE,
    FEATURES_PER_CLASS,
    GENERALIZATION_COLUMNS,
    NUM_CLASSES,
    PAIRS_FILE,
    PUBLISHED_ANNOTATION_STATS,
    SPURIOUS_ANSWERS,
    majority_of,
)
from .csvfile import csv_reader, is_blank, missing_columns, separator_hint
from .download import fetch_pinned
from .errors import InputError, NetworkError  # noqa: F401 (NetworkError: what fetch raises, callers catch it here)
from .output import sha256_file
from .schema import wordnet_ids

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
            **{f"spurious_{t}": sub_types[t] for t in ("background", "separate_object", "mixed")},
            "classes": len(self.classes),
            "classes_with_spurious": len({p.class_index for p in self.pairs.values() if p.kind == "spurious"}),
            "mean_confidence": round(sum(a.confidence for a in answers) / max(len(answers), 1), 4),
        }


# A study's pairs.csv (discover writes it, ingest checks answers against it): the published CSV's Input.*
# names, so the file can be uploaded as a crowdsourcing batch as it is.
STUDY_PAIR_COLUMNS = ("Input.wordnet_id", "Input.class_index", "Input.feature_index", "Input.feature_rank",
                "Input.class_name", "Input.panel")


# A generalization study's pairs.csv: one row per (pair, band), the band a range of ranks ("61-65").
GENERALIZATION_PAIR_COLUMNS = ("Input.class_index", "Input.feature_index", "Input.band", "Input.wordnet_id")


def study_kind(path: str | os.PathLike) -> str:
    """"generalization" when the study's pairs.csv has an `Input.band` column, else "discovery"."""
    path = pairs_path(path)
    with csv_reader(path) as reader:
        return "generalization" if "Input.band" in (reader.fieldnames or []) else "discovery"


def pairs_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir() and (path / PAIRS_FILE).is_file():  # the study folder itself
        path = path / PAIRS_FILE
    if not path.exists():
        raise InputError(f"pairs file not found: {path} (discover writes it into its --out folder)")
    return path


def parse_band(text: str) -> tuple[int, int]:
    """"61-65" -> (61, 65): ranks within a pair's top-k, 1-based, first <= last."""
    try:
        first, last = (int(part) for part in (text or "").strip().split("-"))
    except ValueError:
        raise InputError(f"band {text!r} is not FIRST-LAST (e.g. 61-65)") from None
    if not 1 <= first <= last:
        raise InputError(f"band {text!r}: ranks start at 1 and FIRST <= LAST")
    return first, last


def band_text(band: tuple[int, int]) -> str:
    return f"{band[0]}-{band[1]}"


def read_pairs(path: str | os.PathLike) -> dict[tuple, dict]:
    """The rows of a study's `pairs.csv`, by key: (class_index, feature_index) for a discovery study,
    (class_index, feature_index, band) for a generalization study; errors name the file and row."""
    path = pairs_path(path)
    kind = study_kind(path)
    columns = GENERALIZATION_PAIR_COLUMNS if kind == "generalization" else STUDY_PAIR_COLUMNS[:4]
    wnids = wordnet_ids()
    with csv_reader(path) as reader:
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: not a pairs.csv: missing column(s) {', '.join(missing)}"
                             f"{separator_hint(reader.fieldnames)}")
        pairs = {}
        for number, row in enumerate(reader, start=2):  # a spreadsheet's row numbers: the header is row 1
            if is_blank(row):
                continue
            where = f"{path} (the study's pairs), row {number}"
            try:
                key = _pair_key(row, kind, wnids)
            except InputError as e:
                raise InputError(f"{where}: {e}") from None
            pairs[key] = row
    return pairs


def _pair_key(row: dict, kind: str, wnids: list[str]) -> tuple:
    try:
        key = (int(row["Input.class_index"]), int(row["Input.feature_index"]))
        if kind == "discovery":
            row["Input.feature_rank"] = int(row["Input.feature_rank"])
    except (TypeError, ValueError):
        raise InputError("class, feature and rank must be integers") from None
    rank_ok = kind != "discovery" or 1 <= row["Input.feature_rank"] <= FEATURES_PER_CLASS
    if not 0 <= key[0] < NUM_CLASSES or not rank_ok:
        raise InputError(f"class {key[0]} rank {row.get('Input.feature_rank')}: classes are 0-{NUM_CLASSES - 1}, "
                         f"ranks 1-{FEATURES_PER_CLASS}")
    row["Input.wordnet_id"] = (row["Input.wordnet_id"] or "").strip()
    if row["Input.wordnet_id"] != wnids[key[0]]:
        raise InputError(f"Input.wordnet_id {row['Input.wordnet_id']} is not class {key[0]} ({wnids[key[0]]})")
    if kind == "generalization":
        row["Input.band"] = (row["Input.band"] or "").strip()
        parse_band(row["Input.band"])
        key = (*key, row["Input.band"])
    return key


def read_generalization(path: str | os.PathLike) -> dict[tuple[int, int], list[dict]]:
    """A generalization CSV (what `ingest` writes for a generalization study): (class, feature) -> its bands as
    {band, answers, same, verdict}, by band; errors name the file and row."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--generalization {path}: no such file (ingest writes it from a generalization study)")
    studied: dict[tuple[int, int], list[dict]] = {}
    with csv_reader(path) as reader:
        missing = missing_columns(reader.fieldnames, GENERALIZATION_COLUMNS)
        if missing:
            raise InputError(f"{path}: not a generalization CSV: missing column(s) {', '.join(missing)} (ingest writes "
                             f"{','.join(GENERALIZATION_COLUMNS)}){separator_hint(reader.fieldnames)}")
        for number, row in enumerate(reader, start=2):
            if is_blank(row):
                continue
            try:
                key, band = _generalization_row(row)
            except (InputError, ValueError, TypeError) as e:
                raise InputError(f"{path}, row {number}: {e}") from None
            bands = studied.setdefault(key, [])
            if any(b["band"] == band["band"] for b in bands):
                raise InputError(f"{path}, row {number}: class {key[0]} feature {key[1]} band {band['band']} again")
            bands.append(band)
    for bands in studied.values():
        bands.sort(key=lambda b: parse_band(b["band"]))
    return studied


def _generalization_row(row: dict) -> tuple[tuple[int, int], dict]:
    key = (int(row["class_index"]), int(row["feature_index"]))
    if not 0 <= key[0] < NUM_CLASSES or key[1] < 0:
        raise InputError(f"class {key[0]} feature {key[1]}: classes are 0-{NUM_CLASSES - 1}, features >= 0")
    band = band_text(parse_band(row["band"]))  # one spelling per band (" 06-10" is 6-10)
    answers, same = int(row["answers"]), int(row["same"])
    if not 0 <= same <= answers or row["verdict"] not in ("same", "not_same"):
        raise InputError(f"answers {answers}, same {same}, verdict {row['verdict']!r}: expected 0 <= same <= answers "
                         "and a verdict same or not_same")
    return key, {"band": band, "answers": answers, "same": same, "verdict": row["verdict"]}


def generalizes_to_rank(bands: list[dict] | None) -> int | None:
    """The last rank of the unbroken run of ranks from 6 up (just below the top 5 the pair was annotated from)
    that a band judged `same` covers and no band judged `not_same` does; 5 when rank 6 is not one; None for a pair
    not studied. So a rank range never studied stops the run, and a rank in a rejected band is never counted, even
    where an overlapping band judged it `same`."""
    if not bands:
        return None
    spans = sorted((parse_band(b["band"]), b["verdict"] == "same") for b in bands)
    first_rejected = min((max(first, ANNOTATOR_TOP_IMAGES + 1) for (first, last), same in spans
                          if not same and last > ANNOTATOR_TOP_IMAGES), default=math.inf)
    reached = ANNOTATOR_TOP_IMAGES
    for (first, last), same in spans:  # by first rank: the run of ranks the `same` bands cover from 6
        if same and first <= reached + 1:
            reached = max(reached, last)
    return int(min(reached, first_rejected - 1))


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
