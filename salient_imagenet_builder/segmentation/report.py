"""REPORT/validation.csv, REPORT/summary.json and the plot of energy_inside for core vs spurious pairs."""

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from ..core.output import write_text_atomic
from ..core.provenance import made_by
from ..core.schema import KINDS
from .options import CSV_FILE, PLOT_FILE, SUMMARY_FILE
from .scoring import Scores

COLUMNS = ["class_index", "feature_index", "kind", "images", "energy_inside"]


def summary(scores: Scores, dataset: str, human_masks: str, fmt: str, command: str = "") -> dict:
    """Per kind: the mean over pairs with at least one scored image (pairs without are counted apart); the report's
    marker: it names the package."""
    kinds = {}
    for kind in KINDS:
        values = [p["energy_inside"] for p in scores.pairs if p["kind"] == kind and p["energy_inside"] is not None]
        kinds[kind] = {"pairs": len(values), "energy_inside": float(np.mean(values)) if values else None,
                       "pairs_without_scored_images": sum(1 for p in scores.pairs if p["kind"] == kind
                                                          and p["energy_inside"] is None)}
    return {**made_by(command), "dataset": dataset, "human_masks": human_masks, "format": fmt,
            "pairs": len(scores.pairs),
            "image_rows": scores.images, "images_without_human_mask": scores.without_mask,
            "scored": scores.scored, "soft_masks_without_mass": scores.empty_masks, "kinds": kinds}


def write_report(folder: Path, scores: Scores, facts: dict) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for pair in scores.pairs:
        writer.writerow({**pair, "energy_inside": "" if pair["energy_inside"] is None else
                         f"{pair['energy_inside']:.6f}"})
    write_text_atomic(folder / CSV_FILE, text.getvalue())
    write_text_atomic(folder / SUMMARY_FILE, json.dumps(facts, indent=2) + "\n")
    plot(folder / PLOT_FILE, scores)
    return [folder / CSV_FILE, folder / SUMMARY_FILE, folder / PLOT_FILE]


def plot(path: Path, scores: Scores) -> None:
    """Histograms of the pairs' energy_inside, core and spurious on one axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(6, 4), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    bins = np.linspace(0, 1, 21)
    for kind, colour in zip(KINDS, ("tab:green", "tab:red")):
        values = [p["energy_inside"] for p in scores.pairs if p["kind"] == kind and p["energy_inside"] is not None]
        label = f"{kind} ({len(values)} pairs, mean {np.mean(values):.2f})" if values else f"{kind} (no pairs)"
        ax.hist(values, bins=bins, alpha=0.6, color=colour, label=label)
    ax.set(xlim=(0, 1), xlabel="energy inside the human mask: sum(m * H) / sum(m)", ylabel="pairs",
           title="Soft masks against human segmentations")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts of pairs
    ax.legend(loc="best")
    tmp = path.with_name(f".{path.name}.partial")
    figure.savefig(tmp, format="png", dpi=120)
    os.replace(tmp, path)
