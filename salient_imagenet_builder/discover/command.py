"""`salient-imagenet discover`: scan the source, rank features, write panels, `pairs.csv` and the annotation page.

The study folder is written in a staging folder beside `--out` and renamed into place when complete. An existing
folder is replaced only with `--overwrite`, and never when it holds files discovery did not write (annotators'
answer CSVs, say).
"""

import json
import logging
import shlex
import sys
import time
from pathlib import Path

import torch

from .. import __version__, distributed
from ..build.output import (
    check_out,
    discard_staging,
    interrupted,
    prepare_output,
    publish,
    staging_folder,
    write_text_atomic,
)
from ..constants import CONTEXT_IMAGES, DISCOVER_INFO, NUM_CLASSES, PACKAGE_NAME, PAIRS_FILE, WORK_DIR
from ..errors import InputError
from ..model import create_feature_model
from ..sources import open_source
from ..stages import default_workers
from .page import write_page
from .panels import write_panels
from .ranking import rank_pairs, write_pairs
from .units import scan_in_units

log = logging.getLogger(__name__)
INFO = DISCOVER_INFO
OWN_FILES = ("index.html", PAIRS_FILE, INFO)


def refuse_foreign_files(out: Path, overwrite: bool) -> None:
    """--overwrite of a study never deletes what discovery did not write (an annotator's export saved there)."""
    if not out.exists() or not overwrite:
        return
    foreign = [p for p in out.rglob("*") if p.is_file() and p.name not in OWN_FILES
               and not (p.parent == out / "panels" and p.suffix == ".png")]
    if foreign:
        raise InputError(f"{out}: --overwrite would delete files discovery did not write, e.g. "
                         f"{foreign[0].relative_to(out)}; move them away or choose another --out")


def run(args) -> int:
    out = Path(args.out)
    check_out(out, args.overwrite, args.source, kind="study")  # before any work: what --out may be
    refuse_foreign_files(out, args.overwrite)
    world = distributed.world_from_env()
    device = distributed.device_for(world, args.device)
    joined = distributed.init(world, device)
    try:
        return _run(args, out, world, device)
    except KeyboardInterrupt:
        raise interrupted(out) from None
    finally:
        if joined:
            distributed.destroy()


def _run(args, out: Path, world, device) -> int:
    start = time.perf_counter()
    model, info = create_feature_model(args.model, args.model_checkpoint, args.arch)
    model = model.to(device, memory_format=torch.channels_last).eval()
    source = open_source(args.source, args.split, args.source_type)
    classes = args.classes or list(range(NUM_CLASSES))
    workers = default_workers() if args.workers is None else args.workers
    staging = prepare_output(out, args.overwrite, args.source, kind="study") if world.is_main else staging_folder(out)
    distributed.barrier()
    try:
        scan = scan_in_units(args, source, model, info, classes, args.top_images, CONTEXT_IMAGES, device, world,
                             staging, workers)
        tasks = plan_pairs(args, scan, model, world)
        write_panels(staging, staging / WORK_DIR, tasks, scan, source, model, args.attack_steps, args.batch_size,
                     device, world, not args.no_draft)
        if world.is_main:
            write_study(args, staging, scan, tasks, info, start)
    except BaseException:
        if world.is_main:
            discard_staging(staging)  # finished scan and panel units stay for a resume
        raise
    if world.is_main:
        publish(staging, out)  # drops the work folder, then swaps the study into place
        print(f"\nWrote {out}: {len(tasks)} pairs of {len({t.class_index for t in tasks})} classes from "
              f"{scan.scanned} images ({len(scan.skipped)} corrupt skipped). Open {out / 'index.html'} in a browser; "
              f"each annotator exports a CSV, then:\n  salient-imagenet ingest answers-*.csv --pairs "
              f"{out / PAIRS_FILE} --out annotations.csv")
    distributed.barrier()
    return 0


def plan_pairs(args, scan, model, world) -> list:
    """Every rank: the pairs to annotate, ranked from the merged scan (the same on every rank)."""
    unlabelled = dict(sorted(scan.unlabelled.items()))
    if unlabelled and world.is_main:
        log.warning("skipped %d image(s) whose label is not an ImageNet class 0-%d (label: count %s)",
                    sum(unlabelled.values()), NUM_CLASSES - 1, unlabelled)
    if scan.scanned == 0 and unlabelled:
        raise InputError(f"--source {args.source} (split {args.split}): none of its images has an ImageNet label "
                         f"0-{NUM_CLASSES - 1} (labels seen: {unlabelled}); a test split carries no labels: "
                         "discover on the train or validation split")
    tasks = rank_pairs(scan, model.classifier_weight, args.features_per_class)
    if not tasks:
        raise InputError(f"--source {args.source}: no image was grouped into the requested classes "
                         f"({scan.scanned} read); try --group-by label or more images")
    return tasks


def write_study(args, staging: Path, scan, tasks: list, info, start) -> None:
    """Rank 0, once the panels are drawn: pairs.csv, the page and discover_info.json."""
    write_pairs(staging / PAIRS_FILE, tasks)
    write_page(staging, tasks, args.title or f"Salient features of {info.name}")
    write_text_atomic(staging / INFO, json.dumps(provenance(args, info, scan, tasks, start), indent=2))


def provenance(args, info, scan, tasks, start) -> dict:
    return {
        "package": PACKAGE_NAME, "package_version": __version__,
        "command": shlex.join(["salient-imagenet", *sys.argv[1:]]),
        "source": args.source, "split": args.split, "model": info.name, "arch": info.arch,
        "checkpoint": info.checkpoint, "checkpoint_sha256": info.sha256, "group_by": args.group_by,
        "features_per_class": args.features_per_class, "top_images": args.top_images,
        "attack_steps": args.attack_steps, "images_scanned": scan.scanned, "skipped_ids": scan.skipped[:100],
        "skipped_labels": dict(sorted(scan.unlabelled.items())),
        "group_sizes": {str(c): int(scan.fi.counts[c]) for c in scan.classes if int(scan.fi.counts[c])},
        "pairs": [{"class_index": t.class_index, "feature_index": t.feature_index, "feature_rank": t.feature_rank,
                   "importance": t.importance, "top_image_ids": [str(scan.images.ids[i]) for i, _ in t.top]}
                  for t in tasks],
        "seconds": round(time.perf_counter() - start, 2),
    }
