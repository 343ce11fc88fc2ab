"""Data inside Markdown (a card's tables and sections): rendered as exactly that text."""

import html
import re

__all__ = ["md_text"]

MARKDOWN_SPECIAL = re.compile(r"([!\"#$%'()*+,\-.:;=?@\[\\\]^_`{|}~])")  # all ASCII punctuation but /


def md_text(value) -> str:
    """Data (ids, paths, error texts, the command) -> Markdown that renders as exactly that text: every ASCII
    punctuation mark but `/` backslash-escaped (no heading, link, autolink, emphasis, code span or table-cell break),
    `&`, `<`, `>` as entities (no HTML), whitespace runs and newlines as one space (no new block)."""
    text = " ".join(str(value).split())
    return html.escape(MARKDOWN_SPECIAL.sub(r"\\\1", text), quote=False)
