"""`update --generalization generalization.csv`: each studied pair's bands and `generalizes_to_rank`.

Studies of the same build accumulate: a pair keeps the bands every update recorded; a band studied again (the same
ranks) replaces that pair's earlier answers for it; `generalizes_to_rank` is counted over all of them."""

from dataclasses import dataclass
from pathlib import Path

from ..core.constants import ANNOTATOR_TOP_IMAGES
from ..core.output import sha256_file
from ..core.registry import study_format
from .apply import UpdateError
from .card import generalization_studies


def study():
    """The generalization study's format, as the capability that makes the study registered it."""
    return study_format("band comparison")


def parse_band(text: str) -> tuple[int, int]:
    return study().parse_band(text)


def band_text(band: tuple[int, int]) -> str:
    return study().band_text(band)


@dataclass
class GeneralizationRecording:
    path: Path
    name: str = "generalization"

    def fill(self, rows: list[dict], earlier: dict | None = None) -> dict:
        studied = study().read_results(self.path)
        known = {(r["class_index"], r["feature_index"]) for r in rows}
        unknown = sorted(set(studied) - known)
        if unknown:
            raise UpdateError(f"--generalization {self.path}: {len(unknown)} pair(s) are not annotated pairs of this "
                              f"build, e.g. class {unknown[0][0]} feature {unknown[0][1]}")
        replaced = []  # (pair, earlier band, new band) for each band studied again
        for row in rows:
            key = (row["class_index"], row["feature_index"])
            if key in studied:
                row["generalization"], again = merge_bands(row["generalization"], studied[key])
                replaced += [(key, old, new) for old, new in again]
            row["generalizes_to_rank"] = study().generalizes_to_rank(row["generalization"])
        sha256 = sha256_file(self.path)
        studies = [s for s in generalization_studies(earlier) if s["sha256"] != sha256]
        recorded = {(r["class_index"], r["feature_index"]): r["generalization"] for r in rows if r["generalization"]}
        return {"studies": [*studies, {"file": self.path.name, "sha256": sha256}], "top_images": ANNOTATOR_TOP_IMAGES,
                "bands": band_table(recorded), "replaced": replaced_table(replaced)}


def merge_bands(earlier: list[dict] | None, new: list[dict]) -> tuple[list[dict], list[tuple[dict, dict]]]:
    """A pair's recorded bands with a new study's: a band with the same ranks is replaced by its new answers.
    Returns the bands by rank and the (earlier, new) pairs of the bands replaced."""
    by_ranks = {parse_band(b["band"]): b for b in earlier or []}
    replaced = [(by_ranks[parse_band(b["band"])], b) for b in new if parse_band(b["band"]) in by_ranks]
    by_ranks.update({parse_band(b["band"]): b for b in new})
    return [by_ranks[ranks] for ranks in sorted(by_ranks)], replaced


def band_table(studied: dict) -> list[dict]:
    """Per band: pairs studied, judged same, share judged same."""
    bands = sorted({parse_band(b["band"]) for bs in studied.values() for b in bs})
    table = []
    for band in bands:
        verdicts = [b["verdict"] for bs in studied.values() for b in bs if parse_band(b["band"]) == band]
        same = verdicts.count("same")
        table.append({"band": band_text(band), "pairs": len(verdicts), "same": same,
                      "share_same": same / len(verdicts)})
    return table


def replaced_table(replaced: list[tuple]) -> list[dict]:
    """Per band studied again: the pairs whose earlier answers it replaced, and those whose verdict changed."""
    table = []
    for band in sorted({new["band"] for _, _, new in replaced}, key=parse_band):
        these = [(key, old, new) for key, old, new in replaced if new["band"] == band]
        changed = [{"class_index": key[0], "feature_index": key[1], "earlier": old["verdict"], "now": new["verdict"]}
                   for key, old, new in these if old["verdict"] != new["verdict"]]
        table.append({"band": band, "pairs": len(these), "changed": changed})
    return table
