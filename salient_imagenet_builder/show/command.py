"""`salient-imagenet show`: one (class, feature) pair's panel, or a class summary, as PNG."""

from pathlib import Path

from ..core import render
from ..core.dataset import DatasetView
from ..core.errors import InputError
from ..core.masks import PNG_SIGNATURE
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


def check_out(out: Path) -> None:
    """A PNG file: never a folder, and an existing file is replaced only when it is a PNG (an earlier picture)."""
    name = f"--out {out}"
    if out.is_dir():
        raise InputError(f"{name}: is a folder; give a file name ending in .png, e.g. --out {out / 'panel.png'}")
    if out.suffix.lower() != ".png":
        raise InputError(f"{name}: show writes PNG images; give a file name ending in .png")
    if out.exists():
        with open(out, "rb") as f:
            if f.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
                raise InputError(f"{name}: exists and is not a PNG image, so it is not replaced; choose another --out")
