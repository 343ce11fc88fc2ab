"""The generalization study's files (`core.studies.StudyFormat`): pairs.csv (one row per (pair, band), the band a
range of ranks, "61-65"), the answers (`same`, `different`, `A_unclear`, `B_unclear`), and the generalization CSV
`ingest` merges them into (one row per (pair, band) with its votes and verdict), which `update` records in a build
(`read_results`, `generalizes_to_rank`).

Light on purpose (csv only): `update` and `ingest` use it through `core.registry.study_format("band comparison")`.
"""

import csv
import io
import math
import os
import tempfile
from collections import Counter
from pathlib import Path

from ..core.constants import ANNOTATOR_TOP_IMAGES, NUM_CLASSES, majority_of
from ..core.csvfile import csv_reader, is_blank, missing_columns, separator_hint
from ..core.errors import InputError
from ..core.studies import (
    StudyAnswer,
    StudyError,
    StudyFormat,
    choice_of,
    confidence_of,
    describe,
    fleiss_kappa,
    pair_of,
    worker_of,
)

__all__ = ["ANSWER_COLUMNS", "CHOICES", "GENERALIZATION", "PAIR_COLUMNS", "RESULT_COLUMNS", "band_text",
           "generalizes_to_rank", "parse_band", "read_results"]

CHOICES = ("same", "different", "A_unclear", "B_unclear")
PAIR_COLUMNS = ("Input.class_index", "Input.feature_index", "Input.band", "Input.wordnet_id")
ANSWER_COLUMNS = ("WorkerId", "Input.class_index", "Input.feature_index", "Input.band", "Answer.main_question",
                  "Answer.confidence", "Answer.reasons")
RESULT_COLUMNS = ("class_index", "feature_index", "band", "answers", *CHOICES, "verdict")


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


class GeneralizationFormat(StudyFormat):
    name = "band comparison"
    pair_columns = PAIR_COLUMNS
    answer_columns = ANSWER_COLUMNS
    output_header = RESULT_COLUMNS
    parse_band = staticmethod(parse_band)
    band_text = staticmethod(band_text)

    def pair_key(self, row: dict) -> tuple:
        key = pair_of(row, ranked=False)
        row["Input.band"] = (row["Input.band"] or "").strip()
        parse_band(row["Input.band"])
        return (*key, row["Input.band"])

    def parse_answer(self, record: dict, pairs: dict, where: str) -> StudyAnswer:
        """One answer: (class, feature, band) must be one of the study's pairs.csv rows; a reason is required."""
        worker = worker_of(record)
        try:
            class_index, feature_index = int(record["Input.class_index"]), int(record["Input.feature_index"])
        except (TypeError, ValueError):
            raise StudyError("Input.class_index and Input.feature_index must be integers") from None
        band = (record["Input.band"] or "").strip()
        if (class_index, feature_index, band) not in pairs:
            raise StudyError(f"unknown pair: {describe((class_index, feature_index, band))} is not in the study's "
                             "pairs")
        answer = choice_of(record, "Answer.main_question", CHOICES)
        reason = (record["Answer.reasons"] or "").strip()
        if not reason:
            raise StudyError("empty Answer.reasons (the study's question 3 is required)")
        return StudyAnswer(worker, class_index, feature_index, answer, confidence_of(record), reason, where, band)

    def merge(self, grouped: dict, pairs: dict, config) -> tuple[str, str]:
        """One row per (pair, band) with its answers per choice and verdict."""
        verdicts = band_verdicts(grouped, config.majority)
        print_band_statistics(band_statistics(grouped, verdicts), config.majority, config.answers_per_pair)
        text = results_text(verdicts)
        with tempfile.TemporaryDirectory(prefix="salient_ingest_") as tmp:  # what update will read, read first
            draft = Path(tmp) / "generalization.csv"
            draft.write_text(text, encoding="utf-8")
            read_results(draft)
        return text, (f"{len(verdicts)} (pair, band) rows. Record it in a build with:\n  salient-imagenet update "
                      f"DATASET --generalization {config.out}")

    def read_results(self, path: str | os.PathLike) -> dict[tuple[int, int], list[dict]]:
        """What `update --generalization` records: the module's `read_results`."""
        return read_results(path)

    def generalizes_to_rank(self, bands: list[dict] | None) -> int | None:
        return generalizes_to_rank(bands)


def band_verdicts(grouped: dict, majority: int | None = None) -> list[dict]:
    """Per (pair, band), sorted by class, feature, band: the answers per choice and the verdict, `same` when at
    least `majority` of the band's answers are `same` (default: a majority, `majority_of`), else `not_same`."""
    table = []
    for key in sorted(grouped, key=lambda k: (k[0], k[1], parse_band(k[2]))):
        votes = Counter(r.answer for r in grouped[key])
        answers = len(grouped[key])
        table.append({"class_index": key[0], "feature_index": key[1], "band": key[2], "answers": answers,
                      **{c: votes[c] for c in CHOICES},
                      "verdict": "same" if votes["same"] >= (majority or majority_of(answers)) else "not_same"})
    return table


def band_statistics(grouped: dict, verdicts: list[dict]) -> list[dict]:
    """Per band: pairs, the share judged `same` (the paper's figure), the mean share of answers agreeing with the
    pair's most common answer, and Fleiss' kappa over the four choices (NaN when undefined)."""
    stats = []
    for band in sorted({v["band"] for v in verdicts}, key=parse_band):
        keys = [k for k in grouped if k[2] == band]
        counts = [[sum(r.answer == c for r in grouped[k]) for c in CHOICES] for k in keys]
        same = sum(v["verdict"] == "same" for v in verdicts if v["band"] == band)
        sizes = {sum(c) for c in counts}
        stats.append({"band": band, "pairs": len(keys), "same": same, "share_same": same / len(keys),
                      "agreement": sum(max(c) / sum(c) for c in counts) / len(keys),
                      "kappa": fleiss_kappa(counts) if len(sizes) == 1 and min(sizes) >= 2 else float("nan")})
    return stats


def print_band_statistics(stats: list[dict], majority: int, answers_per_pair: int) -> None:
    print(f"Generalization study: verdict same = at least {majority} of {answers_per_pair} answers same")
    print("band | pairs | judged same | share same | agreement with the most common answer | Fleiss' kappa")
    for s in stats:
        kappa = "n/a" if math.isnan(s["kappa"]) else f"{s['kappa']:.3f}"
        print(f"  {s['band']:>7} | {s['pairs']:>5} | {s['same']:>5} | {s['share_same']:.2f} | {s['agreement']:.2f} | "
              f"{kappa}")


def results_text(verdicts: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(verdicts)
    return buffer.getvalue()


def read_results(path: str | os.PathLike) -> dict[tuple[int, int], list[dict]]:
    """A generalization CSV (what `ingest` writes for a generalization study): (class, feature) -> its bands as
    {band, answers, same, verdict}, by band; errors name the file and row."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--generalization {path}: no such file (ingest writes it from a generalization study)")
    studied: dict[tuple[int, int], list[dict]] = {}
    with csv_reader(path) as reader:
        missing = missing_columns(reader.fieldnames, RESULT_COLUMNS)
        if missing:
            raise InputError(f"{path}: not a generalization CSV: missing column(s) {', '.join(missing)} (ingest writes "
                             f"{','.join(RESULT_COLUMNS)}){separator_hint(reader.fieldnames)}")
        for number, row in enumerate(reader, start=2):
            if is_blank(row):
                continue
            try:
                key, band = _result_row(row)
            except (InputError, ValueError, TypeError) as e:
                raise InputError(f"{path}, row {number}: {e}") from None
            bands = studied.setdefault(key, [])
            if any(b["band"] == band["band"] for b in bands):
                raise InputError(f"{path}, row {number}: class {key[0]} feature {key[1]} band {band['band']} again")
            bands.append(band)
    for bands in studied.values():
        bands.sort(key=lambda b: parse_band(b["band"]))
    return studied


def _result_row(row: dict) -> tuple[tuple[int, int], dict]:
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


GENERALIZATION = GeneralizationFormat()
