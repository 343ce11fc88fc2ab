"""Publishing a built folder to the Hugging Face Hub.

Data shards go up first, in several commits for large folders; the last commit adds the card and removes shards
of an earlier build, so the repo switches from one consistent build to the next. Files already on the Hub with
the same content are skipped, which makes an interrupted push resumable: run it again. Transient HTTP errors are
retried with back-off; a Hub that cannot be reached at all (offline, no route, HF_HUB_OFFLINE=1) is said so at once,
before anything is uploaded. The token comes from `hf auth login` or HF_TOKEN and is never printed.
"""

import hashlib
import logging
import time
from pathlib import Path

from ..core.card import BuildStats, read_build_info, write_card
from ..core.constants import BUILD_INFO
from ..core.errors import HubError, InputError, NetworkError
from ..core.output import half_replaced, is_build
from ..core.targets import hub_unreachable, offline
from .validate import check

log = logging.getLogger(__name__)

FILES_PER_COMMIT = 50
RETRIES = 5
BACKOFF_SECONDS = 1.0  # doubled after each failed try
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
LOGIN_HINT = "run `hf auth login` (a write token) or set HF_TOKEN"
IMAGENET_TERMS = ("ImageNet's terms of access (https://image-net.org/download.php) allow non-commercial research "
                  "and educational use and forbid redistributing the images")


class PushError(HubError):
    pass


def default_repo_id(api) -> str:
    return f"{_call(api.whoami, what='identify the logged-in user')['name']}/salient_imagenet"


def push(folder: str | Path, repo_id: str | None = None, private: bool = True, api=None) -> str:
    """Push a built folder; returns the repo id."""
    from huggingface_hub import HfApi, get_token

    folder = Path(folder)
    check_pushable(folder)
    api = api or HfApi()
    reachable_or_raise(folder)
    if not (api.token or get_token()):
        raise PushError(f"cannot push {folder}: no Hugging Face token; {LOGIN_HINT}, then run the same command "
                        "again")
    repo_id = repo_id or default_repo_id(api)
    info = read_build_info(folder)
    if not private and info["provenance"]["constants"]["image_mode"] != "none":
        log.warning("pushing ImageNet images to a PUBLIC repo: %s. Prefer a private repo, or an --image-mode none "
                    "build for public release.", IMAGENET_TERMS)
    stats = BuildStats.from_dict(info["stats"])
    write_card(folder, info["provenance"], stats, info["split"], repo_id)  # the card's examples name the repo
    progress = {"commits": 0}
    retry = _retrying(RETRIES, BACKOFF_SECONDS, progress)
    retry(_call, api.create_repo, repo_id, repo_type="dataset", private=private, exist_ok=True,
          what=f"create {repo_id}")
    remote = retry(_remote_files, api, repo_id)
    local = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    changed = [path for path in local if remote.get(path) not in _local_ids(folder / path)]
    data = [p for p in changed if p.startswith("data/")]
    last = [p for p in changed if not p.startswith("data/")]
    stale = [p for p in remote if p.startswith("data/") and p not in local]
    log.info("pushing to %s: %d file(s) changed, %d unchanged, %d stale to delete", repo_id, len(changed),
             len(local) - len(changed), len(stale))
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    chunks = [data[i:i + FILES_PER_COMMIT] for i in range(0, len(data), FILES_PER_COMMIT)]
    for n, chunk in enumerate(chunks, start=1):
        retry(_commit, api, repo_id, [CommitOperationAdd(p, str(folder / p)) for p in chunk],
              f"Add data shards ({n}/{len(chunks)})")
        progress["commits"] += 1
    final = [CommitOperationAdd(p, str(folder / p)) for p in last] + [CommitOperationDelete(p) for p in stale]
    if final:
        retry(_commit, api, repo_id, final, "Update dataset card" + (", remove stale shards" if stale else ""))
    return repo_id


def check_pushable(folder: Path) -> None:
    """Local checks first: a build of this tool, whole (not half-replaced), that passes `check`."""
    interrupted = half_replaced(folder)
    if interrupted is not None:
        raise InputError(interrupted)
    if not folder.is_dir():
        raise InputError(f"push {folder}: no such folder; build it first (python build_dataset.py --source ... "
                         f"--out {folder})")
    if not is_build(folder):
        raise InputError(f"push {folder}: not a Salient ImageNet build (no {BUILD_INFO} from this tool); build it "
                         "first")
    problems = check(str(folder), stream=False)
    if problems:
        raise InputError(f"{folder} fails `salient-imagenet check`, not pushing:\n  " + "\n  ".join(problems))


def reachable_or_raise(folder: Path) -> None:
    """One quick request before any upload: offline or unreachable is said at once, not after a retry loop."""
    if offline():
        raise NetworkError(f"cannot push {folder}: HF_HUB_OFFLINE=1 is set (offline mode); nothing was pushed. "
                           "Push from a machine with network access, without HF_HUB_OFFLINE")
    reason = hub_unreachable()
    if reason is not None:
        raise NetworkError(f"cannot push {folder}: {reason}; nothing was pushed. Check the network (and "
                           "HF_ENDPOINT), then run the same command again")


def _commit(api, repo_id, operations, message):
    return _call(api.create_commit, repo_id, operations, commit_message=message, repo_type="dataset",
                 what=f"commit to {repo_id}")


def _remote_files(api, repo_id) -> dict[str, str]:
    """path -> sha256 (LFS files) or git blob id (regular files)."""
    files = {}
    for item in _call(api.list_repo_tree, repo_id, repo_type="dataset", recursive=True, what=f"list {repo_id}"):
        if hasattr(item, "blob_id"):  # a file, not a folder
            lfs = getattr(item, "lfs", None)
            files[item.path] = lfs.sha256 if lfs else item.blob_id
    return files


def _local_ids(path: Path) -> set[str]:
    """The ids a remote file with this content could carry: its sha256 (LFS) or git blob sha1 (regular)."""
    data = path.read_bytes()
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    return {hashlib.sha256(data).hexdigest(), blob}


def _call(fn, *args, what: str, **kwargs):
    """Call the Hub; turn its errors into clear messages (the token never appears in them)."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalTokenNotFoundError, RepositoryNotFoundError

    try:
        return fn(*args, **kwargs)
    except LocalTokenNotFoundError:
        raise PushError(f"cannot {what}: no Hugging Face token; {LOGIN_HINT}") from None
    except GatedRepoError:
        raise PushError(f"cannot {what}: the repo is gated; accept its terms on the Hub first") from None
    except RepositoryNotFoundError:
        raise PushError(f"cannot {what}: repo not found, or not visible to this token") from None
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        if status == 401:
            raise PushError(f"cannot {what}: not logged in or invalid token (401); {LOGIN_HINT}") from None
        if status == 403:
            raise PushError(f"cannot {what}: the token has no write access (403); use a write token for a "
                            "namespace you own") from None
        raise


def _transient(error: Exception) -> bool:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(error, OfflineModeIsEnabled):
        return False  # a ConnectionError too, but retrying cannot help
    if isinstance(error, HfHubHTTPError):
        return error.response is not None and error.response.status_code in RETRY_STATUS
    return isinstance(error, (ConnectionError, TimeoutError)) or type(error).__name__ in (
        "ConnectError", "ReadError", "RemoteProtocolError", "ReadTimeout", "WriteError", "ConnectTimeout")


def _retrying(retries: int, backoff: float, progress: dict):
    """`retry(fn, ...)`: transient errors retried with back-off; giving up says what was committed so far."""
    from huggingface_hub.errors import HfHubHTTPError

    def retry(fn, *args, **kwargs):
        for attempt in range(retries + 1):
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                if not _transient(e):
                    raise
                if attempt == retries:
                    first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
                    done = progress["commits"]
                    kept = (f"{done} commit(s) of data shards were made and are kept" if done
                            else "nothing was committed")
                    error = PushError if isinstance(e, HfHubHTTPError) else NetworkError
                    raise error(f"the Hub kept failing after {retries} retries ({first_line}); {kept}: run the "
                                "same command again to resume") from None
                wait = backoff * 2**attempt
                log.warning("transient error (%s), retrying in %.1f s (%d/%d)", type(e).__name__, wait,
                            attempt + 1, retries)
                time.sleep(wait)

    return retry
