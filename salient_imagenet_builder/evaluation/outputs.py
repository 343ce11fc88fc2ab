"""Stage 6: per-class CSV, per-(class, feature) CSV, summary.json, plots and the printed table."""

import csv
import io
import json
import math
import os
import textwrap
from pathlib import Path

import numpy as np

from ..core.constants import PACKAGE_NAME
from ..core.output import write_text_atomic
from ..core.schema import class_names, wordnet_ids
from ..version import __version__
from .metrics import mean_std
from .options import EVALUATE_INFO
from .rows import Pairs
from .runner import ModelResult

CLASS_COLUMNS = ["class", "wordnet_id", "class_name", "core_feature_images", "spurious_feature_images",
                 "clean_acc_core_images", "spurious_acc", "spurious_acc_std", "clean_acc_spurious_images", "core_acc",
                 "core_acc_std", "rcs", "rcs_std"]
FEATURE_CSV_COLUMNS = ["class", "wordnet_id", "class_name", "feature_index", "feature_rank", "kind", "images",
                       "clean_acc", "noisy_acc", "noisy_acc_std", "drop", "drop_std"]


def class_rows(per_class: dict) -> list[dict]:
    names, wnids = class_names(), wordnet_ids()
    stats = {k: mean_std(per_class[k]) for k in ("core_acc", "spurious_acc", "rcs")}
    rows = []
    for c in np.flatnonzero((per_class["core_images"] > 0) | (per_class["spurious_images"] > 0)):
        row = {"class": int(c), "wordnet_id": wnids[c], "class_name": names[c],
               "core_feature_images": int(per_class["core_images"][c]),
               "spurious_feature_images": int(per_class["spurious_images"][c])}
        row["clean_acc_core_images"] = per_class["clean_acc_core_images"][c]
        row["clean_acc_spurious_images"] = per_class["clean_acc_spurious_images"][c]
        for k, s in stats.items():
            row[k], row[f"{k}_std"] = s["mean"][c], s["std"][c]
        rows.append(row)
    return rows


def pair_rows(pairs: Pairs, per_pair: dict) -> list[dict]:
    """One row per (class, feature) pair, the most harmful noise first."""
    names, wnids = class_names(), wordnet_ids()
    noisy, drop = mean_std(per_pair["noisy_acc"]), mean_std(per_pair["drop"])
    rows = []
    for p in np.flatnonzero(per_pair["images"] > 0):
        c = int(pairs.group[p])
        rows.append({"class": c, "wordnet_id": wnids[c], "class_name": names[c],
                     "feature_index": int(pairs.feature_index[p]), "feature_rank": int(pairs.feature_rank[p]),
                     "kind": pairs.kind[p], "images": int(per_pair["images"][p]),
                     "clean_acc": per_pair["clean_acc"][p], "noisy_acc": noisy["mean"][p],
                     "noisy_acc_std": noisy["std"][p], "drop": drop["mean"][p], "drop_std": drop["std"][p]})
    return sorted(rows, key=lambda r: (-r["drop"], -r["images"], r["class"], r["feature_index"]))


def _plain(value):
    """JSON/CSV-ready: numpy -> Python, NaN -> None, floats rounded to 6 digits."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else round(float(value), 6)
    return value


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in _plain(row).items()})
    write_text_atomic(path, buffer.getvalue())


def write_json(path: Path, value) -> None:
    write_text_atomic(path, json.dumps(_plain(value), indent=2) + "\n")


def _figure(width: float, height: float, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(1, ncols)


def _save(figure, path: Path) -> None:
    """The saved image grows to hold every title, tick label and legend: long model labels are never cut."""
    tmp = path.with_name(f".{path.name}.partial")
    figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight", pad_inches=0.1)
    os.replace(tmp, path)  # a reader never sees half a picture


def _wrap(text: str, width: int = 60) -> str:
    return "\n".join(textwrap.fill(line, width) for line in text.splitlines())


def plot_core_vs_spurious(path: Path, result: ModelResult) -> None:
    """Per class: core accuracy (noise on spurious features) against spurious accuracy (noise on core features)."""
    core, spurious = mean_std(result.per_class["core_acc"])["mean"], mean_std(result.per_class["spurious_acc"])["mean"]
    both = ~np.isnan(core) & ~np.isnan(spurious)
    figure, ax = _figure(5.5, 5.5)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="core = spurious")
    ax.scatter(spurious[both], core[both], s=18, alpha=0.7, label=f"{int(both.sum())} classes")
    m = result.metrics
    ax.set(xlim=(-0.03, 1.03), ylim=(-0.03, 1.03), xlabel="spurious accuracy (noise on core features)",
           ylabel="core accuracy (noise on spurious features)",
           title=f"{_wrap(result.label)}\ncore {m['core_acc']['mean']:.3f}, spurious {m['spurious_acc']['mean']:.3f}, "
                 f"RCS {m['rcs']['mean']:.3f} (class-balanced)")
    ax.legend(loc="lower right")
    _save(figure, path)


def plot_feature_drops(path: Path, rows: list[dict], label: str, top: int) -> None:
    """The (class, feature) pairs whose noise hurts most, coloured by kind."""
    rows = rows[:top][::-1]
    figure, ax = _figure(8, 1.2 + 0.35 * max(len(rows), 1))
    colours = {"core": "tab:blue", "spurious": "tab:red"}
    ax.barh(range(len(rows)), [r["drop"] for r in rows], xerr=[r["drop_std"] for r in rows],
            color=[colours.get(r["kind"], "grey") for r in rows])
    ax.set_yticks(range(len(rows)), [f"{r['class_name'][:28]} / #{r['feature_index']} ({r['kind']})" for r in rows],
                  fontsize=8)
    ax.set(xlabel="accuracy drop with noise on this feature only",
           title=_wrap(f"{label}: most harmful single features", 90))
    _save(figure, path)


def plot_comparison(path: Path, results: list[ModelResult]) -> None:
    """Clean / noisy accuracies (mean and std over draws) and RCS, one group of bars per model."""
    figure, (ax, ax_rcs) = _figure(3 + 2.2 * len(results), 4.5, ncols=2)
    bars = [("clean, core-feature images", "clean_acc_core_images", "#9ecae1"),
            ("spurious acc (noise on core)", "spurious_acc", "#de2d26"),
            ("clean, spurious-feature images", "clean_acc_spurious_images", "#c6dbef"),
            ("core acc (noise on spurious)", "core_acc", "#3182bd")]
    x, width = np.arange(len(results)), 0.8 / len(bars)
    for i, (name, key, colour) in enumerate(bars):
        values = [r.metrics[key] for r in results]
        means = [v["mean"] if isinstance(v, dict) else v for v in values]
        errors = [v["std"] if isinstance(v, dict) else 0 for v in values]
        ax.bar(x + (i - 1.5) * width, means, width, yerr=errors, label=name, color=colour)
    ax.set_xticks(x, [_wrap(r.label, 18) for r in results], fontsize=7)
    ax.set(ylim=(0, 1.45), yticks=np.linspace(0, 1, 6), ylabel="class-balanced accuracy", title="accuracy")
    ax.legend(fontsize=6, loc="upper left")  # in the headroom above 1
    ax_rcs.bar(x, [r.metrics["rcs"]["mean"] for r in results], yerr=[r.metrics["rcs"]["std"] for r in results])
    ax_rcs.axhline(0, color="grey", linewidth=1)
    ax_rcs.set_xticks(x, [_wrap(r.label, 18) for r in results], fontsize=7)
    ax_rcs.set(ylim=(-1, 1), ylabel="relative core sensitivity", title="RCS")
    _save(figure, path)


def write_model_outputs(folder: Path, result: ModelResult, summary: dict, pairs: Pairs, top_pairs: int) -> None:
    """classes.csv, features.csv, summary.json and the model's plots in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(folder / "classes.csv", class_rows(result.per_class), CLASS_COLUMNS)
    plot_core_vs_spurious(folder / "core_vs_spurious.png", result)
    if result.per_pair is not None:
        rows = pair_rows(pairs, result.per_pair)
        write_csv(folder / "features.csv", rows, FEATURE_CSV_COLUMNS)
        plot_feature_drops(folder / "feature_drops.png", rows, result.label, top_pairs)
        summary["metrics"]["single_feature"]["most_harmful"] = rows[:top_pairs]
    write_json(folder / "summary.json", summary)


def write_comparison(folder: Path, results: list[ModelResult], heads: dict | None = None) -> None:
    """comparison.csv and .png, then the marker, last, that makes `folder` a complete results folder `evaluate` may
    replace. `heads`: the zero-shot head of each CLIP model's label (`zeroshot.zero_shot`'s info), named in the
    table and the marker."""
    heads = heads or {}
    folder.mkdir(parents=True, exist_ok=True)
    rows = [table_row(r, heads.get(r.label)) for r in results]
    write_csv(folder / "comparison.csv", rows, list(rows[0]))
    plot_comparison(folder / "comparison.png", results)
    write_json(folder / EVALUATE_INFO, {"package": PACKAGE_NAME, "package_version": __version__,
                                        "models": [r.label for r in results],
                                        "zero_shot_heads": {label: {k: head[k] for k in ("file", "url", "sha256")}
                                                            for label, head in heads.items()}})


def earlier_models(folder: Path, labels: list[str]) -> list[str]:
    """The models an earlier evaluate run into `folder` listed (its marker) that are not among `labels`: the new
    results folder replaces theirs."""
    try:
        earlier = json.loads((folder / EVALUATE_INFO).read_text(encoding="utf-8")).get("models", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [label for label in earlier if isinstance(label, str) and label not in labels]


def table_row(result: ModelResult, head: dict | None = None) -> dict:
    m = result.metrics
    return {"model": result.label, "clean_acc_core_images": m["clean_acc_core_images"],
            "spurious_acc": m["spurious_acc"]["mean"], "spurious_acc_std": m["spurious_acc"]["std"],
            "clean_acc_spurious_images": m["clean_acc_spurious_images"], "core_acc": m["core_acc"]["mean"],
            "core_acc_std": m["core_acc"]["std"], "rcs": m["rcs"]["mean"], "rcs_std": m["rcs"]["std"],
            "images_per_second": result.throughput["images_per_second"],
            "zero_shot_head": head["name"] if head else ""}


def format_table(results: list[ModelResult], heads: dict | None = None) -> str:
    """The comparison, then one line per zero-shot model naming its head (file and sha256)."""
    def pm(mean, std):
        return "n/a" if mean is None or np.isnan(mean) else f"{mean:.3f} ± {std:.3f}"

    def num(value):
        return "n/a" if value is None or np.isnan(value) else f"{value:.3f}"

    header = ["model", "clean (core imgs)", "spurious acc", "clean (spur. imgs)", "core acc", "RCS", "img/s"]
    lines = [[r["model"], num(r["clean_acc_core_images"]), pm(r["spurious_acc"], r["spurious_acc_std"]),
              num(r["clean_acc_spurious_images"]), pm(r["core_acc"], r["core_acc_std"]), pm(r["rcs"], r["rcs_std"]),
              f"{r['images_per_second']:.1f}"] for r in map(table_row, results)]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    notes = [f"{label}: zero-shot, {head['formula']}, head {head['name']} (sha256 {head['sha256']})"
             for label, head in (heads or {}).items()]
    table = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in [header, *lines]]
    return "\n".join(table + notes)


def format_top_pairs(result: ModelResult, pairs: Pairs, top: int) -> str:
    if result.per_pair is None:
        return ""
    rows = pair_rows(pairs, result.per_pair)[:top]
    lines = [f"  drop {r['drop']:+.3f} ± {r['drop_std']:.3f}  {r['kind']:<8}  class {r['class']} "
             f"({r['class_name'][:30]}), feature {r['feature_index']}, {r['images']} images" for r in rows]
    return f"{result.label}: noise on one feature that hurts most\n" + "\n".join(lines)


