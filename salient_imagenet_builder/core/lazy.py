"""Public names of a package imported on first use, so that importing the package (the command line does, to read
its options and commands) stays light: torch and timm load only when a name that needs them is used."""

import importlib

__all__ = ["lazy_exports"]


def lazy_exports(package: str, where: dict[str, str]):
    """`__getattr__` and `__dir__` for `package`, whose names in `where` (name -> module, relative to the package)
    are imported when first asked for, then kept as plain attributes."""
    module = importlib.import_module(package)

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name], package), name)
        setattr(module, name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(module)) | set(where))

    return __getattr__, __dir__
