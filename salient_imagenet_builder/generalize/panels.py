"""One panel per (pair, band), as the authors' generalization template lays it out: Section A, the pair's top
images and their heatmaps, above Section B, the images it ranks within the band and theirs (red = high)."""

from dataclasses import dataclass, field

import numpy as np

from ..core import render
from ..core.dataset import Shown
from ..core.schema import class_definition, class_names, wordnet_ids

MISSING_IMAGE = 235  # a light grey cell where the user's ImageNet copy lacks an image (its heatmap still shows)


@dataclass
class BandTask:
    """A (class, feature, band) to annotate: the pair's top images (A) and those of the band (B), best first."""

    class_index: int
    feature_index: int
    feature_rank: int
    band: str  # "61-65"
    a: list[Shown] = field(default_factory=list)
    b: list[Shown] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.class_index}:{self.feature_index}:{self.band}"

    @property
    def panel(self) -> str:
        return f"panels/class{self.class_index:03d}_feature{self.feature_index:04d}_ranks{self.band}.png"

    def page_task(self) -> dict:
        """The task as the annotation page shows it."""
        c = self.class_index
        return {"key": self.key, "class_index": c, "wordnet_id": wordnet_ids()[c], "class_name": class_names()[c],
                "definition": class_definition(c), "feature_index": self.feature_index,
                "feature_rank": self.feature_rank, "band": self.band, "panel": self.panel}


def _image_cell(shown: Shown) -> tuple[np.ndarray, str]:
    view = shown.view if shown.view is not None else np.full((*shown.mask.shape, 3), MISSING_IMAGE, np.uint8)
    return view, f"#{shown.rank} {shown.image_id}"


def render_band_panel(task: BandTask):
    """The panel as a PIL image."""
    c = task.class_index
    columns = max(len(task.a), len(task.b), 1)
    title = [f"Class {c} ({wordnet_ids()[c]}): {class_names()[c]}", f"Definition: {class_definition(c)}",
             (f"Feature {task.feature_index}. Section A: the {len(task.a)} images that activate it most; Section B: "
              f"the images it ranks {task.band}. Does the red region of the heatmaps show the same visual attribute "
              "in Section A and Section B?")]
    blocks = [render.text_block(title, render.row_width(columns), bold_first=True)]
    for section, shown in (("Section A: top images", task.a), (f"Section B: ranks {task.band}", task.b)):
        blocks.append(render.image_row(section, [_image_cell(s) for s in shown], columns))
        blocks.append(render.image_row("Heatmaps (red = high)", [s.overlay_cell() for s in shown], columns))
    return render.stack(blocks)
