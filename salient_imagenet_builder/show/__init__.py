"""Show a built dataset as pictures: one (class, feature) pair's panel, a class summary, and the gallery a build
puts at the top of its card.

The stages, in order:
1. `data`: a built folder or a Hub repo (`publish.check.Target`) -> the rows of one class (images, masks) and the
   annotations config, read from the parquet shards with a filter on `group`;
2. `pictures`: those rows drawn with `..render` (mask overlays, red = high): `pair_panel`, `class_summary`,
   `gallery` (and `write_gallery`, the one call a build makes);
3. `command`: the handler of `salient-imagenet show`.
"""

from .pictures import class_summary, pair_panel

__all__ = ["class_summary", "pair_panel"]
