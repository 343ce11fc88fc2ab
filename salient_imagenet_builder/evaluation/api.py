"""Evaluation as a library call: `evaluate(EvaluateConfig(dataset=..., model=["resnet50.a1_in1k"]))` decodes the
dataset once, evaluates each model (core / spurious accuracy, RCS, the single-feature test) and writes its results
folder; returns each model's `ModelResult`."""

import logging
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import timm
import torch

from .. import __version__
from ..core.constants import (
    DEFAULT_CACHE_DIR,
    DEFAULT_DRAWS,
    DEFAULT_EVAL_BATCH_SIZE,
    DEFAULT_NOISE_STD,
    DEFAULT_RESULTS_DIR,
    DEFAULT_SEED,
    DEFAULT_TOP_PAIRS,
    WORK_DIR,
)
from ..core.model import pick_device
from ..core.output import check_out, discard_staging, move_into_place, prepare_output, staging_folder
from ..core.stages import StageTimer, default_workers
from ..core.targets import resolve
from ..core.units import WorkLock
from .generalized import generalization_limits, keep_generalized
from .models import check_model_name, load_classifier
from .outputs import earlier_models, format_table, format_top_pairs, write_comparison, write_model_outputs
from .rows import load_eval_data
from .runner import evaluate_model, place
from .settings import EvalSettings, EvaluationError
from .zeroshot import DEFAULT_HEAD

__all__ = ["EvaluateConfig", "evaluate"]

log = logging.getLogger(__name__)


@dataclass
class EvaluateConfig:
    """The options of `salient-imagenet evaluate`, as fields (`model`, `checkpoint` and `zero_shot_head`: one entry
    per model; a `zero_shot_head` entry "default" keeps the published head of a CLIP tower, and none for others)."""

    dataset: str
    model: list[str] = field(default_factory=list)
    checkpoint: list[str] | None = None
    zero_shot_head: list[str] | None = None
    cache_dir: str = DEFAULT_CACHE_DIR  # where the published zero-shot heads are downloaded
    split: str = "train"
    imagenet: str | None = None
    imagenet_type: str | None = None
    noise_std: float = DEFAULT_NOISE_STD
    draws: int = DEFAULT_DRAWS
    seed: int = DEFAULT_SEED
    batch_size: int = DEFAULT_EVAL_BATCH_SIZE
    device: str | None = None
    amp: bool = True
    single_feature: bool = True
    top_pairs: int = DEFAULT_TOP_PAIRS
    workers: int | None = None
    out: str = DEFAULT_RESULTS_DIR
    generalized_only: bool = False  # masks only up to each pair's generalizes_to_rank (see `generalized`)

    def __post_init__(self):
        if isinstance(self.model, str):
            self.model = [self.model]
        if isinstance(self.checkpoint, str):
            self.checkpoint = [self.checkpoint]
        if isinstance(self.zero_shot_head, str):
            self.zero_shot_head = [self.zero_shot_head]
        if not self.model:
            raise EvaluationError("no model to evaluate: give at least one --model")

    @property
    def settings(self) -> EvalSettings:
        return EvalSettings(noise_std=self.noise_std, draws=self.draws, seed=self.seed, batch_size=self.batch_size,
                            device=self.device, amp=self.amp, single_feature=self.single_feature,
                            top_pairs=self.top_pairs)


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


def check_inputs(config: EvaluateConfig) -> None:
    """Before torch and timm are imported: --out, then "no such folder" for the dataset and the ImageNet copy."""
    check_out(Path(config.out), overwrite=True, kind="results")  # a rerun replaces its own earlier results
    resolve(config.dataset, "--dataset")
    if config.imagenet:
        resolve(config.imagenet, "--imagenet")


def evaluate(config: EvaluateConfig) -> list:
    """Every model of `config` on its dataset; writes `<out>/<label>/` per model and the comparison in `<out>`.
    Written in `.<out>.partial` and swapped into place once every model is done (`core.output`): an interrupted or
    failed run leaves `--out` as it was, and an earlier results folder stays whole until the new one replaces it."""
    check_inputs(config)
    specs = model_specs(config.model, config.checkpoint, config.zero_shot_head)
    out = Path(config.out)
    staging = staging_folder(out)
    lock = WorkLock(staging / WORK_DIR, f"--out {out}")  # one run at a time writes `out`
    try:
        prepare_output(out, overwrite=True, kind="results")  # a rerun replaces its own earlier results
        results, heads, data = evaluate_into(staging, config, specs)
        dropped = earlier_models(out, [r.label for r in results])
        move_into_place(staging, out)  # not after a Ctrl-C that some library swallowed: it raises then
    except BaseException:
        discard_staging(staging)
        raise
    finally:
        lock.release()
    if dropped:
        log.info("%s: removed the earlier results of %s (this run evaluates %s; the comparison lists these only)",
                 out, ", ".join(dropped), ", ".join(r.label for r in results))
    report(out, results, heads, data, config)
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
