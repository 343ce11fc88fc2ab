"""validate's options (`ValidateConfig`), its command and its output, the report folder: light, so the command line
reads them for `--help`."""

import json
from dataclasses import dataclass
from pathlib import Path

from ..core.options import Options, option
from ..core.registry import Command, OutputKind, register_command, register_output

__all__ = ["FORMATS", "REPORT_FILES", "ValidateConfig"]

FORMATS = ("imagenet-s", "binary")  # the layouts of human segmentations (ImageNet-S ids R + 256 * G, or non-zero)
CSV_FILE, SUMMARY_FILE, PLOT_FILE = "validation.csv", "summary.json", "energy_inside.png"
REPORT_FILES = (CSV_FILE, SUMMARY_FILE, PLOT_FILE)


@dataclass(kw_only=True)
class ValidateConfig(Options):
    """The options of `salient-imagenet validate`, as fields."""

    dataset: str = option(positional=True, required=True, help="a built Salient ImageNet folder or a Hub dataset id")
    human_masks: str = option(metavar="DIR", required=True,
                              help="human segmentations: DIR/<wnid>/<image_id>.png (binary also DIR/<image_id>.png)")
    format: str = option(choices=FORMATS, required=True,
                         help="imagenet-s: RGB, class id = R + 256*G, 0 = other, 1000 = ignore; binary: non-zero = "
                              "object")
    split: str | None = option(None, help="image split", default_text="the build's")
    out: str = option(metavar="REPORT", required=True,
                      help=f"report folder: {', '.join(REPORT_FILES)} (an earlier report there is replaced)")
    command: str = ""  # the command line that made it (provenance; the command line sets it)


def _report_before_its_marker(folder: Path) -> bool:
    """A report from before summary.json named the package: its three files, the summary's own keys."""
    try:
        summary = json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and {"human_masks", "kinds"} <= set(summary) and (folder / CSV_FILE).is_file()


register_output(OutputKind(
    name="report", noun="a validation report", label="validation report", marker=SUMMARY_FILE, example="report",
    command="validate", owns=REPORT_FILES, last=PLOT_FILE, legacy=_report_before_its_marker, rewritten=True))

register_command(Command("validate", "score a build's soft masks against human segmentations of its images",
                         ValidateConfig, "salient_imagenet_builder.segmentation.command:run", order=75))
