"""What the capabilities tell the engine about themselves, the way timm registers a model (`@register_model`): the
commands they add, the output folders they write, their sections of a dataset card and their study formats. The
engine offers the mechanism and names none of them; adding a capability touches no module of the engine.

Each capability registers in a light module of its own (no torch), which its package imports; `load` imports every
capability package the package root lists (`salient_imagenet_builder.CAPABILITIES`), once, the first time anything
here is asked for.
"""

import importlib
import threading
from dataclasses import dataclass
from typing import Callable

__all__ = ["CardPart", "Command", "OutputKind", "Study", "card_parts", "commands", "output_kind",
           "output_kinds", "register_card_part", "register_command", "register_output", "register_owned",
           "register_study", "study_format", "study_formats"]


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, what it does (the help line), its config dataclass (the option table, see
    `core.options`) and the function that runs it, "module:function" (imported when the command runs, so `--help`
    stays light). `run(config) -> int` returns the exit code."""

    name: str
    help: str
    config: type
    run: str
    description: str = ""
    order: int = 100  # the place in `--help`'s list


@dataclass(frozen=True)
class OutputKind:
    """A folder one command writes: its name, how messages name it, the marker file that makes a folder one (it names
    the package), a good `--out` to suggest, the command that writes it, the files that command writes (glob
    patterns of paths inside the folder: `--overwrite` refuses to delete any other), the file written last (a staged
    folder with it is complete), and optionally how to recognise one written before its marker existed."""

    name: str
    noun: str  # "a discovery study"
    label: str  # "study": "an earlier study is there"
    marker: str
    example: str
    command: str  # the command to run again to finish an interrupted replacement ("" : the one that was writing)
    owns: tuple[str, ...]
    last: str
    legacy: Callable | None = None  # folder -> bool
    replacing: str = ""  # what --overwrite replaces, in words (default: "an earlier <label>")
    rewritten: bool = False  # its command replaces an earlier one of its own without --overwrite (a report)

    @property
    def replaces(self) -> str:
        return self.replacing or f"--overwrite only replaces an earlier {self.label}"


@dataclass(frozen=True)
class CardPart:
    """A capability's part of a dataset card, rendered from what it recorded in the build's statistics: `data(stats)`
    (None: the part is absent), and any of rows of the provenance table, rows of the statistics table, a section."""

    name: str
    data: Callable  # (stats, provenance) -> what it renders, or None
    provenance_rows: Callable | None = None  # data -> [(name, value)]
    statistics_rows: Callable | None = None
    section: Callable | None = None  # data -> Markdown
    slot: str = "studies"  # where its section goes: "studies" (after the statistics) or "usage" (after the examples)
    order: int = 100


@dataclass(frozen=True)
class Study:
    """A kind of annotation study: its name, the pairs.csv column that tells its studies apart (None: the one
    without such a column), and its format, "module:attribute" (a `core.studies.StudyFormat`, imported when used)."""

    name: str
    marker_column: str | None
    format: str
    order: int = 100


_COMMANDS: dict[str, Command] = {}
_KINDS: dict[str, OutputKind] = {}
_OWNED: dict[str, list[str]] = {}
_CARD: dict[str, CardPart] = {}
_STUDIES: dict[str, Study] = {}
_loaded = threading.RLock()  # a capability's import may ask for what is registered
_done = False


def register_command(command: Command) -> Command:
    _COMMANDS[command.name] = command
    return command


def register_output(kind: OutputKind) -> OutputKind:
    _KINDS[kind.name] = kind
    return kind


def register_owned(kind: str, *patterns: str) -> None:
    """Files one command adds to another command's kind of folder (e.g. a report file beside a dataset's)."""
    _OWNED.setdefault(kind, []).extend(patterns)


def register_card_part(part: CardPart) -> CardPart:
    _CARD[part.name] = part
    return part


def register_study(study: Study) -> Study:
    _STUDIES[study.name] = study
    return study


def load() -> None:
    """Import every capability package once (each registers itself)."""
    global _done
    with _loaded:
        if _done:
            return
        root = importlib.import_module(__name__.rpartition(".core.")[0])
        for name in root.CAPABILITIES:
            importlib.import_module(f"{root.__name__}.{name}")
        _done = True


def commands() -> list[Command]:
    load()
    return sorted(_COMMANDS.values(), key=lambda c: (c.order, c.name))


def output_kinds() -> dict[str, OutputKind]:
    load()
    return dict(_KINDS)


def output_kind(name: str) -> OutputKind:
    """The kind with every file other commands add to it among its owned files."""
    kind = output_kinds()[name]
    extra = tuple(_OWNED.get(name, ()))
    return kind if not extra else OutputKind(**{**kind.__dict__, "owns": (*kind.owns, *extra)})


def card_parts() -> list[CardPart]:
    load()
    return sorted(_CARD.values(), key=lambda p: (p.order, p.name))


def study_formats() -> list[Study]:
    load()
    return sorted(_STUDIES.values(), key=lambda s: (s.order, s.name))


def study_format(name: str):
    """The format of the study kind `name` (a `core.studies.StudyFormat`)."""
    load()
    module, _, attribute = _STUDIES[name].format.partition(":")
    return getattr(importlib.import_module(module), attribute)
