"""`salient-imagenet attach DATASET --imagenet DIR_OR_ID --out FULL`: a masks-only build with the user's images."""

from pathlib import Path

from ..core.job import run_command
from ..core.sources import describe_reads
from .apply import AttachJob
from .options import ATTACH_INFO, AttachConfig


def run(config: AttachConfig) -> int:
    summary = run_command(AttachJob(config))
    print(f"Attached {summary['attached']} of {summary['rows']} images from {config.imagenet} to {config.dataset} "
          f"(--image-mode {config.image_mode}) in {config.out}.")
    if summary["not_attached"]:
        print(f"{summary['not_attached']} row(s) keep no image (--allow-missing); {Path(config.out) / ATTACH_INFO} "
              "lists them.")
    read = summary["source_bytes"]
    print(describe_reads({"total": sum(read.values()), **read}, summary["source_size"], whose="the copy's"))
    print(f"Check it with:\n  salient-imagenet check {config.out}")
    return 0
