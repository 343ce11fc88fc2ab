"""`update --generalization generalization.csv`: each studied pair's bands and `generalizes_to_rank`."""

from dataclasses import dataclass
from pathlib import Path

from ..core.annotations import generalizes_to_rank, parse_band, read_generalization
from ..core.constants import ANNOTATOR_TOP_IMAGES
from ..core.output import sha256_file
from .apply import UpdateError


@dataclass
class GeneralizationRecording:
    path: Path
    name: str = "generalization"

    def fill(self, rows: list[dict]) -> dict:
        studied = read_generalization(self.path)
        known = {(r["class_index"], r["feature_index"]) for r in rows}
        unknown = sorted(set(studied) - known)
        if unknown:
            raise UpdateError(f"--generalization {self.path}: {len(unknown)} pair(s) are not annotated pairs of this "
                              f"build, e.g. class {unknown[0][0]} feature {unknown[0][1]}")
        for row in rows:
            bands = studied.get((row["class_index"], row["feature_index"]))
            row["generalization"] = bands
            row["generalizes_to_rank"] = generalizes_to_rank(bands)
        return {"file": self.path.name, "sha256": sha256_file(self.path), "top_images": ANNOTATOR_TOP_IMAGES,
                "bands": band_table(studied)}


def band_table(studied: dict) -> list[dict]:
    """Per band: pairs studied, judged same, share judged same."""
    bands = sorted({b["band"] for bs in studied.values() for b in bs}, key=parse_band)
    table = []
    for band in bands:
        verdicts = [b["verdict"] for bs in studied.values() for b in bs if b["band"] == band]
        same = verdicts.count("same")
        table.append({"band": band, "pairs": len(verdicts), "same": same, "share_same": same / len(verdicts)})
    return table
