"""Evaluation as a job of the engine (`core.job.Job`: the claim of `--out`, the lock, the staging folder and the
swap are the base's) and as a library call: `evaluate(EvaluateConfig(dataset=..., model=["resnet50.a1_in1k"]))`
decodes the dataset once, evaluates each model (core / spurious accuracy, RCS, the single-feature test) and writes
its results folder; returns each model's `ModelResult`."""

import logging
import platform
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import timm
import torch

from ..core.job import Job
from ..core.model import pick_device
from ..core.stages import StageTimer, default_workers
from ..core.targets import resolve
from ..version import __version__
from .generalized import generalization_limits, keep_generalized
from .models import check_model_name, load_classifier
from .options import DEFAULT_HEAD, EvalSettings, EvaluateConfig, EvaluationError
from .outputs import earlier_models, format_table, format_top_pairs, write_comparison, write_model_outputs
from .rows import load_eval_data
from .runner import evaluate_model, place

__all__ = ["EvaluateJob", "evaluate"]

log = logging.getLogger(__name__)


@dataclass
class ModelSpec:
    name: str
    checkpoint: str | None
    zero_shot_head: str | None  # None: a CLIP tower's published head, or a plain classifier
    label: str


def model_specs(models: list[str], checkpoints: list[str] | None,
                heads: list[str] | None = None) -> list[ModelSpec]:
    """One spec per model, checked before the dataset is decoded."""
    checkpoints, heads = per_model(checkpoints, models, "--checkpoint"), per_model(heads, models, "--zero-shot-head")
    specs, labels = [], set()
    for name, checkpoint, head in zip(models, checkpoints, heads):
        check_model_name(name)
        head = None if head == DEFAULT_HEAD else head
        for option, path in (("--checkpoint", checkpoint), ("--zero-shot-head", head)):
            if path is not None and not Path(path).is_file():
                raise EvaluationError(f"{option} {path}: no such file")
        label = re.sub(r"[^\w.+-]+", "_", "-".join([name] + [Path(p).stem for p in (checkpoint, head) if p]))
        while label in labels:
            label += "_"
        labels.add(label)
        specs.append(ModelSpec(name, checkpoint, head, label))
    return specs


def per_model(values: list[str] | None, models: list[str], option: str) -> list:
    if not values:
        return [None] * len(models)
    if len(values) != len(models):
        extra = f" ({DEFAULT_HEAD!r} for a model that keeps its default)" if option == "--zero-shot-head" else ""
        raise EvaluationError(f"{len(values)} {option} for {len(models)} --model: give one per model (in the same "
                              f"order){extra} or none")
    return list(values)


class EvaluateJob(Job):
    """A results folder: a rerun replaces its own earlier results, once its own are complete."""

    kind = "results"


    def check(self) -> None:
        """Before torch and timm load anything: the models, then "no such folder" for the dataset and the copy."""
        self.specs = model_specs(self.config.model, self.config.checkpoint, self.config.zero_shot_head)
        resolve(self.config.dataset, "--dataset")
        if self.config.imagenet:
            resolve(self.config.imagenet, "--imagenet")

    def write(self, staging: Path) -> tuple[list, dict, object]:
        results, heads, data = evaluate_into(staging, self.config, self.specs)
        dropped = earlier_models(self.out, [r.label for r in results])
        if dropped:
            log.info("%s: removed the earlier results of %s (this run evaluates %s; the comparison lists these only)",
                     self.out, ", ".join(dropped), ", ".join(r.label for r in results))
        return results, heads, data


def evaluate(config: EvaluateConfig) -> list:
    """Every model of `config` on its dataset; writes `<out>/<label>/` per model and the comparison in `<out>`.
    An interrupted or failed run leaves `--out` as it was, and an earlier results folder stays whole until the new one
    replaces it; returns each model's result, after printing the comparison."""
    results, heads, data = EvaluateJob(config).run()
    report(Path(config.out), results, heads, data, config)
    return results


def report(out: Path, results: list, heads: dict, data, config: EvaluateConfig) -> None:
    """The comparison table and each model's most harmful features, on stdout."""
    top = min(5, config.top_pairs)
    print("\n" + format_table(results, heads))
    for result in results:
        print("\n" + format_top_pairs(result, data.pairs, top))
    if config.generalized_only:
        used = data.source["generalized_only"]
        print(f"\n--generalized-only: {used['feature_masks_used']} of {used['feature_masks']} feature masks used "
              f"(up to each pair's generalizes_to_rank); {used['pairs_not_studied']} of {used['pairs']} pairs not "
              "studied, left out")
    print(f"\nResults in {out}/ ({', '.join(r.label for r in results)}; comparison.csv, comparison.png)")


def evaluate_into(folder: Path, config: EvaluateConfig, specs: list[ModelSpec]) -> tuple[list, dict, object]:
    """Load every model, decode the dataset once, evaluate each; the results folder's files in `folder`. Returns
    the results, the zero-shot heads by label and the decoded data."""
    settings = config.settings
    limits = generalization_limits(config.dataset) if config.generalized_only else None
    timer = StageTimer()
    classifiers = []
    for spec in specs:  # every model first: a missing download fails before the long decode
        with timer(f"load {spec.label}"):
            classifiers.append(load_classifier(spec.name, spec.checkpoint, spec.label, spec.zero_shot_head,
                                               config.cache_dir))
    heads = {c.label: c.info["zero_shot_head"] for c in classifiers if "zero_shot_head" in c.info}
    with timer("decode dataset"):
        data = load_eval_data(config.dataset, config.split, config.imagenet, config.imagenet_type,
                              default_workers() if config.workers is None else config.workers,
                              settings.single_feature or config.generalized_only)
        if config.generalized_only:
            data.source["generalized_only"] = keep_generalized(data, limits)
    data = place(data, pick_device(settings.device))
    results = []
    while classifiers:
        classifier = classifiers.pop(0)  # dropped once evaluated: memory for one model at a time from here on
        label = classifier.label
        with timer(f"evaluate {label}"):
            result = evaluate_model(data, classifier.module, classifier.data_config, settings, label)
        summary = make_summary(result, classifier, settings, data, config, timer)
        write_model_outputs(folder / label, result, summary, data.pairs, settings.top_pairs)
        results.append(result)
        del classifier
    write_comparison(folder, results, heads)
    return results, heads, data


def make_summary(result, classifier, settings: EvalSettings, data, config: EvaluateConfig, timer) -> dict:
    device = pick_device(settings.device)
    return {
        "model": {"label": result.label, **classifier.info, "data_config": classifier.data_config},
        "settings": {
            "noise_std": settings.noise_std, "draws": settings.draws, "seed": settings.seed,
            "batch_size": settings.batch_size, "device": str(device), "amp": settings.amp and device.type == "cuda",
            "single_feature": settings.single_feature, "arguments": asdict(config),
            "noise": "x' = clamp(x + mask * sigma * z, 0, 1), z ~ N(0, 1) seeded per (seed, draw, image_id)",
            "std": "sample standard deviation over draws (ddof 1; 0 for one draw)",
            "package_version": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "timm": timm.__version__,
        },
        "dataset": data.source,
        "metrics": result.metrics,
        "throughput": result.throughput,
        "stage_seconds": timer.report(),
    }
