"""evaluate's options (`EvalSettings`, the protocol; `EvaluateConfig`, the whole command), its command, its output
(the results folder) and the evaluation's constants: light (no torch), so the command line reads them for `--help`."""

from dataclasses import dataclass

from ..core.constants import AUTHORS_FILES_URL
from ..core.errors import InputError
from ..core.options import (
    BatchOptions,
    CacheOption,
    ImageNetOptions,
    WorkersOption,
    non_negative_float,
    option,
    positive_int,
)
from ..core.registry import Command, OutputKind, register_command, register_output

__all__ = ["EVALUATE_INFO", "EvalSettings", "EvaluateConfig", "EvaluationError"]

EVALUATE_INFO = "evaluate_info.json"  # a results folder's marker (it names the package)
DEFAULT_RESULTS_DIR = "results"  # each model writes results/<model>/
DEFAULT_NOISE_STD = 0.25  # Gaussian noise inside a mask (Singla & Feizi)
DEFAULT_DRAWS = 5  # seeded noise draws, reported as mean and standard deviation
DEFAULT_SEED = 0
DEFAULT_TOP_PAIRS = 10  # single-feature test: the (class, feature) pairs whose noise hurts most, listed and plotted
EVAL_IN_MEMORY_BYTES = 8 * 1024**3  # decoded views + masks above this spill to a memory-mapped temporary file
DEFAULT_HEAD = "default"  # a --zero-shot-head entry: the model's own (a CLIP tower's published head, else none)
# CLIP zero-shot: the image tower's embedding, L2-normalised, times a (D, 1000) head of class-prompt text embeddings
# (columns in sorted-wnid order), times a fixed logit scale. The authors' heads for ViT-B/16 and B/32 (float16,
# (512, 1000), unit-norm columns) are in their repository under the same licence as the annotations: downloaded at
# run time, pinned by sha256, never shipped. Keyed by the timm image towers of OpenAI's CLIP they were made for
# (timm's quickgelu variants carry OpenAI's own activation; both load the same weights).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ZERO_SHOT_LOGIT_SCALE = 100.0
_B16_HEAD = {"url": AUTHORS_FILES_URL + "models/clip_vit_b16_zeroshot_weights.npy",
             "sha256": "41e1b2474d8454e7bb9499d9e8f4faadfea6be7d13cc9ce9b9ca954cb21d5281"}
_B32_HEAD = {"url": AUTHORS_FILES_URL + "models/clip_vit_b32_zeroshot_weights.npy",
             "sha256": "0ce859e49a8a7f2f0f69d35257ac891f8fdbbbbddd1c231b7958532afe466687"}
ZERO_SHOT_HEADS = {
    "vit_base_patch16_clip_224.openai": _B16_HEAD,
    "vit_base_patch16_clip_quickgelu_224.openai": _B16_HEAD,
    "vit_base_patch32_clip_224.openai": _B32_HEAD,
    "vit_base_patch32_clip_quickgelu_224.openai": _B32_HEAD,
}


class EvaluationError(InputError):
    pass


@dataclass(kw_only=True)
class EvalSettings(BatchOptions):
    """The evaluation's protocol (noise and draws) and the model stage's speed knobs, as `evaluate_model` takes
    them."""

    noise_std: float = option(DEFAULT_NOISE_STD, type=non_negative_float,
                              help="Gaussian noise standard deviation on [0, 1] pixels")
    draws: int = option(DEFAULT_DRAWS, type=positive_int, help="seeded noise draws, reported as mean and std")
    seed: int = option(DEFAULT_SEED, type=int, help="noise seed")
    amp: bool = option(True, flags=("--no-amp",), help="no float16 autocast on CUDA (default: autocast on CUDA)")
    single_feature: bool = option(True, flags=("--no-single-feature",),
                                  help="skip the single-feature test (noise on one (class, feature) mask at a time; "
                                       "default: run it)")
    top_pairs: int = option(DEFAULT_TOP_PAIRS, type=positive_int,
                            help="most harmful (class, feature) pairs to list and plot")
    progress: bool = True  # progress bars


@dataclass(kw_only=True)
class EvaluateConfig(EvalSettings, ImageNetOptions, WorkersOption, CacheOption):
    """The options of `salient-imagenet evaluate`, as fields (`model`, `checkpoint` and `zero_shot_head`: one entry
    per model; a `zero_shot_head` entry "default" keeps the published head of a CLIP tower, and none for others)."""

    dataset: str = option(required=True, help="built Salient ImageNet folder, or a Hub dataset repo id")
    split: str = option("train", help="dataset split")
    model: list[str] = option(default_factory=list, append=True, required=True,
                              help="timm model name, e.g. resnet50.a1_in1k (repeat to compare several models)")
    checkpoint: list[str] | None = option(None, append=True,
                                          help="local weights for the --model at the same position, repeated once "
                                               "per --model", default_text="timm's pretrained weights")
    zero_shot_head: list[str] | None = option(None, append=True, metavar="PATH.npy",
                                              help="a (D, 1000) .npy of class text embeddings (sorted wnids) that "
                                                   "makes the --model at the same position a zero-shot classifier: "
                                                   "logits = 100 * normalize(embedding) @ head; repeated once per "
                                                   f"--model, '{DEFAULT_HEAD}' for a model that keeps its own",
                                              default_text="the authors' published head for the CLIP towers "
                                                           "vit_base_patch16_clip_224.openai and "
                                                           "vit_base_patch32_clip_224.openai, downloaded once into "
                                                           "--cache-dir; none for a classifier")
    out: str = option(DEFAULT_RESULTS_DIR, help="results folder: <out>/<label>/ per model (the label is the model "
                                                "name, plus the checkpoint's name when given), comparison in <out>")
    generalized_only: bool = option(False, help="use a pair's masks only up to its generalizes_to_rank (recorded by "
                                                "update --generalization); pairs not studied are left out")

    def __post_init__(self):
        if isinstance(self.model, str):
            self.model = [self.model]
        if isinstance(self.checkpoint, str):
            self.checkpoint = [self.checkpoint]
        if isinstance(self.zero_shot_head, str):
            self.zero_shot_head = [self.zero_shot_head]
        if not self.model:
            raise EvaluationError("no model to evaluate: give at least one --model")
        super().__post_init__()

    @property
    def settings(self) -> EvalSettings:
        return self


register_output(OutputKind(
    name="results", noun="a results folder", label="results folder", marker=EVALUATE_INFO,
    example=DEFAULT_RESULTS_DIR, command="evaluate",
    owns=(EVALUATE_INFO, "comparison.csv", "comparison.png", "*/classes.csv", "*/features.csv", "*/summary.json",
          "*/core_vs_spurious.png", "*/feature_drops.png"), last=EVALUATE_INFO,
    replacing="evaluate writes only into a new or empty folder or its own earlier results", rewritten=True))

register_command(Command("evaluate", "evaluate classifiers: core / spurious accuracy, RCS", EvaluateConfig,
                         "salient_imagenet_builder.evaluation.command:run", order=10))
