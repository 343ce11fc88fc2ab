"""The generalization study's rules as users meet them: studies of one build accumulate over updates (a band
studied again replaces that pair's earlier answers; the card lists every band and study), `generalizes_to_rank`
counts ranks from 6 up with no gap and no rank a `not_same` band rejected, and ingest reads answers by column
name (reordered, extra columns, a BOM) and honours `--majority`."""

import csv
import hashlib
import io
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from conftest import build_top7, built_once
from datasets import load_dataset

from salient_imagenet_builder.cli import main
from salient_imagenet_builder.core.schema import wordnet_ids
from salient_imagenet_builder.evaluation.generalized import generalization_limits
from salient_imagenet_builder.generalize.study_format import ANSWER_COLUMNS as GENERALIZE_ANSWER_COLUMNS
from salient_imagenet_builder.generalize.study_format import RESULT_COLUMNS as GENERALIZATION_COLUMNS
from salient_imagenet_builder.generalize.study_format import generalizes_to_rank
from salient_imagenet_builder.publish.validate import check


def rank_by_hand(bands: list[tuple[str, str]]) -> int:
    """The README's rule, rank by rank: from 6 up, a rank counts when a `same` band covers it and no `not_same`
    band does; the last rank of that unbroken run, 5 when rank 6 does not count."""
    def covers(band, rank):
        first, last = map(int, band.split("-"))
        return first <= rank <= last
    rank = 5
    while any(v == "same" and covers(b, rank + 1) for b, v in bands) and \
            not any(v == "not_same" and covers(b, rank + 1) for b, v in bands):
        rank += 1
    return rank


@pytest.mark.parametrize("bands, expected", [
    ([("6-10", "same"), ("11-15", "same")], 15),
    ([("11-15", "same")], 5),  # a gap: ranks 6-10 never studied
    ([("7-10", "same")], 5),  # rank 6 never studied
    ([("6-10", "same"), ("16-20", "same")], 10),  # the gap 11-15 stops it
    ([("6-10", "not_same"), ("11-15", "same")], 5),
    ([("6-10", "same"), ("8-12", "same")], 12),  # overlapping bands both judged same: their union
    ([("6-10", "same"), ("8-12", "not_same")], 7),  # ranks 8-12 rejected, even where 6-10 said same
    ([("6-10", "same"), ("11-15", "not_same"), ("11-20", "same")], 10),
    ([("6-6", "same"), ("7-10", "same"), ("31-35", "not_same")], 10),
])
def test_generalizes_to_rank_counts_ranks_from_6_with_no_gap(bands, expected):
    assert rank_by_hand(bands) == expected  # the README's rule, by hand, agrees with the case
    assert generalizes_to_rank([{"band": b, "verdict": v} for b, v in bands]) == expected
    assert generalizes_to_rank(None) is None


# --- update: studies of one build accumulate ----------------------------------------------------------------

@pytest.fixture(scope="module")
def built(inputs, tmp_path_factory) -> Path:
    return built_once(tmp_path_factory, "top7", lambda root: build_top7(inputs, root))


@pytest.fixture(scope="module")
def pairs(built) -> list[tuple[int, int]]:
    """Five annotated pairs of the build, A to E (update checks pairs, not ranks: bands beyond 7 are fine)."""
    rows = load_dataset(str(built), "annotations", split="train")
    found = sorted((r["class_index"], r["feature_index"]) for r in rows)
    assert len(found) >= 6
    return found[:5]


# Three studies of pairs A-E, as (pair, band, answers judged same of 5): verdict same with at least 3.
STUDIES = [
    [("A", "6-10", 5), ("B", "6-10", 1), ("C", "6-10", 4), ("D", "6-10", 3), ("E", "7-10", 5)],
    [("A", "11-15", 4), ("B", "11-15", 5), ("C", "11-15", 2), ("D", "16-20", 5), ("E", "6-6", 3)],
    [("A", "6-10", 2), ("C", "6-10", 5), ("D", "11-15", 4), ("E", "8-12", 0)],  # A's and C's 6-10 again
]
# By hand, after each update: A 10 -> 15 -> 5 (its 6-10 restudied not_same); B's 6-10 was rejected: 5 throughout;
# C 10 (11-15 rejected); D 10 -> 10 (the gap 11-15) -> 20 (the gap studied); E 5 (rank 6 never studied) -> 10 ->
# 7 (8-12 rejected, overlapping the earlier 7-10)
RANKS = [{"A": 10, "B": 5, "C": 10, "D": 10, "E": 5}, {"A": 15, "B": 5, "C": 10, "D": 10, "E": 10},
         {"A": 5, "B": 5, "C": 10, "D": 20, "E": 7}]


def write_generalization(path: Path, study: list, pairs: list) -> Path:
    """A generalization CSV as ingest writes it, from (pair letter, band, same of 5)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, GENERALIZATION_COLUMNS)
        writer.writeheader()
        for letter, band, same in study:
            c, j = pairs["ABCDE".index(letter)]
            writer.writerow({"class_index": c, "feature_index": j, "band": band, "answers": 5, "same": same,
                             "different": 5 - same, "A_unclear": 0, "B_unclear": 0,
                             "verdict": "same" if same >= 3 else "not_same"})
    return path


def recorded_bands(studies: list) -> dict[str, dict[str, str]]:
    """By hand: each pair's bands after these updates, a band studied again keeping its last verdict."""
    bands = {}
    for study in studies:
        for letter, band, same in study:
            bands.setdefault(letter, {})[band] = "same" if same >= 3 else "not_same"
    return bands


def write_validation(path: Path, dataset: Path) -> Path:
    """A validation report of the build's pairs, as `validate` writes it."""
    rows = load_dataset(str(dataset), "annotations", split="train")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class_index", "feature_index", "kind", "images", "energy_inside"])
        for r in rows:
            writer.writerow([r["class_index"], r["feature_index"], r["kind"], 2, 0.5])
    return path


def annotation_rows(dataset: Path) -> dict:
    return {(r["class_index"], r["feature_index"]): r
            for r in load_dataset(str(dataset), "annotations", split="train")}


@pytest.fixture(scope="module")
def three_updates(built, pairs, tmp_path_factory) -> dict:
    """The build updated with each study in turn (the third with --validation too): ranks, bands and the printed
    text after each update."""
    root = tmp_path_factory.mktemp("accumulate")
    dataset = root / "salient"
    shutil.copytree(built, dataset)
    images = {p.name: p.read_bytes() for p in (dataset / "data").glob("train-*")}
    after = []
    for number, study in enumerate(STUDIES, start=1):
        path = write_generalization(root / f"study{number}.csv", study, pairs)
        extra = ["--validation", str(write_validation(root / "validation.csv", built))] if number == 3 else []
        with redirect_stdout(io.StringIO()) as printed:
            assert main(["update", str(dataset), "--generalization", str(path), *extra]) == 0
        after.append({"rows": annotation_rows(dataset), "limits": generalization_limits(str(dataset)),
                      "printed": printed.getvalue()})
    assert {p.name: p.read_bytes() for p in (dataset / "data").glob("train-*")} == images
    assert check(str(dataset)) == []
    return {"dataset": dataset, "root": root, "after": after}


def test_a_second_update_keeps_the_first_study(three_updates, pairs):
    for number, expected in enumerate(RANKS[:2]):
        rows = three_updates["after"][number]["rows"]
        assert {letter: rows[pairs[i]]["generalizes_to_rank"] for i, letter in enumerate("ABCDE")} == expected
        bands = recorded_bands(STUDIES[:number + 1])
        for i, letter in enumerate("ABCDE"):
            assert {b["band"]: b["verdict"] for b in rows[pairs[i]]["generalization"]} == bands[letter]
            assert rank_by_hand(list(bands[letter].items())) == expected[letter]
    others = [r for k, r in three_updates["after"][1]["rows"].items() if k not in pairs]
    assert others and all(r["generalizes_to_rank"] is None for r in others)


def test_evaluate_generalized_only_uses_the_accumulated_rank(three_updates, pairs):
    for number, expected in enumerate(RANKS):
        limits = three_updates["after"][number]["limits"]
        assert {k: v for k, v in limits.items() if v is not None} == {pairs[i]: expected[letter]
                                                                      for i, letter in enumerate("ABCDE")}


def test_a_band_studied_again_is_replaced_and_said(three_updates, pairs):
    rows = three_updates["after"][2]["rows"]
    assert {letter: rows[pairs[i]]["generalizes_to_rank"] for i, letter in enumerate("ABCDE")} == RANKS[2]
    bands = recorded_bands(STUDIES)
    for i, letter in enumerate("ABCDE"):
        assert [b["band"] for b in rows[pairs[i]]["generalization"]] == sorted(
            bands[letter], key=lambda b: tuple(map(int, b.split("-"))))
    assert rows[pairs[0]]["generalization"][0]["same"] == 2  # A's 6-10: the third study's answers
    # A's and C's 6-10 again: A's verdict same -> not_same, C's unchanged; E's 8-12 overlaps but is a new band
    printed = three_updates["after"][2]["printed"]
    a = pairs[0]
    assert (f"band 6-10 studied again: the earlier answers of 2 pair(s) replaced; the verdict changed for 1, e.g. "
            f"class {a[0]} feature {a[1]}: same -> not_same") in printed
    assert "11-15 studied again" not in printed and "8-12 studied again" not in printed
    assert "studied again" not in three_updates["after"][1]["printed"]


def test_the_card_shows_every_band_of_every_study(three_updates):
    dataset, root = three_updates["dataset"], three_updates["root"]
    card = (dataset / "README.md").read_text()
    bands = recorded_bands(STUDIES)
    for band in ("6-6", "6-10", "7-10", "8-12", "11-15", "16-20"):  # the count by hand, per band
        verdicts = [v[band] for v in bands.values() if band in v]
        same = verdicts.count("same")
        line = f"| {band.replace('-', chr(92) + '-')} | {len(verdicts)} | {same} | {same / len(verdicts):.2f} |"
        assert line in card or line.replace("\\", "") in card
    for number in (1, 2, 3):
        digest = hashlib.sha256((root / f"study{number}.csv").read_bytes()).hexdigest()
        assert f"study{number}" in card and digest in card
    assert card.index("study1") < card.index("study2") < card.index("study3")
    assert "## Validation against human segmentations" in card


# --- ingest: answers by column name; --majority ------------------------------------------------------------

@pytest.fixture
def study(tmp_path) -> Path:
    """A generalization study of two (pair, band) rows, and five annotators' answers as the page exports them:
    the first row judged same by 3 of 5, the second by 4 of 5."""
    folder = tmp_path / "study"
    folder.mkdir()
    wnids = wordnet_ids()
    with open(folder / "pairs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Input.class_index", "Input.feature_index", "Input.band", "Input.wordnet_id"])
        writer.writerows([[0, 17, "6-10", wnids[0]], [1, 40, "6-10", wnids[1]]])
    return folder


SAME = {(0, 17): 3, (1, 40): 4}


def answers(worker: int) -> list[dict]:
    return [{"WorkerId": f"w{worker}", "Input.class_index": c, "Input.feature_index": j, "Input.band": "6-10",
             "Answer.main_question": "same" if worker < same else "different", "Answer.confidence": 4,
             "Answer.reasons": "looks alike"} for (c, j), same in SAME.items()]


def write_answers(path: Path, rows: list[dict], columns, encoding="utf-8", extra: dict | None = None) -> Path:
    with open(path, "w", newline="", encoding=encoding) as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows({**row, **(extra or {})} for row in rows)
    return path


def verdicts(path: Path) -> dict:
    with open(path, newline="") as f:
        return {(int(r["class_index"]), int(r["feature_index"])): (int(r["same"]), r["verdict"])
                for r in csv.DictReader(f)}


def test_generalization_answers_are_read_by_column_name(study, tmp_path, capsys):
    reordered = list(reversed(GENERALIZE_ANSWER_COLUMNS))
    files = [write_answers(study / "answers-0.csv", answers(0), reordered),  # columns in another order
             write_answers(study / "answers-1.csv", answers(1), [*GENERALIZE_ANSWER_COLUMNS, "Approve", "Notes"],
                           extra={"Approve": "x", "Notes": "fine"}),  # a platform's and a spreadsheet's columns
             write_answers(study / "answers-2.csv", answers(2), GENERALIZE_ANSWER_COLUMNS, encoding="utf-8-sig"),
             *[write_answers(study / f"answers-{w}.csv", answers(w), GENERALIZE_ANSWER_COLUMNS) for w in (3, 4)]]
    out = tmp_path / "generalization.csv"
    assert main(["ingest", *map(str, files), "--pairs", str(study), "--out", str(out)]) == 0
    # by hand: 3 and 4 of 5 answers same, both at least a majority of 3
    assert verdicts(out) == {(0, 17): (3, "same"), (1, 40): (4, "same")}
    assert f"{files[1]}: 2 other column(s) ignored: Approve, Notes" in capsys.readouterr().out


def test_a_missing_answer_column_is_one_line_naming_file_and_column(study, tmp_path, caplog):
    columns = [c for c in GENERALIZE_ANSWER_COLUMNS if c != "Answer.confidence"]
    rows = [{k: v for k, v in row.items() if k in columns} for row in answers(0)]
    files = [write_answers(study / "answers-0.csv", rows, columns),
             *[write_answers(study / f"answers-{w}.csv", answers(w), GENERALIZE_ANSWER_COLUMNS) for w in range(1, 5)]]
    out = tmp_path / "generalization.csv"
    assert main(["ingest", *map(str, files), "--pairs", str(study), "--out", str(out)]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors[0].startswith(f"{files[0]}: missing column(s) Answer.confidence")
    assert "\n" not in errors[0] and not out.exists()


def test_majority_decides_a_generalization_verdict(study, tmp_path, capsys, caplog):
    files = [write_answers(study / f"answers-{w}.csv", answers(w), GENERALIZE_ANSWER_COLUMNS) for w in range(5)]
    out = tmp_path / "generalization.csv"
    assert main(["ingest", *map(str, files), "--pairs", str(study), "--out", str(out), "--majority", "4"]) == 0
    # by hand: 3 of 5 same is under 4 -> not_same; 4 of 5 -> same
    assert verdicts(out) == {(0, 17): (3, "not_same"), (1, 40): (4, "same")}
    printed = capsys.readouterr().out
    assert "verdict same = at least 4 of 5 answers same" in printed
    assert "    6-10 |     2 |     1 | 0.50" in printed
    assert main(["ingest", *map(str, files), "--pairs", str(study), "--out", str(tmp_path / "g6.csv"),
                 "--majority", "6"]) == 2
    assert "--majority 6 is more than --answers-per-pair 5" in caplog.text
