"""`salient-imagenet generalize`: the command line's options -> `study.make_study`, then what to do next."""

from pathlib import Path

from ..core.constants import PAIRS_FILE
from ..core.output import interruptible
from .study import GeneralizeConfig, make_study


def run(args) -> int:
    config = GeneralizeConfig(dataset=args.dataset, out=args.out, bands=args.bands, classes=args.classes,
                              imagenet=args.imagenet, imagenet_type=args.imagenet_type, split=args.split,
                              title=args.title, overwrite=args.overwrite)
    out = Path(config.out)
    with interruptible(out):
        info = make_study(config)
    left_out = f" ({len(info['left_out'])} (pair, band)s left out: too few ranked images)" if info["left_out"] else ""
    print(f"Wrote {out}: {info['tasks']} panels, {info['pairs']} pairs x bands {', '.join(info['bands'])}{left_out}. "
          f"Open {out / 'index.html'} in a browser; each annotator exports a CSV, then:\n  salient-imagenet ingest "
          f"answers-*.csv --pairs {out / PAIRS_FILE} --out generalization.csv\n  salient-imagenet update "
          f"{config.dataset} --generalization generalization.csv")
    return 0
