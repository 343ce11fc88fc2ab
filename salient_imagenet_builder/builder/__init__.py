"""Build Salient ImageNet: ImageNet rows with core/spurious soft masks, as parquet shards plus a dataset card.

The stages, in the order a build runs them (`pipeline.Builder` wires them over the engine, `..core`, on one process
or every torchrun rank):
1. plan: the source's readers (`core.sources`) cut it into work units fixed by the data (`core.units`);
2. pass 1 per unit: the one scan (`core.scan`: decode workers -> `core.runner.ModelRunner` -> FI sums and each
   annotated pair's top-k candidates with their maps), or with `--top-k all` the rows themselves (`rows.RowSpill`);
3. reduce (`reduce`): the merged scan's selection; `all`-mode ranks (`reduce.PairRanks`);
4. pass 2 per unit (`pass2`): the selected images read again, their rows from pass 1's maps (`rows.make_row`);
5. write: `core.writer` sorts the units' rows into parquet shards; `core.gallery` draws the card's picture;
   `core.card` writes README.md and build_info.json; `core.output` swaps the staging folder into place.
`command` is the handler of `python build_dataset.py`; `demo` makes the offline demo's inputs.
"""

from ..core.card import BuildStats
from .pipeline import BuildConfig, Builder, build

__all__ = ["BuildConfig", "BuildStats", "Builder", "build"]
