"""The dataset card: `dataset_card.md` rendered with the build's YAML metadata, provenance and statistics.

The YAML `configs` and `dataset_info` come from the same `Features` the writer used, so card and parquet agree.
`build_info.json` keeps the raw provenance and statistics beside the card (publishing re-renders the card with
the Hub repo id; evaluation reports the dataset's provenance).
"""

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from string import Template

import yaml
from datasets import DatasetInfo, Features, SplitDict, SplitInfo
from datasets.info import DatasetInfosDict
from huggingface_hub import DatasetCardData

from .constants import ANNOTATIONS_CONFIG, ANSWERS_PER_PAIR, BUILD_INFO, CROP_SIZE, PACKAGE_NAME, RESIZE_SIZE
from .markdown import md_text
from .output import write_text_atomic
from .provenance import public_paths
from .registry import card_parts
from .schema import annotation_features, image_features, legacy_annotation_features

TEMPLATE = Path(__file__).parent.parent / "dataset_card.md"  # the package root holds the one template


@dataclass
class BuildStats:
    """What a build counted and measured: returned by `build`, kept in build_info.json, rendered in the card."""

    rank: int = 0  # the process that returns it (under torchrun, rank 0 reports)
    world_size: int = 1
    images_scanned: int = 0  # images read and forwarded in pass 1
    images_written: int = 0  # rows of the default config
    masks_written: int = 0
    skipped_images: int = 0  # corrupt images
    skipped_ids: list = field(default_factory=list)  # the first 100 of them
    skipped_labels: int = 0  # images whose label is not an ImageNet class 0-999
    skipped_label_values: dict = field(default_factory=dict)  # label (as text) -> count
    skipped_non_image_files: int = 0
    decode_fallbacks: dict = field(default_factory=dict)  # `--decode gpu`: reason -> images Pillow decoded instead
    classes_without_annotations: list = field(default_factory=list)
    groups: dict = field(default_factory=dict)  # class -> images grouped into it
    annotation_stats: dict = field(default_factory=dict)  # `core.annotations.Annotations.stats()`
    top5_agreement: dict = field(default_factory=dict)  # the self-check: agree / pairs / pairs_with_images
    forward_passes: dict = field(default_factory=dict)
    pass1_units: dict = field(default_factory=dict)  # the unit runner's counts: units, resumed, computed_here
    pass2_units: dict = field(default_factory=dict)
    default_shards: list = field(default_factory=list)
    default_bytes: int = 0
    annotation_shards: list = field(default_factory=list)
    annotation_bytes: int = 0
    gallery: str | None = None
    seconds_total: float = 0.0
    images_per_second: float = 0.0
    stage_seconds: dict = field(default_factory=dict)
    source_bytes: dict = field(default_factory=dict)  # bytes read from the source: plan, pass 1, pass 2, total
    source_size: int | None = None  # bytes of the source's files, where the listing tells it
    map_shape: list | None = None  # the raw maps' (H, W); None: nested lists (the first builds)
    legacy_layout: str | None = None  # None: this version's `default` layout; else `schema.LEGACY_LAYOUTS`
    generalization_columns: bool = False  # the annotations config has the generalization columns (newer builds)
    updates: dict = field(default_factory=dict)  # studies recorded later: study name -> its summary
    extras: dict = field(default_factory=dict)  # what other commands recorded (e.g. the images joined to a build),
    # kept at the top level of build_info.json and rendered by their card parts (`core.registry.CardPart`)

    @classmethod
    def from_dict(cls, values: dict) -> "BuildStats":
        """From build_info.json; keys of no field are kept in `extras`. A build from before `legacy_layout` has one
        of the older layouts: Array2D maps, or nested lists without a map shape."""
        known = {f.name for f in fields(cls)} - {"extras"}
        extras = {k: v for k, v in values.items() if k not in known}
        values = {k: v for k, v in values.items() if k in known}
        values.setdefault("legacy_layout", "array2d" if values.get("map_shape") else "lists")
        return cls(**values, extras=extras)

    def image_features(self) -> Features:
        """The `default` config's schema as this build wrote it."""
        return image_features(self.map_shape and tuple(self.map_shape), self.legacy_layout)

    def to_dict(self) -> dict:
        values = asdict(self)
        extras = values.pop("extras")
        return {**values, **extras}


def config_layout(split: str) -> list[dict]:
    """The two configs and their data files: one definition for the card, the checker and the publisher."""
    return [
        {"config_name": "default", "default": True,
         "data_files": [{"split": split, "path": f"data/{split}-*.parquet"}]},
        {"config_name": ANNOTATIONS_CONFIG,
         "data_files": [{"split": "train", "path": f"data/{ANNOTATIONS_CONFIG}-*.parquet"}]},
    ]


def annotations_schema(stats: BuildStats) -> Features:
    """The annotations config's features as its shards have them (builds from before the generalization columns
    lack them)."""
    return annotation_features() if stats.generalization_columns else legacy_annotation_features()


def size_category(rows: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if rows < bound:
            return name
    return "10M<n<100M"


def yaml_info(name: str, info: DatasetInfo) -> dict:
    """A config's `dataset_info` entry of the card's YAML, as `datasets` writes it, its config name first."""
    data = DatasetCardData()
    DatasetInfosDict({name: info}).to_dataset_card_data(data)
    entry = data.to_dict()["dataset_info"]
    return {"config_name": name, **{k: v for k, v in entry.items() if k != "config_name"}}


def yaml_features(name: str, entry: dict) -> Features:
    """The features a card's `dataset_info` entry declares, read as `datasets` reads them."""
    data = DatasetCardData(dataset_info=[{**entry, "config_name": name}])
    return DatasetInfosDict.from_dataset_card_data(data)[name].features


def front_matter(split: str, stats: BuildStats) -> dict:
    infos = []
    for name, features, split_name, rows, size in (
        ("default", stats.image_features(), split, stats.images_written, stats.default_bytes),
        (ANNOTATIONS_CONFIG, annotations_schema(stats), "train", stats.annotation_stats["pairs"],
         stats.annotation_bytes),
    ):
        splits = SplitDict()
        splits.add(SplitInfo(name=split_name, num_bytes=size, num_examples=rows))
        info = DatasetInfo(features=features, splits=splits, dataset_size=size, download_size=size)
        infos.append(yaml_info(name, info))
    return {
        "license": "other",
        "license_name": "imagenet-terms-of-access",
        "license_link": "https://image-net.org/download.php",
        "pretty_name": "Salient ImageNet",
        "task_categories": ["image-classification"],
        "tags": ["imagenet", "spurious-correlations", "robustness", "saliency", "interpretability", "masks"],
        "size_categories": [size_category(stats.images_written)],
        "configs": config_layout(split),
        "dataset_info": infos,
    }


def _forward_passes(stats: BuildStats) -> str:
    passes = stats.forward_passes
    if not passes:
        return "?"
    return (f"{passes['images_forwarded']} ({passes['per_image']} per image read); the source was read "
            f"{passes['reads_of_source']} time(s) (the second read: only the selected images, for their rows)")
def _table(rows) -> str:
    return "\n".join(f"| {k} | {v} |" for k, v in rows)


def _counts(total: int, by_value: dict | None) -> str:
    if not total:
        return "0"
    return f"{total} (label: count {md_text(', '.join(f'{k}: {n}' for k, n in (by_value or {}).items()))})"


def _decoding(constants: dict) -> str:
    if constants.get("decode", "cpu") == "gpu":
        return ("JPEGs decoded on the model's device (`--decode gpu`: torchvision decode_jpeg, full size, "
                "antialiased bilinear resize)")
    return f"JPEG draft decoding: {constants['jpeg_draft']}"


def render(provenance: dict, stats: BuildStats, split: str, repo_id: str = "path/to/salient_imagenet") -> str:
    repo_id = re.sub(r"[^\w./-]", "_", repo_id)  # it lands in code blocks: no quote, backtick or newline
    parts = [(part, data) for part in card_parts() if (data := part.data(stats, provenance))]
    ann = stats.annotation_stats
    agreement = stats.top5_agreement
    constants = provenance["constants"]
    public = {k: md_text(public_paths(str(provenance[k]))) for k in ("command", "source", "checkpoint", "annotations")}
    provenance_rows = [
        ("package version", provenance["package_version"]),
        ("command", public["command"]),
        ("source", public["source"]),
        ("model", f"`{provenance['model']}` ({provenance['arch']})"),
        ("model checkpoint", public["checkpoint"] if provenance["checkpoint"] else "timm pretrained weights"),
        ("checkpoint sha256", f"`{provenance['checkpoint_sha256']}`"),
        ("annotations", public["annotations"]),
        ("annotations sha256", f"`{provenance['annotations_sha256']}`"),
        ("preprocessing", f"resize {constants['resize']} (bilinear), center-crop {constants['crop']}, [0, 1], "
                          f"mean {tuple(constants['mean'])}, std {tuple(constants['std'])}; "
                          f"{_decoding(constants)}"),
        ("grouping / top-k / majority", f"{constants['group_by']} / {constants['top_k']} / "
                                        f"{constants['majority']} of "
                                        f"{constants.get('answers_per_pair', ANSWERS_PER_PAIR)}"),
        ("software", f"python {provenance['python']}, torch {provenance['torch']}, device {provenance['device']}"),
        ("opt-in numerics", ", ".join(k for k, v in provenance.get("numerics", {}).items() if v) or "none (fp32)"),
        ("processes (torchrun world size)", provenance.get("world_size", 1)),
        *(row for part, data in parts if part.provenance_rows for row in part.provenance_rows(data)),
    ]
    statistics_rows = [
        ("classes built", len(provenance["classes"])),
        ("annotated pairs", ann["pairs"]),
        ("core pairs", ann["core"]),
        ("spurious pairs (background / separate_object / mixed)",
         f"{ann['spurious']} ({ann['spurious_background']} / {ann['spurious_separate_object']} / "
         f"{ann['spurious_mixed']})"),
        ("classes with a spurious feature", ann["classes_with_spurious"]),
        ("answers / workers / mean confidence", f"{ann['answers']} / {ann['workers']} / {ann['mean_confidence']}"),
        ("images read", stats.images_scanned),
        ("images with masks (rows)", stats.images_written),
        ("masks", stats.masks_written),
        ("corrupt images skipped", stats.skipped_images if not stats.skipped_ids else
         f"{stats.skipped_images} ({md_text(', '.join(stats.skipped_ids[:10]))})"),
        ("images without an ImageNet label 0-999 (skipped; e.g. -1 in test splits)",
         _counts(stats.skipped_labels, stats.skipped_label_values)),
        ("files that are not images (skipped)", stats.skipped_non_image_files),
        *([("images decoded by Pillow instead of the device (`--decode gpu`)",
            _counts(sum(stats.decode_fallbacks.values()), stats.decode_fallbacks).replace("label: ", "reason: "))]
          if constants.get("decode") == "gpu" else []),
        ("requested classes without annotations (skipped)", len(stats.classes_without_annotations)),
        *(row for part, data in parts if part.statistics_rows for row in part.statistics_rows(data)),
        ("model forward passes", _forward_passes(stats)),
        ("build time", f"{stats.seconds_total} s ({stats.images_per_second} images/s)"),
    ]
    agreement_sentence = (
        f"{agreement['agree']} of the {agreement['pairs_with_images']} annotated pairs whose class received images "
        f"are among the top features by importance computed in this build ({agreement['pairs']} pairs in all). "
        "With the published robust model and the full train split this should be (nearly) all of them; a low "
        "count means different weights or preprocessing, or too few images per class for a stable estimate."
    )
    demo = provenance.get("demo")
    values = {
        "yaml": yaml.safe_dump(front_matter(split, stats), sort_keys=False, allow_unicode=True, width=1000).strip(),
        "demo_title": " (offline demo build)" if demo else "",
        "demo_warning": ("> **Demo build.** Generated images, a random-weight model and generated annotations: the "
                         "masks and labels here mean nothing. Build with the real weights and annotations for "
                         "real use.\n\n") if demo else "",
        "package_version": provenance["package_version"], "model": provenance["model"], "arch": provenance["arch"],
        "split": split, "source": public["source"], "group_by": constants["group_by"],
        "top_k": constants["top_k"], "crop": CROP_SIZE, "resize": RESIZE_SIZE, "majority": constants["majority"],
        "answers_per_pair": constants.get("answers_per_pair", ANSWERS_PER_PAIR),
        "provenance_table": _table(provenance_rows), "statistics_table": _table(statistics_rows),
        "agreement_sentence": agreement_sentence, "repo_id": repo_id, "annotations_config": ANNOTATIONS_CONFIG,
        "image_mode": constants["image_mode"],
        "studies_section": _sections(parts, "studies"),
        "join_section": _sections(parts, "usage"),
        "gallery": f"![Top images of annotated pairs with their masks]({stats.gallery})\n"
                   if stats.gallery else "",
        **_layout_values(stats),
    }
    return Template(TEMPLATE.read_text(encoding="utf-8")).substitute(values)


def _sections(parts: list, slot: str) -> str:
    """The capabilities' sections of the card in one of its slots (`core.registry.CardPart`)."""
    return "".join(part.section(data) for part, data in parts if part.section is not None and part.slot == slot)


def _layout_values(stats: BuildStats) -> dict:
    """The card's words for the `default` config's layout: this version's (flat maps, image sizes) or an older one."""
    height, width = stats.map_shape or (7, 7)
    if stats.legacy_layout is None:
        nam = (f"raw max-normalised activation map: its {height}x{width} float32 values, row-major (the model's map "
               "shape)")
        sizes = ("| `original_width`, `original_height` | the source image's size as displayed (EXIF orientation "
                 "applied): the frame a human mask of it is drawn in |\n")
    else:
        nam = ("raw max-normalised activation map: a float32 array of the model's map shape, 7x7 for a ResNet-50 "
               f"(stored as {'datasets.Array2D' if stats.legacy_layout == 'array2d' else 'nested lists'} by the "
               "version that made this build)")
        sizes = ""
    return {"map_height": height, "map_width": width, "nam_text": nam, "size_rows": sizes}


def write_card(folder: Path, provenance: dict, stats: BuildStats, split: str, repo_id: str | None = None) -> None:
    info = {"package": PACKAGE_NAME, "provenance": provenance, "stats": stats.to_dict(), "split": split}  # our marker
    write_text_atomic(folder / BUILD_INFO, json.dumps(info, indent=2, default=str))
    write_text_atomic(folder / "README.md", render(provenance, stats, split, repo_id or folder.name))


def read_build_info(folder: Path) -> dict:
    return json.loads((Path(folder) / BUILD_INFO).read_text(encoding="utf-8"))
