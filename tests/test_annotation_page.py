"""The whole study in a real browser: discover -> five annotators answer on the page (keyboard and mouse, a reload
in the middle) -> export -> ingest -> build -> show. Chromium and chromedriver from Debian, driven by Selenium.
Outside CI a missing browser skips these tests; in CI (CI=true) it fails them."""

import csv
import io
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import ARCH
from PIL import Image

from salient_imagenet_builder.builder import BuildConfig, build
from salient_imagenet_builder.cli import main
from salient_imagenet_builder.core.annotations import COLUMNS, parse
from salient_imagenet_builder.core.constants import GALLERY_FILE

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000")
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


def browser_parts():
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    problem = None
    try:
        import selenium  # noqa: F401
    except ImportError:
        problem = "selenium is not installed (pip install -e '.[test]')"
    if not (Path(chromium).is_file() and Path(driver).is_file()):
        problem = "chromium / chromedriver not found (apt-get install chromium chromium-driver)"
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the browser test must run in CI: {problem}")
        pytest.skip(problem)
    return chromium, driver


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = browser_parts()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium_profile_")
    options = Options()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


class Page:
    def __init__(self, driver):
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        self.driver, self.by, self.keys, self.actions = driver, By, Keys, ActionChains

    def find(self, element_id):
        return self.driver.find_element(self.by.ID, element_id)

    def press(self, *keys):
        self.actions(self.driver).send_keys(*keys).perform()

    def text(self, element_id) -> str:
        return self.find(element_id).text

    def wait_for_text(self, element_id, text: str, timeout: float = 10) -> None:
        """Until the page shows `text` (it handles key presses asynchronously), at most `timeout` seconds."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            WebDriverWait(self.driver, timeout).until(lambda _: self.text(element_id) == text)
        except TimeoutException:
            pass  # the caller's assertions name what is there

    def restored_value(self, element_id, timeout: float = 10) -> str:
        """An input's value once the page's script has restored it after a (re)load: empty until the script ran."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            WebDriverWait(self.driver, timeout).until(lambda _: self.find(element_id).get_attribute("value"))
        except TimeoutException:
            pass  # the caller's assertion names what is there
        return self.find(element_id).get_attribute("value")

    SAVED_ANNOTATOR = ("return Object.keys(localStorage).some((k) => { try { "
                       "return JSON.parse(localStorage.getItem(k)).annotator === arguments[0]; } "
                       "catch (e) { return false; } });")

    def set_annotator(self, name: str):
        """Type the id as a person does; return once the page has taken it (its `change` handler saved it): on a
        loaded machine the focus change that fires `change` can arrive late, and a reload before it loses the id."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        field = self.find("annotator")
        field.clear()
        field.send_keys(name, self.keys.TAB)  # `change` fires when the field loses focus
        self.driver.find_element(self.by.TAG_NAME, "h2").click()  # focus back on the page, not a button
        try:
            WebDriverWait(self.driver, 10).until(lambda d: d.execute_script(self.SAVED_ANNOTATOR, name))
        except TimeoutException:
            pass  # the test's own assertions say what the page kept

    def answer_with_keys(self, answer: str, confidence: int, reason: str | None):
        self.press(KEYS[answer], str(confidence))
        if reason:
            self.press("r")
            self.press(reason, self.keys.ESCAPE)
        self.press("n")

    def answer_with_mouse(self, answer: str, confidence: int, reason: str | None):
        self.find(f"answer-{answer}").click()
        self.find(f"confidence-{confidence}").click()
        if reason:
            self.find("reason").click()
            self.find("reason").send_keys(reason)
        self.find("next").click()

    def export(self) -> str:
        self.driver.find_element(self.by.TAG_NAME, "h2").click()
        self.press("x")
        return self.find("export-csv").get_attribute("value")

    def checked(self, name: str) -> str | None:
        found = self.driver.find_elements(self.by.CSS_SELECTOR, f"input[name={name}]:checked")
        return found[0].get_attribute("value") if found else None


def read_csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_annotate_ingest_build_show(browser, study, inputs, tmp_path):
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
            answer_with = page.answer_with_mouse if worker == 0 and i >= 3 else page.answer_with_keys
            answer_with(answers[worker], 1 + (i + worker) % 5, REASON if worker == 0 else None)
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
