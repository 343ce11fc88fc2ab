"""The annotation page: one self-contained `index.html` (no server, no network, no CDN) that opens from the study
folder. Its HTML, CSS and JavaScript are package data (`page/`), inlined here together with the study's pairs."""

import hashlib
import json
from pathlib import Path

from ..core.output import write_text_atomic
from .ranking import PairTask

PAGE = Path(__file__).parent / "page"


def study_data(tasks: list[PairTask], title: str) -> dict:
    pairs = [{"key": t.key, "class_index": t.class_index, "wordnet_id": t.wordnet_id, "class_name": t.class_name,
              "definition": t.definition, "feature_index": t.feature_index, "feature_rank": t.feature_rank,
              "panel": t.panel} for t in tasks]
    # answers are stored per study: a page for other pairs never shows (or exports) this study's answers
    study_id = hashlib.sha256(json.dumps([title, [p["key"] for p in pairs]]).encode()).hexdigest()[:16]
    return {"id": study_id, "title": title, "pairs": pairs}


def render_page(tasks: list[PairTask], title: str) -> str:
    data = json.dumps(study_data(tasks, title), ensure_ascii=False)
    data = data.replace("<", "\\u003c")  # nothing in the data can close the <script> element
    html = (PAGE / "index.html").read_text(encoding="utf-8")
    escaped_title = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (html.replace("/*STYLE*/", (PAGE / "style.css").read_text(encoding="utf-8"))
                .replace("/*SCRIPT*/", (PAGE / "app.js").read_text(encoding="utf-8"))
                .replace("__STUDY_JSON__", data).replace("__TITLE__", escaped_title))


def write_page(out: Path, tasks: list[PairTask], title: str) -> Path:
    path = out / "index.html"
    write_text_atomic(path, render_page(tasks, title))
    return path
