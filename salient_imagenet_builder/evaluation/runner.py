"""The evaluation of one model: stages 2-5 wired together."""

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.model import pick_device
from ..core.stages import synchronize
from .jobs import Jobs, plan_jobs
from .metrics import class_metrics, pair_metrics, summarize_classes, summarize_pairs
from .models import Preprocess, predict, prepare_model
from .rows import EvalData
from .settings import (
    NOISE_ON_FEATURE,
    EvalSettings,
)


@dataclass
class ModelResult:
    label: str
    per_class: dict  # class_metrics
    per_pair: dict | None  # pair_metrics (None without the single-feature test)
    metrics: dict  # class-balanced summary (+ single-feature summary)
    throughput: dict
    jobs: Jobs
    clean_predictions: np.ndarray  # [N]
    noisy_predictions: np.ndarray  # [draws, len(jobs)]


def evaluate_model(data: EvalData, model: nn.Module, data_config: dict, settings: EvalSettings | None = None,
                   label: str = "model") -> ModelResult:
    """Evaluate one classifier (any nn.Module mapping normalised images to logits, plus its timm data config)."""
    settings = settings or EvalSettings()
    device = pick_device(settings.device)
    model, preprocess = prepare_model(model, device), Preprocess(data_config).to(device)
    data = place(data, device)
    jobs = plan_jobs(data, settings.single_feature)
    with tqdm(total=len(data) + settings.draws * len(jobs), unit="img", desc=f"evaluate {label}",
              disable=not settings.progress) as bar:
        run = dict(batch_size=settings.batch_size, device=device, amp=settings.amp, bar=bar, seed=settings.seed)
        start = time.perf_counter()
        clean = predict(model, preprocess, data, np.arange(len(data)), np.full(len(data), -1), noise_std=0.0,
                        draw=0, **run)
        noisy = np.stack([predict(model, preprocess, data, jobs.row, jobs.mask, noise_std=settings.noise_std,
                                  draw=d, **run) for d in range(settings.draws)]).reshape(settings.draws, len(jobs))
        synchronize(device)
        seconds = time.perf_counter() - start
    return reduce_result(label, data, jobs, clean, noisy, seconds)


def reduce_result(label: str, data: EvalData, jobs: Jobs, clean: np.ndarray, noisy: np.ndarray,
                  seconds: float) -> ModelResult:
    clean_correct, noisy_correct = clean == data.labels, noisy == data.labels[jobs.row][None]
    per_class = class_metrics(data, jobs, clean_correct, noisy_correct)
    metrics = {"images": len(data), **summarize_classes(per_class)}
    per_pair = None
    if (jobs.condition == NOISE_ON_FEATURE).any():
        per_pair = pair_metrics(data, jobs, clean_correct, noisy_correct)
        metrics["single_feature"] = summarize_pairs(data.pairs, per_pair)
    evaluated = int(clean.size + noisy.size)
    throughput = {"images_evaluated": evaluated, "draws": len(noisy), "seconds": round(seconds, 3),
                  "images_per_second": round(evaluated / max(seconds, 1e-9), 2)}
    return ModelResult(label, per_class, per_pair, metrics, throughput, jobs, clean, noisy)


def place(data: EvalData, device: torch.device) -> EvalData:
    """Keep the decoded rows on the GPU when they fit comfortably (no copy per batch); else batches are copied."""
    if device.type != "cuda" or data.images.device.type == "cuda":
        return data
    free, _ = torch.cuda.mem_get_info(device)
    return data.to(device) if data.images.nbytes + data.masks.nbytes < 0.4 * free else data


