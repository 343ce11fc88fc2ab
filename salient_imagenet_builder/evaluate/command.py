"""`salient-imagenet evaluate`: checks the arguments, decodes the dataset once, evaluates each model, writes."""

import platform
import re
from pathlib import Path

from ..constants import EVALUATE_INFO
from .settings import EvalSettings, EvaluationError


def model_specs(models: list[str], checkpoints: list[str] | None) -> list[tuple[str, str | None, str]]:
    """(name, checkpoint, label) per model, checked before the dataset is decoded."""
    checkpoints = checkpoints or [None] * len(models)
    if len(checkpoints) != len(models):
        raise EvaluationError(f"{len(checkpoints)} --checkpoint for {len(models)} --model: give one per model "
                              "(in the same order) or none")
    from .models import check_model_name

    specs, labels = [], set()
    for name, checkpoint in zip(models, checkpoints):
        check_model_name(name)
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise EvaluationError(f"--checkpoint {checkpoint}: no such file")
        label = re.sub(r"[^\w.+-]+", "_", name if checkpoint is None else f"{name}-{Path(checkpoint).stem}")
        while label in labels:
            label += "_"
        labels.add(label)
        specs.append((name, checkpoint, label))
    return specs


def settings_from_args(args) -> EvalSettings:
    return EvalSettings(noise_std=args.noise_std, draws=args.draws, seed=args.seed, batch_size=args.batch_size,
                        device=args.device, amp=not args.no_amp, single_feature=not args.no_single_feature,
                        top_pairs=args.top_pairs)


def run(args) -> int:
    """Known failures are `UserError`s: `cli.dispatch` turns them into one line and the exit code."""
    from ..targets import resolve

    check_results_out(Path(args.out))
    resolve(args.dataset, "--dataset")  # "no such folder" at once, before torch and timm are imported
    if args.imagenet:
        resolve(args.imagenet, "--imagenet")
    return _run(args)


def check_results_out(out: Path) -> None:
    """--out is a results folder: new, empty, or one an earlier `evaluate` wrote (its evaluate_info.json), whose
    files a rerun replaces. Never a file, `.`, home or an ancestor of the current folder, never anyone else's folder."""
    from ..build.output import output_kind, protected_reason

    name = f"--out {out}"
    if out.exists() and not out.is_dir():
        raise EvaluationError(f"{name}: is a file, not a folder; choose a results folder, e.g. --out results")
    reason = protected_reason(out)
    if reason:
        raise EvaluationError(f"{name}: {reason}; choose a results folder of its own, e.g. --out results")
    if not out.exists() or not any(out.iterdir()):
        return
    if output_kind(out) != "results":
        raise EvaluationError(f"{name}: exists and is not a results folder of this tool (no {EVALUATE_INFO}); "
                              "evaluate writes only into a new or empty folder or its own earlier results. Choose "
                              "another --out")


def _run(args) -> int:
    from ..model import pick_device
    from ..stages import StageTimer, default_workers
    from .models import load_classifier
    from .outputs import format_table, format_top_pairs, write_comparison, write_model_outputs
    from .rows import load_eval_data
    from .runner import evaluate_model, place

    specs = model_specs(args.model, args.checkpoint)
    settings = settings_from_args(args)
    timer, out = StageTimer(), Path(args.out)
    classifiers = []
    for name, checkpoint, label in specs:  # every model first: a missing download fails before the long decode
        with timer(f"load {label}"):
            classifiers.append(load_classifier(name, checkpoint, label))
    with timer("decode dataset"):
        data = load_eval_data(args.dataset, args.split, args.imagenet, args.imagenet_type,
                              default_workers() if args.workers is None else args.workers, settings.single_feature)
    data = place(data, pick_device(settings.device))
    results = []
    while classifiers:
        classifier = classifiers.pop(0)  # dropped once evaluated: memory for one model at a time from here on
        label = classifier.label
        with timer(f"evaluate {label}"):
            result = evaluate_model(data, classifier.module, classifier.data_config, settings, label)
        summary = make_summary(result, classifier, settings, data, args, timer)
        write_model_outputs(out / label, result, summary, data.pairs, settings.top_pairs)
        results.append(result)
        del classifier
    write_comparison(out, results)
    print("\n" + format_table(results))
    for result in results:
        print("\n" + format_top_pairs(result, data.pairs, min(5, settings.top_pairs)))
    print(f"\nResults in {out}/ ({', '.join(r.label for r in results)}; comparison.csv, comparison.png)")
    return 0


def make_summary(result, classifier, settings: EvalSettings, data, args, timer) -> dict:
    import timm
    import torch

    from .. import __version__
    from ..model import pick_device

    device = pick_device(settings.device)
    return {
        "model": {"label": result.label, **classifier.info, "data_config": classifier.data_config},
        "settings": {
            "noise_std": settings.noise_std, "draws": settings.draws, "seed": settings.seed,
            "batch_size": settings.batch_size, "device": str(device), "amp": settings.amp and device.type == "cuda",
            "single_feature": settings.single_feature, "arguments": vars(args),
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
