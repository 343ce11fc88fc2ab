"""Pinned downloads of the authors' published files (the annotation CSV, the CLIP zero-shot heads): fetched once
into a cache folder, atomically, and used only when their sha256 is the pinned one. Their licence forbids shipping
them, so they are downloaded at run time; every failure is one line naming the cache and the option to pass."""

import logging
import os
import shutil
import urllib.request
from pathlib import Path

from .constants import DOWNLOAD_TIMEOUT_SECONDS
from .errors import InputError, NetworkError
from .output import sha256_file
from .targets import offline

log = logging.getLogger(__name__)


def fetch_pinned(url: str, cache_dir: str | os.PathLike, sha256: str | None, *, what: str, option: str,
                 error: type[InputError] = InputError) -> Path:
    """`url`'s file in `cache_dir` (downloaded when missing or not the pinned one). `what` names the file in messages
    ("the annotation CSV"), `option` what to pass instead ("--annotations PATH"); a changed file raises `error`."""
    target = Path(cache_dir).expanduser() / Path(url.split("?")[0]).name
    if target.is_file() and (sha256 is None or sha256_file(target) == sha256):
        return target
    if offline():
        raise NetworkError(f"{what} is not in the cache ({target}) and HF_HUB_OFFLINE=1 is set: pass {option} "
                           f"(a copy of {url})")
    download(url, target, sha256, what=what, option=option, error=error)
    return target


def download(url: str, target: Path, sha256: str | None, *, what: str, option: str,
             error: type[InputError] = InputError) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response, open(tmp, "wb") as f:
            log.info("downloading %s from %s", what, url)
            shutil.copyfileobj(response, f)
    except (OSError, ValueError) as e:  # URLError, HTTPError, timeouts, a bad URL
        tmp.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise NetworkError(f"cannot download {what} from {url} ({reason}); pass {option} (a local copy), or put the "
                           f"file in the cache at {target}") from None
    if sha256 is not None and sha256_file(tmp) != sha256:
        got, size = sha256_file(tmp), tmp.stat().st_size
        tmp.unlink()
        raise error(f"{what} downloaded from {url} has sha256 {got} ({size} bytes), not the pinned {sha256}: the "
                    f"file changed upstream or the download was altered; not using it. Pass {option} to use a copy "
                    "you trust")
    os.replace(tmp, target)
