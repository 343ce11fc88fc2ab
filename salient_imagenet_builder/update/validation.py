"""`update --validation REPORT/validation.csv`: the scores `validate` wrote, summarised in the card.

The report's pairs must be the build's, with the build's kinds (a report of another build is refused); the card
gets, per kind, the pairs scored and the mean and median of their `energy_inside`, and the human masks the report
names (its `summary.json` beside the CSV, when there). The annotations rows are not changed."""

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.output import sha256_file
from ..core.schema import KINDS
from .apply import UpdateError

COLUMNS = ("class_index", "feature_index", "kind", "images", "energy_inside")


@dataclass
class ValidationRecording:
    path: Path
    name: str = "validation"

    def fill(self, rows: list[dict], earlier: dict | None = None) -> dict:  # a new report replaces an earlier one
        scored = read_validation(self.path)
        kinds = {(r["class_index"], r["feature_index"]): r["kind"] for r in rows}
        for (key, (kind, _, _)), number in zip(scored.items(), range(2, len(scored) + 2)):
            if key not in kinds:
                raise UpdateError(f"--validation {self.path}, row {number}: class {key[0]} feature {key[1]} is not an "
                                  "annotated pair of this build (a report of another build?)")
            if kinds[key] != kind:
                raise UpdateError(f"--validation {self.path}, row {number}: class {key[0]} feature {key[1]} is "
                                  f"{kind} in the report but {kinds[key]} in this build (a report of another build?)")
        return {"file": self.path.name, "sha256": sha256_file(self.path), **_source(self.path),
                "kinds": kind_table(scored)}


def read_validation(path: Path) -> dict[tuple[int, int], tuple[str, int, float | None]]:
    """(class, feature) -> (kind, images, energy_inside or None), in file order; errors name the file and row."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise UpdateError(f"--validation {path}: not a validation report: expected the header "
                                  f"{','.join(COLUMNS)} (what salient-imagenet validate writes)")
            scored = {}
            for number, row in enumerate(reader, start=2):
                key, value = _row(row, f"--validation {path}, row {number}")
                if key in scored:
                    raise UpdateError(f"--validation {path}, row {number}: class {key[0]} feature {key[1]} again")
                scored[key] = value
    except (OSError, UnicodeDecodeError) as e:
        raise UpdateError(f"--validation {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    return scored


def _row(row: dict, where: str) -> tuple[tuple[int, int], tuple]:
    try:
        key = (int(row["class_index"]), int(row["feature_index"]))
        images = int(row["images"])
        value = float(row["energy_inside"]) if (row["energy_inside"] or "").strip() else None
    except (TypeError, ValueError):
        raise UpdateError(f"{where}: class_index, feature_index and images must be integers and energy_inside a "
                          "number or empty") from None
    if row["kind"] not in KINDS:
        raise UpdateError(f"{where}: kind {row['kind']!r} is not one of {', '.join(KINDS)}")
    if value is not None and not 0 <= value <= 1:
        raise UpdateError(f"{where}: energy_inside {value} is outside [0, 1]")
    return key, (row["kind"], images, value)


def kind_table(scored: dict) -> list[dict]:
    """Per kind: pairs in the report, pairs scored, mean and median energy_inside over the scored pairs."""
    table = []
    for kind in KINDS:
        values = [v for k, _, v in scored.values() if k == kind and v is not None]
        table.append({"kind": kind, "pairs": sum(1 for k, _, _ in scored.values() if k == kind),
                      "scored": len(values), "mean": float(np.mean(values)) if values else None,
                      "median": float(np.median(values)) if values else None})
    return table


def _source(path: Path) -> dict:
    """The human masks the report scored against, from its summary.json (absent: nothing)."""
    try:
        facts = json.loads((path.parent / "summary.json").read_text(encoding="utf-8"))
        return {"human_masks": str(facts["human_masks"]), "format": str(facts["format"])}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
