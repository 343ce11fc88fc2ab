"""Discover new core and spurious features: rank a model's features per class and make the annotation study.

The stages, in order (`study.DiscoverJob` fills in the engine's job with them; `options` declares `DiscoverConfig`,
the command and the study folder's kind; `command` is the handler of `salient-imagenet discover`):
1. scan: the build's own pass 1 (`core.scan`, resumable work units, torchrun ranks), every feature of every class
   tracked, with each class's most confident images for context;
2. `ranking`: the top features of each class by importance, and `pairs.csv` (the published `Input.*` columns);
3. `attack`: the selected images' activation maps and feature attacks (L2-normalised gradient ascent on r_j);
4. `panels`: one PNG per pair as the annotators saw it (drawn with `core.render`), in work units of classes;
5. the self-contained offline `index.html` (`core.annotation_page`, in its "discover" mode).
`ingest` (merging annotators' answers into the builder's annotation CSV) follows the study: see `..ingest`.
"""

from ..core.lazy import lazy_exports
from .options import DiscoverConfig

__all__ = ["DiscoverConfig", "DiscoverJob", "PairTask", "activation_maps", "discover", "feature_attack",
           "rank_pairs", "render_panel", "write_pairs", "write_panels"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "DiscoverJob": ".study", "discover": ".study", "activation_maps": ".attack", "feature_attack": ".attack",
    "render_panel": ".panels", "write_panels": ".panels", "PairTask": ".ranking", "rank_pairs": ".ranking",
    "write_pairs": ".ranking"})
