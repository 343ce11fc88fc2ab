"""`salient-imagenet update DATASET --generalization generalization.csv`: record a study in a local build."""

from pathlib import Path

from .apply import UpdateError, update
from .generalization import GeneralizationRecording


def run(args) -> int:
    recordings = []
    if args.generalization:
        recordings.append(GeneralizationRecording(Path(args.generalization)))
    if not recordings:
        raise UpdateError("nothing to record: pass --generalization generalization.csv")
    summaries = update(args.dataset, recordings)
    for band in summaries.get("generalization", {}).get("bands", []):
        print(f"band {band['band']}: {band['same']} of {band['pairs']} pairs judged same ({band['share_same']:.2f})")
    print(f"Updated {args.dataset}: the annotations config and the card (the image shards are unchanged). Check it "
          f"with:\n  salient-imagenet check {args.dataset}")
    return 0
