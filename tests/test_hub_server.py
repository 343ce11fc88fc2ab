"""The fake Hub in tests/hub_server.py works with the real huggingface_hub and datasets clients.

Client code runs in subprocesses (see the hub_server module docstring for why), with the
environment from ``HubServer.client_env``; assertions on what the server received are made here.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

try:
    from tests.hub_server import HubServer
except ImportError:  # tests/ itself on sys.path (pytest "prepend" import mode)
    from hub_server import HubServer

REPO = "user/salient-test"
TOKEN = "hf_dummy_secret_token_123"
README = """\
---
license: mit
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
- config_name: annotations
  data_files:
  - split: train
    path: data/annotations-*.parquet
---
# Test dataset
"""


# ----------------------------------------------------------------------------- helpers


def run_client(hub: HubServer, home: Path, code: str, *args, token=True, timeout: float = 120) -> dict:
    """Run `code` in a fresh interpreter against `hub`; the code gets `ARGS` and sets `RESULT` (JSON)."""
    prelude = "import json, sys\nARGS = json.loads(sys.argv[1])\nRESULT = {}\n"
    epilogue = "\nprint('@@RESULT@@' + json.dumps(RESULT))\n"
    proc = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code) + epilogue, json.dumps(list(args))],
        env=hub.client_env(home, token=token),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"client failed (rc={proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    marker = [line for line in proc.stdout.splitlines() if line.startswith("@@RESULT@@")]
    assert marker, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads(marker[-1][len("@@RESULT@@"):])


def write_shard(path: Path, rows: dict) -> None:
    import datasets

    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(rows).to_parquet(str(path))


def train_rows(seed: int, n: int, payload_size: int) -> dict:
    rng = random.Random(seed)
    return {
        "idx": [seed * 1000 + i for i in range(n)],
        "label": [f"class_{rng.randrange(10)}" for _ in range(n)],
        "payload": [rng.randbytes(payload_size) for _ in range(n)],
    }


def summarize(rows: dict) -> dict:
    return {"idx": list(rows["idx"]), "label": list(rows["label"]),
            "payload_sha": [hashlib.sha256(p).hexdigest() for p in rows["payload"]]}


def merge(*parts: dict) -> dict:
    return {key: [v for part in parts for v in part[key]] for key in parts[0]}


def local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset_v1(tmp_path_factory) -> tuple[Path, dict]:
    """README + 2 train shards (one of ~12 MiB, above the 10 MiB LFS size limit) + 1 annotations shard."""
    folder = tmp_path_factory.mktemp("v1")
    (folder / "README.md").write_text(README)
    big, small = train_rows(1, 12, 1024 * 1024), train_rows(2, 5, 100)
    write_shard(folder / "data/train-00000-of-00002.parquet", big)
    write_shard(folder / "data/train-00001-of-00002.parquet", small)
    annotations = {"idx": [1000, 1001], "core": [[0.5, 0.25], [0.0, 1.0]]}
    write_shard(folder / "data/annotations-00000-of-00001.parquet", annotations)
    assert (folder / "data/train-00000-of-00002.parquet").stat().st_size > 10 * 1024 * 1024
    return folder, {"train": summarize(merge(big, small)), "annotations": annotations}


@pytest.fixture
def hub():
    with HubServer(token=TOKEN, user="user") as server:
        yield server
        assert server.token_leaks == []
        assert server.unhandled == [], server.unhandled
        assert all(TOKEN not in entry.path for entry in server.requests)


PUSH = """
from huggingface_hub import HfApi
folder, repo_id, delete_patterns = ARGS
api = HfApi()
RESULT["whoami"] = api.whoami()["name"]
api.create_repo(repo_id, repo_type="dataset", private=True, exist_ok=True)
api.create_repo(repo_id, repo_type="dataset", private=True, exist_ok=True)  # 409 -> fine
info = api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="dataset",
                         commit_message="Upload dataset", delete_patterns=delete_patterns)
RESULT["oid"] = info.oid
RESULT["files"] = sorted(api.list_repo_files(repo_id, repo_type="dataset"))
"""

LOAD = """
import hashlib
import datasets
repo_id, = ARGS
def summary(ds):
    return {"idx": list(ds["idx"]), "label": list(ds["label"]),
            "payload_sha": [hashlib.sha256(p).hexdigest() for p in ds["payload"]]}
train = datasets.load_dataset(repo_id, split="train")
RESULT["train"] = summary(train)
ann = datasets.load_dataset(repo_id, "annotations", split="train")
RESULT["annotations"] = ann.to_dict()
stream = datasets.load_dataset(repo_id, split="train", streaming=True)
RESULT["streamed_idx"] = [row["idx"] for row in stream]
"""


# ----------------------------------------------------------------------------- tests


def test_push_then_load_roundtrip(hub, dataset_v1, tmp_path):
    folder, expected = dataset_v1
    result = run_client(hub, tmp_path / "push", PUSH, str(folder), REPO, ["data/*.parquet"])

    assert result["whoami"] == "user"
    remote = hub.files(REPO)
    assert {k: v for k, v in remote.items() if k != ".gitattributes"} == local_files(folder)
    assert result["files"] == sorted(remote)
    assert hub.lfs_files(REPO) == {p for p in remote if p.endswith(".parquet")}
    assert hub.is_private(REPO)
    assert hub.commit_messages(REPO) == ["Upload dataset", "initial commit"]
    calls = [(r.method, r.path.split("/")[-1] if "__lfs__" in r.path else r.path, r.status) for r in hub.requests]
    assert ("POST", f"/api/datasets/{REPO}/preupload/main", 200) in calls
    assert ("POST", f"/datasets/{REPO}.git/info/lfs/objects/batch", 200) in calls
    assert ("POST", f"/datasets/{REPO}.git/info/lfs/objects/verify", 200) in calls
    assert ("POST", f"/api/datasets/{REPO}/commit/main", 200) in calls
    big_oid = hashlib.sha256(remote["data/train-00000-of-00002.parquet"]).hexdigest()
    assert ("PUT", big_oid, 200) in calls
    assert sum(1 for m, _, _ in calls if m == "PUT") == 3  # one per parquet file

    hub.clear_requests()
    loaded = run_client(hub, tmp_path / "load", LOAD, REPO)
    assert loaded["train"] == expected["train"]
    assert loaded["annotations"] == expected["annotations"]
    assert sorted(loaded["streamed_idx"]) == sorted(expected["train"]["idx"])
    statuses = {r.status for r in hub.requests if "/resolve/" in r.path and r.method == "GET"}
    assert 206 in statuses  # streaming reads parquet footers/row groups with Range requests


def test_second_push_deletes_stale_shards(hub, dataset_v1, tmp_path):
    folder, expected = dataset_v1
    # State left by an older build: 3 train shards + the same annotations shard.
    stale = {f"data/train-0000{i}-of-00003.parquet": b"PAR1 stale %d" % i + b"\0" * 10 for i in range(3)}
    annotations = (folder / "data/annotations-00000-of-00001.parquet").read_bytes()
    hub.seed(REPO, {"README.md": README.encode(), **stale, "data/annotations-00000-of-00001.parquet": annotations},
             private=True, message="old build")
    assert hub.lfs_files(REPO) == set(stale) | {"data/annotations-00000-of-00001.parquet"}

    result = run_client(hub, tmp_path / "push", PUSH, str(folder), REPO, ["data/train-*.parquet"])
    remote = hub.files(REPO)
    assert not set(stale) & set(remote)
    assert {k: v for k, v in remote.items() if k != ".gitattributes"} == local_files(folder)
    assert result["files"] == sorted(remote)
    assert hub.commits(REPO) == 3
    # unchanged files (README, annotations shard) are skipped by the client: only 2 LFS PUTs
    assert sum(1 for r in hub.requests if r.method == "PUT") == 2

    loaded = run_client(hub, tmp_path / "load", LOAD, REPO)
    assert loaded["train"] == expected["train"]


CLIENT_API = """
import os, hashlib
from huggingface_hub import HfApi, HfFileSystem, hf_hub_download, snapshot_download
repo_id, = ARGS
api = HfApi()
api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
api.upload_file(path_or_fileobj=b"hello world", path_in_repo="docs/a/hello.txt", repo_id=repo_id, repo_type="dataset")
blob = bytes(range(256)) * 40
api.upload_file(path_or_fileobj=blob, path_in_repo="docs/blob.bin", repo_id=repo_id, repo_type="dataset")
RESULT["files"] = api.list_repo_files(repo_id, repo_type="dataset")
RESULT["tree"] = sorted((e.path, type(e).__name__, e.last_commit is not None)
                        for e in api.list_repo_tree(repo_id, repo_type="dataset", recursive=True, expand=True))
RESULT["paths_info"] = [(e.path, getattr(e, "lfs", None) is not None)
                        for e in api.get_paths_info(repo_id, ["docs", "docs/blob.bin", "nope"], repo_type="dataset")]
fs = HfFileSystem()
RESULT["ls"] = fs.ls(f"datasets/{repo_id}/docs", detail=False)
RESULT["glob"] = fs.glob(f"datasets/{repo_id}/**/*.txt")
RESULT["size"] = fs.info(f"datasets/{repo_id}/docs/blob.bin")["size"]
with fs.open(f"datasets/{repo_id}/docs/a/hello.txt", "rb") as f:
    f.seek(6)
    RESULT["range_read"] = f.read(3).decode()
RESULT["exists"] = [fs.exists(f"datasets/{repo_id}/docs/zzz"), fs.isdir(f"datasets/{repo_id}/docs"),
                    fs.isfile(f"datasets/{repo_id}/docs/a/hello.txt")]
path = hf_hub_download(repo_id, "docs/blob.bin", repo_type="dataset")
RESULT["download_ok"] = open(path, "rb").read() == blob
snap = snapshot_download(repo_id, repo_type="dataset")
RESULT["snapshot"] = sorted(os.path.relpath(os.path.join(d, f), snap) for d, _, fs_ in os.walk(snap) for f in fs_)
RESULT["n_commits"] = len(api.list_repo_commits(repo_id, repo_type="dataset"))
RESULT["branches"] = [b.name for b in api.list_repo_refs(repo_id, repo_type="dataset").branches]
api.delete_file("docs/a/hello.txt", repo_id=repo_id, repo_type="dataset")
api.delete_files(repo_id=repo_id, repo_type="dataset", delete_patterns=["docs/*.bin"])
RESULT["after_delete"] = api.list_repo_files(repo_id, repo_type="dataset")
RESULT["file_exists"] = api.file_exists(repo_id, "docs/blob.bin", repo_type="dataset")
RESULT["repo_exists"] = [api.repo_exists(repo_id, repo_type="dataset"),
                         api.repo_exists("user/nope", repo_type="dataset")]
"""


def test_client_api_surface(hub, tmp_path):
    hub.tree_page_size = 2  # exercise the client's pagination (Link: rel="next") and HfFileSystem's tree splitting
    r = run_client(hub, tmp_path / "c", CLIENT_API, REPO)
    assert r["files"] == [".gitattributes", "docs/a/hello.txt", "docs/blob.bin"]
    assert r["tree"] == [
        [".gitattributes", "RepoFile", True], ["docs", "RepoFolder", True], ["docs/a", "RepoFolder", True],
        ["docs/a/hello.txt", "RepoFile", True], ["docs/blob.bin", "RepoFile", True],
    ]
    assert r["paths_info"] == [["docs", False], ["docs/blob.bin", True]]
    assert r["ls"] == [f"datasets/{REPO}/docs/a", f"datasets/{REPO}/docs/blob.bin"]
    assert r["glob"] == [f"datasets/{REPO}/docs/a/hello.txt"]
    assert r["size"] == 256 * 40
    assert r["range_read"] == "wor"
    assert r["exists"] == [False, True, True]
    assert r["download_ok"] is True
    assert r["snapshot"] == [".gitattributes", "docs/a/hello.txt", "docs/blob.bin"]
    assert r["n_commits"] == 3 and r["branches"] == ["main"]
    assert r["after_delete"] == [".gitattributes"]
    assert r["file_exists"] is False and r["repo_exists"] == [True, False]
    assert hub.commits(REPO) == 5
    assert hub.lfs_files(REPO) == set()


AUTH_WRONG_TOKEN = """
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
repo_id, = ARGS
api = HfApi()
for name, call in [("whoami", lambda: api.whoami()),
                   ("create", lambda: api.create_repo("user/new", repo_type="dataset")),
                   ("upload", lambda: api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt",
                                                      repo_id=repo_id, repo_type="dataset"))]:
    try:
        call()
        RESULT[name] = "no error"
    except HfHubHTTPError as e:
        RESULT[name] = [type(e).__name__, e.response.status_code, str(e)]
"""

AUTH_NO_TOKEN = """
import datasets
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError
private_repo, public_repo, gated_repo, read_only_token, write_token = ARGS
api = HfApi()
def attempt(name, call):
    try:
        RESULT[name] = ["ok", call()]
    except HfHubHTTPError as e:
        RESULT[name] = [type(e).__name__, e.response.status_code]
    except Exception as e:
        RESULT[name] = [type(e).__name__, str(e)[:300]]
attempt("anon_download_private", lambda: hf_hub_download(private_repo, "README.md", repo_type="dataset"))
attempt("anon_load_private", lambda: datasets.load_dataset(private_repo, split="train"))
attempt("anon_download_public", lambda: open(hf_hub_download(public_repo, "x.txt", repo_type="dataset")).read())
attempt("anon_create", lambda: api.create_repo("user/anon", repo_type="dataset"))
attempt("anon_gated", lambda: hf_hub_download(gated_repo, "x.txt", repo_type="dataset"))
ro = HfApi(token=read_only_token)
attempt("ro_whoami", lambda: ro.whoami()["auth"]["accessToken"]["role"])
attempt("ro_read_private", lambda: ro.list_repo_files(private_repo, repo_type="dataset"))
attempt("ro_upload", lambda: ro.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt",
                                            repo_id=private_repo, repo_type="dataset"))
attempt("other_namespace", lambda: HfApi(token=write_token).create_repo("someone-else/x", repo_type="dataset"))
"""


def test_auth_errors(hub, tmp_path):
    hub.seed(REPO, {"README.md": README.encode()}, private=True)
    hub.seed("user/public", {"x.txt": b"public"})
    hub.create_repo("user/gated", gated=True)
    hub.seed("user/gated", {"x.txt": b"gated"})
    hub.add_token("hf_readonly_token_456", read_only=True)
    before = hub.files(REPO)

    r = run_client(hub, tmp_path / "wrong", AUTH_WRONG_TOKEN, REPO, token="hf_wrong_token")
    assert r["whoami"][:2] == ["HfHubHTTPError", 401] and "Invalid user token" in r["whoami"][2]
    assert r["create"][:2] == ["HfHubHTTPError", 401]
    assert r["upload"][:2] == ["HfHubHTTPError", 401]
    assert all("hf_wrong_token" not in v[2] for v in r.values())

    r = run_client(hub, tmp_path / "anon", AUTH_NO_TOKEN, REPO, "user/public", "user/gated",
                   "hf_readonly_token_456", TOKEN, token=None)
    assert r["anon_download_private"] == ["RepositoryNotFoundError", 401]
    assert r["anon_load_private"][0] == "DatasetNotFoundError"
    assert r["anon_download_public"] == ["ok", "public"]
    assert r["anon_create"][1] == 401
    assert r["anon_gated"] == ["GatedRepoError", 401]
    assert r["ro_whoami"] == ["ok", "read"]
    assert r["ro_read_private"] == ["ok", [".gitattributes", "README.md"]]
    assert r["ro_upload"] == ["HfHubHTTPError", 403]
    assert r["other_namespace"] == ["HfHubHTTPError", 403]
    assert hub.files(REPO) == before
    assert not hub.repo_exists("user/anon") and not hub.repo_exists("someone-else/x")


FLAKY_PUSH = """
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
folder, repo_id = ARGS
api = HfApi()
api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
try:  # the commit POST is not retried by huggingface_hub: the injected 500 surfaces
    api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="dataset")
    RESULT["first"] = "ok"
except HfHubHTTPError as e:
    RESULT["first"] = e.response.status_code
api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="dataset")  # re-run succeeds
"""

RESUME_DOWNLOAD = """
import hashlib
from huggingface_hub import hf_hub_download
repo_id, filename = ARGS
RESULT["sha"] = hashlib.sha256(open(hf_hub_download(repo_id, filename, repo_type="dataset"), "rb").read()).hexdigest()
"""


def test_fault_injection_retry_and_resume(hub, dataset_v1, tmp_path):
    folder, _ = dataset_v1
    hub.fail_next(1, status=503, method="PUT", path_contains="/__lfs__/")  # http_backoff retries LFS PUTs
    hub.fail_next(1, action="drop", path_contains="/preupload/")  # ... and preupload, on network errors too
    hub.fail_next(1, status=500, path_contains="/commit/main")  # ... but not the commit
    r = run_client(hub, tmp_path / "push", FLAKY_PUSH, str(folder), REPO)
    assert r["first"] == 500
    assert hub.pending_faults == 0
    assert {k: v for k, v in hub.files(REPO).items() if k != ".gitattributes"} == local_files(folder)
    assert hub.commits(REPO) == 2
    log = hub.requests
    assert [r.status for r in log if "/preupload/" in r.path][:2] == [0, 200]
    puts = [r for r in log if r.method == "PUT"]
    assert [p.status for p in puts].count(503) == 1 and len(puts) == 4  # 3 files + 1 retry, none on re-run
    assert [r.status for r in log if r.path.endswith("/commit/main")] == [500, 200]

    # A download cut after 10.5 MB resumes with a Range request (huggingface_hub reads 10 MiB chunks).
    name = "data/train-00000-of-00002.parquet"
    hub.clear_requests()
    hub.fail_next(1, status=503, method="HEAD", path_contains=name)  # not cached yet -> HEAD retried
    hub.fail_next(1, action="truncate", method="GET", path_contains=name, truncate_at=10_500_000)
    r = run_client(hub, tmp_path / "dl", RESUME_DOWNLOAD, REPO, name)
    assert r["sha"] == hashlib.sha256((folder / name).read_bytes()).hexdigest()
    assert [(x.method, x.status) for x in hub.requests if name in x.path] == [
        ("HEAD", 503), ("HEAD", 200), ("GET", 200), ("GET", 206)]


@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")  # raised inside huggingface_hub
def test_in_process_push_with_explicit_endpoint(hub, tmp_path, monkeypatch):
    """Write-only client code can run in-process if it takes endpoint + token and Xet is disabled."""
    import huggingface_hub
    from huggingface_hub import HfApi

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read at import; conftest may set it
    folder = tmp_path / "f"
    (folder / "data").mkdir(parents=True)
    (folder / "README.md").write_text(README)
    (folder / "data/annotations-00000-of-00001.parquet").write_bytes(b"PAR1\0fake")
    api = HfApi(endpoint=hub.url, token=TOKEN)
    api.create_repo(REPO, repo_type="dataset", private=True, exist_ok=True)
    api.upload_folder(folder_path=folder, repo_id=REPO, repo_type="dataset")
    assert hub.files(REPO)["data/annotations-00000-of-00001.parquet"] == b"PAR1\0fake"
    assert hub.lfs_files(REPO) == {"data/annotations-00000-of-00001.parquet"}


def _http(hub: HubServer, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    request = urllib.request.Request(hub.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_server_protocol_details():
    with HubServer(token=TOKEN, lfs_threshold=1000) as hub:
        hub.seed(REPO, {"notes.txt": b"0123456789"})
        auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        files = [
            {"path": "small.txt", "sample": "aGVsbG8=", "size": 5},
            {"path": "big.txt", "sample": "aGVsbG8=", "size": 5000},
            {"path": "x.parquet", "sample": "aGVsbG8=", "size": 5},
            {"path": "binary.dat", "sample": "AAEC", "size": 3},
            {"path": "notes.txt", "sample": "", "size": 10},
        ]
        status, _, body = _http(hub, "POST", f"/api/datasets/{REPO}/preupload/main",
                                json.dumps({"files": files}).encode(), auth)
        assert status == 200
        modes = {f["path"]: (f["uploadMode"], f["oid"]) for f in json.loads(body)["files"]}
        assert modes["small.txt"] == ("regular", None) and modes["big.txt"][0] == "lfs"
        assert modes["x.parquet"][0] == "lfs" and modes["binary.dat"][0] == "lfs"
        assert modes["notes.txt"] == ("regular", hashlib.sha1(b"blob 10\0" + b"0123456789").hexdigest())

        url = f"/datasets/{REPO}/resolve/main/notes.txt"
        assert _http(hub, "GET", url, headers={"Range": "bytes=2-4"})[::2] == (206, b"234")
        assert _http(hub, "GET", url, headers={"Range": "bytes=-3"})[::2] == (206, b"789")
        status, headers, _ = _http(hub, "GET", url, headers={"Range": "bytes=50-"})
        assert status == 416 and headers["Content-Range"] == "bytes */10"
        status, headers, _ = _http(hub, "HEAD", url)
        assert status == 200 and headers["Content-Length"] == "10" and "X-Repo-Commit" in headers
        status, headers, _ = _http(hub, "HEAD", f"/datasets/{REPO}/resolve/main/missing.txt")
        assert status == 404 and headers["X-Error-Code"] == "EntryNotFound"
        status, headers, _ = _http(hub, "GET", f"/api/datasets/{REPO}/revision/deadbeef")
        assert status == 404 and headers["X-Error-Code"] == "RevisionNotFound"
        status, headers, body = _http(hub, "GET", "/api/whoami-v2", headers={"Authorization": "Bearer nope"})
        assert status == 401 and json.loads(body) == {"error": "Invalid credentials in Authorization header"}
        status, _, _ = _http(hub, "GET", "/api/datasets/user/x/parquet")
        assert status == 404 and [r[:3] for r in hub.unhandled] == [("GET", "/api/datasets/user/x/parquet", 404)]
        port = hub.port
        assert hub.token_leaks == []

    with socket.socket() as sock:  # stopped: the port is closed and no server thread is left
        assert sock.connect_ex(("127.0.0.1", port)) != 0
    assert not [t for t in threading.enumerate() if t.name == "fake-hub"]
