"""Discover new core and spurious features: rank a model's features per class and make the annotation study.

The stages, in order:
1. `scan`: pass 1 over the source, per unit of work, into a mergeable `ScanResult` (FI sums and counts per
   class, the top images of every (class, feature) by r_j(x)); `scan_unit` + `ScanResult.merge` are the seam
   where the build's unit runner (resumable, distributed) plugs in; `scan_source` runs the units in this process;
2. `ranking`: the top features of each class by importance, and `pairs.csv` (the published `Input.*` columns);
3. `attack`: the selected images' activation maps and feature attacks (L2-normalised gradient ascent on r_j);
4. `panels`: one PNG per pair as the annotators saw it (drawn with `..render`);
5. `page`: the self-contained offline `index.html` (HTML, CSS and JavaScript from `page/`);
6. `command`: the handler of `salient-imagenet discover`, which writes the study folder atomically.
`ingest` (merging annotators' answers into the builder's annotation CSV) follows the study: see `..ingest`.
"""

from .._lazy import lazy_exports

__getattr__ = lazy_exports(__name__, {
    "ScanResult": "scan", "scan_unit": "scan", "scan_source": "scan", "merge_top": "scan",
    "PairTask": "ranking", "rank_pairs": "ranking", "read_pairs": "ranking", "write_pairs": "ranking",
    "PAIR_COLUMNS": "ranking", "activation_maps": "attack", "feature_attack": "attack",
    "write_panels": "panels", "render_panel": "panels", "write_page": "page", "render_page": "page",
    "run": "command",
})
