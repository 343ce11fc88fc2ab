"""push's and check's options (`PushConfig`, `CheckConfig`) and their commands: light, so the command line reads them
for `--help`."""

from dataclasses import dataclass

from ..core.constants import DEFAULT_OUT
from ..core.options import Options, PushOptions, option
from ..core.registry import Command, register_command

__all__ = ["CheckConfig", "PushConfig"]


@dataclass(kw_only=True)
class PushConfig(PushOptions):
    """The options of `salient-imagenet push`, as fields."""

    out: str = option(DEFAULT_OUT, positional=True, help="built folder")


@dataclass(kw_only=True)
class CheckConfig(Options):
    """The options of `salient-imagenet check`, as fields."""

    target: str = option(positional=True, required=True, help="a built folder or a Hub dataset repo id")
    stream: bool = option(True, flags=("--no-stream",), help="skip streaming the first rows (default: stream them)")


register_command(Command("push", "publish a built folder to the Hub", PushConfig,
                         "salient_imagenet_builder.publish.command:run_push_command", order=50))
register_command(Command("check", "validate a dataset folder or Hub repo for load_dataset and the dataset viewer",
                         CheckConfig, "salient_imagenet_builder.publish.command:run_check_command", order=60))
