"""The discovery study's files, as `ingest` reads them (`core.studies.StudyFormat`): pairs.csv (one row per (class,
feature) pair, under the published results CSV's `Input.*` names, so it can be uploaded as a crowdsourcing batch)
and the answers in the published results format; merged into the annotation CSV the build reads, labelled by the
majority rule, with the agreement per pair and per annotator and Fleiss' kappa."""

import csv
import io
import logging
import math
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from ..core import annotations
from ..core.constants import ANSWER_CHOICES, SPURIOUS_ANSWERS, majority_of
from ..core.studies import (
    StudyAnswer,
    StudyError,
    StudyFormat,
    choice_of,
    confidence_of,
    fleiss_kappa,
    pair_of,
    worker_of,
)

__all__ = ["DISCOVERY", "STUDY_PAIR_COLUMNS", "annotator_agreement", "pair_agreement"]

log = logging.getLogger(__name__)
# pairs.csv: the published CSV's Input.* columns, then what the page shows
STUDY_PAIR_COLUMNS = ("Input.wordnet_id", "Input.class_index", "Input.feature_index", "Input.feature_rank",
                      "Input.class_name", "Input.panel")
MAX_PRINTED_PAIRS = 30


class DiscoveryFormat(StudyFormat):
    name = "feature labels"
    pair_columns = STUDY_PAIR_COLUMNS[:4]
    answer_columns = annotations.COLUMNS
    output_header = annotations.COLUMNS

    def pair_key(self, row: dict) -> tuple:
        return pair_of(row, ranked=True)

    def parse_answer(self, record: dict, pairs: dict, where: str) -> StudyAnswer:
        worker = worker_of(record)
        try:
            class_index, feature_index = int(record["Input.class_index"]), int(record["Input.feature_index"])
            rank = int(float(record["Input.feature_rank"]))
        except (TypeError, ValueError):
            raise StudyError("Input.class_index, Input.feature_index and Input.feature_rank must be integers") \
                from None
        pair = pairs.get((class_index, feature_index))
        if pair is None:
            raise StudyError(f"unknown pair: class {class_index} feature {feature_index} is not in the study's pairs")
        if rank != pair["Input.feature_rank"] or (record["Input.wordnet_id"] or "").strip() != pair["Input.wordnet_id"]:
            raise StudyError(f"class {class_index} feature {feature_index}: wordnet id / rank "
                             f"{record['Input.wordnet_id']} / {rank} differ from the study's "
                             f"{pair['Input.wordnet_id']} / {pair['Input.feature_rank']}")
        answer = choice_of(record, "Answer.main", ANSWER_CHOICES)
        return StudyAnswer(worker, class_index, feature_index, answer, confidence_of(record),
                           record["Answer.reasons"] or "", where)

    def merge(self, grouped: dict, pairs: dict, config) -> tuple[str, str]:
        per_pair = pair_agreement(grouped, config.majority)
        per_annotator = annotator_agreement(grouped, config.majority)
        print_statistics(per_pair, per_annotator, kappa_of(grouped), config.majority, config.answers_per_pair)
        text = answers_text(grouped, pairs)
        check_text(text, per_pair, config)  # what the build will read, read first
        return text, (f"{len(grouped)} pairs from {len(per_annotator)} annotators. Build with it:\n  python "
                      f"build_dataset.py --source ... --annotations {config.out} --out my_salient_dataset")


DISCOVERY = DiscoveryFormat()


def pair_agreement(grouped: dict, majority: int) -> list[dict]:
    """Per pair: votes, label, the share of answers agreeing with the most common answer, mean confidence."""
    table = []
    for key in sorted(grouped):
        rows = grouped[key]
        votes = Counter(r.answer for r in rows)
        kind, sub_type = annotations.classify((r.answer for r in rows), majority)
        table.append({"class_index": key[0], "feature_index": key[1], "answers": len(rows),
                      **{f"votes_{c}": votes[c] for c in ANSWER_CHOICES}, "kind": kind, "spurious_type": sub_type,
                      "agreement": round(max(votes.values()) / len(rows), 3),
                      "mean_confidence": round(sum(r.confidence for r in rows) / len(rows), 2)})
    return table


def annotator_agreement(grouped: dict, majority: int) -> list[dict]:
    """Per annotator: answers, how often the answer's side (core / spurious) matches the pair's label, how often
    it is the pair's most common answer, mean confidence."""
    stats = defaultdict(lambda: {"answers": 0, "with_label": 0, "with_plurality": 0, "confidence": 0.0})
    for rows in grouped.values():
        kind, _ = annotations.classify((r.answer for r in rows), majority)
        plurality = Counter(r.answer for r in rows).most_common(1)[0][0]
        for r in rows:
            s = stats[r.worker_id]
            s["answers"] += 1
            s["with_label"] += (r.answer in SPURIOUS_ANSWERS) == (kind == "spurious")
            s["with_plurality"] += r.answer == plurality
            s["confidence"] += r.confidence
    return [{"annotator": worker, "answers": s["answers"],
             "agrees_with_label": round(s["with_label"] / s["answers"], 3),
             "agrees_with_plurality": round(s["with_plurality"] / s["answers"], 3),
             "mean_confidence": round(s["confidence"] / s["answers"], 2)} for worker, s in sorted(stats.items())]


def kappa_of(grouped: dict) -> float:
    """Fleiss' kappa of the answers; NaN (printed "n/a") when a pair has a single answer: no agreement to measure."""
    if any(len(rows) < 2 for rows in grouped.values()):
        return float("nan")
    return fleiss_kappa([[sum(r.answer == c for r in rows) for c in ANSWER_CHOICES] for rows in grouped.values()])


def answers_text(grouped: dict, pairs: dict) -> str:
    """The build's annotation CSV: the published header, rows by (class, feature rank, annotator)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(annotations.COLUMNS)
    for key in sorted(grouped, key=lambda k: (k[0], pairs[k]["Input.feature_rank"])):
        pair = pairs[key]
        for row in sorted(grouped[key], key=lambda r: r.worker_id):
            writer.writerow([row.worker_id, pair["Input.wordnet_id"], key[0], key[1], pair["Input.feature_rank"],
                             row.answer, f"{row.confidence:.1f}", row.reason])
    return buffer.getvalue()


def check_text(text: str, per_pair: list[dict], config) -> None:
    """Read the CSV to be written with the build's parser first: what ingest writes is what the build will read."""
    if config.majority != majority_of(config.answers_per_pair):
        log.warning("the build labels a pair by a majority of its answers (%d of %d); these labels used %d of %d, so "
                    "the build will label some pairs differently", majority_of(config.answers_per_pair),
                    config.answers_per_pair, config.majority, config.answers_per_pair)
        return
    num_features = max(p["feature_index"] for p in per_pair) + 1
    with tempfile.TemporaryDirectory(prefix="salient_ingest_") as tmp:
        draft = Path(tmp) / "annotations.csv"
        draft.write_text(text, encoding="utf-8")
        try:
            parsed = annotations.parse(draft, num_features=num_features)
        except annotations.AnnotationError as e:  # cannot happen unless the two readers drift apart
            raise StudyError(f"the merged answers would not build ({str(e).replace(str(draft), 'the output')}); "
                             f"check {config.pairs}; nothing written") from None
    mismatched = [p for p in per_pair if parsed.pairs[(p["class_index"], p["feature_index"])].kind != p["kind"]]
    if mismatched:  # cannot happen unless the two readers drift apart
        raise StudyError(f"the build's parser labels {len(mismatched)} pair(s) differently; nothing written")


def print_statistics(per_pair, per_annotator, kappa, majority, answers_per_pair) -> None:
    spurious = [p for p in per_pair if p["kind"] == "spurious"]
    print(f"{len(per_pair)} pairs: {len(per_pair) - len(spurious)} core, {len(spurious)} spurious "
          f"(spurious = at least {majority} of {answers_per_pair} answers separate_object or background)")
    if not math.isnan(kappa):
        shown = f"{kappa:.3f}"
    else:  # NaN: nothing to measure
        shown = "n/a (one answer per pair)" if answers_per_pair < 2 else "n/a (all answers identical)"
    print(f"Fleiss' kappa over the three answers: {shown}")
    shown = sorted(per_pair, key=lambda p: (p["agreement"], p["class_index"], p["feature_index"]))
    title = "Per pair" if len(shown) <= MAX_PRINTED_PAIRS else f"Per pair (the {MAX_PRINTED_PAIRS} least agreed)"
    print(f"\n{title}: class feature | main separate background | label | agreement | confidence")
    for p in shown[:MAX_PRINTED_PAIRS]:
        label = p["kind"] + (f" ({p['spurious_type']})" if p["spurious_type"] else "")
        print(f"  {p['class_index']:>4} {p['feature_index']:>5} | {p['votes_main_object']:>4} "
              f"{p['votes_separate_object']:>8} {p['votes_background']:>10} | {label:<27} | {p['agreement']:.2f} | "
              f"{p['mean_confidence']:.2f}")
    print("\nPer annotator: answers | agrees with the pair's label | with its most common answer | confidence")
    for a in per_annotator:
        print(f"  {a['annotator']:<16} {a['answers']:>5} | {a['agrees_with_label']:.2f} | "
              f"{a['agrees_with_plurality']:.2f} | {a['mean_confidence']:.2f}")
