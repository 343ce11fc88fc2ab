"""Build Salient ImageNet: ImageNet rows with core/spurious soft masks, as parquet shards plus a dataset card.

The stages, in the order a build runs them (`pipeline.Builder` wires them):
1. read: `..sources` yields samples from a folder, parquet or WebDataset shards;
2. decode: `rows.Pass1Decoder` (forked workers) turns bytes into the 224 view (`..images`);
3. map: the robust model (`..model`) gives layer4 maps, pooled features and logits;
4. reduce: `selection` keeps feature-importance sums and each annotated pair's bounded top-k with its maps;
5. materialise: the selected images are read again, `rows.make_row` turns maps into masks (`..masks`);
6. write: `writer` spills rows, sorts them into parquet shards; `card` writes README.md and build_info.json;
   `output` swaps the staging folder into place.
`command` is the handler of `python build_dataset.py`; `demo` makes the offline demo's inputs.
"""

from .._lazy import lazy_exports

__getattr__ = lazy_exports(__name__, {"build": "pipeline", "BuildConfig": "pipeline", "Builder": "pipeline"})
