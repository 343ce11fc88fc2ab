"""`salient-imagenet show`: one (class, feature) pair's panel, or a class summary, as PNG."""

from pathlib import Path

from .. import render
from .data import DatasetView
from .pictures import class_summary, pair_panel


def run(args) -> int:
    view = DatasetView(args.dataset, args.split)
    if args.feature is None:
        picture = class_summary(view, args.class_index, args.images)
    else:
        picture = pair_panel(view, args.class_index, args.feature, args.images)
    path = render.save_png(picture, Path(args.out))
    print(f"Wrote {path} ({picture.width}x{picture.height})")
    return 0
