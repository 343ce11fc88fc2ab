"""Panels: for each (class, feature) pair, one PNG as the authors' annotators saw it: the class name and its WordNet
definition, the top images by r_j(x), their heatmaps (NAM overlay, red = high), the feature-attack images and a
few images of the class for context.

Only the selected images are read again (`source.read_many`); maps and attacks are computed in batches of
(image, feature) jobs over all pairs. The panels are drawn in work units of CHUNK_CLASSES classes with the
builder's unit runner: ranks under torchrun share the chunks (the attacks are most of a study's time), and a
stopped study keeps its finished chunks for the next run.
"""

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core import render
from ..core.images import CorruptImage, center_view, decode, to_uint8_tensor
from ..core.stages import batched
from ..core.units import Unit, UnitFolder, fingerprint_hash, run_units
from .attack import activation_maps, feature_attack
from .ranking import PairTask

log = logging.getLogger(__name__)
CHUNK_CLASSES = 32  # ~900 images' views, maps and attacks in memory at a time (with 5 features x 5 images)


def read_views(source, refs: list[str], draft: bool) -> dict[str, torch.Tensor]:
    """ref -> uint8 224 view of the selected images (each read once, however many pairs show it)."""
    views = {}
    for ref, data in source.read_many(sorted(set(refs))):
        try:
            views[ref] = to_uint8_tensor(center_view(decode(data, draft)))
        except CorruptImage as e:  # it decoded in pass 1; a file changed since is skipped, not fatal
            log.warning("skipping %s on the panels: %s", ref, e)
    return views


def compute_jobs(model, jobs: list[tuple[str, int]], views: dict, steps: int, batch_size: int, device):
    """(ref, feature) -> (NAM (H, W) float, attacked image uint8 CHW)."""
    results = {}
    for batch in batched([j for j in dict.fromkeys(jobs) if j[0] in views], batch_size):
        x = torch.stack([views[ref] for ref, _ in batch]).to(device)
        features = torch.tensor([j for _, j in batch], device=device)
        maps = activation_maps(model, x, features)
        attacked = feature_attack(model, x, features, steps) if steps > 0 else x.cpu()
        for i, job in enumerate(batch):
            results[job] = (maps[i].numpy(), attacked[i])
    return results


def hwc(view: torch.Tensor) -> np.ndarray:
    return view.permute(1, 2, 0).numpy()


def render_panel(task: PairTask, images, views: dict, computed: dict, steps: int):
    """The panel of one pair as a PIL image; `images` is the scan's image table."""
    top = [(images.refs[i], images.ids[i], a) for i, a in task.top if images.refs[i] in views]
    columns = max(len(task.top), len(task.context), 1)
    title = [f"Class {task.class_index} ({task.wordnet_id}): {task.class_name}", f"Definition: {task.definition}",
             f"Feature {task.feature_index}, rank {task.feature_rank} among the class's features by importance. "
             "Is the region the heatmaps highlight part of the main object, a separate object, or background?"]
    blocks = [render.text_block(title, render.row_width(columns), bold_first=True)]
    blocks.append(render.image_row("Top images", [(hwc(views[r]), f"r = {a:.3g}") for r, _, a in top], columns))
    blocks.append(render.image_row("Heatmaps (red = high)", [
        (render.overlay(hwc(views[r]), computed[(r, task.feature_index)][0]), str(i)) for r, i, _ in top], columns))
    blocks.append(render.image_row(f"Feature attack ({steps} steps)", [
        (hwc(computed[(r, task.feature_index)][1]), "") for r, _, _ in top], columns))
    context = [images.refs[i] for i in task.context if images.refs[i] in views]
    blocks.append(render.image_row("The class", [(hwc(views[r]), "") for r in context], columns))
    return render.stack(blocks)


@dataclass
class PanelChunk:
    """A unit result: one chunk's panels by file name. `load` gives the names only; the files stay in the unit's
    folder until `write_panels` links them into the study."""

    pictures: dict
    bytes_read: int = 0  # from the source, for the chunk's images

    def save(self, folder: Path) -> None:
        for name, picture in self.pictures.items():
            render.save_png(picture, folder / name)

    @classmethod
    def load(cls, folder: Path) -> "PanelChunk":
        return cls({p.name: None for p in sorted(folder.glob("*.png"))})

    def summary(self) -> dict:
        return {"panels": len(self.pictures), "bytes_read": self.bytes_read}


class PanelWorker:
    """`worker(unit)` draws the panels of the unit's classes: their views, maps and attacks in memory at once."""

    def __init__(self, tasks: list[PairTask], scan, source, model, steps: int, batch_size: int, device, draft: bool):
        self.tasks, self.images, self.source, self.model = tasks, scan.images, source, model
        self.steps, self.batch_size, self.device, self.draft = steps, batch_size, device, draft

    def __call__(self, unit: Unit) -> PanelChunk:
        classes = set(unit.spec["classes"])
        chunk = [t for t in self.tasks if t.class_index in classes]
        refs = [self.images.refs[i] for t in chunk for i in [*(p for p, _ in t.top), *t.context]]
        with self.source.io.measure() as read:
            views = read_views(self.source, refs, self.draft)
        jobs = [(self.images.refs[i], t.feature_index) for t in chunk for i, _ in t.top]
        computed = compute_jobs(self.model, jobs, views, self.steps, self.batch_size, self.device)
        return PanelChunk({Path(t.panel).name: render_panel(t, self.images, views, computed, self.steps)
                           for t in chunk}, read.bytes)


def write_panels(out: Path, work: Path, tasks: list[PairTask], scan, source, model, steps: int, batch_size: int,
                 device, world, draft: bool = True) -> int:
    """Every rank draws its share of the chunks into the work folder; rank 0 then links them into `out/panels/`.
    Returns the bytes the chunks read from the source."""
    classes = sorted({t.class_index for t in tasks})
    plan = [Unit(i, {"classes": classes[first:first + CHUNK_CLASSES]})
            for i, first in enumerate(range(0, len(classes), CHUNK_CLASSES))]
    # the scan is fingerprinted by the work folder; what else a panel depends on names its pass
    drawn = fingerprint_hash({"steps": steps, "plan": [u.spec for u in plan],
                              "pairs": [(t.class_index, t.feature_index) for t in tasks]})
    folder = UnitFolder(work, f"discover-panels-{drawn}")
    run_units(plan, folder, lambda: PanelWorker(tasks, scan, source, model, steps, batch_size, device, draft), world,
              "panels", desc=f"panels: maps and feature attacks, {len(classes)} classes in {len(plan)} units")
    read = sum(folder.read_marker(unit.index)["bytes_read"] for unit in plan)
    if not world.is_main:
        return read
    (out / "panels").mkdir(exist_ok=True)
    for unit in plan:
        for png in folder.result_dir(unit.index).glob("*.png"):
            link_or_copy(png, out / "panels" / png.name)
    return read


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the file system allows one (the work folder goes when the study is published)."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
