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


def image_features(map_shape: tuple[int, int] | None = MAP_SHAPE) -> Features:
    """`default` config: one row per image. `map_shape`: the (H, W) of the model's raw maps, stored as fixed-shape
    arrays (`Array2D`: one float32 block per map, which `with_format("torch")` hands over as an H x W tensor);
    None: the nested lists of builds from before them (still valid, still loads)."""
    nam = List(List(Value("float32"))) if map_shape is None else Array2D(tuple(map_shape), "float32")
    feature = {
        "feature_index": Value("int32"),
        "feature_rank": Value("int8"),
        "kind": Value("string"),
        "activation": Value("float32"),
        "rank": Value("int32"),  # 1-based position among the pair's top-k images
        "nam": nam,  # raw neural activation map (layer4 channel, e.g. 7x7), max-normalised
        "mask": Image(),  # the NAM upsampled to the image view, lossless 8-bit greyscale PNG
    }
    return Features(
        {
            "image": Image(),
            "image_id": Value("string"),
            "label": class_label(),
            "wordnet_id": Value("string"),
            "prediction": class_label(),
            "group": class_label(),  # the class whose annotated features are attached (prediction or label)
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
