"""salient-imagenet-builder: build, publish, evaluate and extend Salient ImageNet (Singla & Feizi, ICLR 2022).

    from salient_imagenet_builder import BuildConfig, build
    stats = build(BuildConfig(source="/data/imagenet", out="salient_imagenet"))

The public API is the names in `__all__`, imported on first use: the command line (`salient_imagenet_builder.cli`)
lives inside this package, and `--help` must not wait for torch. The capabilities, each a package over the engine
in `core`, are listed in `CAPABILITIES`: each registers its commands, outputs and card sections with the engine
(`core.registry`) when it is imported, and none imports another.
"""

from typing import TYPE_CHECKING

from .core.lazy import lazy_exports
from .version import __version__

# what a user does, one package each (`core.registry.load` imports them all)
CAPABILITIES = ("builder", "evaluation", "discovery", "ingest", "generalize", "publish", "show", "segmentation",
                "update", "attach")

__all__ = ["BuildConfig", "BuildStats", "DiscoverConfig", "EvaluateConfig", "__version__", "build", "check", "discover",
           "evaluate", "push"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "BuildConfig": ".builder", "BuildStats": ".builder", "build": ".builder",
    "DiscoverConfig": ".discovery", "discover": ".discovery",
    "EvaluateConfig": ".evaluation", "evaluate": ".evaluation",
    "check": ".publish", "push": ".publish"})

if TYPE_CHECKING:  # what IDEs and type checkers read
    from .builder import BuildConfig, BuildStats, build
    from .discovery import DiscoverConfig, discover
    from .evaluation import EvaluateConfig, evaluate
    from .publish import check, push
