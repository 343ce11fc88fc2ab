"""Publishing a built folder to the Hugging Face Hub.

Data shards go up first, in commits of at most FILES_PER_COMMIT files and about BYTES_PER_COMMIT bytes; the last
commit adds the card and build_info.json and removes shards of an earlier build, so the repo switches from one
consistent build to the next. Files already on the Hub with the same content (same size, then sha256 hashed in a
stream) are skipped, and so are LFS objects a killed run uploaded
without committing them (the Hub answers that it has them): an interrupted push resumes where it stopped when run
again. Each commit uploads its files in parallel (huggingface_hub's `create_commit`). Transient HTTP errors are
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
from ..core.output import kind_of
from ..core.staging import half_replaced
from ..core.targets import hub_unreachable, offline
from .validate import check

log = logging.getLogger(__name__)

FILES_PER_COMMIT = 50  # the Hub's advice: commits of 50-100 files
BYTES_PER_COMMIT = 2 * 1000**3  # and a few GB: a commit cut short costs the files it was sending, no more
HASH_BLOCK = 8 * 1024**2
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
    local = _local_files(folder)
    changed = _changed(folder, local, remote)
    data = [p for p in changed if p.startswith("data/")]
    last = [p for p in changed if not p.startswith("data/")]  # the card and build_info.json: after every shard
    stale = [p for p in remote if p.startswith("data/") and p not in local]
    total = sum((folder / p).stat().st_size for p in changed)
    log.info("pushing to %s: %d file(s) to send (%s), %d already on the Hub (skipped), %d stale to delete",
             repo_id, len(changed), _size(total), len(local) - len(changed), len(stale))
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    batches = _batches(folder, data)
    sent = 0
    for n, batch in enumerate(batches, start=1):
        retry(_commit, api, repo_id, [CommitOperationAdd(p, str(folder / p)) for p in batch],
              f"Add data shards ({n}/{len(batches)})")
        progress["commits"] += 1
        sent += sum((folder / p).stat().st_size for p in batch)
        log.info("commit %d/%d: %d shard(s); %s of %s sent", n, len(batches), len(batch), _size(sent), _size(total))
    final = [CommitOperationAdd(p, str(folder / p)) for p in last] + [CommitOperationDelete(p) for p in stale]
    if final:
        retry(_commit, api, repo_id, final, "Update dataset card" + (", remove stale shards" if stale else ""))
    return repo_id


def _local_files(folder: Path) -> list[str]:
    """What a push sends: every file but hidden ones and those in hidden folders."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _batches(folder: Path, paths: list[str]) -> list[list[str]]:
    """Consecutive groups of at most FILES_PER_COMMIT files and about BYTES_PER_COMMIT bytes (at least one file)."""
    batches, size = [], 0
    for path in paths:
        file_size = (folder / path).stat().st_size
        if not batches or len(batches[-1]) >= FILES_PER_COMMIT or size + file_size > BYTES_PER_COMMIT:
            batches.append([])
            size = 0
        batches[-1].append(path)
        size += file_size
    return batches


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def check_pushable(folder: Path) -> None:
    """Local checks first: a build of this tool, whole (not half-replaced), that passes `check`."""
    interrupted = half_replaced(folder)
    if interrupted is not None:
        raise InputError(interrupted)
    if not folder.is_dir():
        raise InputError(f"push {folder}: no such folder; build it first (python build_dataset.py --source ... "
                         f"--out {folder})")
    if kind_of(folder) != "build":
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


def _remote_files(api, repo_id) -> dict[str, tuple[int, str, bool]]:
    """path -> (size, sha256 for LFS files or git blob id for regular ones, is LFS)."""
    files = {}
    for item in _call(api.list_repo_tree, repo_id, repo_type="dataset", recursive=True, what=f"list {repo_id}"):
        if hasattr(item, "blob_id"):  # a file, not a folder
            lfs = getattr(item, "lfs", None)
            files[item.path] = (item.size, lfs.sha256, True) if lfs else (item.size, item.blob_id, False)
    return files


def _changed(folder: Path, local: list[str], remote: dict) -> list[str]:
    """The local files whose content the Hub does not have at that path. A size that differs says so without
    reading the file; LFS files are compared by sha256 (cached), regular (small) ones by git blob id."""
    changed = []
    for path in local:
        stat = (folder / path).stat()
        size, remote_id, lfs = remote.get(path, (None, None, False))
        if size != stat.st_size or remote_id != (
                _sha256(folder / path) if lfs else _git_blob_id(folder / path)):
            changed.append(path)
    return changed


def _sha256(path: Path) -> str:
    """The file's sha256, read in blocks: a shard is never held in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _git_blob_id(path: Path) -> str:
    """Git's id of a regular (small, non-LFS) file: sha1 of 'blob <size>\0' and the content, read in blocks."""
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


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
