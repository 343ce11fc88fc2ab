"""`salient-imagenet validate`: a build's soft masks scored against human segmentations of the same images."""

from pathlib import Path

from ..core.dataset import DatasetView
from ..core.errors import InputError
from .human import HumanMasks
from .report import summary, write_report
from .scoring import score_dataset


def run(args) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder (validate writes a report folder)")
    humans = HumanMasks(args.human_masks, args.format)
    view = DatasetView(args.dataset, args.split, command="validate")
    scores = score_dataset(view, humans)
    if scores.images and scores.without_mask == scores.images:
        raise InputError(f"--human-masks {args.human_masks}: no mask for any of the build's {scores.images} images "
                         f"(expected <folder>/<wnid>/<image_id>.png)")
    facts = summary(scores, args.dataset, args.human_masks, args.format)
    written = write_report(out, scores, facts)
    for kind, numbers in facts["kinds"].items():
        mean = "n/a" if numbers["energy_inside"] is None else f"{numbers['energy_inside']:.3f}"
        print(f"{kind}: energy_inside {mean} over {numbers['pairs']} pairs")
    print(f"{scores.scored} masks scored; {scores.without_mask} of {scores.images} images without a human mask")
    print("Wrote " + ", ".join(str(p) for p in written))
    return 0
