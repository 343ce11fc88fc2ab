"""`salient-imagenet update DATASET [--generalization generalization.csv] [--validation REPORT/validation.csv]`:
record studies in a local build."""

from pathlib import Path

from ..core.job import run_command
from .apply import UpdateError, UpdateJob
from .generalization import GeneralizationRecording
from .options import UpdateConfig
from .validation import ValidationRecording


def run(config: UpdateConfig) -> int:
    recordings = []
    if config.generalization:
        recordings.append(GeneralizationRecording(Path(config.generalization)))
    if config.validation:
        recordings.append(ValidationRecording(Path(config.validation)))
    if not recordings:
        raise UpdateError("nothing to record: pass --generalization generalization.csv and/or --validation "
                          "REPORT/validation.csv")
    summaries = run_command(UpdateJob(config.dataset, recordings))
    generalization = summaries.get("generalization", {})
    for band in generalization.get("replaced", []):
        print(replaced_line(band))
    for band in generalization.get("bands", []):
        print(f"band {band['band']}: {band['same']} of {band['pairs']} pairs judged same ({band['share_same']:.2f})")
    if len(generalization.get("studies", [])) > 1:
        print(f"generalizes_to_rank counted over the bands of {len(generalization['studies'])} studies of this build")
    for kind in summaries.get("validation", {}).get("kinds", []):
        mean = "n/a" if kind["mean"] is None else f"{kind['mean']:.3f}"
        print(f"{kind['kind']}: mean energy_inside {mean} over {kind['scored']} scored pairs")
    print(f"Updated {config.dataset}: the annotations config and the card (the image shards are unchanged). Check it "
          f"with:\n  salient-imagenet check {config.dataset}")
    return 0


def replaced_line(band: dict) -> str:
    """A band studied again: the pairs whose earlier answers it replaced, and one whose verdict changed."""
    line = f"band {band['band']} studied again: the earlier answers of {band['pairs']} pair(s) replaced"
    if not band["changed"]:
        return line + ", no verdict changed"
    first = band["changed"][0]
    return (line + f"; the verdict changed for {len(band['changed'])}, e.g. class {first['class_index']} feature "
            f"{first['feature_index']}: {first['earlier']} -> {first['now']}")
