"""The whole study in a real browser: discover -> five annotators answer on the page (keyboard and mouse, a reload
in the middle) -> export -> ingest -> build -> show. Chromium and chromedriver from Debian, driven by Selenium.
Outside CI a missing browser skips these tests; in CI (CI=true) it fails them."""

import csv
import io

from browser import Page, browser  # noqa: F401 (the module's browser fixture)
from conftest import ARCH
from PIL import Image

from salient_imagenet_builder.builder import BuildConfig, build
from salient_imagenet_builder.cli import main
from salient_imagenet_builder.core.annotations import COLUMNS, parse
from salient_imagenet_builder.core.constants import GALLERY_FILE

# The answers of five annotators to the study's six pairs (in page order), and the label each pair must get.
M, S, B = "main_object", "separate_object", "background"
PLAN = [
    ([B, B, B, B, B], ("spurious", "background")),
    ([M, M, M, M, M], ("core", None)),
    ([S, S, S, M, M], ("spurious", "separate_object")),
    ([B, B, S, M, M], ("spurious", "mixed")),
    ([B, B, M, M, M], ("core", None)),
    ([M, S, M, B, M], ("core", None)),
]
KEYS = {M: "m", S: "o", B: "b"}
REASON = 'the "red" part, behind it'  # a quote and a comma: the export must quote it


def read_csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_annotate_ingest_build_show(browser, study, inputs, tmp_path):  # noqa: F811 (the imported fixture)
    pairs = list(csv.DictReader(open(study / "pairs.csv", newline="")))
    assert len(pairs) == len(PLAN)
    page = Page(browser)
    browser.get((study / "index.html").as_uri())
    assert "annotator id" in page.text("message")
    exports = {}
    for worker in range(5):
        name = f"ann{worker + 1}"
        page.set_annotator(name)
        assert page.text("progress") == f"0 / {len(PLAN)} answered"
        if worker:  # a new annotator starts at the first pair
            for _ in range(len(PLAN)):
                page.press("p")
        for i, (answers, _) in enumerate(PLAN):
            if worker == 0 and i == 3:  # half way: reload; answers, position and id persist
                page.wait_for_text("progress", f"3 / {len(PLAN)} answered")  # the keys pressed so far are taken
                browser.refresh()
                assert page.restored_value("annotator") == name
                assert page.text("progress") == f"3 / {len(PLAN)} answered"
                assert page.text("position") == f"Pair 4 of {len(PLAN)}"
                page.press("p")
                assert (page.checked("main"), page.checked("confidence")) == (PLAN[2][0][0], "3")
                assert page.find("reason").get_attribute("value") == REASON
                page.press("n")
            reason = REASON if worker == 0 else None
            if worker == 0 and i >= 3:
                page.answer_with_mouse(answers[worker], 1 + (i + worker) % 5, reason)
            else:
                page.answer_with_keys(KEYS[answers[worker]], 1 + (i + worker) % 5, reason)
        assert page.text("progress") == f"{len(PLAN)} / {len(PLAN)} answered"
        exports[name] = page.export()
        if worker == 0:
            screenshot = tmp_path / "annotation_page.png"
            browser.save_screenshot(str(screenshot))
            assert Image.open(screenshot).size[0] >= 1000
    first = exports["ann1"]
    assert first.splitlines()[0] == ",".join(COLUMNS)  # exactly the published header
    rows = read_csv(first)
    assert [(r["Input.class_index"], r["Input.feature_index"], r["Input.feature_rank"], r["Input.wordnet_id"])
            for r in rows] == [(p["Input.class_index"], p["Input.feature_index"], p["Input.feature_rank"],
                                p["Input.wordnet_id"]) for p in pairs]
    assert [r["Answer.main"] for r in rows] == [answers[0] for answers, _ in PLAN]
    assert [r["Answer.confidence"] for r in rows] == [f"{1 + i % 5}.0" for i in range(len(PLAN))]
    assert {r["Answer.reasons"] for r in rows} == {REASON} and {r["WorkerId"] for r in rows} == {"ann1"}

    files = []
    for name, text in exports.items():
        files.append(tmp_path / f"answers-{name}.csv")
        files[-1].write_text(text, encoding="utf-8")
    annotations = tmp_path / "annotations.csv"
    assert main(["ingest", *map(str, files), "--pairs", str(study / "pairs.csv"), "--out", str(annotations)]) == 0
    parsed = parse(annotations, num_features=512)
    for pair, (_, label) in zip(pairs, PLAN):
        got = parsed.pairs[(int(pair["Input.class_index"]), int(pair["Input.feature_index"]))]
        assert (got.kind, got.spurious_type) == label

    out = tmp_path / "dataset"
    stats = build(BuildConfig(source=str(inputs["folder"]), out=str(out), model=ARCH,
                              model_checkpoint=str(inputs["checkpoint"]), annotations=str(annotations), workers=0,
                              batch_size=8, top_k=3, group_by="label", cache_dir=str(tmp_path / "cache")))
    assert stats.top5_agreement["agree"] == len(PLAN)  # the build ranks the discovered features the same way
    assert stats.annotation_stats["spurious"] == sum(label[0] == "spurious" for _, label in PLAN)
    card = (out / "README.md").read_text()
    body = card.split("\n---\n", 1)[1]
    assert body.index(f"]({GALLERY_FILE})") < body.index("ImageNet images with")  # at the top of the card
    gallery = Image.open(out / GALLERY_FILE)
    assert gallery.format == "PNG" and gallery.height > 200

    spurious = next(p for p, (_, label) in zip(pairs, PLAN) if label[0] == "spurious")
    panel, summary = tmp_path / "panel.png", tmp_path / "summary.png"
    assert main(["show", str(out), "--class", spurious["Input.class_index"], "--feature",
                 spurious["Input.feature_index"], "--out", str(panel)]) == 0
    assert main(["show", str(out), "--class", spurious["Input.class_index"], "--out", str(summary)]) == 0
    assert Image.open(panel).format == "PNG" and Image.open(summary).height > Image.open(panel).height / 2


TRICKY_TITLE = 'Study "__TITLE__" of __STUDY_JSON__ & /*SCRIPT*/ <b>'


def test_a_title_or_task_that_reads_like_a_placeholder_keeps_the_page_whole(study, browser, tmp_path):  # noqa: F811
    """A --title holding a template placeholder and a quote once broke the page's JSON (no task shown): the data
    reads back exactly, the title shows as typed, and Chromium shows the first task."""
    import json
    import re
    import shutil

    from salient_imagenet_builder.core.annotation_page import render_page, study_data

    data = json.loads(re.search(r'<script id="study-data" type="application/json">(.*?)</script>',
                                (study / "index.html").read_text(encoding="utf-8"), re.S).group(1))
    tasks = data["pairs"]
    tasks[0] = {**tasks[0], "class_name": "__TITLE__ /*STYLE*/ __STUDY_JSON__"}
    made = study_data(tasks, TRICKY_TITLE, mode="discover")
    html = render_page(made)
    shown = re.search(r'<script id="study-data" type="application/json">(.*?)</script>', html, re.S).group(1)
    assert json.loads(shown) == made
    assert "<title>Study \"__TITLE__\" of __STUDY_JSON__ &amp; /*SCRIPT*/ &lt;b&gt;</title>" in html
    folder = tmp_path / "tricky"
    shutil.copytree(study, folder)
    (folder / "index.html").write_text(html, encoding="utf-8")
    browser.get((folder / "index.html").as_uri())
    page = Page(browser)
    page.wait_for_text("position", f"Pair 1 of {len(tasks)}")
    assert browser.title == TRICKY_TITLE
