"""Show a built dataset as pictures: one (class, feature) pair's panel and a class summary.

The stages, in order:
1. `core.dataset.DatasetView`: a built folder or a Hub repo -> the rows of one class (images, masks) and the
   annotations config, read from the parquet shards with a filter on `group`;
2. `pictures`: those rows drawn with `core.render` (mask overlays, red = high): `pair_panel`, `class_summary`;
3. `command`: the handler of `salient-imagenet show` (`options` declares `ShowConfig` and the command).
(The gallery at the top of a build's card is drawn the same way by the engine: `core.gallery`.)
"""

from ..core.lazy import lazy_exports
from .options import ShowConfig

__all__ = ["ShowConfig", "class_summary", "pair_panel"]
__getattr__, __dir__ = lazy_exports(__name__, {"class_summary": ".pictures", "pair_panel": ".pictures"})
