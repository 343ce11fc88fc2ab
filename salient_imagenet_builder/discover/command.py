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
from tqdm.auto import tqdm

from .. import __version__
from ..build.output import prepare_output, publish, write_text_atomic
from ..build.rows import Pass1Decoder
from ..constants import CONTEXT_IMAGES, NUM_CLASSES
from ..errors import InputError
from ..model import create_feature_model, pick_device
from ..sources import open_source
from ..stages import default_workers, ordered_map
from .page import write_page
from .panels import write_panels
from .ranking import rank_pairs, write_pairs
from .scan import scan_source

log = logging.getLogger(__name__)
INFO = "discover_info.json"
OWN_FILES = ("index.html", "pairs.csv", INFO)


def check_out(out: Path, overwrite: bool) -> None:
    if not out.exists() or not overwrite:
        return
    foreign = [p for p in out.rglob("*") if p.is_file() and p.name not in OWN_FILES
               and not (p.parent == out / "panels" and p.suffix == ".png")]
    if foreign:
        raise InputError(f"{out}: --overwrite would delete files discovery did not write, e.g. "
                         f"{foreign[0].relative_to(out)}; move them away or choose another --out")


def run(args) -> int:
    out = Path(args.out)
    check_out(out, args.overwrite)
    start = time.perf_counter()
    device = pick_device(args.device)
    model, info = create_feature_model(args.model, args.model_checkpoint, args.arch)
    model = model.to(device, memory_format=torch.channels_last).eval()
    source = open_source(args.source, args.split, args.source_type)
    classes = args.classes or list(range(NUM_CLASSES))
    wanted = None if len(classes) == NUM_CLASSES else set(classes)
    workers = default_workers() if args.workers is None else args.workers
    bar = tqdm(total=source.count(wanted, args.limit), unit="img", desc="scan: robust model over the source",
               dynamic_ncols=True)

    def progress(items):
        for item in items:
            bar.update(1)
            yield item

    with ordered_map(Pass1Decoder(not args.no_draft), workers) as imap:
        scan = scan_source(source.samples(wanted, args.limit), imap, model, classes, args.top_images,
                           CONTEXT_IMAGES, args.group_by, args.batch_size, device, progress)
    bar.close()
    tasks = rank_pairs(scan, model.classifier_weight, args.features_per_class)
    if not tasks:
        raise InputError(f"--source {args.source}: no image was grouped into the requested classes "
                         f"({scan.scanned} read); try --group-by label or more images")
    staging = prepare_output(out, args.overwrite)
    try:
        panel_bar = tqdm(total=len(tasks), unit="panel", desc="panels: maps and feature attacks", dynamic_ncols=True)
        write_panels(staging, tasks, scan, source, model, args.attack_steps, args.batch_size, device,
                     not args.no_draft, progress=lambda done: panel_bar.update(done - panel_bar.n))
        panel_bar.close()
        write_pairs(staging / "pairs.csv", tasks)
        write_page(staging, tasks, args.title or f"Salient features of {info.name}")
        write_text_atomic(staging / INFO, json.dumps(provenance(args, info, scan, tasks, start), indent=2))
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish(staging, out)
    print(f"\nWrote {out}: {len(tasks)} pairs of {len({t.class_index for t in tasks})} classes from "
          f"{scan.scanned} images ({len(scan.skipped)} corrupt skipped). Open {out / 'index.html'} in a browser; "
          f"each annotator exports a CSV, then:\n  salient-imagenet ingest answers-*.csv --pairs {out / 'pairs.csv'} "
          "--out annotations.csv")
    return 0


def provenance(args, info, scan, tasks, start) -> dict:
    return {
        "package_version": __version__, "command": shlex.join(["salient-imagenet", *sys.argv[1:]]),
        "source": args.source, "split": args.split, "model": info.name, "arch": info.arch,
        "checkpoint": info.checkpoint, "checkpoint_sha256": info.sha256, "group_by": args.group_by,
        "features_per_class": args.features_per_class, "top_images": args.top_images,
        "attack_steps": args.attack_steps, "images_scanned": scan.scanned, "skipped_ids": scan.skipped[:100],
        "group_sizes": {str(c): int(scan.fi.counts[c]) for c in scan.classes if int(scan.fi.counts[c])},
        "pairs": [{"class_index": t.class_index, "feature_index": t.feature_index, "feature_rank": t.feature_rank,
                   "importance": t.importance, "top_image_ids": [str(scan.images.ids[i]) for i, _ in t.top]}
                  for t in tasks],
        "seconds": round(time.perf_counter() - start, 2),
    }
