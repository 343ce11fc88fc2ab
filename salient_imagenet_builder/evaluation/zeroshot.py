"""CLIP zero-shot classifiers, evaluated as the authors do: the image tower's embedding, L2-normalised, times a
(D, 1000) head of class text embeddings (columns in sorted-wnid order), times a fixed logit scale of 100; CLIP's
mean / std on the same 224 view as every model. The head is the authors' published one for OpenAI's ViT-B/16 and
B/32 (a pinned download), or any `--zero-shot-head PATH.npy` (another tower, your own prompts)."""

import codecs
import os
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..core.constants import NUM_CLASSES
from ..core.download import fetch_pinned
from ..core.output import sha256_file
from ..core.schema import class_names, wordnet_ids
from .options import CLIP_MEAN, DEFAULT_HEAD, ZERO_SHOT_HEADS, ZERO_SHOT_LOGIT_SCALE, EvaluationError

NPY_MAGIC, ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"
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


def load_head(name: str, head: str | None, cache_dir: str | os.PathLike) -> tuple[Path, np.ndarray, str | None]:
    """(file, array, URL) of `name`'s head (see `head_path`), checked against what the model outputs (by its timm
    config) before its weights are fetched: a 1000-class classifier before the head is even read."""
    cfg = timm.models.get_pretrained_cfg(name)
    outputs = None if cfg is None else cfg.num_classes
    if head is not None and outputs is not None:
        check_fits(name, head, outputs)
    path, url = head_path(name, head, cache_dir)
    array = read_head(path)
    if outputs is not None:
        check_fits(name, path, outputs, len(array))
    return path, array, url


def check_fits(name: str, head, outputs: int, rows: int | None = None) -> None:
    """A head turns `outputs`-d embeddings into the 1000 class logits: its rows must be `outputs`, and a model that
    already gives the 1000 logits needs none."""
    if outputs == NUM_CLASSES:
        raise EvaluationError(f"--zero-shot-head {head}: --model {name!r} already classifies the {NUM_CLASSES} "
                              "ImageNet classes (it gives 1000 logits), so it needs no zero-shot head: give "
                              f"{DEFAULT_HEAD!r} for it, or no --zero-shot-head")
    if rows is not None and rows != outputs:
        raise EvaluationError(f"--zero-shot-head {head}: {rows} rows, but {name}'s image tower gives {outputs}-d "
                              f"embeddings: the head must be ({outputs}, {NUM_CLASSES})")


def read_head(path: Path) -> np.ndarray:
    """A (D, 1000) array of finite floats from a .npy file. Its header is read first: an object array (which only
    unpickling could read), a wrong dtype or shape and a truncated file are refused before any data is loaded."""
    name = f"--zero-shot-head {path}"
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed by the with below)
    except OSError as e:
        raise EvaluationError(f"{name}: cannot read it ({e.strerror or e})") from None
    with f:
        shape, dtype = npy_header(f, name)
        check_dtype(name, dtype)
        check_shape(name, shape)
        need, have = int(np.prod(shape)) * dtype.itemsize, os.fstat(f.fileno()).st_size - f.tell()
        if have < need:
            raise EvaluationError(f"{name}: truncated: its header says shape {shape} {dtype}, {need} bytes of data, "
                                  f"but only {have} follow")
        f.seek(0)
        try:
            head = np.lib.format.read_array(f, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise EvaluationError(f"{name}: cannot read its data ({str(e).splitlines()[0]})") from None
    check_finite(name, head)
    return head


def npy_header(f, name: str) -> tuple[tuple, np.dtype]:
    """(shape, dtype) from a .npy file's header; anything else (a .npz, a text or CSV file, a damaged header) is
    one line saying what the file is."""
    start = f.read(len(NPY_MAGIC))
    if start.startswith(ZIP_MAGIC):
        raise EvaluationError(f"{name}: a .npz archive, not a .npy array of shape (D, {NUM_CLASSES}) (numpy.save "
                              "writes one)")
    if start != NPY_MAGIC:
        what = "an empty file" if not start else "a text file (a CSV?)" if is_text(start + f.read(512)) else (
            "a file without the .npy header")
        raise EvaluationError(f"{name}: not a .npy array but {what}; save the head with numpy.save(path, head), a "
                              f"(D, {NUM_CLASSES}) float array")
    f.seek(0)
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    except (OSError, ValueError, SyntaxError) as e:
        raise EvaluationError(f"{name}: not a .npy array (a damaged header: {str(e).splitlines()[0]})") from None
    return tuple(shape), dtype


def is_text(start: bytes) -> bool:
    try:
        codecs.getincrementaldecoder("utf-8")().decode(start)  # a character cut at the end is not an error
    except UnicodeDecodeError:
        return False
    return b"\0" not in start


def check_dtype(name: str, dtype: np.dtype) -> None:
    if dtype.hasobject:  # never loaded: reading Python objects means unpickling, which can run any code
        raise EvaluationError(f"{name}: an array of Python objects (dtype {dtype}), refused (reading it would "
                              "unpickle it); save the head as a float array")
    if not np.issubdtype(dtype, np.floating):
        raise EvaluationError(f"{name}: dtype {dtype}; expected floats (float16, float32 or float64): the class text "
                              "embeddings")


def check_shape(name: str, shape: tuple) -> None:
    if len(shape) == 2 and shape[1] == NUM_CLASSES and shape[0] >= 1:
        return
    what = ("empty" if 0 in shape else f"{len(shape)}-D" if len(shape) != 2 else
            "transposed? one row per class: save head.T" if shape[0] == NUM_CLASSES else "")
    raise EvaluationError(f"{name}: shape {shape}{f' ({what})' if what else ''}, expected (D, {NUM_CLASSES}): one "
                          "column per ImageNet class (sorted wnids), D = the image tower's embedding size")


def check_finite(name: str, head: np.ndarray) -> None:
    """Every value a finite float32 (what the classifier multiplies by); else where the first bad one is."""
    with np.errstate(over="ignore"):
        bad = ~np.isfinite(head.astype(np.float32))
    if not bad.any():
        return
    kinds = [kind for kind, found in (("NaN", np.isnan(head)), ("inf", np.isinf(head)),
                                      ("too large for float32", np.isfinite(head) & bad)) if found.any()]
    columns, rows = np.nonzero(bad.T)  # column by column: the first bad class, and its first bad row
    column, more, count = int(columns[0]), len(np.unique(columns)) - 1, int(bad.sum())
    others = f", and in {more} other column{'s' if more > 1 else ''}" if more else ""
    where = f"column {column} (class {wordnet_ids()[column]}, {class_names()[column].split(',')[0]})"
    raise EvaluationError(f"{name}: {count} value{' is' if count == 1 else 's are'} {' or '.join(kinds)}: in {where}, "
                          f"first at row {int(rows[0])}{others}; a head holds finite floats only")


def zero_shot(name: str, tower: nn.Module, path: Path, head: np.ndarray, url: str | None) -> tuple[nn.Module, dict]:
    """The classifier around `tower`, and what the results record about its head."""
    check_fits(name, path, tower.num_classes, len(head))
    info = {"file": str(path), "name": path.name, "url": url, "sha256": sha256_file(path),
            "shape": list(head.shape), "dtype": str(head.dtype), "logit_scale": ZERO_SHOT_LOGIT_SCALE,
            "formula": FORMULA, "source": "published (the authors' repository)" if url else "--zero-shot-head"}
    return ZeroShotClassifier(tower, head).eval(), info
