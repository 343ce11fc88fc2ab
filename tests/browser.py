"""A real browser for the annotation page's tests: Chromium and chromedriver from Debian, driven by Selenium.
Outside CI a missing browser skips a test; in CI (CI=true) it fails it."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000")
# how long a wait for the page may take: the suite's builds run beside the browser on CI's 2 cores (a test that
# passes waits only as long as the page needs)
WAIT_SECONDS = 30


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
    """One browser per test module (import this fixture into the module)."""
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

    def wait_for_text(self, element_id, text: str, timeout: float = WAIT_SECONDS) -> None:
        """Until the page shows `text` (it handles key presses asynchronously), at most `timeout` seconds."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            WebDriverWait(self.driver, timeout).until(lambda _: self.text(element_id) == text)
        except TimeoutException:
            pass  # the caller's assertions name what is there

    def restored_value(self, element_id, timeout: float = WAIT_SECONDS) -> str:
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
            WebDriverWait(self.driver, WAIT_SECONDS).until(lambda d: d.execute_script(self.SAVED_ANNOTATOR, name))
        except TimeoutException:
            pass  # the test's own assertions say what the page kept

    def answer_with_keys(self, key: str, confidence: int, reason: str | None):
        """`key`: the answer's shortcut on the page."""
        self.press(key, str(confidence))
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
