"""attach's options (`AttachConfig`), its command, the file it adds to a dataset and its parts of the card: light
(no torch), so the command line reads them for `--help`."""

from dataclasses import dataclass

from ..core.constants import MAX_SHARD_BYTES
from ..core.markdown import md_text
from ..core.options import ImageNetOptions, OverwriteOption, RestartOption, WorkersOption, option
from ..core.registry import CardPart, Command, register_card_part, register_command, register_owned

__all__ = ["ATTACH_INFO", "AttachConfig"]

ATTACH_INFO = "attach_info.json"  # what was attached, from where, and every image that was not
IMAGE_MODES = ("crop", "original")


@dataclass(kw_only=True)
class AttachConfig(ImageNetOptions, WorkersOption, RestartOption, OverwriteOption):
    """The options of `salient-imagenet attach`, as fields."""

    dataset: str = option(positional=True, required=True,
                          help="a build (local folder or Hub dataset id), typically a masks-only --image-mode none "
                               "build")
    imagenet: str = option(metavar="PATH_OR_ID", required=True,
                           help="your ImageNet copy (folder, parquet or WebDataset, a path or a Hub id); its images "
                                "are joined to the rows by image_id")
    out: str = option(required=True, help="the folder of the dataset with images")
    image_mode: str = option("crop", choices=IMAGE_MODES,
                             help="image column: crop = the 224x224 view the model saw (PNG), original = the copy's "
                                  "bytes")
    allow_missing: bool = option(False, help="rows whose image the copy lacks (or cannot decode) keep no image and "
                                             "are counted in the card (default: such images fail the command)")
    split: str | None = option(None, help="split of the ImageNet copy", default_text="the build's split")
    command: str = ""  # the command line that made it (provenance; the command line sets it)
    max_shard_bytes: int = MAX_SHARD_BYTES


def _attached_row(attached: dict) -> list[tuple]:
    return [("images", f"joined by `salient-imagenet attach` from {md_text(attached['imagenet'])} (split "
                       f"{md_text(attached['split'])}, as `--image-mode {attached['image_mode']}` stores them) to the "
                       f"masks-only build {md_text(attached['dataset'])}: {attached['attached']} of "
                       f"{attached['rows']} rows have an image")]


def _join_section(_) -> str:
    return ("## Join with your ImageNet copy\n\nThis build carries no images. Rows are keyed by `image_id` (the "
            "ImageNet file name without its extension); attach your own copy, made upright (EXIF orientation "
            "applied, `PIL.ImageOps.exif_transpose`), resized and center-cropped as above: "
            "`salient-imagenet attach THIS_DATASET --imagenet /data/imagenet --out full` writes the dataset "
            "with its images (as an `--image-mode crop` build stores them), or read them by id at evaluation "
            "time: `salient-imagenet evaluate --dataset ... --imagenet /data/imagenet`.\n")


register_owned("build", ATTACH_INFO)
register_card_part(CardPart(
    "attached images", data=lambda stats, provenance: stats.extras.get("attached"), provenance_rows=_attached_row,
    statistics_rows=lambda attached: [("rows without an image (not found in, or not decoded from, the attached "
                                       "ImageNet copy)", attached["not_attached"])]))
register_card_part(CardPart(
    "joining your ImageNet", data=lambda stats, provenance: provenance["constants"]["image_mode"] == "none", section=_join_section,
    slot="usage"))
register_command(Command("attach", "join your ImageNet copy's images to a masks-only build, by image_id",
                         AttachConfig, "salient_imagenet_builder.attach.command:run", order=90))
