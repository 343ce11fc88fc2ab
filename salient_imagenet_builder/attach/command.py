"""`salient-imagenet attach DATASET --imagenet DIR_OR_ID --out FULL`: a masks-only build with the user's images."""

import shlex
import sys
from pathlib import Path

from ..core.output import interruptible
from ..core.sources import describe_reads
from .apply import ATTACH_INFO, AttachConfig, attach


def run(args) -> int:
    config = AttachConfig(dataset=args.dataset, imagenet=args.imagenet, out=args.out, image_mode=args.image_mode,
                          allow_missing=args.allow_missing, split=args.split, imagenet_type=args.imagenet_type,
                          workers=args.workers, overwrite=args.overwrite, restart=args.restart,
                          command=shlex.join(["salient-imagenet", *sys.argv[1:]]))
    with interruptible(Path(args.out)):
        summary = attach(config)
    print(f"Attached {summary['attached']} of {summary['rows']} images from {args.imagenet} to {args.dataset} "
          f"(--image-mode {args.image_mode}) in {args.out}.")
    if summary["not_attached"]:
        print(f"{summary['not_attached']} row(s) keep no image (--allow-missing); {Path(args.out) / ATTACH_INFO} "
              "lists them.")
    read = summary["source_bytes"]
    print(describe_reads({"total": sum(read.values()), **read}, summary["source_size"], whose="the copy's"))
    print(f"Check it with:\n  salient-imagenet check {args.out}")
    return 0
