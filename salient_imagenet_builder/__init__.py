"""salient-imagenet-builder: build, publish, evaluate and extend Salient ImageNet (Singla & Feizi, ICLR 2022).

    from salient_imagenet_builder import BuildConfig, build
    stats = build(BuildConfig(source="/data/imagenet", out="salient_imagenet"))

The public API is the names in `__all__`. They are imported on first use, not when the package is: the command line
(`salient_imagenet_builder.cli`) lives inside this package, and `--help` must not wait for torch. Each name comes from
its capability package, which imports plainly: `builder`, `discovery`, `evaluation`, `publish`, `ingest`, `show`,
all over the engine in `core`.
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the package that defines it
_API = {
    "BuildConfig": "builder", "BuildStats": "builder", "build": "builder",
    "DiscoverConfig": "discovery", "discover": "discovery",
    "EvaluateConfig": "evaluation", "evaluate": "evaluation",
    "check": "publish", "push": "publish",
}
__all__ = ["BuildConfig", "BuildStats", "DiscoverConfig", "EvaluateConfig", "__version__", "build", "check", "discover",
           "evaluate", "push"]

if TYPE_CHECKING:  # what IDEs and type checkers read
    from .builder import BuildConfig, BuildStats, build
    from .discovery import DiscoverConfig, discover
    from .evaluation import EvaluateConfig, evaluate
    from .publish import check, push


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
