"""Validate a built dataset's soft masks against human segmentations of the same images.

The stages, in order:
1. `human`: a human mask file (ImageNet-S ids or a binary mask) -> its object map H and ignore map, taken through
   the dataset's view (shorter side to 256 by nearest neighbour, centre crop 224);
2. `scoring`: per image and feature, energy_inside = sum(m * H) / sum(m) over the pixels not ignored; per pair the
   mean over its images with a human mask; per kind the mean over pairs;
3. `report`: REPORT/validation.csv, REPORT/summary.json and the core vs spurious plot;
4. `command`: the handler of `salient-imagenet validate` (a job of the engine that writes the report folder);
   `options` declares `ValidateConfig`, the command and the report folder's kind.
"""

from ..core.lazy import lazy_exports
from .options import FORMATS, ValidateConfig

__all__ = ["FORMATS", "HumanMasks", "ValidateConfig", "energy_inside", "score_dataset"]
__getattr__, __dir__ = lazy_exports(__name__, {"HumanMasks": ".human", "energy_inside": ".scoring",
                                               "score_dataset": ".scoring"})
