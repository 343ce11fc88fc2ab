"""The dataset's two schemas, declared once as `datasets.Features` and reused by the writer, the card and the tests."""

import csv
import importlib.util
from functools import lru_cache
from pathlib import Path

from datasets import Array2D, ClassLabel, Features, Image, List, Value

from .constants import MAP_SHAPE

KINDS = ("core", "spurious")
SPURIOUS_TYPES = ("background", "separate_object", "mixed")


class ImageNetNames:
    """The ImageNet-1k class files that timm ships (synsets, lemmas, definitions), read as `timm.data.ImageNetInfo`
    reads them but without importing timm, and so torch: commands that only read a dataset (check, show, ingest)
    stay light."""

    def __init__(self):
        folder = Path(importlib.util.find_spec("timm").submodule_search_locations[0]) / "data" / "_info"
        self._synsets = (folder / "imagenet_synsets.txt").read_text(encoding="utf-8").splitlines()
        self._lemmas = _tab_separated(folder / "imagenet_synset_to_lemma.txt")
        self._definitions = _tab_separated(folder / "imagenet_synset_to_definition.txt")

    def num_classes(self) -> int:
        return len(self._synsets)

    def label_names(self) -> list[str]:
        return self._synsets

    def index_to_description(self, index: int, detailed: bool = False) -> str:
        synset = self._synsets[index]
        return f"{self._lemmas[synset]}: {self._definitions[synset]}" if detailed else self._lemmas[synset]


def _tab_separated(path: Path) -> dict[str, str]:
    return dict(csv.reader(path.read_text(encoding="utf-8").splitlines(), delimiter="\t"))


@lru_cache(maxsize=1)
def imagenet_info() -> ImageNetNames:
    return ImageNetNames()


def class_definition(class_index: int) -> str:
    """WordNet's gloss of the class, as annotators read it under the class name."""
    detailed = imagenet_info().index_to_description(class_index, detailed=True)
    return detailed.partition(": ")[2] or detailed


def wordnet_ids() -> list[str]:
    """The 1,000 wnids in class-index order (sorted wnids, as torchvision, timm and the robust model use)."""
    return list(imagenet_info().label_names())


@lru_cache(maxsize=1)
def class_names() -> list[str]:
    """timm's class descriptions; the two "crane"s (bird 134, machine 517) get their wnid so names stay unique,
    as ClassLabel requires."""
    info = imagenet_info()
    names = [info.index_to_description(i) for i in range(info.num_classes())]
    duplicated = {n for n in names if names.count(n) > 1}
    return [f"{n} ({w})" if n in duplicated else n for n, w in zip(names, info.label_names())]


def class_label() -> ClassLabel:
    return ClassLabel(names=class_names())


# The layouts of the `default` config. A build of this version stores each raw map (`features[].nam`) as a
# fixed-size list of H * W float32 values, row-major (the shape is the build's `map_shape`, 7 x 7 for ResNet-50 at
# 224), and records each image's size as displayed (`original_width`, `original_height`). Older builds, still
# loaded, checked and evaluated: "array2d", 0.x builds whose maps are datasets' `Array2D`, without the sizes;
# "lists", the first builds, whose maps are nested lists. Array2D is an Arrow extension type defined in Python:
# pyarrow calls back into Python to compare and convert it, from whatever thread reads a batch, and a streaming
# reader left suspended at interpreter exit then hangs or aborts the user's process. A fixed-size list is a plain
# Arrow type; it is flat because `datasets`' numpy and torch formatters fail on nested fixed-size lists inside a
# struct that holds an image (datasets 5.2: "The truth value of an array ... is ambiguous").
LEGACY_LAYOUTS = ("array2d", "lists")


def nam_feature(map_shape: tuple[int, int] | None = MAP_SHAPE, legacy: str | None = None):
    """The raw maps' feature: H * W float32 values (`with_format("torch")` hands each over as a vector:
    `.reshape(H, W)`); `legacy` "array2d" or "lists" (or no `map_shape`) for older builds."""
    if legacy not in (None, *LEGACY_LAYOUTS):
        raise ValueError(f"legacy layout must be one of {LEGACY_LAYOUTS} or None, got {legacy!r}")
    if map_shape is None or legacy == "lists":
        return List(List(Value("float32")))
    height, width = map_shape
    if legacy == "array2d":
        return Array2D((height, width), "float32")
    return List(Value("float32"), length=height * width)


def layout_of(features: Features) -> tuple[tuple[int, int] | None, str | None]:
    """(map shape, legacy layout or None) of a declared `default` schema: the inverse of `image_features`."""
    inner = getattr(features.get("features"), "feature", None)
    nam = inner.get("nam") if isinstance(inner, dict) else None
    if isinstance(nam, Array2D):
        return tuple(nam.shape), "array2d"
    if getattr(nam, "length", -1) > 0:
        return (1, nam.length), None  # only H * W is declared
    return None, "lists"


def image_features(map_shape: tuple[int, int] | None = MAP_SHAPE, legacy: str | None = None) -> Features:
    """`default` config: one row per image, as a build of this version writes it (`legacy`: an older layout, see
    LEGACY_LAYOUTS; `map_shape`: the (H, W) of the model's raw maps)."""
    feature = {
        "feature_index": Value("int32"),
        "feature_rank": Value("int8"),
        "kind": Value("string"),
        "activation": Value("float32"),
        "rank": Value("int32"),  # 1-based position among the pair's top-k images
        "nam": nam_feature(map_shape, legacy),  # raw neural activation map (a layer4 channel), max-normalised
        "mask": Image(),  # the NAM upsampled to the image view, lossless 8-bit greyscale PNG
    }
    sizes = {} if legacy else {
        "original_width": Value("int32"),  # the source image's size as displayed (EXIF orientation applied): the
        "original_height": Value("int32"),  # frame of a human mask of it (`validate`)
    }
    return Features(
        {
            "image": Image(),
            "image_id": Value("string"),
            "label": class_label(),
            "wordnet_id": Value("string"),
            "prediction": class_label(),
            "group": class_label(),  # the class whose annotated features are attached (prediction or label)
            **sizes,
            "features": List(feature),
            "core_mask": Image(),
            "spurious_mask": Image(),
        }
    )


# Columns `salient-imagenet update --generalization` fills (null until then): the generalization study's bands,
# and how far down the pair's ranking its masks were judged to show the annotated attribute.
GENERALIZATION_FIELDS = ("generalization", "generalizes_to_rank")


def legacy_annotation_features() -> Features:
    """`annotations` config of builds from before the generalization columns: still valid, still loads."""
    features = annotation_features()
    return Features({k: v for k, v in features.items() if k not in GENERALIZATION_FIELDS})


def annotation_features() -> Features:
    """`annotations` config: one row per annotated (class, feature) pair."""
    answer = {
        "worker_id": Value("string"),
        "answer": Value("string"),
        "confidence": Value("float32"),
        "reason": Value("string"),
    }
    return Features(
        {
            "class_index": Value("int32"),
            "wordnet_id": Value("string"),
            "class_name": Value("string"),
            "feature_index": Value("int32"),
            "feature_rank": Value("int8"),
            "importance": Value("float32"),  # FI[c, j] computed in this build (null if the group was empty)
            "computed_rank": Value("int32"),  # rank of the feature by FI in this build (1 = most important)
            "kind": Value("string"),
            "spurious_type": Value("string"),  # background / separate_object / mixed; null for core pairs
            "votes_main_object": Value("int8"),
            "votes_separate_object": Value("int8"),
            "votes_background": Value("int8"),
            "mean_confidence": Value("float32"),
            "answers": List(answer),
            "group_size": Value("int32"),  # images grouped into this class in this build
            "top_image_ids": List(Value("string")),
            "generalization": List({"band": Value("string"), "answers": Value("int32"), "same": Value("int32"),
                                    "verdict": Value("string")}),  # null: the pair was not studied
            "generalizes_to_rank": Value("int32"),
        }
    )
