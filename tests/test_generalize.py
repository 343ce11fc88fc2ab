"""The generalization study end to end: a build -> `generalize` (panels, pairs.csv, the page in its generalize
mode) -> three annotators answer in Chromium (keys and mouse, a reload) -> export -> `ingest` -> `update` ->
`load_dataset(..., "annotations")` has the generalizes_to_rank counted by hand -> `evaluate --generalized-only`
uses only those masks. Also: the panels' images and ranks against the build's rows, a masks-only build with
`--imagenet`, and bad `--bands`."""

import csv
import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from browser import Page, browser  # noqa: F401 (the module's browser fixture)
from conftest import CLASSES, build_top7, built_once
from datasets import load_dataset
from hub_server import HubServer
from PIL import Image

from salient_imagenet_builder.cli import main
from salient_imagenet_builder.generalize.study_format import ANSWER_COLUMNS as GENERALIZE_ANSWER_COLUMNS
from salient_imagenet_builder.generalize.study_format import CHOICES as GENERALIZE_CHOICES

BANDS = ("6-6", "7-7")
ANNOTATORS = ("g1", "g2", "g3")
KEYS = {"same": "s", "different": "d", "A_unclear": "a", "B_unclear": "b"}


@pytest.fixture(scope="module")
def built(inputs, tmp_path_factory):
    return built_once(tmp_path_factory, "top7", lambda root: build_top7(inputs, root))


def ranked_by_hand(dataset) -> dict:
    """(class, feature) -> image ids by rank (1-based), from the build's rows as load_dataset gives them."""
    found = {}
    for row in load_dataset(str(dataset), split="train"):
        for f in row["features"]:
            found.setdefault((row["group"], f["feature_index"]), {})[f["rank"]] = row["image_id"]
    return found


def studied_class(dataset) -> int:
    """The fixture class with the most pairs that rank 7 images (the bands' last rank)."""
    ranked = ranked_by_hand(dataset)
    full = [c for (c, _), ranks in ranked.items() if set(range(1, 8)) <= set(ranks)]
    return max(CLASSES, key=full.count)


@pytest.fixture(scope="module")
def study(built, tmp_path_factory):
    folder = tmp_path_factory.mktemp("generalize") / "study"
    class_index = studied_class(built)
    assert main(["generalize", str(built), "--bands", ",".join(BANDS), "--classes", str(class_index), "--out",
                 str(folder)]) == 0
    return folder, class_index


def read_pairs(folder) -> list[dict]:
    with open(folder / "pairs.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_the_study_shows_each_pairs_top_5_above_its_band(built, study):
    folder, class_index = study
    ranked = ranked_by_hand(built)
    pairs = load_dataset(str(built), "annotations", split="train")
    expected = [(class_index, r["feature_index"], band)
                for r in sorted(pairs, key=lambda r: r["feature_rank"]) if r["class_index"] == class_index
                for band in BANDS if int(band.split("-")[1]) in ranked.get((class_index, r["feature_index"]), {})]
    rows = read_pairs(folder)
    assert list(rows[0])[:4] == ["Input.class_index", "Input.feature_index", "Input.band", "Input.wordnet_id"]
    assert [(int(r["Input.class_index"]), int(r["Input.feature_index"]), r["Input.band"]) for r in rows] == expected
    assert len(rows) >= 4
    for row in rows:
        ranks = ranked[(int(row["Input.class_index"]), int(row["Input.feature_index"]))]
        assert row["Input.images_a"].split() == [ranks[r] for r in range(1, 6)]
        first, last = map(int, row["Input.band"].split("-"))
        assert row["Input.images_b"].split() == [ranks[r] for r in range(first, last + 1)]
        panel = Image.open(folder / row["Input.panel"])
        assert panel.format == "PNG" and panel.width > 5 * 160 and panel.height > 4 * 160
    info = json.loads((folder / "generalize_info.json").read_text())
    assert info["tasks"] == len(rows) and info["bands"] == list(BANDS) and info["imagenet_bytes"] == 0
    page = (folder / "index.html").read_text()
    assert '"mode": "generalize"' in page and 'id="answer-same"' in page


def test_a_masks_only_build_takes_its_images_from_imagenet(inputs, built, study, tmp_path, caplog):
    """Panels of an --image-mode none build with --imagenet are pixel for pixel those of the crop build: the
    views come from the user's ImageNet through the build's own 224 view."""
    folder, class_index = study
    none = build_top7(inputs, tmp_path, name="masks_only", image_mode="none", classes=[class_index])
    out = tmp_path / "study"
    args = ["generalize", str(none), "--bands", ",".join(BANDS), "--out", str(out)]
    assert main(args) == 2
    assert f"{none}: a masks-only build (--image-mode none); give --imagenet DIR_OR_ID" in caplog.text
    assert main([*args, "--imagenet", str(inputs["folder"])]) == 0
    rows = read_pairs(out)
    assert rows == read_pairs(folder)
    for row in rows:
        got, want = (np.asarray(Image.open(f / row["Input.panel"])) for f in (out, folder))
        assert np.array_equal(got, want), row["Input.panel"]
    info = json.loads((out / "generalize_info.json").read_text())
    shown = {i for r in rows for i in (r["Input.images_a"] + " " + r["Input.images_b"]).split()}
    sizes = sum(next((inputs["folder"] / "train").glob(f"*/{i}.*")).stat().st_size for i in shown)
    assert info["imagenet_bytes"] == sizes and info["images_missing_count"] == 0  # the shown images, once each


def test_a_study_of_a_hub_dataset_equals_the_local_one(built, study, tmp_path):
    """`generalize user/top7` against the local Hub server (a real client in a subprocess): the same pairs.csv and
    panels as from the folder, and only the studied class's row groups of the image shard downloaded."""
    folder, class_index = study
    files = {str(p.relative_to(built)): p.read_bytes() for p in built.rglob("*") if p.is_file()}
    out = tmp_path / "study"
    with HubServer(token="hf_generalize_token", user="user") as hub:
        hub.seed("user/top7", files)
        result = subprocess.run([sys.executable, "-m", "salient_imagenet_builder.cli", "generalize", "user/top7",
                                 "--bands", ",".join(BANDS), "--classes", str(class_index), "--out", str(out)],
                                env=hub.client_env(tmp_path / "hf"), capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        sent = sum(r.sent for r in hub.requests if r.method == "GET" and "/data/train-" in r.path)
    assert read_pairs(out) == read_pairs(folder)
    for row in read_pairs(out):
        got, want = (np.asarray(Image.open(f / row["Input.panel"])) for f in (out, folder))
        assert np.array_equal(got, want), row["Input.panel"]
    shards = sum(p.stat().st_size for p in (built / "data").glob("train-*.parquet"))
    assert 0 < sent < shards  # by byte range: the class's row groups, not whole shards


@pytest.mark.parametrize("bands, message", [
    ("6-8", ("--bands 6-8: beyond the top-k of {dataset} (7): each pair has masks for its top 7 images only; bands "
             "within 6-7")),
    ("4-6", ("--bands: 4-6 overlaps Section A (ranks 1-5, the top images annotators labelled); bands start at rank 6 "
             "or later")),
    ("6to7", "--bands 6to7: band '6to7' is not FIRST-LAST (e.g. 61-65)"),
])
def test_bad_bands_are_one_line_and_write_nothing(built, tmp_path, caplog, capsys, bands, message):
    out = tmp_path / "study"
    assert main(["generalize", str(built), "--bands", bands, "--out", str(out)]) == 2
    assert message.format(dataset=built) in caplog.text and "Traceback" not in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".*"))


# --- in a browser ---------------------------------------------------------------------------------------------

def plan(tasks: int) -> list[list[str]]:
    """Each task's answers of g1, g2, g3: `same` by 3, 2, 1 or 0 of them in turn, then the other choices."""
    others = [c for c in GENERALIZE_CHOICES if c != "same"]
    return [["same"] * (3 - i % 4) + others[:i % 4] for i in range(tasks)]


def generalizes_to_rank(band_verdicts: list[bool]) -> int:
    """By the definition: the last rank of the highest band that, with every lower band, is judged same; 5 when
    the first fails."""
    rank = 5
    for band, same in zip(BANDS, band_verdicts):
        if not same:
            break
        rank = int(band.split("-")[1])
    return rank


def test_answer_in_chromium_ingest_update_and_evaluate(browser, study, built, tmp_path, capsys):  # noqa: F811
    folder, _ = study
    tasks = read_pairs(folder)
    answers = plan(len(tasks))
    assert all(len(a) == 3 for a in answers)
    page = Page(browser)
    browser.get((folder / "index.html").as_uri())
    exports = {}
    for worker, name in enumerate(ANNOTATORS):
        page.set_annotator(name)
        for _ in range(len(tasks)):  # to the first task
            page.press("p")
        for i, task in enumerate(tasks):
            if worker == 0 and i == 2:  # a reload half way: answers, reasons, position and id persist
                page.wait_for_text("progress", f"2 / {len(tasks)} answered")
                browser.refresh()
                assert page.restored_value("annotator") == name
                assert page.text("position") == f"Pair 3 of {len(tasks)}"
                page.press("p")
                assert page.checked("main") == answers[1][0] and page.find("reason").get_attribute("value") == "r1"
                page.press("n")
            assert f"ranks {task['Input.band']}" in page.text("pair-title")
            if worker == 1:
                page.answer_with_mouse(answers[i][worker], 1 + i % 5, f"r{i}")
            else:
                page.answer_with_keys(KEYS[answers[i][worker]], 1 + i % 5, f"r{i}")
        page.wait_for_text("progress", f"{len(tasks)} / {len(tasks)} answered")
        assert page.text("progress") == f"{len(tasks)} / {len(tasks)} answered"
        exports[name] = page.export()
        if worker == 0:
            browser.save_screenshot(str(tmp_path / "generalize_page.png"))
    header = exports["g1"].splitlines()[0]
    assert header == ",".join(GENERALIZE_ANSWER_COLUMNS)  # exactly the study's header
    rows = list(csv.DictReader(io.StringIO(exports["g1"])))
    assert [(r["Input.class_index"], r["Input.feature_index"], r["Input.band"]) for r in rows] == [
        (t["Input.class_index"], t["Input.feature_index"], t["Input.band"]) for t in tasks]
    assert [r["Answer.main_question"] for r in rows] == [a[0] for a in answers]
    assert [r["Answer.reasons"] for r in rows] == [f"r{i}" for i in range(len(tasks))]

    files = []
    for name, text in exports.items():
        files.append(tmp_path / f"answers-{name}.csv")
        files[-1].write_text(text, encoding="utf-8")
    generalization = tmp_path / "generalization.csv"
    assert main(["ingest", *map(str, files), "--pairs", str(folder / "pairs.csv"), "--answers-per-pair", "3",
                 "--out", str(generalization)]) == 0
    with open(generalization, newline="") as f:
        counted = {(r["class_index"], r["feature_index"], r["band"]): r for r in csv.DictReader(f)}
    assert len(counted) == len(tasks)
    verdicts = {}
    for task, votes in zip(tasks, answers):
        same = votes.count("same")
        row = counted[(task["Input.class_index"], task["Input.feature_index"], task["Input.band"])]
        assert (int(row["answers"]), int(row["same"]), row["verdict"]) == (3, same, "same" if same >= 2 else "not_same")
        key = (int(task["Input.class_index"]), int(task["Input.feature_index"]))
        verdicts.setdefault(key, []).append(same >= 2)
    expected = {key: generalizes_to_rank(v) for key, v in verdicts.items()}
    assert len(set(expected.values())) > 1  # the plan gives pairs different ranks

    dataset = tmp_path / "salient"
    shutil.copytree(built, dataset)
    assert main(["update", str(dataset), "--generalization", str(generalization)]) == 0
    recorded = {(r["class_index"], r["feature_index"]): r["generalizes_to_rank"]
                for r in load_dataset(str(dataset), "annotations", split="train")}
    assert {k: v for k, v in recorded.items() if v is not None} == expected

    from salient_imagenet_builder.builder.demo import make_checkpoint

    checkpoint = make_checkpoint(tmp_path / "resnet10t.ckpt", arch="resnet10t", classes=CLASSES)
    assert main(["evaluate", "--model", "resnet10t", "--checkpoint", str(checkpoint), "--draws", "1", "--workers",
                 "0", "--generalized-only", "--dataset", str(dataset), "--out", str(tmp_path / "results")]) == 0
    summary = json.loads((tmp_path / "results" / "resnet10t-resnet10t" / "summary.json").read_text())
    counts = summary["dataset"]["generalized_only"]
    used = sum(1 for row in load_dataset(str(dataset), split="train") for f in row["features"]
               if f["rank"] <= expected.get((row["group"], f["feature_index"]), 0))
    assert counts["feature_masks_used"] == used and counts["pairs"] - counts["pairs_not_studied"] == len(expected)


def test_overwrite_keeps_the_answers_and_notes_saved_in_the_study(study, built, tmp_path, caplog):
    """The README's workflow keeps the annotators' exports in the study folder: `generalize --overwrite` refuses in
    one line naming every file it did not write, and deletes nothing."""
    folder, class_index = study
    copy = tmp_path / "study"
    shutil.copytree(folder, copy)
    saved = {"answers-g1.csv": "WorkerId\n", "answers-g2.csv": "WorkerId\n", "notes/todo.txt": "ask g3\n"}
    for name, text in saved.items():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_text(text)
    before = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*"))
    assert main(["generalize", str(built), "--bands", ",".join(BANDS), "--classes", str(class_index), "--out",
                 str(copy), "--overwrite"]) == 2
    line = next(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert line.startswith(f"--out {copy}: --overwrite would delete 3 file(s) this tool did not write there (")
    assert all(name in line for name in saved)
    assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*")) == before
    assert all((copy / name).read_text() == text for name, text in saved.items())
