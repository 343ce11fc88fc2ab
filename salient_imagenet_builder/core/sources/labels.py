"""A source's labels as ImageNet class indices: its own class names (a subset's `ClassLabel`), wnid or name strings,
integral floats. A label that names no ImageNet class is refused in one line, never stored as another class."""

import json
import math
from functools import lru_cache

from ..schema import class_names, wordnet_ids
from .base import SourceError

__all__ = ["declared_names", "label_mapping", "label_from_text", "normalize_label"]


@lru_cache(maxsize=1)
def _index_of_name() -> dict[str, int | None]:
    """wnid, full description, or first synonym (lower case) -> class index; None where a name is ambiguous
    (two classes are called "crane", two "maillot")."""
    index: dict[str, int | None] = {}

    def add(name: str, i: int) -> None:
        key = name.strip().lower()
        index[key] = i if index.get(key, i) == i else None

    for i, (wnid, name) in enumerate(zip(wordnet_ids(), class_names())):
        add(wnid, i)
        add(name, i)
        add(name.split(",")[0], i)
        if name.endswith(f" ({wnid})"):  # our unique form of a duplicated description
            add(name[:-len(f" ({wnid})")], i)
    return index


def label_from_text(text: str) -> int | None:
    """A wnid or an ImageNet class name -> its index; None when it names no single class."""
    return _index_of_name().get(text.strip().lower())


def label_mapping(names: list[str], where: str) -> list[int] | None:
    """A source's own class names -> ImageNet index per position; None when they are ImageNet's own 1,000 in order."""
    index = _index_of_name()
    if len(names) == len(wordnet_ids()):
        keys = [n.strip().lower() for n in names]
        if all(index.get(k, i) in (i, None) and k in index for i, k in enumerate(keys)):
            return None  # ImageNet's list (ambiguous names such as "crane" sit at their own positions)
    mapping, unknown = [], []
    for name in names:
        i = label_from_text(name)
        mapping.append(-1 if i is None else i)
        if i is None:
            unknown.append(name)
    if unknown:
        raise SourceError(f"{where}: its labels are its own class names, and {len(unknown)} of {len(names)} name no "
                          f"single ImageNet class (wnids such as n01440764, or ImageNet class names), e.g. "
                          f"{unknown[:3]}; cannot tell which ImageNet class its images show")
    return mapping


def declared_names(schema, column: str) -> list[str] | None:
    """The `ClassLabel` names `datasets` wrote into a parquet file's schema metadata for `column`, if any."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw:
        return None
    try:
        feature = json.loads(raw)["info"]["features"][column]
    except (ValueError, KeyError, TypeError):
        return None
    if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" and feature.get("names"):
        return list(feature["names"])
    return None


def normalize_label(value, mapping: list[int] | None, where: str):
    """One label as the file holds it -> a class index, or the value itself when it is no class (-1 in a test
    split, null: counted and skipped by the caller)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise SourceError(f"{where}: the label {value!r} is no class index")
        value = int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            value = int(text)
        else:
            found = label_from_text(text)
            if found is None:
                raise SourceError(f"{where}: the label {value[:40]!r} is neither a class index nor a wnid or "
                                  "ImageNet class name")
            return found
    if mapping is not None and 0 <= value < len(mapping):
        return mapping[value]
    return value
