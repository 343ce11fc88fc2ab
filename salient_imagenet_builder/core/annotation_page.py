"""The annotation page: one self-contained `index.html` (no server, no network, no CDN) that opens from a study
folder. Its HTML, CSS and JavaScript are package data (`page/`), inlined here together with the study's tasks.

One page asks the question of the study that wrote it (`mode`, one of the page's modes, `page/app.js` `MODES`: a
discovery study's "is this region the main object, a separate object or background", in the published results
format; a generalization study's "do Sections A and B show the same attribute"). Same keys, progress, resume and
annotator id in every mode.
"""

import hashlib
import json
import re
from pathlib import Path

from .output import write_text_atomic

PAGE = Path(__file__).parent / "page"
__all__ = ["PAGE", "page_modes", "render_page", "study_data", "write_page"]


def page_modes() -> list[str]:
    """The modes the page's script defines (`const MODES = { name: {...}, ... }`)."""
    script = (PAGE / "app.js").read_text(encoding="utf-8")
    block = script[script.index("MODES = {"):]
    return re.findall(r"^ {4}(\w+): \{", block[:block.index("\n  };")], re.M)


def study_data(tasks: list[dict], title: str, mode: str) -> dict:
    """The page's data: `tasks` as the page shows them, each with a unique `key` and its `panel` path."""
    if mode not in page_modes():
        raise ValueError(f"mode must be one of {page_modes()}, got {mode!r}")
    # answers are stored per study: a page for other tasks never shows (or exports) this study's answers
    study_id = hashlib.sha256(json.dumps([mode, title, [t["key"] for t in tasks]]).encode()).hexdigest()[:16]
    return {"id": study_id, "mode": mode, "title": title, "pairs": tasks}


PLACEHOLDERS = re.compile(r"/\*STYLE\*/|/\*SCRIPT\*/|__STUDY_JSON__|__TITLE__")


def render_page(data: dict) -> str:
    """The template with its placeholders filled in one pass over the template alone: a value (a title, a task)
    that reads like a placeholder stays as it is."""
    text = json.dumps(data, ensure_ascii=False)
    text = text.replace("<", "\\u003c")  # nothing in the data can close the <script> element
    escaped_title = data["title"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    values = {"/*STYLE*/": (PAGE / "style.css").read_text(encoding="utf-8"),
              "/*SCRIPT*/": (PAGE / "app.js").read_text(encoding="utf-8"),
              "__STUDY_JSON__": text, "__TITLE__": escaped_title}
    html = (PAGE / "index.html").read_text(encoding="utf-8")
    return PLACEHOLDERS.sub(lambda match: values[match.group()], html)


def write_page(out: Path, data: dict) -> Path:
    path = out / "index.html"
    write_text_atomic(path, render_page(data))
    return path
