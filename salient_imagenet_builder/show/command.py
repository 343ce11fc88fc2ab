"""`salient-imagenet show`: one (class, feature) pair's panel, or a class summary, as PNG."""

from pathlib import Path

from ..core import render
from ..core.dataset import DatasetView
from ..core.output import check_out_file
from ..core.png import PNG_SIGNATURE
from .options import ShowConfig
from .pictures import class_summary, pair_panel


def run(config: ShowConfig) -> int:
    check_out(Path(config.out))
    view = DatasetView(config.dataset, config.split, command="show")
    if config.feature is None:
        picture = class_summary(view, config.class_index, config.images)
    else:
        picture = pair_panel(view, config.class_index, config.feature, config.images)
    path = render.save_png(picture, Path(config.out))
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
