"""The feature model: a timm network behind a normaliser, loaded safely from a robust-library checkpoint.

`FeatureModel(x)` takes pixels in [0, 1] and returns the three things the method needs from one forward pass:
the spatial penultimate map (`forward_features`, e.g. N x 2048 x 7 x 7), its pooled features r(x)
(`forward_head(pre_logits=True)`) and the logits.
"""

import logging
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from .constants import CROP_SIZE, IMAGENET_MEAN, IMAGENET_STD, NUM_CLASSES, ROBUST_MODELS
from .errors import InputError, NetworkError
from .output import sha256_file

log = logging.getLogger(__name__)


class CheckpointError(InputError):
    pass


class FeatureModel(nn.Module):
    def __init__(self, net: nn.Module, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    @property
    def num_features(self) -> int:
        return self.net.num_features

    @property
    def classifier_weight(self) -> torch.Tensor:
        return self.net.get_classifier().weight  # W, num_classes x num_features

    def map_shape(self) -> tuple[int, int]:
        """(H, W) of the spatial maps of a CROP_SIZE view (7 x 7 for a ResNet-50): one forward of a blank image."""
        weight = next(self.parameters())
        blank = torch.zeros(1, 3, CROP_SIZE, CROP_SIZE, device=weight.device, dtype=weight.dtype)
        with torch.inference_mode():
            return tuple(self.net.forward_features(blank).shape[-2:])

    def forward(self, x: torch.Tensor):
        spatial = self.net.forward_features((x - self.mean) / self.std)
        pooled = self.net.forward_head(spatial, pre_logits=True)
        logits = self.net.get_classifier()(pooled)
        return spatial, pooled, logits


@dataclass
class ModelInfo:
    name: str  # the --model value
    arch: str  # the timm architecture
    checkpoint: str | None  # where the weights came from (path or hub reference)
    sha256: str | None


# --- safe checkpoint loading -------------------------------------------------------------------------------------

class _Inert:
    """Stands in for any class a checkpoint pickle names that is not a tensor or container: built without running
    any of the pickle's code (robust-library checkpoints are saved with dill and carry optimizer/schedule objects).
    `pickled_class` keeps the name the pickle gave, so an error can say what the file holds."""

    pickled_class = "?"

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __call__(self, *args, **kwargs):
        return _Inert()


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals torch's own weights-only unpickler allows (tensor rebuilders, dtypes,
    OrderedDict...); every other global becomes an `_Inert` class, so nothing named by the pickle is ever called."""

    def find_class(self, module, name):
        try:
            from torch._weights_only_unpickler import _get_allowed_globals
            allowed = _get_allowed_globals()
        except ImportError:  # private API: without it only the basics below are rebuilt
            allowed = {}
        if f"{module}.{name}" in allowed:
            return allowed[f"{module}.{name}"]
        if (module, name) in (("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
                              ("torch._utils", "_rebuild_parameter")):
            return super().find_class(module, name)
        return type(name, (_Inert,), {"pickled_class": f"{module}.{name}"})


class _RestrictedPickleModule:
    Unpickler = _RestrictedUnpickler
    load = staticmethod(lambda f, **kw: _RestrictedUnpickler(f, **kw).load())
    __name__ = "salient_restricted_pickle"


SAVE_HINT = "expected a file saved with torch.save(model.state_dict(), path) or a robust-library checkpoint"


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint without executing pickled code: `weights_only=True`, and where that refuses (dill-saved
    objects), a restricted unpickler that rebuilds only tensors and plain containers and leaves the rest inert.
    A file that is none of these (empty, cut short, text, another zip) is named with what is wrong with it."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, not a checkpoint file; pass the .ckpt/.pt file itself")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint; download or save it again")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        log.info("%s: weights_only load refused (%s); using the restricted unpickler", path, str(e).splitlines()[0])
    except Exception as e:  # the format itself is wrong: no point in a second try
        raise CheckpointError(_unreadable(path, e)) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickleModule)
    except Exception as e:
        raise CheckpointError(_unreadable(path, e)) from None


def _unreadable(path: Path, error: Exception) -> str:
    """Why torch cannot read `path`, from the file's first bytes: a damaged torch zip, a damaged pickle, or
    something else altogether."""
    with open(path, "rb") as f:
        head = f.read(8)
    detail = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
    if head.startswith(b"PK"):
        if not zipfile.is_zipfile(path):
            return f"{path}: truncated or damaged checkpoint (a zip archive cut short: {detail}); download it again"
        with zipfile.ZipFile(path) as archive:
            if not any(n.endswith("data.pkl") for n in archive.namelist()):
                return f"{path}: a zip archive but not a torch checkpoint (no data.pkl inside); {SAVE_HINT}"
        return f"{path}: damaged torch checkpoint ({detail}); download it again"
    if head[:1] == b"\x80":  # a pickle protocol marker: the legacy torch format
        return f"{path}: truncated or damaged checkpoint (legacy torch format: {detail}); download it again"
    return f"{path}: not a torch checkpoint (starts with {head!r}); {SAVE_HINT}"


def _weights_container(ckpt):
    """ckpt['model'] or ckpt['state_dict'] when the checkpoint wraps its weights, else the checkpoint itself."""
    if isinstance(ckpt, dict):
        for key in ("model", "state_dict"):
            if isinstance(ckpt.get(key), dict):
                return ckpt[key]
    return ckpt


def extract_state_dict(ckpt, path) -> dict[str, torch.Tensor]:
    """The network's weights from a robust-library checkpoint (`module.model.*` inside ckpt['model'] or
    ckpt['state_dict']) or a plain state dict (optionally `module.`-prefixed)."""
    held = next((ckpt[k] for k in ("model", "state_dict") if k in ckpt), ckpt) if isinstance(ckpt, dict) else ckpt
    if isinstance(held, (nn.Module, _Inert)):  # torch.save(model) or {"model": model}: a class, not weights
        name = held.pickled_class if isinstance(held, _Inert) else type(held).__qualname__
        raise CheckpointError(f"{path}: holds a whole pickled object ({name}), not a state dict; it is not loaded "
                              f"(unpickling it could run code). Save torch.save(model.state_dict(), path) instead")
    state = _weights_container(ckpt)
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        what = f"top-level keys: {list(ckpt)[:10]}" if isinstance(ckpt, dict) else f"it holds a {type(ckpt).__name__}"
        raise CheckpointError(f"{path}: no state dict found ({what}); {SAVE_HINT}")
    state = _strip_prefix(state)
    odd = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    if odd:
        key = next(iter(odd))
        raise CheckpointError(f"{path}: {len(odd)} weight(s) are not tensors, e.g. {key!r} is a "
                              f"{getattr(odd[key], 'pickled_class', type(odd[key]).__name__)}; {SAVE_HINT}")
    return state


def _strip_prefix(state: dict) -> dict:
    for prefix in ("module.model.", "model.", "module."):
        if any(isinstance(k, str) and k.startswith(prefix) for k in state):
            if prefix == "module.model." or not any(str(k).startswith("module.model.") for k in state):
                return {k[len(prefix):]: v for k, v in state.items() if isinstance(k, str) and k.startswith(prefix)}
    return dict(state)


def check_normalizer(ckpt, path) -> None:
    """The robust library keeps the normalisation inside the model; ours must be the same. Wrapped (ckpt['model'])
    or not, and whatever the prefix (`module.normalizer.`, `normalizer.`, the attacker's copy)."""
    state = _weights_container(ckpt)
    if not isinstance(state, dict):
        return
    for suffix, expected in (("normalizer.new_mean", IMAGENET_MEAN), ("normalizer.new_std", IMAGENET_STD)):
        for key, value in state.items():
            if not (isinstance(key, str) and key.endswith(suffix) and isinstance(value, torch.Tensor)):
                continue
            if value.numel() != 3 or not torch.allclose(value.flatten().float(), torch.tensor(expected), atol=1e-4):
                raise CheckpointError(f"{path}: {key} = {value.flatten().tolist()}, expected {expected} (the "
                                      "ImageNet normalisation this tool applies); these weights expect other inputs")


def create_feature_model(name: str, checkpoint: str | None = None, arch: str | None = None,
                         pretrained: bool | None = None) -> tuple[FeatureModel, ModelInfo]:
    """The one way to make the feature model.

    `name` is a robust model from ROBUST_MODELS (weights downloaded with huggingface_hub unless `checkpoint` is
    given) or any timm model name (timm's pretrained weights unless `checkpoint` is given; `arch` defaults to it).
    """
    if name in ROBUST_MODELS:
        spec = ROBUST_MODELS[name]
        arch = arch or spec["arch"]
        if checkpoint is None:
            checkpoint = download_robust(name)
        pretrained = False
    else:
        arch = arch or name
        pretrained = checkpoint is None if pretrained is None else pretrained
    try:
        net = timm.create_model(arch, pretrained=pretrained, num_classes=NUM_CLASSES)
    except RuntimeError as e:
        raise CheckpointError(f"--model {arch!r}: {e}") from None
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    sha = None
    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint)
        check_normalizer(ckpt, checkpoint)
        load_weights(net, extract_state_dict(ckpt, checkpoint), checkpoint, arch, "choose it with --arch")
        sha = sha256_file(checkpoint)
    elif pretrained:
        mean, std = net.pretrained_cfg.get("mean", mean), net.pretrained_cfg.get("std", std)
    model = FeatureModel(net, mean, std).eval()
    return model, ModelInfo(name, arch, str(checkpoint) if checkpoint else None, sha)


def load_weights(net: nn.Module, state: dict, path, arch: str, hint: str) -> None:
    """`hint` says how the user picks another architecture (the option differs between commands)."""
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: does not fit the timm architecture {arch!r} ({hint}): {len(missing)} missing "
                              f"key(s) {missing[:5]}, {len(unexpected)} unexpected key(s) {unexpected[:5]}")
    wrong = [k for k, v in state.items() if v.shape != expected[k].shape]
    if wrong:
        raise CheckpointError(f"{path}: shape mismatch with the timm architecture {arch!r} ({hint}) for {wrong[:5]} "
                              f"(e.g. {tuple(state[wrong[0]].shape)} vs {tuple(expected[wrong[0]].shape)})")
    net.load_state_dict(state)


def download_robust(name: str) -> str:
    """The robust checkpoint from the huggingface_hub cache, downloaded once. Offline (HF_HUB_OFFLINE=1) or with the
    Hub out of reach, one line at once names --model-checkpoint and the cache, instead of a ~25 s retry loop."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    from .targets import hub_unreachable

    spec = ROBUST_MODELS[name]
    cached = try_to_load_from_cache(spec["repo_id"], spec["filename"])
    if isinstance(cached, str):
        return cached
    reason = hub_unreachable()
    if reason is not None:
        raise NetworkError(f"cannot download the {name} weights ({spec['repo_id']}/{spec['filename']}): {reason}, "
                           f"and they are not in the huggingface_hub cache ({constants.HF_HUB_CACHE}). Pass "
                           "--model-checkpoint PATH (a copy of that file), or download it where there is network")
    log.info("downloading %s/%s (cached by huggingface_hub in %s)", spec["repo_id"], spec["filename"],
             constants.HF_HUB_CACHE)
    try:
        return hf_hub_download(spec["repo_id"], spec["filename"])
    except OSError as e:  # the connection broke mid-way, or the file is gone from the Hub
        raise NetworkError(f"cannot download {spec['repo_id']}/{spec['filename']} ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}); pass --model-checkpoint PATH") from None


def pick_device(device: str | None = None) -> torch.device:
    """The requested device, checked here (one line when it is not a device or not on this machine), or cuda when
    there is one, else cpu."""
    if not device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {device}: not a torch device; use cpu, cuda or cuda:N") from None
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise InputError(f"--device {device}: no CUDA device is available here; use --device cpu")
        if chosen.index is not None and chosen.index >= count:
            raise InputError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0-cuda:{count - 1}")
    elif chosen.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {device}: no Apple MPS device is available here; use --device cpu")
    elif chosen.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"--device {device}: not supported here; use cpu or cuda")
    return chosen
