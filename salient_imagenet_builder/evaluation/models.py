"""Stage 4: classifiers (any timm model, optional local weights), each with its own timm preprocessing of the
noisy 224 view; batched prediction under `torch.inference_mode`, CUDA and AMP when present."""

import difflib
from dataclasses import dataclass

import numpy as np
import timm
import torch
import torch.nn.functional as F
from huggingface_hub import constants as hf_constants
from torch import nn

from ..core.constants import DEFAULT_CACHE_DIR, NUM_CLASSES
from ..core.errors import NetworkError
from ..core.model import extract_state_dict, load_checkpoint, load_weights
from ..core.output import sha256_file
from ..core.targets import hub_unreachable
from .noise import noisy_batch
from .rows import EvalData
from .settings import EvaluationError, log
from .zeroshot import is_clip_tower, load_head, zero_shot

INTERPOLATION = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest-exact"}

class Preprocess(nn.Module):
    """A model's own preprocessing of the [0, 1] 224 view: resize to its input size with its interpolation, then
    normalise with its mean / std (from `timm.data.resolve_data_config`)."""

    def __init__(self, data_config: dict):
        super().__init__()
        self.size = tuple(data_config["input_size"][-2:])
        interpolation = data_config.get("interpolation", "bilinear")
        self.mode = INTERPOLATION.get(interpolation, "bicubic")
        if interpolation not in INTERPOLATION:
            log.warning("interpolation %r not available on tensors; using bicubic", interpolation)
        self.register_buffer("mean", torch.tensor(data_config["mean"], dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(data_config["std"], dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            smooth = self.mode in ("bilinear", "bicubic")
            x = F.interpolate(x, size=self.size, mode=self.mode, antialias=smooth,
                              align_corners=False if smooth else None).clamp_(0, 1)
        return (x - self.mean) / self.std


@dataclass
class Classifier:
    label: str  # names the output folder and the table row
    module: nn.Module
    data_config: dict
    info: dict  # name, checkpoint, sha256


def check_model_name(name: str) -> None:
    if timm.is_model(name):
        return
    candidates = timm.list_models(pretrained=True) if "." in name else timm.list_models()
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    raise EvaluationError(f"--model {name!r}: timm does not know this model"
                          + (f"; close matches: {', '.join(close)}" if close else "")
                          + " (timm.list_models() lists them all)")


def checkpoint_normalization(ckpt) -> dict:
    """mean / std stored inside a robust-library checkpoint (its normaliser), if any."""
    state = ckpt.get("model", ckpt.get("state_dict", ckpt)) if isinstance(ckpt, dict) else {}
    keys = {"mean": "module.normalizer.new_mean", "std": "module.normalizer.new_std"}
    if not isinstance(state, dict) or not all(k in state for k in keys.values()):
        return {}
    return {name: tuple(state[key].flatten().float().tolist()) for name, key in keys.items()}


def load_classifier(name: str, checkpoint: str | None = None, label: str | None = None,
                    zero_shot_head: str | None = None, cache_dir: str = DEFAULT_CACHE_DIR) -> Classifier:
    """A timm model: its pretrained weights (fetched by timm), or local weights loaded like the builder loads them
    (no pickled code runs; robust-library layout included). Preprocessing from timm's data config. A CLIP image
    tower, or any model given a `zero_shot_head` (.npy, (D, 1000)), becomes a zero-shot classifier (`zeroshot`):
    by default with the authors' published head, checked before the tower's weights are fetched."""
    check_model_name(name)
    head = None
    if zero_shot_head is not None or is_clip_tower(name):
        head = load_head(name, zero_shot_head, cache_dir)
    net = create(name, checkpoint)
    data_config = dict(timm.data.resolve_data_config({}, model=net))
    info = {"name": name, "checkpoint": checkpoint, "checkpoint_sha256": None}
    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint)
        load_weights(net, extract_state_dict(ckpt, checkpoint), checkpoint, name, "the --model at its position")
        data_config.update(checkpoint_normalization(ckpt))
        info["checkpoint_sha256"] = sha256_file(checkpoint)
    if head is not None:
        net, info["zero_shot_head"] = zero_shot(name, net, *head)
    elif net.num_classes != NUM_CLASSES:
        raise EvaluationError(f"--model {name!r} predicts {net.num_classes} classes, not the {NUM_CLASSES} "
                              "ImageNet classes (an embedding model? give it --zero-shot-head PATH.npy)")
    return Classifier(label or name, net.eval(), data_config, info)


def create(name: str, checkpoint: str | None) -> nn.Module:
    """timm's model, with its pretrained weights unless local ones follow; offline, one line saying what to pass."""
    try:
        net = timm.create_model(name, pretrained=checkpoint is None)
    except Exception as e:
        reason = hub_unreachable() if checkpoint is None else None
        if reason is not None:  # offline: say what to pass instead, not huggingface_hub's paragraph
            raise NetworkError(f"--model {name!r}: cannot download its pretrained weights: {reason}, and they are not "
                               f"in the huggingface_hub cache ({hf_constants.HF_HUB_CACHE}). Pass --checkpoint PATH "
                               "(local weights for it), or run once where there is network") from None
        first_line = str(e).splitlines()[0] if str(e) else ""
        raise EvaluationError(f"--model {name!r}: cannot create it{'' if checkpoint else ' with pretrained weights'}"
                              f": {type(e).__name__}: {first_line}") from None
    return net


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    model = model.eval().to(device)
    return model.to(memory_format=torch.channels_last) if device.type == "cuda" else model


def predict(model: nn.Module, preprocess: Preprocess, data: EvalData, rows: np.ndarray, masks: np.ndarray, *,
            noise_std: float, seed: int, draw: int, batch_size: int, device: torch.device, amp: bool,
            bar=None) -> np.ndarray:
    """argmax predictions for each (row, mask) job; mask -1 = no noise. Predictions stay on the device until the
    end, so a GPU never waits for the host between batches."""
    predictions = []
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            stop = min(start + batch_size, len(rows))
            x = preprocess(noisy_batch(data, rows[start:stop], masks[start:stop], noise_std, seed, draw, device))
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
                predictions.append(model(x).argmax(1))
            if bar is not None:
                bar.update(stop - start)
    return torch.cat(predictions).cpu().numpy() if predictions else np.zeros(0, dtype=np.int64)


