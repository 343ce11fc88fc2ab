"""`salient-imagenet discover`: a `DiscoverJob`, then what to do next."""

from pathlib import Path

from ..core import distributed
from ..core.constants import PAIRS_FILE
from ..core.job import run_command
from ..core.sources import describe_reads
from .options import DiscoverConfig
from .study import DiscoverJob


def run(config: DiscoverConfig) -> int:
    out = Path(config.out)
    distributed.share_cores()
    provenance = run_command(DiscoverJob(config))
    if distributed.world_from_env().is_main:
        pairs = provenance["pairs"]
        print(f"\nWrote {out}: {len(pairs)} pairs of {len({p['class_index'] for p in pairs})} classes from "
              f"{provenance['images_scanned']} images ({provenance['images_skipped']} corrupt skipped). Open "
              f"{out / 'index.html'} in a browser; each annotator exports a CSV, then:\n  salient-imagenet ingest "
              f"answers-*.csv --pairs {out / PAIRS_FILE} --out annotations.csv")
        print(describe_reads(provenance["source_bytes"], None))
    return 0
