"""Where an output came from, defined once: the package and version that made it, and the command as it was run,
its local paths cut to their last component (an output names an input by file name, beside its sha256, never by
where it lay on the maker's disk)."""

import re
import sys
from pathlib import PureWindowsPath

from ..version import __version__
from .constants import PACKAGE_NAME

__all__ = ["command_line", "made_by", "public_paths"]

# A local absolute path (/home/alice/x, ~/x, C:\\x) not inside a URL (https://host/x) or a relative path.
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~\\-])(?:~[\w.-]*/?|[A-Za-z]:\\|/)[^\s'\"`|,;()<>]*")


def public_paths(text: str) -> str:
    """`text` with every local absolute path cut to its last component."""
    def last_part(match: re.Match) -> str:
        parts = [p for p in re.split(r"[/\\]", match.group()) if p and p != "~" and not PureWindowsPath(p).drive]
        return parts[-1] if parts else match.group()

    return ABSOLUTE_PATH.sub(last_part, text)


def command_line(given: str = "") -> str:
    """The command that made an output: as the command line recorded it (`cli` sets a config's `command`), else, for
    a library call, the calling process's own command line."""
    return public_paths(given or " ".join(sys.argv))


def made_by(command: str = "") -> dict:
    """The facts every output's record starts with: this package (its marker), its version, the command."""
    return {"package": PACKAGE_NAME, "package_version": __version__, "command": command_line(command)}
