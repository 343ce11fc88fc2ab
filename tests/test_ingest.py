"""Ingest: validation messages naming file and row, the quorum, the majority rule, agreement statistics and
Fleiss' kappa against a published worked example, and the written CSV read back by the build's parser."""

import csv
from pathlib import Path

import pytest

from salient_imagenet_builder.cli import main
from salient_imagenet_builder.core.annotations import COLUMNS, classify, parse
from salient_imagenet_builder.core.studies import fleiss_kappa

M, S, B = "main_object", "separate_object", "background"


@pytest.fixture
def pairs_csv(tmp_path) -> Path:
    """A pairs.csv of two pairs, as discover writes it."""
    path = tmp_path / "study" / "pairs.csv"
    path.parent.mkdir()
    path.write_text("Input.wordnet_id,Input.class_index,Input.feature_index,Input.feature_rank,Input.class_name,"
                    "Input.panel\n"
                    "n01440764,0,17,1,tench,panels/class000_feature0017.png\n"
                    "n01443537,1,40,1,goldfish,panels/class001_feature0040.png\n")
    return path


def write_answers(path: Path, rows: list[list]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return path


def answer(worker, class_index, main_answer, confidence="4.0", reason="r, with a comma"):
    pair = {0: ("n01440764", 17), 1: ("n01443537", 40)}[class_index]
    return [worker, pair[0], class_index, pair[1], 1, main_answer, confidence, reason]


def five_files(tmp_path, plan: dict[int, list[str]]) -> list[Path]:
    """One file per annotator; plan[c] = the five answers to class c's pair."""
    return [write_answers(tmp_path / f"answers-{w}.csv", [answer(f"w{w}", c, plan[c][w]) for c in plan])
            for w in range(5)]


def test_fleiss_kappa_matches_the_worked_example():
    # Fleiss (1971) as worked on Wikipedia's "Fleiss' kappa" page: 10 subjects, 14 raters, 5 categories -> 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert round(fleiss_kappa(table), 3) == 0.210
    assert fleiss_kappa([[5, 0, 0], [0, 5, 0]]) == 1.0  # perfect agreement
    with pytest.raises(ValueError):
        fleiss_kappa([[5, 0, 0], [3, 0, 0]])


def test_ingest_writes_what_the_build_reads(tmp_path, pairs_csv, capsys):
    plan = {0: [B, B, S, M, M], 1: [M, M, M, S, B]}
    files = five_files(tmp_path, plan)
    out = tmp_path / "annotations.csv"
    assert main(["ingest", *map(str, files), "--pairs", str(pairs_csv), "--out", str(out)]) == 0
    parsed = parse(out, num_features=2048)  # the build's own reader
    assert parsed.pairs[(0, 17)].kind == "spurious" and parsed.pairs[(0, 17)].spurious_type == "mixed"
    assert parsed.pairs[(1, 40)].kind == "core"
    assert sorted(a.reason for a in parsed.pairs[(0, 17)].answers) == ["r, with a comma"] * 5
    printed = capsys.readouterr().out
    # kappa by hand: P_i = (4+1+4 - 5)/20 = 0.2 and (9+1+1 - 5)/20 = 0.3; p = (5/10, 2/10, 3/10) -> P_e = 0.38
    assert f"{(0.25 - 0.38) / (1 - 0.38):.3f}" in printed
    assert "w0" in printed and "2 pairs: 1 core, 1 spurious" in printed
    # a different quorum changes the label: 2 of 5 spurious answers make class 1's pair spurious
    out2 = tmp_path / "annotations2.csv"
    assert main(["ingest", *map(str, files), "--pairs", str(pairs_csv), "--out", str(out2), "--majority", "2"]) == 0
    assert "2 pairs: 0 core, 2 spurious" in capsys.readouterr().out
    assert classify(plan[1], 2) == ("spurious", "mixed")


def test_pairs_csv_defaults_to_the_answers_folder(tmp_path, pairs_csv):
    files = five_files(pairs_csv.parent, {0: [M] * 5, 1: [B] * 5})
    assert main(["ingest", *map(str, files), "--out", str(tmp_path / "a.csv")]) == 0


def test_every_problem_is_named_with_file_and_row(tmp_path, pairs_csv, caplog):
    plan = {0: [B, B, S, M, M], 1: [M, M, M, S, B]}
    files = five_files(tmp_path, plan)
    bad = write_answers(tmp_path / "answers-bad.csv", [
        answer("w0", 0, B),  # row 2: w0 already answered this pair in answers-0.csv
        ["w9", "n01440764", 0, 999, 1, M, "3.0", ""],  # row 3: unknown pair
        answer("w9", 1, "maybe"),  # row 4: bad answer
        answer("w8", 1, M, confidence="7"),  # row 5: confidence out of range
    ])
    short = write_answers(tmp_path / "answers-short.csv", [])
    files[4].write_text(files[4].read_text().splitlines()[0] + "\n")  # annotator 4 answered nothing
    out = tmp_path / "annotations.csv"
    code = main(["ingest", *map(str, files), str(bad), str(short), "--pairs", str(pairs_csv), "--out", str(out)])
    assert code == 2  # and no exception escaped: no traceback
    err = caplog.text
    assert not out.exists()
    assert f"{bad}, row 2: annotator 'w0' already answered class 0 feature 17 ({files[0]}, row 2)" in err
    assert f"{bad}, row 3: unknown pair: class 0 feature 999" in err
    assert f"{bad}, row 4: bad answer 'maybe'" in err
    assert f"{bad}, row 5: confidence '7' out of range" in err
    assert "class 0 feature 17: 4 answer(s), fewer than the quorum of 5" in err
    assert "class 1 feature 40: 4 answer(s), fewer than the quorum of 5" in err
    assert "6 problem(s) in the answers (listed above)" in err


def test_missing_columns_and_existing_out_are_refused(tmp_path, pairs_csv, caplog):
    odd = tmp_path / "odd.csv"
    odd.write_text("worker,answer\nw1,main_object\n")
    out = tmp_path / "annotations.csv"
    assert main(["ingest", str(odd), "--pairs", str(pairs_csv), "--out", str(out)]) == 2
    assert f"{odd}: missing column(s) WorkerId" in caplog.text
    out.write_text("keep me")
    assert main(["ingest", str(odd), "--pairs", str(pairs_csv), "--out", str(out)]) == 2
    assert "already exists; pass --overwrite" in caplog.text and out.read_text() == "keep me"


def test_unreadable_inputs_are_named_before_any_row(tmp_path, pairs_csv, caplog):
    """A pattern the shell left as it was, a folder, a non-UTF-8 file: each named, not 2 pairs x 0 answers."""
    files = five_files(tmp_path, {0: [M] * 5, 1: [M] * 5})
    latin1 = ",".join(COLUMNS).encode() + b"\nw\xe9,n01440764,0,17,1,main_object,4,\n"
    (tmp_path / "latin1.csv").write_bytes(latin1)
    offset = latin1.index(b"\xe9")
    (tmp_path / "a_folder").mkdir()
    odd = [tmp_path / "nomatch-*.csv", tmp_path / "a_folder", tmp_path / "latin1.csv"]
    out = tmp_path / "annotations.csv"
    assert main(["ingest", *map(str, files + odd), "--pairs", str(pairs_csv), "--out", str(out)]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [f"{odd[0]}: no such file (no file matched the pattern)",
                      f"{odd[1]}: is a folder, not a CSV file",
                      f"{odd[2]}: not UTF-8 text (byte b'\\xe9' at offset {offset}); save it as CSV UTF-8",
                      f"3 problem(s) in the answers (listed above); {out} not written"]
    assert not out.exists()


def test_out_is_never_an_input_a_folder_or_a_foreign_file(tmp_path, pairs_csv, caplog):
    files = five_files(tmp_path, {0: [M] * 5, 1: [B] * 5})
    kept = {p: p.read_bytes() for p in [*files, pairs_csv]}
    weights = tmp_path / "model.ckpt"
    weights.write_bytes(b"PK\x03\x04 weights")
    for out, message in ((files[0], "is one of the input files; choose another --out"),
                         (pairs_csv, "is one of the input files"),
                         (tmp_path, "is a folder; give the CSV file to write"),
                         (weights, "exists and is not an annotation CSV (its first line is not the published header)")):
        caplog.clear()
        assert main(["ingest", *map(str, files), "--pairs", str(pairs_csv), "--out", str(out), "--overwrite"]) == 2
        assert f"--out {out}: {message}" in caplog.text
    assert {p: p.read_bytes() for p in kept} == kept and weights.read_bytes() == b"PK\x03\x04 weights"
    out = tmp_path / "annotations.csv"  # the study folder works as --pairs; an earlier output is replaced
    assert main(["ingest", *map(str, files), "--pairs", str(pairs_csv.parent), "--out", str(out)]) == 0
    first = out.read_bytes()
    assert main(["ingest", *map(str, files[::-1]), "--pairs", str(pairs_csv.parent), "--out", str(out),
                 "--overwrite"]) == 0
    assert out.read_bytes() == first  # rows sorted by pair and annotator, not by file order


def test_three_annotators_are_labelled_by_two_of_three_as_the_build_reads_them(tmp_path, pairs_csv, caplog):
    plan = {0: [B, S, M], 1: [M, M, B]}
    files = [write_answers(tmp_path / f"answers-{w}.csv", [answer(f"w{w}", c, plan[c][w]) for c in plan])
             for w in range(3)]
    out = tmp_path / "annotations.csv"
    assert main(["ingest", *map(str, files), "--pairs", str(pairs_csv), "--out", str(out),
                 "--answers-per-pair", "3"]) == 0
    assert "will label some pairs differently" not in caplog.text
    parsed = parse(out)
    assert (parsed.answers_per_pair, parsed.majority) == (3, 2)
    assert {c: p.kind for (c, _), p in parsed.pairs.items()} == {0: "spurious", 1: "core"}


def test_other_columns_are_ignored_and_counted(tmp_path, pairs_csv, capsys):
    """A crowdsourcing platform's results: the published columns in another order, among columns ingest does not
    read; the labels are those of the plain files."""
    plan = {0: [B, B, S, M, M], 1: [M, M, M, S, B]}
    files = five_files(tmp_path, plan)
    with open(files[0], newline="") as f:
        rows = list(csv.DictReader(f))
    with open(files[0], "w", newline="", encoding="utf-8-sig") as f:
        writer = csv.DictWriter(f, ["HITId", *reversed(COLUMNS), "Approve"])
        writer.writeheader()
        writer.writerows({**row, "HITId": "h1", "Approve": "x"} for row in rows)
    out = tmp_path / "annotations.csv"
    assert main(["ingest", *map(str, files), "--pairs", str(pairs_csv), "--out", str(out)]) == 0
    assert f"{files[0]}: 2 other column(s) ignored: HITId, Approve" in capsys.readouterr().out
    parsed = parse(out)
    assert {c: p.kind for (c, _), p in parsed.pairs.items()} == {0: "spurious", 1: "core"}
