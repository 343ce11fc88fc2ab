"""The generalization study (the paper's Section 3.4): does a feature's annotation, made from its top 5 images,
hold further down its ranking?

The stages, in order (`study.GeneralizeJob` fills in the engine's job with them; `options` declares
`GeneralizeConfig`, the command and the study folder's kind; `command` is the handler of `salient-imagenet
generalize`):
1. `bands`: `--bands` parsed and checked against the build's top-k (Section A is ranks 1-5);
2. `study`: from a built dataset (local or Hub; its masks are already there), each pair's ranked images by class
   (`core.dataset`), their views from the build's image column or, for a masks-only build, `--imagenet` by id;
3. `panels`: one PNG per (pair, band): Section A, the top 5 images and their heatmaps, above Section B, the images
   ranked within the band and theirs;
4. `pairs.csv` (one row per (pair, band)) and the offline page (`core.annotation_page`, "generalize" mode).
`ingest` then counts the answers per band and `update` records them in the build.
"""

from ..core.lazy import lazy_exports
from .options import GeneralizeConfig

__all__ = ["BandTask", "GeneralizeConfig", "GeneralizeJob", "make_study", "parse_bands", "render_band_panel"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "BandTask": ".panels", "render_band_panel": ".panels", "GeneralizeJob": ".study", "make_study": ".study",
    "parse_bands": ".bands"})
