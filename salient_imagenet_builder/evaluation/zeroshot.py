"""CLIP zero-shot classifiers, evaluated as the authors do: the image tower's embedding, L2-normalised, times a
(D, 1000) head of class text embeddings (columns in sorted-wnid order), times a fixed logit scale of 100; CLIP's
mean / std on the same 224 view as every model. The head is the authors' published one for OpenAI's ViT-B/16 and
B/32 (a pinned download), or any `--zero-shot-head PATH.npy` (another tower, your own prompts)."""

import os
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..core.constants import CLIP_MEAN, NUM_CLASSES, ZERO_SHOT_HEADS, ZERO_SHOT_LOGIT_SCALE
from ..core.download import fetch_pinned
from ..core.output import sha256_file
from .settings import EvaluationError

DEFAULT_HEAD = "default"  # a --zero-shot-head entry: the model's own (a CLIP tower's published head, else none)
FORMULA = f"logits = {ZERO_SHOT_LOGIT_SCALE:g} * normalize(tower(x)) @ head"


class ZeroShotClassifier(nn.Module):
    """tower -> L2 normalise -> @ head (D, 1000) * 100: logits over the 1000 ImageNet classes."""

    def __init__(self, tower: nn.Module, head: np.ndarray):
        super().__init__()
        self.tower = tower
        self.register_buffer("head", torch.from_numpy(np.asarray(head, dtype=np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedding = F.normalize(self.tower(x).float(), dim=-1)  # float32: a float16 norm could overflow
        return ZERO_SHOT_LOGIT_SCALE * embedding @ self.head


def is_clip_tower(name: str) -> bool:
    """A CLIP image tower (by its timm pretrained config): CLIP's normalisation and an embedding head instead of the
    1000 ImageNet classes (a CLIP model fine-tuned on ImageNet is an ordinary classifier)."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or cfg.num_classes in (None, NUM_CLASSES):
        return False
    return tuple(cfg.mean) == CLIP_MEAN or "_clip" in cfg.architecture


def published_head(name: str) -> dict | None:
    """The authors' head for this tower (url, sha256), if they published one."""
    cfg = timm.models.get_pretrained_cfg(name)
    return None if cfg is None else ZERO_SHOT_HEADS.get(f"{cfg.architecture}.{cfg.tag}")


def head_path(name: str, head: str | None, cache_dir: str | os.PathLike) -> tuple[Path, str | None]:
    """(the head's file, the URL it came from): --zero-shot-head as given, else the published head (downloaded
    once into cache_dir, pinned by sha256)."""
    if head is not None:
        path = Path(head).expanduser()
        if not path.is_file():
            raise EvaluationError(f"--zero-shot-head {head}: no such file")
        return path, None
    published = published_head(name)
    if published is None:
        size = timm.models.get_pretrained_cfg(name).num_classes
        raise EvaluationError(f"--model {name!r} is a CLIP image tower ({size}-d embeddings) without a published "
                              f"zero-shot head (the authors' are for {', '.join(ZERO_SHOT_HEADS)}): pass "
                              "--zero-shot-head PATH.npy, a (D, 1000) array of class text embeddings in sorted-wnid "
                              "order")
    path = fetch_pinned(published["url"], cache_dir, published["sha256"], what=f"the zero-shot head for {name}",
                        option="--zero-shot-head PATH", error=EvaluationError)
    return path, published["url"]


def read_head(path: Path) -> np.ndarray:
    """A (D, 1000) float array from a .npy file, read without unpickling anything."""
    try:
        head = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:  # not a .npy (or a pickled object array, refused)
        raise EvaluationError(f"--zero-shot-head {path}: not a .npy array ({str(e).splitlines()[0]})") from None
    if not isinstance(head, np.ndarray):  # a .npz archive
        raise EvaluationError(f"--zero-shot-head {path}: a .npz archive, not a .npy array of shape (D, 1000)")
    if head.ndim != 2 or head.shape[1] != NUM_CLASSES or head.shape[0] < 1:
        raise EvaluationError(f"--zero-shot-head {path}: shape {head.shape}, expected (D, {NUM_CLASSES}): one column "
                              "per ImageNet class (sorted wnids), D = the image tower's embedding size")
    if not np.issubdtype(head.dtype, np.floating) or not np.isfinite(head).all():
        raise EvaluationError(f"--zero-shot-head {path}: dtype {head.dtype}; expected finite floats")
    return head


def zero_shot(name: str, tower: nn.Module, path: Path, head: np.ndarray, url: str | None) -> tuple[nn.Module, dict]:
    """The classifier around `tower`, and what the results record about its head."""
    if head.shape[0] != tower.num_classes:
        raise EvaluationError(f"--zero-shot-head {path}: {head.shape[0]} rows, but {name}'s image tower gives "
                              f"{tower.num_classes}-d embeddings: the head must be ({tower.num_classes}, "
                              f"{NUM_CLASSES})")
    info = {"file": str(path), "name": path.name, "url": url, "sha256": sha256_file(path),
            "shape": list(head.shape), "dtype": str(head.dtype), "logit_scale": ZERO_SHOT_LOGIT_SCALE,
            "formula": FORMULA, "source": "published (the authors' repository)" if url else "--zero-shot-head"}
    return ZeroShotClassifier(tower, head).eval(), info
