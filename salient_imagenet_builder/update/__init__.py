"""Record a study in a local build without recomputing it: new columns of the `annotations` config and a section
of the card; the default config's shards are kept byte for byte.

The stages, in order:
1. `apply.UpdateJob` (the engine's job, `..core.job`, that replaces nothing): check the build, stage a copy of it
   beside it (`.X.partial`, its files hard-linked, so the
   image shards are the same bytes), let each `Recording` fill its columns of the annotations rows and its entry in
   the card's `updates`, write the annotation shards and the card into the staging folder, then rename it into place
   as a build does (`core.output.move_into_place`);
2. `generalization`: the recording of `--generalization generalization.csv` (the pair's bands, added to those
   earlier updates recorded, and `generalizes_to_rank` over all of them);
3. `validation`: the recording of `--validation REPORT/validation.csv` (`validate`'s scores, for the card only);
4. `card`: the card's sections of what the recordings recorded; `options` declares `UpdateConfig`, the command and
   those sections; `command` is the handler of `salient-imagenet update`: one recording per flag.
"""

from ..core.lazy import lazy_exports
from .options import UpdateConfig

__all__ = ["GeneralizationRecording", "Recording", "UpdateConfig", "UpdateJob", "ValidationRecording", "update"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "Recording": ".apply", "UpdateJob": ".apply", "update": ".apply", "GeneralizationRecording": ".generalization",
    "ValidationRecording": ".validation"})
