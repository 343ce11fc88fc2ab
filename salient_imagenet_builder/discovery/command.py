"""`salient-imagenet discover`: the command line's options -> `study.discover`, with Ctrl-C said in one line."""

from pathlib import Path

from ..core import distributed
from ..core.constants import PAIRS_FILE
from ..core.output import interruptible
from ..core.sources import describe_reads
from .study import DiscoverConfig, check_study_out, discover


def config_from_args(args) -> DiscoverConfig:
    return DiscoverConfig(
        source=args.source, out=args.out, split=args.split, source_type=args.source_type, model=args.model,
        model_checkpoint=args.model_checkpoint, arch=args.arch, classes=args.classes, limit=args.limit,
        group_by=args.group_by, features_per_class=args.features_per_class, top_images=args.top_images,
        attack_steps=args.attack_steps, title=args.title, batch_size=args.batch_size, workers=args.workers,
        device=args.device, draft=not args.no_draft, unit_size=args.unit_size, restart=args.restart,
        overwrite=args.overwrite, tf32=args.tf32, bf16=args.bf16, compile=args.compile)


def run(args) -> int:
    config = config_from_args(args)
    out = Path(config.out)
    check_study_out(config)  # before any work: what --out may be
    distributed.share_cores()
    with interruptible(out):
        provenance = discover(config)
    if distributed.world_from_env().is_main:
        pairs = provenance["pairs"]
        print(f"\nWrote {out}: {len(pairs)} pairs of {len({p['class_index'] for p in pairs})} classes from "
              f"{provenance['images_scanned']} images ({provenance['images_skipped']} corrupt skipped). Open "
              f"{out / 'index.html'} in a browser; each annotator exports a CSV, then:\n  salient-imagenet ingest "
              f"answers-*.csv --pairs {out / PAIRS_FILE} --out annotations.csv")
        print(describe_reads(provenance["source_bytes"], None))
    return 0
