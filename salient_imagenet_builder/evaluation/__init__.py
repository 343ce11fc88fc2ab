"""Evaluate classifiers on Salient ImageNet: core accuracy, spurious accuracy, relative core sensitivity (RCS) and a
single-feature sensitivity test (Singla & Feizi, ICLR 2022; RCS from "Core Risk Minimization using Salient ImageNet").

For class c (the rows' `group`): *spurious accuracy* = accuracy on the rows carrying a core feature of c, with noise
inside their `core_mask`; *core accuracy* = accuracy on the rows carrying a spurious feature of c, with noise inside
their `spurious_mask`; *clean accuracy* = the same rows without noise. Noise: x' = clamp(x + mask * N(0, sigma^2), 0, 1)
on the [0, 1] 224 view. Class-balanced = the mean over the classes that have such rows.

The stages, one module each:
1. `rows.load_eval_data`: the rows decoded once per run into uint8 tensors (224 views and every mask the run needs).
2. `jobs.plan_jobs`: which (row, mask) pairs get noise: core masks, spurious masks, and one job per (row, feature).
3. `noise.unit_noise` / `noise.add_noise`: z ~ N(0, 1) drawn per (seed, draw, image_id) with its own generator,
   so results depend neither on batch size nor on model order; an image's z is shared by all its masks within a
   draw (common random numbers: differences between conditions come from the masks, not from different noise).
4. `models.Preprocess` + `models.predict`: each model's own timm preprocessing on the noisy view; batched,
   `torch.inference_mode`, CUDA and AMP when present.
5. `metrics.class_metrics` / `metrics.pair_metrics`: per-class and class-balanced accuracies per draw, then mean
   and std over draws.
6. `outputs`: per-class CSV, per-(class, feature) CSV, summary.json, plots, the printed table.
A CLIP image tower is evaluated zero-shot (`zeroshot`): its embedding, L2-normalised, times a (D, 1000) head of class
text embeddings, times 100; the authors' published head for ViT-B/16 and B/32 (a pinned download) or any
`--zero-shot-head PATH.npy`.
`runner.evaluate_model` wires 2-5 for one model; `api.EvaluateJob` a whole run (the engine's job, `..core.job`);
`options` declares `EvalSettings` and `EvaluateConfig` (the command line's options as fields), the command and the
results folder's kind; `command` is the handler of `salient-imagenet evaluate`.
"""

from ..core.lazy import lazy_exports
from .options import EvalSettings, EvaluateConfig, EvaluationError

__all__ = ["NOISE_ON_CORE", "NOISE_ON_FEATURE", "NOISE_ON_SPURIOUS", "Classifier", "EvalData", "EvalSettings",
           "EvaluateConfig", "EvaluateJob", "EvaluationError", "ModelResult", "Preprocess", "ZeroShotClassifier",
           "add_noise", "class_metrics", "evaluate", "evaluate_model", "load_classifier", "load_eval_data",
           "pair_metrics", "relative_core_sensitivity", "unit_noise"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "EvaluateJob": ".api", "evaluate": ".api", "class_metrics": ".metrics", "pair_metrics": ".metrics",
    "relative_core_sensitivity": ".metrics", "Classifier": ".models", "Preprocess": ".models",
    "load_classifier": ".models", "add_noise": ".noise", "unit_noise": ".noise", "EvalData": ".rows",
    "load_eval_data": ".rows", "ModelResult": ".runner", "evaluate_model": ".runner", "NOISE_ON_CORE": ".settings",
    "NOISE_ON_FEATURE": ".settings", "NOISE_ON_SPURIOUS": ".settings", "ZeroShotClassifier": ".zeroshot"})
