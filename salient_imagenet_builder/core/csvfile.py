"""Reading the CSV files users give (annotations, a study's pairs and answers, ingest's results): one reader for
the encodings and separators spreadsheets save with, and the checks every such file shares."""

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError


@contextmanager
def csv_reader(path: Path, error: type[InputError] = InputError) -> Iterator[csv.DictReader]:
    """A DictReader over a CSV file: UTF-8 with or without a BOM (Excel's "CSV UTF-8" export starts with one).
    Every CSV this tool reads goes through here, so undecodable or malformed text is one line naming the file."""
    if path.is_dir():
        raise error(f"{path}: is a folder, not a CSV file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            yield csv.DictReader(f)
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte {e.object[e.start:e.start + 1]!r} at offset {e.start}); "
                    "save it as CSV UTF-8") from None
    except csv.Error as e:
        raise error(f"{path}: not a readable CSV file ({e})") from None


def is_blank(row: dict) -> bool:
    """A blank line, or one of separators only (",,,,"), as spreadsheets leave at the end."""
    return not any((v or "").strip() for v in row.values() if isinstance(v, str))


def separator_hint(fieldnames) -> str:
    """For a header that is one field holding ';' or tabs: the file was saved with another separator."""
    if fieldnames and len(fieldnames) == 1 and any(sep in fieldnames[0] for sep in ";\t"):
        return " (it seems to use ';' or tabs between columns: save it as comma-separated CSV UTF-8)"
    return ""


def missing_columns(fieldnames, required) -> list[str]:
    """The required columns a header lacks; columns are found by name, in any order."""
    return [c for c in required if c not in (fieldnames or [])]


def other_columns(fieldnames, required) -> list[str]:
    """The header's columns that are not required (a platform's `Approve`, a spreadsheet's `Notes`): ignored."""
    return [c for c in fieldnames or [] if c not in required]
