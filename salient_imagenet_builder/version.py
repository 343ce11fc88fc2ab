"""The package's version, in a module of its own: everything that records it imports it from here."""

__version__ = "0.1.0"
