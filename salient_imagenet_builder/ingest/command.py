"""`salient-imagenet ingest`: answer CSVs -> validated, merged annotation CSV + agreement statistics."""

import csv
import io
import logging
import math
import tempfile
from pathlib import Path

from ..core import annotations as annotations_mod
from ..core.annotations import read_generalization, read_pairs, study_kind
from ..core.constants import GENERALIZATION_COLUMNS, PAIRS_FILE, majority_of
from ..core.output import check_out_file, write_text_atomic
from .agreement import annotator_agreement, band_statistics, band_verdicts, kappa_of, pair_agreement
from .answers import IngestError, answers_text, by_pair, check_quorum, ignored_columns, read_answers, unreadable

log = logging.getLogger(__name__)
MAX_PRINTED_PAIRS = 30
MAX_PROBLEMS_SHOWN = 100


def run(args) -> int:
    out = Path(args.out)
    args.majority = args.majority or majority_of(args.answers_per_pair)
    if args.majority > args.answers_per_pair:
        raise IngestError(f"--majority {args.majority} is more than --answers-per-pair {args.answers_per_pair}")
    pairs_path = Path(args.pairs) if args.pairs else Path(args.answers[0]).parent / PAIRS_FILE
    check_out(out, args.overwrite, [*args.answers, pairs_path])
    if study_kind(pairs_path) == "generalization":
        return run_generalization(args, out, pairs_path)
    report(unreadable(args.answers), out)
    print_ignored(args.answers, "discovery")
    pairs = read_pairs(pairs_path)
    rows, problems = read_answers(args.answers, pairs)
    grouped = by_pair(rows)
    report(problems + check_quorum(grouped, pairs, args.answers_per_pair), out)
    per_pair, per_annotator = pair_agreement(grouped, args.majority), annotator_agreement(grouped, args.majority)
    print_statistics(per_pair, per_annotator, kappa_of(grouped), args.majority, args.answers_per_pair)
    text = answers_text(grouped, pairs)
    check_text(text, per_pair, args, pairs_path)  # everything validated before anything is written
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, text)
    print(f"\nWrote {out}: {len(rows)} answers to {len(grouped)} pairs from {len(per_annotator)} annotators. Build "
          f"with it:\n  python build_dataset.py --source ... --annotations {out} --out my_salient_dataset")
    return 0


def run_generalization(args, out: Path, pairs_path: Path) -> int:
    """A generalization study: one row per (pair, band) with its answers per choice and verdict."""
    report(unreadable(args.answers, "generalization"), out)
    print_ignored(args.answers, "generalization")
    pairs = read_pairs(pairs_path)
    rows, problems = read_answers(args.answers, pairs, "generalization")
    grouped = by_pair(rows)
    report(problems + check_quorum(grouped, pairs, args.answers_per_pair), out)
    verdicts = band_verdicts(grouped, args.majority)
    print_band_statistics(band_statistics(grouped, verdicts), args.majority, args.answers_per_pair)
    text = generalization_text(verdicts)
    with tempfile.TemporaryDirectory(prefix="salient_ingest_") as tmp:  # what update will read, read first
        draft = Path(tmp) / "generalization.csv"
        draft.write_text(text, encoding="utf-8")
        read_generalization(draft)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, text)
    print(f"\nWrote {out}: {len(rows)} answers to {len(verdicts)} (pair, band) rows. Record it in a build with:\n"
          f"  salient-imagenet update DATASET --generalization {out}")
    return 0


def generalization_text(verdicts: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, GENERALIZATION_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(verdicts)
    return buffer.getvalue()


def print_ignored(paths: list[str], kind: str) -> None:
    for line in ignored_columns(paths, kind):
        print(line)


def print_band_statistics(stats: list[dict], majority: int, answers_per_pair: int) -> None:
    print(f"Generalization study: verdict same = at least {majority} of {answers_per_pair} answers same")
    print("band | pairs | judged same | share same | agreement with the most common answer | Fleiss' kappa")
    for s in stats:
        kappa = "n/a" if math.isnan(s["kappa"]) else f"{s['kappa']:.3f}"
        print(f"  {s['band']:>7} | {s['pairs']:>5} | {s['same']:>5} | {s['share_same']:.2f} | {s['agreement']:.2f} | "
              f"{kappa}")


def first_line(path: Path) -> list[str]:
    with open(path, "rb") as f:
        return f.readline().decode("utf-8-sig", "replace").strip().split(",")


def is_annotation_csv(path: Path) -> bool:
    """An annotation CSV or a generalization CSV (what ingest writes, for either kind of study)."""
    return first_line(path) in (list(annotations_mod.COLUMNS), list(GENERALIZATION_COLUMNS))


def check_out(out: Path, overwrite: bool, inputs: list) -> None:
    """--out is a CSV file to write; never a folder, never one of the inputs, and --overwrite replaces only a CSV
    in the published results format (what ingest writes)."""
    check_out_file(out, what="the CSV file to write", example="annotations.csv", is_ours=is_annotation_csv,
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


def check_text(text: str, per_pair: list[dict], args, pairs_path: Path) -> None:
    """Read the CSV to be written with the build's parser first: what ingest writes is what the build will read."""
    if args.majority != majority_of(args.answers_per_pair):
        log.warning("the build labels a pair by a majority of its answers (%d of %d); these labels used %d of %d, so "
                    "the build will label some pairs differently", majority_of(args.answers_per_pair),
                    args.answers_per_pair, args.majority, args.answers_per_pair)
        return
    num_features = max(p["feature_index"] for p in per_pair) + 1
    with tempfile.TemporaryDirectory(prefix="salient_ingest_") as tmp:
        draft = Path(tmp) / "annotations.csv"
        draft.write_text(text, encoding="utf-8")
        try:
            parsed = annotations_mod.parse(draft, num_features=num_features)
        except annotations_mod.AnnotationError as e:  # cannot happen unless the two readers drift apart
            raise IngestError(f"the merged answers would not build ({str(e).replace(str(draft), 'the output')}); "
                              f"check {pairs_path}; nothing written") from None
    mismatched = [p for p in per_pair if parsed.pairs[(p["class_index"], p["feature_index"])].kind != p["kind"]]
    if mismatched:  # cannot happen unless the two readers drift apart
        raise IngestError(f"the build's parser labels {len(mismatched)} pair(s) differently; nothing written")


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
