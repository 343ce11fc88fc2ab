"""Capability packages re-export their public names lazily, so `import salient_imagenet_builder.evaluate` (and
`salient-imagenet --help`) does not pay for torch and timm until a name is used."""

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """A module `__getattr__` that imports `package.<exports[name]>` on first use of `name`."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__
