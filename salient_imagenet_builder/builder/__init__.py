"""Build Salient ImageNet: ImageNet rows with core/spurious soft masks, as parquet shards plus a dataset card.

The stages, in the order a build runs them (`job.BuildJob` fills in the engine's job, `..core.job`, on one process
or every torchrun rank):
1. plan: the source's readers (`core.sources`) cut it into work units fixed by the data (`core.units`);
2. pass 1 per unit: the one scan (`core.scan`: decode workers -> `core.runner.ModelRunner` -> FI sums and each
   annotated pair's top-k candidates with their maps), or with `--top-k all` the rows themselves (`rows.RowSpill`);
3. reduce (`reduce`): the merged scan's selection; `all`-mode ranks (`reduce.PairRanks`);
4. pass 2 per unit (`pass2`): the selected images read again, their rows from pass 1's maps (`rows.make_row`);
5. write (`write`): `core.writer` sorts the units' rows into parquet shards; `core.gallery` draws the card's picture;
   `core.card` writes README.md and build_info.json; the job swaps the staging folder into place.
`options` declares `BuildConfig` (the command line's option table) and the command; `command` is its handler
(`python build_dataset.py`); `demo` makes the offline demo's inputs.
"""

from ..core.lazy import lazy_exports
from .options import BuildConfig

__all__ = ["BuildConfig", "BuildJob", "BuildStats", "Builder", "build"]
__getattr__, __dir__ = lazy_exports(__name__, {"BuildJob": ".job", "Builder": ".job", "build": ".job",
                                               "BuildStats": "..core.card"})
