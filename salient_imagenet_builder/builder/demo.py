"""Offline stand-ins for the real inputs, in their real formats: generated images in the ImageNet folder layout
(with the train set's quirks), a random-weight model in the robust-library checkpoint layout, and an annotation
CSV in the published format. The `--demo` build and the tests use them; nothing here is a real result."""

import csv
import io
import random
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image, ImageDraw

from ..core.annotations import COLUMNS
from ..core.constants import (
    ANSWER_CHOICES,
    ANSWERS_PER_PAIR,
    FEATURES_PER_CLASS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    NUM_CLASSES,
)
from ..core.schema import wordnet_ids

DEMO_CLASSES = list(range(10))


def synthetic_image(rng: random.Random, label: int, size=None) -> Image.Image:
    """A coloured shape on a gradient background; sizes vary like ImageNet's."""
    w, h = size or (rng.choice([256, 300, 320, 375]), rng.choice([256, 280, 333]))
    base = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.array([0.2, 0.5, 0.8], dtype=np.float32)
    pixels = np.broadcast_to(base, (h, w, 3)).copy()
    pixels += np.array([rng.randint(0, 60) for _ in range(3)], dtype=np.float32)
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    x, y, r = rng.randint(w // 4, 3 * w // 4), rng.randint(h // 4, 3 * h // 4), rng.randint(20, 70)
    colour = ((label * 97) % 256, (label * 57 + 80) % 256, (label * 31 + 160) % 256)
    (draw.ellipse if label % 2 else draw.rectangle)((x - r, y - r, x + r, y + r), fill=colour)
    return image


def jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kwargs.pop("format", "JPEG"), quality=90, **kwargs)
    return buffer.getvalue()


def make_images(root: Path, classes=DEMO_CLASSES, per_class: int = 6, seed: int = 0, quirks: bool = True,
                split: str = "train") -> list[tuple[str, int, bytes]]:
    """Writes `<root>/<split>/<wnid>/<wnid>_<n>.JPEG`; returns (file name, label, bytes) in reader order.
    With `quirks`, class classes[0] also gets a greyscale JPEG, a CMYK JPEG, a PNG named .JPEG and a truncated file."""
    rng = random.Random(seed)
    wnids = wordnet_ids()
    written = []
    for label in classes:
        folder = Path(root) / split / wnids[label]
        folder.mkdir(parents=True, exist_ok=True)
        files = {f"{wnids[label]}_{n}.JPEG": jpeg_bytes(synthetic_image(rng, label)) for n in range(per_class)}
        if quirks and label == classes[0]:
            image = synthetic_image(rng, label)
            files[f"{wnids[label]}_grey.JPEG"] = jpeg_bytes(image.convert("L"))
            files[f"{wnids[label]}_cmyk.JPEG"] = jpeg_bytes(image.convert("CMYK"))
            files[f"{wnids[label]}_png.JPEG"] = jpeg_bytes(image, format="PNG")
            files[f"{wnids[label]}_truncated.JPEG"] = jpeg_bytes(image)[:400]
        for name in sorted(files):
            (folder / name).write_bytes(files[name])
            written.append((name, label, files[name]))
    return written


def make_checkpoint(path: Path, arch: str = "resnet50", seed: int = 0, classes=None) -> Path:
    """A random-weight model saved like the robustness library saves `resnet50_l2_eps3.ckpt`: ckpt["model"] with
    `module.model.*`, `module.attacker.model.*` and `module.normalizer.new_mean/new_std`, plus training state.
    With `classes`, the other classes' logits get a large negative bias so random predictions land in `classes`."""
    torch.manual_seed(seed)
    net = timm.create_model(arch, pretrained=False, num_classes=NUM_CLASSES)
    if classes is not None:
        with torch.no_grad():
            bias = net.get_classifier().bias
            bias.fill_(-100.0)
            bias[list(classes)] = 0.0
    state = {}
    for prefix in ("module.model.", "module.attacker.model."):
        state.update({prefix + k: v.clone() for k, v in net.state_dict().items()})
    for prefix in ("module.normalizer.", "module.attacker.normalizer."):
        state[prefix + "new_mean"] = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        state[prefix + "new_std"] = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state, "epoch": 0, "optimizer": {"state": {}, "param_groups": []}, "schedule": None}, path)
    return path


def make_annotations(path: Path, classes=DEMO_CLASSES, num_features: int = 2048, seed: int = 0,
                     answers: dict | None = None) -> Path:
    """A CSV in the published format: 5 features per class, 5 answers each. `answers` may fix the answers of
    (class, rank) pairs, e.g. {(0, 1): ["background"] * 5}; the rest are random."""
    rng = random.Random(seed)
    wnids = wordnet_ids()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for label in classes:
            for rank, feature in enumerate(rng.sample(range(num_features), FEATURES_PER_CLASS), start=1):
                chosen = (answers or {}).get((label, rank)) or rng.choices(ANSWER_CHOICES, [6, 2, 2],
                                                                            k=ANSWERS_PER_PAIR)
                for worker, answer in enumerate(chosen):
                    writer.writerow([1000 + rng.randint(0, 40), wnids[label], label, feature, rank, answer,
                                     f"{rng.randint(1, 5)}.0", f'it shows the "{answer}", clearly, {worker}'])
    return path


def make_inputs(folder: Path, classes=DEMO_CLASSES, per_class: int = 6, arch: str = "resnet50") -> dict:
    folder = Path(folder)
    make_images(folder / "imagenet", classes, per_class)
    checkpoint = make_checkpoint(folder / f"{arch}_random.ckpt", arch, classes=classes)
    num_features = torch.load(checkpoint, weights_only=True)["model"]["module.model.fc.weight"].shape[1]
    return {
        "source": str(folder / "imagenet"),
        "checkpoint": str(checkpoint),
        "annotations": str(make_annotations(folder / "annotations.csv", classes, num_features)),
    }
