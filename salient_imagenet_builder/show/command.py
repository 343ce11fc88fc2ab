"""`salient-imagenet show`: one (class, feature) pair's panel, or a class summary, as PNG."""

from pathlib import Path

from ..core import render
from ..core.dataset import DatasetView
from ..core.output import check_out_file
from ..core.png import PNG_SIGNATURE
from .pictures import class_summary, pair_panel


def run(args) -> int:
    check_out(Path(args.out))
    view = DatasetView(args.dataset, args.split)
    if args.feature is None:
        picture = class_summary(view, args.class_index, args.images)
    else:
        picture = pair_panel(view, args.class_index, args.feature, args.images)
    path = render.save_png(picture, Path(args.out))
    print(f"Wrote {path} ({picture.width}x{picture.height})")
    return 0


def is_png(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE


def check_out(out: Path) -> None:
    """A PNG file: never a folder, and an existing file is replaced only when it is a PNG (an earlier picture)."""
    check_out_file(out, what="a file name ending in .png", example=out / "panel.png", is_ours=is_png,
                   foreign="a PNG image, so it is not replaced",
                   suffix=(".png", "show writes PNG images; give a file name ending in .png"))
