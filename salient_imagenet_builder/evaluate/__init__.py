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
`runner.evaluate_model` wires 2-5 for one model; `command` is the handler of `salient-imagenet evaluate`.
"""

from .._lazy import lazy_exports

__getattr__ = lazy_exports(__name__, {
    'CLASS_COLUMNS': 'outputs',
    'Classifier': 'models',
    'EvalData': 'rows',
    'EvalSettings': 'settings',
    'EvaluationError': 'settings',
    'INTERPOLATION': 'models',
    'Jobs': 'jobs',
    'ModelResult': 'runner',
    'PAIR_COLUMNS': 'outputs',
    'NOISE_ON_CORE': 'settings',
    'NOISE_ON_FEATURE': 'settings',
    'NOISE_ON_SPURIOUS': 'settings',
    'Pairs': 'rows',
    'Preprocess': 'models',
    'REQUIRED_COLUMNS': 'rows',
    'ROW_BATCH': 'rows',
    'add_noise': 'noise',
    'allocate': 'rows',
    'balanced': 'metrics',
    'check_columns': 'rows',
    'check_model_name': 'models',
    'checkpoint_normalization': 'models',
    'class_metrics': 'metrics',
    'class_rows': 'outputs',
    'dataset_provenance': 'rows',
    'decode_rows': 'rows',
    'evaluate_model': 'runner',
    'format_table': 'outputs',
    'format_top_pairs': 'outputs',
    'group_mean': 'metrics',
    'layout': 'rows',
    'load_classifier': 'models',
    'load_eval_data': 'rows',
    'make_summary': 'command',
    'mask_uint8': 'rows',
    'mean_std': 'metrics',
    'model_specs': 'command',
    'noisy_batch': 'noise',
    'open_dataset': 'rows',
    'pair_metrics': 'metrics',
    'pair_rows': 'outputs',
    'place': 'runner',
    'plan_jobs': 'jobs',
    'plot_comparison': 'outputs',
    'plot_core_vs_spurious': 'outputs',
    'plot_feature_drops': 'outputs',
    'predict': 'models',
    'prepare_model': 'models',
    'read_imagenet': 'rows',
    'reduce_result': 'runner',
    'relative_core_sensitivity': 'metrics',
    'row_seed': 'noise',
    'run': 'command',
    'settings_from_args': 'command',
    'summarize_classes': 'metrics',
    'summarize_pairs': 'metrics',
    'table_row': 'outputs',
    'unit_noise': 'noise',
    'view_uint8': 'rows',
    'write_comparison': 'outputs',
    'write_csv': 'outputs',
    'write_json': 'outputs',
    'write_model_outputs': 'outputs',
})
