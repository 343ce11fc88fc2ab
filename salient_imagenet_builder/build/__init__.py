"""Build Salient ImageNet: ImageNet rows with core/spurious soft masks, as parquet shards plus a dataset card.

The stages, in the order a build runs them (`pipeline.Builder` wires them, on one process or every torchrun rank):
1. plan: `units` cuts the source (`..sources` readers' `plan_units`) into work units fixed by the data;
2. pass 1 per unit (`pass1`): read -> decode (`decoding`, forked workers, shared-memory hand-over) -> the robust
   model (`forward`, `..model`) -> a persisted unit result: FI sums, each annotated pair's top-k candidates and
   maps (`selection`), or with `--top-k all` the rows themselves (`rows.make_row`, `..masks`);
3. reduce (`reduce`): unit results merged in unit order; the selection; `all`-mode ranks;
4. pass 2 per unit (`pass2`): the selected images read again, their rows from pass 1's maps;
5. write: `writer` sorts the units' rows into parquet shards; `card` writes README.md and build_info.json;
   `output` swaps the staging folder into place. `units` keeps every unit's result for a resume.
`command` is the handler of `python build_dataset.py`; `demo` makes the offline demo's inputs.
"""

from .._lazy import lazy_exports

__getattr__ = lazy_exports(__name__, {"build": "pipeline", "BuildConfig": "pipeline", "Builder": "pipeline"})
