"""Options declared once: a command's config dataclass is its option table. Each field that is an option carries
its command-line form in `option(...)`; `add_options` makes the argparse arguments from the fields, `from_args`
makes the config from the parsed arguments, and the shared groups below (source, model and numerics, speed,
output) are dataclasses every command that takes them inherits. A help text ends with the default the code uses,
rendered from the field, so the two cannot disagree; `reference` renders a parser as the Markdown of docs/cli.md.

Light on purpose (argparse and dataclasses): the command line reads every config without importing torch.
"""

import argparse
import dataclasses
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable

from .compat import parser_actions
from .constants import DEFAULT_CACHE_DIR, DEFAULT_MODEL, DEFAULT_UNIT_SIZE, NUM_CLASSES, ROBUST_MODELS

__all__ = ["BatchOptions", "CacheOption", "ClassesOption", "ImageNetOptions", "ModelOptions", "Numerics", "Option",
           "Options", "OverwriteOption", "PushOptions", "RestartOption", "SOURCE_TYPES", "ScanOptions", "SourceOptions",
           "SpeedOptions", "WorkersOption", "add_options", "from_args", "option", "reference"]

SOURCE_TYPES = ("folder", "parquet", "webdataset")  # the layouts a source (or an ImageNet copy) may be forced to
IMAGE_MODES = ("crop", "original", "none")  # what a row's `image` column holds
GROUPINGS = ("prediction", "label")


@dataclass(frozen=True)
class Option:
    """How a config field reads on the command line (see `option`)."""

    help: str
    flags: tuple[str, ...] = ()  # default: --field-name
    type: Callable | None = None
    choices: tuple | None = None
    metavar: str | None = None
    positional: bool = False
    append: bool = False  # repeated: one value per occurrence
    nargs: str | None = None  # a positional taking several values ("+")
    required: bool = False  # on the command line (a library caller may leave it at its default)
    default_text: str | None = None  # the default in words, where the value alone says nothing


def option(default: Any = MISSING, *, default_factory: Any = MISSING, **how) -> Any:
    """A config field that is a command-line option: its default, then `Option`'s fields (the help first). A
    boolean field defaulting to True is an option that turns it off (`--no-draft`: give `flags`)."""
    return field(default=default, default_factory=default_factory, metadata={"option": Option(**how)})


def options_of(config_class) -> list[dataclasses.Field]:
    return [f for f in fields(config_class) if "option" in f.metadata]


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


def help_text(f: dataclasses.Field) -> str:
    """The option's help and the default the config really has (in words where given)."""
    how, default = f.metadata["option"], default_of(f)
    if how.default_text is not None:
        return f"{how.help} (default: {how.default_text})"
    if default is None or default is False or how.positional and how.required:
        return how.help
    if default is True:  # a flag that turns a default behaviour off
        return how.help
    shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
    return f"{how.help} (default: {shown})"


def option_groups(config_class) -> list[tuple[str, list[dataclasses.Field]]]:
    """The config's options by the class that declares them: its own first, then each shared group (its `title`)."""
    groups: dict[str, list[dataclasses.Field]] = {}
    seen = set()
    for cls in config_class.__mro__:
        declared = [f for f in options_of(config_class)
                    if f.name in vars(cls).get("__annotations__", {}) and f.name not in seen]
        groups.setdefault(vars(cls).get("title", "options") if cls is not config_class else "options", []).extend(
            declared)
        seen.update(f.name for f in declared)
    return [(title, declared) for title, declared in groups.items() if declared]


def add_options(parser: argparse.ArgumentParser, config_class) -> None:
    """The config's option fields as arguments of `parser`, a group per class that declares them."""
    for title, declared in option_groups(config_class):
        group = parser if title == "options" else parser.add_argument_group(title)
        for f in declared:
            _add_option(group, f)


def _add_option(parser, f: dataclasses.Field) -> None:
    how, default = f.metadata["option"], default_of(f)
    kwargs: dict[str, Any] = {"help": help_text(f)}
    if how.positional:
        kwargs.update(nargs=how.nargs or (None if how.required else "?"), default=default, type=how.type,
                      metavar=how.metavar)
        parser.add_argument(f.name, **{k: v for k, v in kwargs.items() if v is not None or k == "default"})
        return
    kwargs["dest"] = f.name
    if isinstance(default, bool):
        kwargs["action"] = "store_false" if default else "store_true"
    else:
        kwargs.update(type=how.type, choices=how.choices, metavar=how.metavar, required=how.required,
                      action="append" if how.append else "store")
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        kwargs["default"] = None  # an omitted option keeps the config's default (`from_args`)
    parser.add_argument(*(how.flags or ("--" + f.name.replace("_", "-"),)), **kwargs)


def from_args(config_class, args: argparse.Namespace, **overrides):
    """The config the parsed `args` describe: an option left out keeps the field's default (an omitted option is
    never passed as None), `overrides` win."""
    values = {}
    for f in options_of(config_class):
        if not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        if value is not None:
            values[f.name] = value
    return config_class(**{**values, **overrides})


def reference(parser: argparse.ArgumentParser, title: str) -> str:
    """A parser's options as a Markdown section: usage, then one row per option (flags, help with its default)."""
    lines = [f"## `{title}`", "", parser.description or "", "", "```", parser.format_usage().strip(), "```", "",
             "| option | meaning |", "|---|---|"]
    for action in parser_actions(parser):
        if isinstance(action, argparse._HelpAction):
            continue
        flags = ", ".join(f"`{flag}`" for flag in action.option_strings) or f"`{action.metavar or action.dest}`"
        meaning = action.help or ""
        if action.choices and action.option_strings:
            meaning += f" (one of: {', '.join(map(str, action.choices))})"
        meaning = meaning.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
        lines.append(f"| {flags} | {meaning} |")
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def flag_of(f: dataclasses.Field) -> str:
    how = f.metadata["option"]
    return how.flags[0] if how.flags else f.name if how.positional else "--" + f.name.replace("_", "-")


@dataclass(kw_only=True)
class Options:
    """The base of every command's config: values given from Python are checked as the command line checks them
    (choices, and the rule of each option's argument type), a failure one line naming the option."""

    def __post_init__(self):
        for f in options_of(type(self)):
            check_value(f, getattr(self, f.name))


def check_value(f: dataclasses.Field, value) -> None:
    from .errors import InputError

    how = f.metadata["option"]
    if value is None or isinstance(value, bool):
        return
    if how.choices is not None and value not in how.choices:
        raise InputError(f"{flag_of(f)} must be one of {how.choices}, got {value!r}")
    values = value if isinstance(value, (list, tuple)) else [value]
    if how.type in (None, str) or not all(isinstance(v, (int, float)) for v in values):
        return
    try:
        for v in values:
            how.type(str(v))
    except argparse.ArgumentTypeError as e:
        said = str(e)  # the type's own line names the option where it knows it
        raise InputError(said if said.startswith("--") else f"{flag_of(f)} {value!r}: {said}") from None


# --- argument types: one line naming the option and what was expected --------------------------------------------

def positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def non_negative_int(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return int(text)


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def workers(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"--workers {text!r}: expected 0 (decode in this process) or a positive "
                                         "number of decoding processes")
    return int(text)


def parse_classes(text: str) -> list[int]:
    """`0-9,325` -> [0, ..., 9, 325]."""
    classes = set()
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            low, dash, high = part.partition("-")
            if dash and not high.strip():  # "4-" is not "4": say so rather than guess an end
                raise argparse.ArgumentTypeError(f"--classes {text!r}: the range {part!r} has no end; give both "
                                                 f"ends, e.g. {low.strip()}-{NUM_CLASSES - 1}")
            low, high = int(low), int(high or low)
            if high < low:
                raise argparse.ArgumentTypeError(f"--classes {text!r}: the range {part!r} ends before it starts")
            classes.update(range(low, high + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--classes {text!r}: expected indices and ranges like 0-9,325") from None
    if not classes:
        raise argparse.ArgumentTypeError(f"--classes {text!r}: no class index given, e.g. 0-9,325")
    if min(classes) < 0 or max(classes) >= NUM_CLASSES:
        raise argparse.ArgumentTypeError(f"--classes {text!r}: class indices must lie in 0-{NUM_CLASSES - 1}")
    return sorted(classes)


# --- the shared groups -------------------------------------------------------------------------------------------

WORKERS_DEFAULT = ("this process's share of the CPU cores (torchrun ranks on one machine split them), one fewer "
                   "when a GPU runs the model while they decode")  # the one rule, `stages.default_workers`, in words


@dataclass(kw_only=True)
class WorkersOption(Options):
    title = "speed"

    workers: int | None = option(None, type=workers, help="decoding processes; 0 decodes in this process",
                                 default_text=WORKERS_DEFAULT)


@dataclass(kw_only=True)
class BatchOptions(Options):
    title = "speed"

    batch_size: int = option(64, type=positive_int, help="images per model forward pass")
    device: str | None = option(None, help="torch device", default_text="cuda if available, else cpu")


@dataclass(kw_only=True)
class SpeedOptions(BatchOptions, WorkersOption):
    """How fast, never what: a run may change them on a resume (recorded per work unit)."""

    title = "speed"


@dataclass(kw_only=True)
class SourceOptions(Options):
    title = "source"

    source: str = option(help="ImageNet in any layout: a folder (`train/<wnid>/*.JPEG`), parquet/arrow or WebDataset "
                              "tar shards, a path or a Hub dataset id such as ILSVRC/imagenet-1k")
    source_type: str | None = option(None, choices=SOURCE_TYPES, help="layout of --source when detection cannot tell",
                                     default_text="detected")
    split: str = option("train", help="split to read: train, or validation/val")


@dataclass(kw_only=True)
class ClassesOption(Options):
    title = "source"

    classes: list[int] | None = option(None, type=parse_classes, help="only these classes, e.g. 0-9,325",
                                       default_text="all classes")


@dataclass(kw_only=True)
class ScanOptions(ClassesOption):
    """What a pass of the robust model over the source reads and groups (build and discover)."""

    title = "source"

    limit: int | None = option(None, type=positive_int, metavar="N", help="read at most N images of each class",
                               default_text="all")
    group_by: str = option("prediction", choices=GROUPINGS,
                           help="group images by the robust model's prediction (the paper) or the true label")
    draft: bool = option(True, flags=("--no-draft",), help="decode JPEGs at full size (slower; default: JPEG draft "
                                                            "decoding)")
    unit_size: int = option(DEFAULT_UNIT_SIZE, type=positive_int,
                            help="images per work unit of a folder source (parquet: a row group, WebDataset: a tar); "
                                 "a stopped run resumes from its finished units")


@dataclass(kw_only=True)
class ImageNetOptions(Options):
    """The user's own ImageNet copy, read by image id (a masks-only build's images)."""

    title = "your ImageNet copy"

    imagenet: str | None = option(None, metavar="PATH_OR_ID",
                                  help="your ImageNet copy (folder, parquet or WebDataset; a path or a Hub id), its "
                                       "images read by image_id", default_text="the dataset's own images")
    imagenet_type: str | None = option(None, choices=SOURCE_TYPES,
                                       help="layout of --imagenet when detection cannot tell", default_text="detected")


@dataclass(frozen=True)
class Numerics:
    """The model runner's opt-in faster numerics (`core.runner`): each changes activations slightly."""

    tf32: bool = False
    bf16: bool = False
    compile: bool = False

    def describe(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(kw_only=True)
class ModelOptions(Options):
    title = "model and numerics"

    model: str = option(DEFAULT_MODEL, help=f"robust model ({', '.join(ROBUST_MODELS)}, weights downloaded once and "
                                            "cached by huggingface_hub) or any timm model name")
    model_checkpoint: str | None = option(None, metavar="PATH", help="local weights (robust-library .ckpt or a state "
                                          "dict) instead of the download", default_text="the --model download")
    arch: str | None = option(None, help="timm architecture of --model-checkpoint", default_text="the --model's")
    tf32: bool = option(False, help="TF32 matmuls/convolutions on CUDA (opt-in: changes activations slightly; "
                                    "recorded in the output)")
    bf16: bool = option(False, help="bfloat16 autocast (opt-in, recorded in the output)")
    compile: bool = option(False, help="torch.compile the model (opt-in, recorded in the output)")

    @property
    def numerics(self) -> Numerics:
        return Numerics(tf32=self.tf32, bf16=self.bf16, compile=self.compile)


@dataclass(kw_only=True)
class RestartOption(Options):
    title = "output"

    restart: bool = option(False, help="discard the finished work an interrupted run with other settings left in "
                                       "--out's staging folder, and start afresh")


@dataclass(kw_only=True)
class OverwriteOption(Options):
    title = "output"

    overwrite: bool = option(False, help="replace an earlier output of the same kind in --out (only files this tool "
                                         "wrote there; it stays whole until the new one is complete)")


@dataclass(kw_only=True)
class CacheOption(Options):
    title = "downloads"

    cache_dir: str = option(DEFAULT_CACHE_DIR, metavar="PATH",
                            help="where downloads are kept (the annotation CSV, the published zero-shot heads; "
                                 "models go to huggingface_hub's cache, HF_HOME)")


@dataclass(kw_only=True)
class PushOptions(Options):
    """Publishing to the Hub (the push command's, and a build's `--push`)."""

    title = "publishing"
    repo_id: str | None = option(None, help="Hub dataset repo", default_text="<logged-in user>/salient_imagenet")
    public: bool = option(False, help="make a new repo public (default: private, as ImageNet's terms restrict its "
                                      "images)")
