"""Where an argument points, and whether the network can be used: the one place that tells a local folder from a
Hub dataset id (`--source`, `evaluate --dataset`, `check`) and asks the Hub, once and quickly, if it is reachable.

A path that does not exist is reported as "no such folder" first; the Hub is only mentioned (and asked) when the
text could be a Hub id (`user/name`), and the message says whether the Hub answered. A local folder left half-replaced
by an interrupted build is named in one line (`output.half_replaced`): resolving never writes.
"""

import os
import re
from pathlib import Path

from .constants import PROBE_TIMEOUT_SECONDS
from .errors import InputError, NetworkError
from .staging import half_replaced

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9_]")  # user/name; not ./x, ../x, /x, x/y/z


def offline() -> bool:
    """HF_HUB_OFFLINE=1 (the variable huggingface_hub honours): no request at all."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true")


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_unreachable() -> str | None:
    """Why the Hub cannot be reached (one short phrase), or None when it answers. One request, no retries, a few
    seconds at most: huggingface_hub's own downloads retry connection errors for ~25 s before giving up."""
    if offline():
        return "HF_HUB_OFFLINE=1 is set"
    from huggingface_hub.utils import get_session

    try:
        get_session().head(hub_endpoint() + "/api/whoami-v2", timeout=PROBE_TIMEOUT_SECONDS)
    except Exception as e:  # any transport failure (DNS, refused, timeout, proxy): the Hub is out of reach
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        return f"the Hub at {hub_endpoint()} could not be reached ({reason})"
    return None


def could_be_hub_id(text: str) -> bool:
    return bool(HUB_ID.fullmatch(text)) and not text.startswith(".")


def resolve(text: str, option: str) -> Path | str:
    """A local folder (Path) or a Hub dataset id (str) that exists; otherwise one line that says what was looked at.
    `option` names the argument in the message, e.g. `--source`."""
    path = Path(text).expanduser()
    interrupted = half_replaced(path)
    if interrupted is not None:
        raise InputError(interrupted)
    if path.exists():
        return path
    where = f"{option} {text}: no such folder ({path.absolute()})"
    if not could_be_hub_id(text):
        raise InputError(where)
    reason = hub_unreachable()
    if reason is not None:
        raise NetworkError(f"{where}; as a Hub dataset id it could not be checked: {reason}")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        HfApi().dataset_info(text)
    except GatedRepoError:
        return text  # it exists; reading it will say what to do about the gate
    except RepositoryNotFoundError:
        raise InputError(f"{where}; the Hub ({hub_endpoint()}) has no dataset {text} visible to you (if it is "
                         "private, log in with `hf auth login` or set HF_TOKEN)") from None
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        raise NetworkError(f"{where}; the Hub answered HTTP {status} for dataset {text}") from None
    except Exception as e:  # the connection broke between the probe and this call
        raise NetworkError(f"{where}; the Hub could not be asked about {text} ({type(e).__name__})") from None
    return text


class Target:
    """A local folder or a Hub dataset repo, seen as files."""

    def __init__(self, target: str, command: str):
        where = resolve(target, command)  # "no such folder" first; the Hub only for what could be a Hub id
        self.local = isinstance(where, Path)
        if self.local and not where.is_dir():
            raise InputError(f"{command} {target}: is a file; give a built dataset folder or a Hub dataset id")
        self.name = target
        if self.local:
            self.root = where
            self.files = sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())
        else:
            from huggingface_hub import HfFileSystem

            self.fs = HfFileSystem()
            base = f"datasets/{target}"
            self.files = sorted(f[len(base) + 1:] for f in self.fs.find(base))

    def open(self, path: str, random: bool = False):
        """A file of the dataset; `random` (parquet): no read-ahead, so a remote reader fetches only the byte ranges
        it asks for (a footer, one row group's columns) instead of 5 MiB blocks."""
        if self.local:
            return open(self.root / path, "rb", buffering=0 if random else -1)
        return self.fs.open(f"datasets/{self.name}/{path}", "rb", **({"cache_type": "none"} if random else {}))

    def read_text(self, path: str) -> str:
        with self.open(path) as f:
            return f.read().decode("utf-8")
