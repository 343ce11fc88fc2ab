"""`salient-imagenet generalize`: a `GeneralizeJob`, then what to do next."""

from pathlib import Path

from ..core.constants import PAIRS_FILE
from ..core.job import run_command
from .options import GeneralizeConfig
from .study import GeneralizeJob


def run(config: GeneralizeConfig) -> int:
    out = Path(config.out)
    info = run_command(GeneralizeJob(config))
    left_out = f" ({len(info['left_out'])} (pair, band)s left out: too few ranked images)" if info["left_out"] else ""
    print(f"Wrote {out}: {info['tasks']} panels, {info['pairs']} pairs x bands {', '.join(info['bands'])}{left_out}. "
          f"Open {out / 'index.html'} in a browser; each annotator exports a CSV, then:\n  salient-imagenet ingest "
          f"answers-*.csv --pairs {out / PAIRS_FILE} --out generalization.csv\n  salient-imagenet update "
          f"{config.dataset} --generalization generalization.csv")
    return 0
