"""The annotation CSV: the 3-of-5 rule on crafted answers, counted by hand, and clear errors on bad rows."""

import csv

import pytest

from salient_imagenet_builder.builder.demo import make_annotations
from salient_imagenet_builder.core.annotations import COLUMNS, AnnotationError, classify, load, parse

B, S, M = "background", "separate_object", "main_object"


@pytest.mark.parametrize("answers, expected", [
    ([M, M, M, M, M], ("core", None)),
    ([B, B, M, M, M], ("core", None)),  # 2 spurious answers: not a majority
    ([B, S, M, M, M], ("core", None)),
    ([B, B, B, M, M], ("spurious", "background")),
    ([S, S, S, B, M], ("spurious", "separate_object")),
    ([B, B, S, S, M], ("spurious", "mixed")),  # 4 spurious answers, neither sub-type reaches 3
    ([B, S, S, B, B], ("spurious", "background")),
    ([S, S, B, M, M], ("spurious", "mixed")),
])
def test_majority_rule(answers, expected):
    assert classify(answers) == expected


def test_parse_counts_match_hand_count(tmp_path):
    fixed = {(0, 1): [B, B, B, M, M], (0, 2): [S, S, B, M, M], (1, 1): [M] * 5}
    path = make_annotations(tmp_path / "a.csv", classes=[0, 1, 2], answers=fixed, seed=4)
    annotations = parse(path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(annotations.pairs) == 15 and annotations.stats()["answers"] == len(rows) == 75
    for (c, j), pair in annotations.pairs.items():
        answers = [r["Answer.main"] for r in rows
                   if int(r["Input.class_index"]) == c and int(r["Input.feature_index"]) == j]
        spurious = sum(a != M for a in answers)
        assert pair.kind == ("spurious" if spurious >= 3 else "core")
        assert pair.votes[B] == answers.count(B)
        assert pair.answers[0].reason.startswith('it shows the "')  # quoted text with commas survives
    by_rank = {(p.class_index, p.feature_rank): p for p in annotations.pairs.values()}
    assert (by_rank[(0, 1)].kind, by_rank[(0, 1)].spurious_type) == ("spurious", "background")
    assert by_rank[(0, 2)].spurious_type == "mixed"
    assert by_rank[(1, 1)].kind == "core"
    stats = annotations.stats()
    assert stats["core"] + stats["spurious"] == 15
    assert stats["spurious"] == sum(stats[f"spurious_{t}"] for t in (B, S, "mixed"))


def _write(path, rows, header=COLUMNS):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _pair(class_index=0, wnid="n01440764", feature=7, rank=1, answers=(M,) * 5):
    return [[i, wnid, class_index, feature, rank, a, "4.0", "why, because"] for i, a in enumerate(answers)]


@pytest.mark.parametrize("rows, header, message", [
    (_pair(), COLUMNS[:-1], "missing column\\(s\\) Answer.reasons"),
    (_pair(answers=(M, M, "maybe", M, M)), COLUMNS, "row 4: Answer.main 'maybe'"),
    (_pair(class_index=1000), COLUMNS, "row 2: Input.class_index '1000'"),
    (_pair(feature=2048), COLUMNS, "row 2: Input.feature_index '2048'"),
    (_pair(rank=6), COLUMNS, "row 2: Input.feature_rank '6'"),
    (_pair(wnid="n99999999"), COLUMNS, "row 2: Input.wordnet_id n99999999 is not class 0"),
    (_pair() + _pair(feature=9, rank=2, answers=(M,) * 4) + _pair(feature=11, rank=3), COLUMNS,
     "class 0 feature 9 has 4 answers, the other pairs 5: every pair needs the same number of answers"),
    (_pair() + _pair(feature=7, rank=2)[:1], COLUMNS, "row 7: feature 7 of class 0 has rank 2"),
])
def test_bad_rows_name_the_problem(tmp_path, rows, header, message):
    path = _write(tmp_path / "bad.csv", rows, header)
    with pytest.raises(AnnotationError, match=message):
        parse(path)


def test_a_study_with_three_answers_per_pair_is_labelled_by_two_of_three(tmp_path):
    """The paper's 3 of 5 is a majority; a study with 3 annotators per pair gets 2 of 3, counted here by hand."""
    plans = {7: (B, S, M), 9: (B, B, M), 11: (M, M, S), 13: (S, S, S)}
    rows = [row for rank, (feature, answers) in enumerate(plans.items(), 1)
            for row in _pair(feature=feature, rank=min(rank, 5), answers=answers)]
    annotations = parse(_write(tmp_path / "three.csv", rows))
    assert (annotations.answers_per_pair, annotations.majority) == (3, 2)
    labels = {f: (p.kind, p.spurious_type) for (_, f), p in annotations.pairs.items()}
    assert labels == {7: ("spurious", "mixed"), 9: ("spurious", "background"), 11: ("core", None),
                      13: ("spurious", "separate_object")}


def test_confidence_out_of_range(tmp_path):
    rows = _pair()
    rows[2][6] = "9.0"
    with pytest.raises(AnnotationError, match="row 4: Answer.confidence '9.0'"):
        parse(_write(tmp_path / "bad.csv", rows))


def test_load_checks_pin_and_published_statistics(tmp_path):
    path = make_annotations(tmp_path / "a.csv", classes=[0, 1])
    with pytest.raises(AnnotationError, match="does not match the pinned"):
        load(str(path), tmp_path, sha256="0" * 64)
    with pytest.raises(AnnotationError, match="not the published annotation file"):
        load(str(path), tmp_path, expect_published=True)
    with pytest.raises(AnnotationError, match="missing.csv: no such file"):
        load(str(tmp_path / "missing.csv"), tmp_path)
    assert len(load(str(path), tmp_path).pairs) == 10


def test_excel_byte_order_mark_is_accepted(tmp_path):
    plain = make_annotations(tmp_path / "plain.csv", classes=[0, 1], seed=5)
    excel = tmp_path / "excel.csv"
    excel.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())  # what Excel's "CSV UTF-8" export writes
    assert parse(excel).pairs == parse(plain).pairs


@pytest.mark.parametrize("column, value", [("Input.class_index", "inf"), ("Input.feature_index", "nan"),
                                           ("Input.feature_rank", "-inf"), ("Answer.confidence", "nan"),
                                           ("Input.class_index", "zero")])
def test_inf_nan_and_words_name_file_row_and_column(tmp_path, column, value):
    rows = _pair()
    rows[1][COLUMNS.index(column)] = value
    path = _write(tmp_path / "bad.csv", rows)
    with pytest.raises(AnnotationError) as caught:
        parse(path)
    assert str(caught.value).startswith(f"{path}, row 3: {column} {value!r} is not a")


def test_short_rows_and_other_encodings_are_one_line(tmp_path):
    rows = _pair()
    rows[3] = rows[3][:5]
    with pytest.raises(AnnotationError, match="bad.csv, row 5: 5 fields, the header has 8"):
        parse(_write(tmp_path / "bad.csv", rows))
    latin = tmp_path / "latin.csv"
    latin.write_bytes(make_annotations(tmp_path / "a.csv", classes=[0]).read_bytes().replace(b"clearly", b"d\xe9j\xe0"))
    with pytest.raises(AnnotationError, match="latin.csv: not UTF-8 text .* save it as CSV UTF-8"):
        parse(latin)


def test_spreadsheet_leftovers(tmp_path):
    plain = make_annotations(tmp_path / "plain.csv", classes=[0], seed=6)
    trailing = tmp_path / "trailing.csv"
    trailing.write_text(plain.read_text() + ",,,,,,,\n\n")  # the blank rows a spreadsheet leaves at the end
    assert parse(trailing).pairs == parse(plain).pairs
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(AnnotationError, match="empty.csv: empty file, expected a CSV with the header WorkerId,"):
        parse(tmp_path / "empty.csv")
    semicolons = tmp_path / "semicolons.csv"
    semicolons.write_text(plain.read_text().replace(",", ";"))
    with pytest.raises(AnnotationError, match="seems to use ';' or tabs between columns"):
        parse(semicolons)
