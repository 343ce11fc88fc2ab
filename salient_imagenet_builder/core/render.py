"""Pictures of features, shared by discovery's panels, `show` and a build's gallery: a NAM as a colour overlay
(red = high activation, as the authors' annotators saw it), labelled rows of images, and text, assembled with Pillow.

A picture is a list of blocks stacked top to bottom: `text_block` (wrapped lines) and `image_row` (a row label and
captioned cells); `stack` joins them on a white page and `save_png` writes it atomically.
"""

import os
import textwrap
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CELL = 160  # pixels per image cell
PAD = 8
LABEL_WIDTH = 120  # the row label column
FONT_SIZE = 14
OVERLAY_ALPHA = 0.5
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)


@lru_cache(maxsize=4)
def font(size: int = FONT_SIZE):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one fixed-size bitmap font
        return ImageFont.load_default()


def heat_colours(mask: np.ndarray) -> np.ndarray:
    """[0, 1] mask (H, W) -> RGB uint8 (H, W, 3) with the 'jet' colour map: blue = low, red = high."""
    from matplotlib import colormaps

    return (colormaps["jet"](np.clip(mask, 0, 1))[..., :3] * 255).astype(np.uint8)


def overlay(image: np.ndarray | None, mask: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """The image (H, W, 3 uint8) blended with the mask's colours; without an image, the colours alone."""
    colours = heat_colours(mask).astype(np.float32)
    if image is None:
        return colours.astype(np.uint8)
    blended = (1 - alpha) * np.asarray(image, dtype=np.float32) + alpha * colours
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def text_block(lines: list[str], width: int, size: int = FONT_SIZE, bold_first: bool = False) -> Image.Image:
    """Lines wrapped to `width` pixels; the first one larger when `bold_first` (a title)."""
    rendered = []
    for i, line in enumerate(lines):
        line_font = font(size + 4 if bold_first and i == 0 else size)
        chars = max(10, int(width / max(1, line_font.getlength("n"))))
        for piece in textwrap.wrap(line, chars) or [""]:
            rendered.append((piece, line_font))
    heights = [f.getbbox("Ag")[3] + 4 for _, f in rendered]
    block = Image.new("RGB", (width, sum(heights) + PAD), BACKGROUND)
    draw = ImageDraw.Draw(block)
    y = PAD // 2
    for (piece, line_font), height in zip(rendered, heights):
        draw.text((PAD, y), piece, fill=INK, font=line_font)
        y += height
    return block


def image_row(label: str, cells: list[tuple[np.ndarray | Image.Image, str]], columns: int,
              cell: int = CELL) -> Image.Image:
    """A labelled row of `columns` cells (image, caption); missing cells stay blank."""
    caption_height = font().getbbox("Ag")[3] + 6
    row = Image.new("RGB", (LABEL_WIDTH + columns * (cell + PAD) + PAD, cell + caption_height + PAD), BACKGROUND)
    draw = ImageDraw.Draw(row)
    for i, line in enumerate(textwrap.wrap(label, 14)[:6]):
        draw.text((PAD, PAD + i * (FONT_SIZE + 3)), line, fill=INK, font=font())
    for i, (picture, caption) in enumerate(cells[:columns]):
        picture = picture if isinstance(picture, Image.Image) else Image.fromarray(np.asarray(picture))
        x = LABEL_WIDTH + PAD + i * (cell + PAD)
        row.paste(picture.convert("RGB").resize((cell, cell), Image.BILINEAR), (x, PAD // 2))
        draw.text((x, cell + PAD // 2 + 2), caption[:24], fill=INK, font=font(FONT_SIZE - 2))
    return row


def stack(blocks: list[Image.Image]) -> Image.Image:
    width = max(b.width for b in blocks)
    page = Image.new("RGB", (width, sum(b.height for b in blocks)), BACKGROUND)
    y = 0
    for block in blocks:
        page.paste(block, (0, y))
        y += block.height
    return page


def row_width(columns: int, cell: int = CELL) -> int:
    return LABEL_WIDTH + columns * (cell + PAD) + PAD


def save_png(picture: Image.Image, path: str | os.PathLike) -> Path:
    """Written to a temporary name, then renamed: a reader never sees half a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    picture.save(tmp, format="PNG", optimize=False)
    os.replace(tmp, path)
    return path
