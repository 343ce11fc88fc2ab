"""A small, self-contained fake of the Hugging Face Hub HTTP API, for tests.

It speaks enough of the Hub protocol (as used by ``huggingface_hub`` 2.x with Xet
disabled, and by ``datasets``) to push a dataset folder and load it back, with
real clients, entirely on loopback (127.0.0.1, a free port). Standard library only
(PyYAML is used, if importable, to parse README metadata).

Usage
=====

Recommended: run the client code in a *subprocess*::

    from tests.hub_server import HubServer

    def test_push(tmp_path):
        with HubServer(token="hf_dummy", user="user") as hub:
            env = hub.client_env(tmp_path / "hf")      # see "Client environment" below
            subprocess.run([sys.executable, "-c", CODE], env=env, check=True, timeout=120)
            assert "data/train-00000-of-00001.parquet" in hub.files("user/name")
            assert hub.token_leaks == []

Why a subprocess: ``huggingface_hub.constants`` reads ``HF_ENDPOINT``,
``HF_HUB_DISABLE_XET``, ``HF_HOME``... once, at import time (and builds the
``/resolve/`` URL template from it), and ``datasets.config`` does the same
(``HF_ENDPOINT``, caches, offline mode). In a pytest process those modules are
usually imported long before a test runs, so setting env vars with monkeypatch
is too late. A fresh interpreter per scenario also gives fresh caches, and no
shared ``httpx`` client between scenarios.

In-process use is fine for *write-only* code (``HfApi`` calls) if the code lets
you pass the endpoint and token explicitly, e.g.
``HfApi(endpoint=hub.url, token=hub.token).upload_folder(...)``, AND Xet is
disabled: ``monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)``
(``is_xet_available()`` reads that constant at call time; ``hf_xet`` is installed,
and without this the client tries the Xet protocol, which this server does not
implement). Offline mode is also an import-time constant: if the process was started
with ``HF_HUB_OFFLINE=1``, also ``monkeypatch.setattr(huggingface_hub.constants,
"HF_HUB_OFFLINE", False)``. Downloads (``hf_hub_download``, ``HfFileSystem``,
``load_dataset``) need the subprocess route.

Client environment
==================

``hub.client_env(home, token=...)`` returns a copy of ``os.environ`` where every
``HF_*``/``HUGGINGFACE_*`` variable and every proxy variable is removed, then::

    HF_ENDPOINT=http://127.0.0.1:<port>   HF_TOKEN=<token> (omitted if token=None)
    HF_HUB_DISABLE_XET=1                  HF_HOME=<home>   HF_HUB_CACHE=<home>/hub
    HF_DATASETS_CACHE=<home>/datasets     HF_TOKEN_PATH=<home>/token
    HF_HUB_DISABLE_TELEMETRY=1            HF_HUB_DISABLE_PROGRESS_BARS=1
    HF_DATASETS_DISABLE_PROGRESS_BARS=1   HF_HUB_DISABLE_UPDATE_CHECK=1
    NO_PROXY=127.0.0.1,localhost          no_proxy=127.0.0.1,localhost

(``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` are thereby unset.) Use a fresh
``home`` per client process when you want a cold cache.

Note: ``load_dataset(repo_id)`` also asks the dataset viewer for exported infos
at ``http://datasets-server.127.0.0.1:<port>/info`` (the endpoint with
``datasets-server.`` glued in). That host name does not resolve, the client
swallows the error and goes on; it costs one failed DNS lookup.

Server-side API (for assertions)
================================

``HubServer(token="hf_dummy", user="user", *, read_only=False, orgs=(), lfs_threshold=10 MiB,
gitattributes=True, tree_page_size=1000)``; ``start()``/``stop()`` or a ``with`` block
(``stop()`` closes idle keep-alive connections and joins every server thread);
``url``, ``port``, ``token``, ``user``; ``add_token()``; ``client_env()``;
``create_repo()``, ``seed()`` (server-side, no HTTP: e.g. stale shards from an "older build");
``files()``, ``lfs_files()``, ``commits()``, ``commit_messages()``, ``repo_exists()``,
``is_private()``; ``requests`` (list of ``LoggedRequest(method, path, status)``, raw path
without the query string, status 0 = connection dropped by an injected fault);
``unhandled`` (requests that hit no route - handy to spot a client call the fake does not
know; assert it is empty); ``token_leaks`` (responses whose headers/body contained a
registered token or the token sent with that request: must stay empty);
``clear_requests()``; ``lfs_uploads`` ((sha256, size) of each LFS PUT stored); ``history()`` (each commit's title
and paths); fault injection with ``fail_next()``, ``pending_faults`` and
``clear_faults()``. ``tree_page_size`` may be lowered (even on a running server) to
exercise the client's pagination.

Endpoints (``{T}`` = models|datasets|spaces, ``{prefix}`` = ""|datasets/|spaces/)
==========================================================================

``GET /api/whoami-v2`` - ``POST /api/repos/create`` - ``DELETE /api/repos/delete`` -
``POST /api/validate-yaml`` - ``GET /api/{T}/{id}`` and ``/api/{T}/{id}/revision/{rev}``
(``?blobs=true`` adds sizes/LFS info to siblings; ``cardData`` from the README YAML) -
``GET /api/{T}/{id}/tree/{rev}[/{path}]`` (``recursive``, ``expand``, ``cursor`` pagination
with a ``Link: rel="next"`` header) - ``POST /api/{T}/{id}/paths-info/{rev}`` (form or JSON) -
``POST /api/{T}/{id}/preupload/{rev}`` - ``POST /api/{T}/{id}/commit/{rev}`` (NDJSON
``header``/``file``/``lfsFile``/``deletedFile``/``deletedFolder``, ``?create_pr=1``) -
``GET /api/{T}/{id}/commits/{rev}`` - ``GET /api/{T}/{id}/refs`` - ``PUT /api/{T}/{id}/settings``
- ``POST /{prefix}{id}.git/info/lfs/objects/batch`` and ``.../verify`` -
``PUT /__lfs__/...`` (the signed upload href) - ``GET|HEAD /{prefix}{id}/resolve/{rev}/{path}``.
Revisions: branch names, ``refs/pr/N``, full or abbreviated commit shas. Anything else is
404 and listed in ``unhandled``. (``/api/datasets/{id}/parquet`` and
``revision/refs%2Fconvert%2Fparquet`` are 404 here, i.e. "no parquet export"; the installed
clients do not call them for ``load_dataset`` of a repo with data files.)

Which client calls retry (huggingface_hub 2.4, ``http_backoff``: 408/429/5xx and network
errors, sleeping 1 s, 2 s, 4 s...): preupload, LFS batch, LFS PUT, LFS verify, tree
listing, HfFileSystem reads; the HEAD of ``hf_hub_download`` is tried once, then (if the
file is not cached) again with backoff. NOT retried: the commit POST, create_repo, whoami,
paths-info, repo info. File downloads resume with a ``Range`` request after a
broken body (``action="truncate"``); the client reads 10 MiB chunks, so the resume offset is
a multiple of 10 MiB (0 for smaller files).

Behaviour worth knowing
=======================

* ``create_repo`` makes an initial commit containing a ``.gitattributes`` (like the
  real Hub; its LFS patterns decide, with ``lfs_threshold`` and a NUL-byte sniff of the
  512-byte sample, the ``preupload`` answer ``"lfs"`` vs ``"regular"``). So after one
  ``upload_folder``, ``commits(repo) == 2`` and ``files(repo)`` includes ``.gitattributes``.
  Pass ``gitattributes=False`` for an initial commit without files (everything then
  goes by size / binary sniff).
* LFS: ``/{prefix}{repo}.git/info/lfs/objects/batch`` answers "basic" transfer with an
  ``upload`` href (``/__lfs__/...``, signed in the query, no token needed, like S3) and a
  ``verify`` href. Objects already stored in the repo get no actions (the client skips
  them), like the real Hub. A commit referencing an LFS oid that was never uploaded is
  rejected (422).
* Auth: a *wrong* token is 401 "Invalid credentials in Authorization header" everywhere
  (as on the Hub). No token: public reads are fine, private repos are 401 + ``RepoNotFound``,
  writes are 401. Read-only token (``read_only=True``): writes are 403. Writing outside
  your user/orgs namespaces: 403. ``gated=True`` repos refuse ``/resolve/`` to non-owners
  (``GatedRepo``).
* Errors carry ``X-Error-Code`` / ``X-Error-Message`` headers and a ``{"error": ...}`` body,
  which is what ``huggingface_hub.utils.hf_raise_for_status`` maps to
  ``RepositoryNotFoundError``, ``RevisionNotFoundError``, ``RemoteEntryNotFoundError``,
  ``GatedRepoError``...
* Files are served straight from ``/resolve/`` (no CDN redirect) with ``ETag`` (git
  blob sha1, or sha256 for LFS files), ``X-Linked-Etag``/``X-Linked-Size`` for LFS files,
  ``X-Repo-Commit``, ``Accept-Ranges`` and single-range ``Range`` support (206/416).
* Not implemented: Xet (its token routes answer 501 and show up in ``unhandled``: set
  ``HF_HUB_DISABLE_XET=1``), multipart LFS, pull-request merging/discussions, the dataset
  viewer, CDN redirects. ``create_pr=True`` commits do work (``refs/pr/N``).
* With Xet disabled, ``upload_folder`` is ONE commit (preupload -> LFS -> commit). With
  ``hf_xet`` active, huggingface_hub 2.4 uses a pipelined multi-commit uploader instead, so
  this fake tests the legacy path only. ``upload_large_folder`` does not exist in 2.4.
  ``datasets.Dataset.push_to_hub`` also works against this server.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import os
import posixpath
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

__all__ = ["HubServer", "LoggedRequest", "HubError"]

_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_SPECIAL_REF = re.compile(r"^refs/(pr/\d+|convert/[\w-]+)$")
_HEX = re.compile(r"^[0-9a-f]{7,40}$")

DEFAULT_GITATTRIBUTES = """\
*.7z filter=lfs diff=lfs merge=lfs -text
*.arrow filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.bz2 filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.gz filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.lz4 filter=lfs diff=lfs merge=lfs -text
*.npy filter=lfs diff=lfs merge=lfs -text
*.npz filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.parquet filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
*.tar filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
*.zst filter=lfs diff=lfs merge=lfs -text
# Image files - uncompressed
*.bmp filter=lfs diff=lfs merge=lfs -text
*.tiff filter=lfs diff=lfs merge=lfs -text
# Image files - compressed
*.jpg filter=lfs diff=lfs merge=lfs -text
*.jpeg filter=lfs diff=lfs merge=lfs -text
*.png filter=lfs diff=lfs merge=lfs -text
*.webp filter=lfs diff=lfs merge=lfs -text
"""


class LoggedRequest(NamedTuple):
    method: str
    path: str  # raw (still %-encoded) path, without the query string
    status: int  # 0 = connection dropped by an injected fault
    sent: int = 0  # body bytes sent (what a download costs)


class HubError(Exception):
    """Raised by route handlers; becomes a Hub-like JSON error response."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})


# --------------------------------------------------------------------------- storage


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class _Entry:
    size: int
    sha256: str
    blob_oid: str  # git oid: of the content, or of the LFS pointer for LFS files
    lfs: bool

    @property
    def pointer_size(self) -> int:
        return len(_lfs_pointer(self.sha256, self.size))

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.blob_oid


@dataclass
class _Commit:
    oid: str
    title: str
    message: str
    date: str
    author: str
    parent: str | None
    files: dict[str, _Entry]


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    gated: bool
    created_at: str
    commits: dict[str, _Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # "main" / "refs/pr/1" -> commit oid
    lfs_objects: set[str] = field(default_factory=set)
    n_prs: int = 0

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/", 1)[0]


@dataclass
class _Identity:
    user: str
    read_only: bool
    orgs: tuple[str, ...]


@dataclass
class _Fault:
    remaining: int
    status: int
    path_contains: str | None
    method: str | None
    action: str  # "status" | "drop" | "truncate" | "delay"
    truncate_at: int | None
    delay: float
    headers: dict[str, str]
    skip: int = 0  # matching requests to let through before failing

    def matches(self, method: str, path: str) -> bool:
        if self.remaining <= 0:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        if self.path_contains is not None and self.path_contains not in path \
                and self.path_contains not in unquote(path):
            return False
        return True


def _parse_front_matter(text: str) -> tuple[dict | None, str | None]:
    """Return (metadata or None, error or None) for the YAML block of a README."""
    if not text.startswith("---"):
        return None, None
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if match is None:
        return None, "Could not find the end of the YAML metadata block (a line with '---')"
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is a dependency of datasets
        return None, None
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        return None, f"Invalid YAML in README.md metadata: {exc}"
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        return None, "README.md metadata must be a YAML mapping"
    return data, None


def _lfs_patterns(gitattributes: bytes | None) -> list[str]:
    if not gitattributes:
        return []
    patterns = []
    for line in gitattributes.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if parts and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
            patterns.append(parts[0])
    return patterns


def _match_git_pattern(path: str, pattern: str) -> bool:
    pattern = pattern.strip()
    if not pattern:
        return False
    if pattern.endswith("/"):  # directory pattern
        pattern = pattern.rstrip("/")
        return any(_match_git_pattern(parent, pattern) for parent in _parents(path))
    if "/" in pattern.lstrip("/"):
        return fnmatch.fnmatchcase(path, pattern.lstrip("/").replace("**/", "*"))
    return fnmatch.fnmatchcase(posixpath.basename(path), pattern)


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


# --------------------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, addr, handler, hub: "HubServer"):
        self.hub = hub
        self.open_connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(addr, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"
    timeout = 60  # idle keep-alive connections give up after this
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.conn_lock:
            self.server.open_connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.conn_lock:
                self.server.open_connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline()
                if not line:
                    raise ConnectionError("connection closed while reading a chunked body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self, method: str) -> None:
        hub = self.server.hub
        split = urlsplit(self.path)
        path = split.path
        fault = hub._take_fault(method, path)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.action == "drop":
            hub._log(method, path, 0, handled=True)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        try:
            body = self._read_body()
        except (ConnectionError, ValueError, OSError):
            self.close_connection = True
            return
        if fault is not None and fault.action == "status":
            error = HubError(fault.status, f"Injected fault (HTTP {fault.status})", headers=fault.headers)
            status, headers, payload = hub._error_response(error)
            self._send(method, path, status, headers, payload, handled=True)
            self.close_connection = True
            return
        handled = True
        try:
            status, headers, payload = hub._route(method, path, parse_qs(split.query, keep_blank_values=True),
                                                   self.headers, body)
        except HubError as error:
            handled = error.code != "_Unhandled"
            if not handled:
                error.code = None
            status, headers, payload = hub._error_response(error)
        except Exception as exc:  # a bug in this fake: answer 500 rather than hanging the client
            status, headers, payload = hub._error_response(HubError(500, f"fake hub crashed: {exc!r}"))
        truncate_at = None
        if fault is not None and fault.action == "truncate":
            truncate_at = fault.truncate_at if fault.truncate_at is not None else len(payload) // 2
        self._send(method, path, status, headers, payload, handled=handled, truncate_at=truncate_at)

    def _send(self, method: str, path: str, status: int, headers: dict[str, str], payload: bytes, *,
              handled: bool, truncate_at: int | None = None) -> None:
        hub = self.server.hub
        sent_token = self.headers.get("Authorization", "").partition(" ")[2].strip()
        hub._check_leak(path, headers, payload, extra_token=sent_token)
        self.send_response(status)
        headers = {"Content-Length": str(len(payload)), **headers}
        for key, value in headers.items():
            self.send_header(key, value)
        if truncate_at is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        hub._log(method, path, status, handled=handled, sent=0 if method == "HEAD" else len(payload))
        if method == "HEAD":
            return
        try:
            if truncate_at is not None:
                self.wfile.write(payload[:truncate_at])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
            else:
                self.wfile.write(payload)
        except OSError:
            self.close_connection = True


# --------------------------------------------------------------------------- the fake Hub


class HubServer:
    """In-memory fake of the Hugging Face Hub, served on 127.0.0.1 in a background thread."""

    def __init__(
        self,
        token: str = "hf_dummy",
        user: str = "user",
        *,
        read_only: bool = False,
        orgs: Iterable[str] = (),
        lfs_threshold: int = 10 * 1024 * 1024,
        gitattributes: bool = True,
        tree_page_size: int = 1000,
    ) -> None:
        self.token = token
        self.user = user
        self.lfs_threshold = lfs_threshold
        self.gitattributes = gitattributes
        self.tree_page_size = tree_page_size
        self._tokens: dict[str, _Identity] = {}
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._blobs: dict[str, bytes] = {}  # sha256 -> content
        self._faults: list[_Fault] = []
        self._log_entries: list[tuple[LoggedRequest, bool]] = []
        self._leaks: list[str] = []
        self._uploads: list[tuple[str, int]] = []  # (oid, size) of each LFS object stored by a PUT
        self._secret = secrets.token_bytes(16)
        self._commit_counter = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.add_token(token, user=user, read_only=read_only, orgs=orgs)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "HubServer":
        if self._server is not None:
            return self
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        deadline = time.monotonic() + 10
        while True:  # unblock handler threads waiting on idle keep-alive connections
            with server.conn_lock:
                connections = list(server.open_connections)
            for conn in connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            threads = getattr(server, "_threads", None)  # a list once a request came; a `_NoThreads` before that
            alive = [t for t in (threads if isinstance(threads, list) else []) if t.is_alive()]
            if not alive or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        server.server_close()  # joins handler threads
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("HubServer is not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ test helpers

    def add_token(self, token: str, *, user: str | None = None, read_only: bool = False,
                  orgs: Iterable[str] = ()) -> None:
        """Register another valid token (e.g. a read-only one for the same user)."""
        self._tokens[token] = _Identity(user=user or self.user, read_only=read_only, orgs=tuple(orgs))

    def client_env(self, home: str | os.PathLike, *, token: str | None | bool = True,
                   base: Mapping[str, str] | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a client subprocess (see module docstring).

        ``token=True`` uses the server's main token, a string uses that token, ``None``/``False`` none.
        """
        home = Path(home)
        home.mkdir(parents=True, exist_ok=True)
        env = {
            key: value for key, value in (os.environ if base is None else base).items()
            if not key.upper().startswith(("HF_", "HUGGINGFACE", "HUGGING_FACE"))
            and key.upper() not in {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "TRANSFORMERS_OFFLINE",
                                    "XDG_CACHE_HOME"}
        }
        env.update({
            "HF_ENDPOINT": self.url,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HOME": str(home),
            "HF_HUB_CACHE": str(home / "hub"),
            "HF_DATASETS_CACHE": str(home / "datasets"),
            "HF_TOKEN_PATH": str(home / "token"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        })
        if token is True:
            env["HF_TOKEN"] = self.token
        elif isinstance(token, str):
            env["HF_TOKEN"] = token
        if extra:
            env.update(extra)
        return env

    def create_repo(self, repo_id: str, *, repo_type: str = "dataset", private: bool = False,
                    gated: bool = False, exist_ok: bool = True) -> None:
        """Create a repo server-side (no HTTP), with the usual initial commit."""
        with self._lock:
            key = (repo_type, repo_id)
            if key in self._repos:
                if not exist_ok:
                    raise ValueError(f"{repo_type} repo {repo_id} exists")
                return
            repo = _Repo(repo_type=repo_type, repo_id=repo_id, private=private, gated=gated, created_at=_now_iso())
            files = {}
            if self.gitattributes:
                files[".gitattributes"] = self._store_regular(DEFAULT_GITATTRIBUTES.encode())
            self._new_commit(repo, "main", None, files, "initial commit", "", repo.namespace)
            self._repos[key] = repo

    def seed(self, repo_id: str, files: Mapping[str, bytes], *, repo_type: str = "dataset", private: bool = False,
             message: str = "seed", delete: Iterable[str] = ()) -> str:
        """Commit ``files`` (path -> bytes) server-side, creating the repo if needed. Returns the commit oid."""
        self.create_repo(repo_id, repo_type=repo_type, private=private)
        with self._lock:
            repo = self._repos[(repo_type, repo_id)]
            head = repo.commits[repo.refs["main"]]
            new_files = dict(head.files)
            for path in delete:
                new_files.pop(path, None)
            patterns = _lfs_patterns(self._content(new_files.get(".gitattributes")))
            for path, data in files.items():
                if self._is_lfs(path, len(data), data[:512], patterns):
                    sha = hashlib.sha256(data).hexdigest()
                    self._blobs[sha] = bytes(data)
                    repo.lfs_objects.add(sha)
                    new_files[path] = _Entry(len(data), sha, _git_blob_oid(_lfs_pointer(sha, len(data))), True)
                else:
                    new_files[path] = self._store_regular(bytes(data))
            return self._new_commit(repo, "main", head.oid, new_files, message, "", repo.namespace).oid

    def files(self, repo_id: str, *, repo_type: str = "dataset", revision: str = "main") -> dict[str, bytes]:
        """Content of every file of the repo at ``revision``: path -> bytes."""
        with self._lock:
            repo = self._repos[(repo_type, repo_id)]
            commit = self._resolve_revision(repo, revision)
            return {path: self._blobs[entry.sha256] for path, entry in sorted(commit.files.items())}

    def lfs_files(self, repo_id: str, *, repo_type: str = "dataset", revision: str = "main") -> set[str]:
        """Paths stored as LFS files at ``revision``."""
        with self._lock:
            commit = self._resolve_revision(self._repos[(repo_type, repo_id)], revision)
            return {path for path, entry in commit.files.items() if entry.lfs}

    def commits(self, repo_id: str, *, repo_type: str = "dataset", revision: str = "main") -> int:
        """Number of commits in the history of ``revision`` (the initial commit included)."""
        return len(self.commit_messages(repo_id, repo_type=repo_type, revision=revision))

    def commit_messages(self, repo_id: str, *, repo_type: str = "dataset", revision: str = "main") -> list[str]:
        """Commit titles, newest first."""
        with self._lock:
            repo = self._repos[(repo_type, repo_id)]
            return [c.title for c in self._history(repo, self._resolve_revision(repo, revision))]

    def repo_exists(self, repo_id: str, *, repo_type: str = "dataset") -> bool:
        with self._lock:
            return (repo_type, repo_id) in self._repos

    def is_private(self, repo_id: str, *, repo_type: str = "dataset") -> bool:
        with self._lock:
            return self._repos[(repo_type, repo_id)].private

    def fail_next(self, n: int = 1, status: int = 500, *, path_contains: str | None = None,
                  method: str | None = None, action: str = "status", truncate_at: int | None = None,
                  delay: float = 0.0, headers: Mapping[str, str] | None = None, skip: int = 0) -> None:
        """Make the next ``n`` requests matching (``method``, substring of the path) fail.

        ``skip`` lets that many matching requests through first (e.g. fail every commit after the first).

        ``action``: ``"status"`` answers ``status`` with a JSON error (body read first);
        ``"drop"`` closes the connection without answering (client sees a protocol/network
        error); ``"truncate"`` processes the request normally but closes the connection after
        ``truncate_at`` body bytes (default: half the body), with the full Content-Length
        announced - to test download resume; ``"delay"`` answers normally, after ``delay`` seconds (a slow Hub,
        e.g. to kill a client mid-way). ``delay`` sleeps before answering.
        ``path_contains`` is matched against the raw and the %-decoded path.
        """
        if action not in ("status", "drop", "truncate", "delay"):
            raise ValueError(f"unknown action {action!r}")
        with self._lock:
            self._faults.append(_Fault(n, status, path_contains, method.upper() if method else None, action,
                                       truncate_at, delay, dict(headers or {}), skip))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return sum(f.remaining for f in self._faults)

    @property
    def requests(self) -> list[LoggedRequest]:
        with self._lock:
            return [entry for entry, _ in self._log_entries]

    @property
    def unhandled(self) -> list[LoggedRequest]:
        """Requests that matched no route (answered 404): what the fake does not know about."""
        with self._lock:
            return [entry for entry, handled in self._log_entries if not handled]

    @property
    def token_leaks(self) -> list[str]:
        """Paths of responses whose headers or body contained a registered token. Must stay empty."""
        with self._lock:
            return list(self._leaks)

    def clear_requests(self) -> None:
        with self._lock:
            self._log_entries.clear()
            self._uploads.clear()

    @property
    def lfs_uploads(self) -> list[tuple[str, int]]:
        """(sha256, size) of each LFS object a client uploaded (PUT), in order: what was sent, in bytes."""
        with self._lock:
            return list(self._uploads)

    def history(self, repo_id: str, *, repo_type: str = "dataset", revision: str = "main") -> list[tuple[str, list[str]]]:
        """(title, paths of the repo after it) of each commit, oldest first."""
        with self._lock:
            repo = self._repos[(repo_type, repo_id)]
            return [(c.title, sorted(c.files)) for c in reversed(self._history(repo, self._resolve_revision(repo, revision)))]

    # ------------------------------------------------------------------ internals: bookkeeping

    def _log(self, method: str, path: str, status: int, *, handled: bool, sent: int = 0) -> None:
        with self._lock:
            self._log_entries.append((LoggedRequest(method, path, status, sent), handled))

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    if fault.skip > 0:
                        fault.skip -= 1
                        return None
                    fault.remaining -= 1
                    return fault
            return None

    def _check_leak(self, path: str, headers: Mapping[str, str], payload: bytes, extra_token: str = "") -> None:
        """Record `path` if the response echoes a registered token or the one this request sent."""
        blob = "\n".join(f"{k}: {v}" for k, v in headers.items()).encode() + b"\n" + payload
        for token in [*self._tokens, extra_token]:
            if token and token.encode() in blob:
                with self._lock:
                    self._leaks.append(path)
                return

    def _error_response(self, error: HubError) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "application/json; charset=utf-8",
                   "X-Error-Message": error.message.encode("ascii", "replace").decode()[:500]}
        if error.code:
            headers["X-Error-Code"] = error.code
        headers.update(error.headers)
        return error.status, headers, json.dumps({"error": error.message}).encode()

    def _store_regular(self, data: bytes) -> _Entry:
        sha = hashlib.sha256(data).hexdigest()
        self._blobs[sha] = data
        return _Entry(len(data), sha, _git_blob_oid(data), False)

    def _content(self, entry: _Entry | None) -> bytes | None:
        return None if entry is None else self._blobs[entry.sha256]

    def _is_lfs(self, path: str, size: int, sample: bytes, patterns: list[str]) -> bool:
        if size == 0:
            return False
        if size >= self.lfs_threshold:
            return True
        if any(_match_git_pattern(path, p) for p in patterns):
            return True
        return b"\0" in sample

    def _new_commit(self, repo: _Repo, ref: str, parent: str | None, files: dict[str, _Entry], title: str,
                    message: str, author: str) -> _Commit:
        self._commit_counter += 1
        digest = hashlib.sha1()
        digest.update(f"{repo.repo_type}/{repo.repo_id}\0{parent}\0{title}\0{self._commit_counter}\0".encode())
        for path, entry in sorted(files.items()):
            digest.update(f"{path}\0{entry.blob_oid}\n".encode())
        commit = _Commit(digest.hexdigest(), title, message, _now_iso(), author, parent, files)
        repo.commits[commit.oid] = commit
        repo.refs[ref] = commit.oid
        return commit

    def _history(self, repo: _Repo, commit: _Commit) -> list[_Commit]:
        out = []
        current: _Commit | None = commit
        while current is not None:
            out.append(current)
            current = repo.commits.get(current.parent) if current.parent else None
        return out

    def _resolve_revision(self, repo: _Repo, revision: str) -> _Commit:
        if revision in repo.refs:
            return repo.commits[repo.refs[revision]]
        if revision.startswith("refs/heads/") and revision[len("refs/heads/"):] in repo.refs:
            return repo.commits[repo.refs[revision[len("refs/heads/"):]]]
        if _HEX.match(revision):
            candidates = [oid for oid in repo.commits if oid.startswith(revision)]
            if len(candidates) == 1:
                return repo.commits[candidates[0]]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    # ------------------------------------------------------------------ internals: auth

    def _identity(self, headers: Mapping[str, str]) -> _Identity | None:
        value = headers.get("Authorization")
        if not value:
            return None
        scheme, _, token = value.partition(" ")
        identity = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if identity is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return identity

    def _get_repo(self, repo_type: str, repo_id: str, identity: _Identity | None) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is not None and repo.private and not self._owns(identity, repo.namespace):
            repo = None
        if repo is None:
            message = "Repository not found"
            raise HubError(401 if identity is None else 404, message, "RepoNotFound")
        return repo

    @staticmethod
    def _owns(identity: _Identity | None, namespace: str) -> bool:
        return identity is not None and (identity.user == namespace or namespace in identity.orgs)

    def _check_write(self, identity: _Identity | None, namespace: str) -> None:
        if identity is None:
            raise HubError(401, "You must be authenticated to perform this action")
        if identity.read_only:
            raise HubError(403, "You don't have the rights to perform this action: your token is read-only")
        if not self._owns(identity, namespace):
            raise HubError(403, f"You don't have the rights to write in the namespace {namespace!r}")

    # ------------------------------------------------------------------ internals: routing

    def _route(self, method: str, path: str, query: dict[str, list[str]], headers: Mapping[str, str],
               body: bytes) -> tuple[int, dict[str, str], bytes]:
        segs = path.strip("/").split("/")
        with self._lock:
            if segs[0] == "api" and len(segs) >= 2:
                return self._route_api(method, segs[1:], query, headers, body)
            if segs[0] == "__lfs__":
                return self._lfs_put(method, segs[1:], query, body)
            prefix_type = {"datasets": "dataset", "spaces": "space"}.get(segs[0])
            rest = segs[1:] if prefix_type else segs
            repo_type = prefix_type or "model"
            if len(rest) >= 3 and rest[1].endswith(".git") and rest[2:5] == ["info", "lfs", "objects"]:
                repo_id = f"{unquote(rest[0])}/{unquote(rest[1][:-4])}"
                return self._lfs_batch_or_verify(method, repo_type, repo_id, rest[5:], headers, body)
            if len(rest) >= 4 and rest[2] == "resolve" and method in ("GET", "HEAD"):
                repo_id = f"{unquote(rest[0])}/{unquote(rest[1])}"
                revision, file_segs = self._split_revision(rest[3:])
                return self._resolve(method, repo_type, repo_id, revision, unquote("/".join(file_segs)), headers)
        raise HubError(404, f"Not found: {method} {path}", "_Unhandled")

    @staticmethod
    def _split_revision(segs: list[str]) -> tuple[str, list[str]]:
        # `hf_hub_url` quotes the revision (refs%2Fpr%2F1), HfFileSystem leaves special refs raw (refs/pr/1)
        if len(segs) >= 3 and segs[0] == "refs" and _SPECIAL_REF.match("/".join(segs[:3])):
            return "/".join(segs[:3]), segs[3:]
        return unquote(segs[0]), segs[1:]

    def _route_api(self, method: str, segs: list[str], query: dict[str, list[str]], headers: Mapping[str, str],
                   body: bytes) -> tuple[int, dict[str, str], bytes]:
        if segs == ["whoami-v2"] and method == "GET":
            return self._whoami(headers)
        if segs == ["validate-yaml"] and method == "POST":
            return self._validate_yaml(body)
        if segs[:1] == ["repos"] and len(segs) == 2:
            if segs[1] == "create" and method == "POST":
                return self._create_repo_api(headers, body)
            if segs[1] == "delete" and method == "DELETE":
                return self._delete_repo_api(headers, body)
        if any(seg.startswith("xet-") for seg in segs):
            raise HubError(501, "Xet is not supported by this fake Hub: set HF_HUB_DISABLE_XET=1 in the client "
                                "environment", "_Unhandled")
        if segs[0] in _REPO_TYPES and len(segs) >= 3:
            repo_type = _REPO_TYPES[segs[0]]
            repo_id = f"{unquote(segs[1])}/{unquote(segs[2])}"
            rest = segs[3:]
            action = rest[0] if rest else ""
            if method == "GET" and not rest:
                return self._repo_info(repo_type, repo_id, None, query, headers)
            if method == "GET" and action == "revision" and len(rest) >= 2:
                return self._repo_info(repo_type, repo_id, unquote("/".join(rest[1:])), query, headers)
            if method == "GET" and action == "tree" and len(rest) >= 2:
                return self._tree(repo_type, repo_id, unquote(rest[1]), unquote("/".join(rest[2:])), query, headers)
            if method == "POST" and action == "paths-info" and len(rest) >= 2:
                return self._paths_info(repo_type, repo_id, unquote("/".join(rest[1:])), headers, body)
            if method == "POST" and action == "preupload" and len(rest) >= 2:
                return self._preupload(repo_type, repo_id, unquote("/".join(rest[1:])), query, headers, body)
            if method == "POST" and action == "commit" and len(rest) >= 2:
                return self._commit(repo_type, repo_id, unquote("/".join(rest[1:])), query, headers, body)
            if method == "GET" and action == "commits" and len(rest) >= 2:
                return self._list_commits(repo_type, repo_id, unquote("/".join(rest[1:])), headers)
            if method == "GET" and action == "refs" and len(rest) == 1:
                return self._refs(repo_type, repo_id, query, headers)
            if method == "PUT" and action == "settings" and len(rest) == 1:
                return self._settings(repo_type, repo_id, headers, body)
        raise HubError(404, f"Not found: {method} /api/{'/'.join(segs)}", "_Unhandled")

    # ------------------------------------------------------------------ route handlers

    @staticmethod
    def _json(data: Any, status: int = 200,
              headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        return status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, json.dumps(data).encode()

    @staticmethod
    def _load_json(body: bytes) -> Any:
        try:
            return json.loads(body or b"{}")
        except ValueError as exc:
            raise HubError(400, f"Invalid JSON body: {exc}") from None

    def _whoami(self, headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        identity = self._identity(headers)
        if identity is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self._json({
            "type": "user",
            "id": hashlib.sha1(identity.user.encode()).hexdigest()[:24],
            "name": identity.user,
            "fullname": identity.user,
            "email": f"{identity.user}@example.com",
            "emailVerified": True,
            "canPay": False,
            "isPro": False,
            "periodEnd": None,
            "avatarUrl": "",
            "orgs": [{"type": "org", "name": org, "fullname": org, "roleInOrg": "write"} for org in identity.orgs],
            "auth": {"type": "access_token",
                     "accessToken": {"displayName": "fake-hub-token", "role": "read" if identity.read_only else "write",
                                     "createdAt": "2024-01-01T00:00:00.000Z"}},
        })

    def _validate_yaml(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        payload = self._load_json(body)
        _, error = _parse_front_matter(str(payload.get("content", "")))
        if error:
            return self._json({"errors": [{"message": error}], "warnings": []}, status=400)
        return self._json({"errors": [], "warnings": []})

    def _create_repo_api(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        identity = self._identity(headers)
        payload = self._load_json(body)
        name = payload.get("name")
        if not name:
            raise HubError(400, "Missing repo name")
        namespace = payload.get("organization") or (identity.user if identity else None)
        repo_type = payload.get("type") or "model"
        if repo_type not in _URL_PREFIX:
            raise HubError(400, f"Invalid repo type {repo_type!r}")
        self._check_write(identity, namespace or "")
        repo_id = f"{namespace}/{name}"
        url = f"{self.url}/{_URL_PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self._repos:
            return self._json({"error": f"You already created this {repo_type} repo", "url": url}, status=409,
                              headers={"X-Error-Message": f"You already created this {repo_type} repo"})
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        self.create_repo(repo_id, repo_type=repo_type, private=private)
        return self._json({"url": url, "name": repo_id, "id": hashlib.sha1(url.encode()).hexdigest()[:24]})

    def _delete_repo_api(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        identity = self._identity(headers)
        payload = self._load_json(body)
        namespace = payload.get("organization") or (identity.user if identity else "")
        repo_id = f"{namespace}/{payload.get('name')}"
        repo_type = payload.get("type") or "model"
        self._get_repo(repo_type, repo_id, identity)
        self._check_write(identity, namespace)
        del self._repos[(repo_type, repo_id)]
        return self._json({})

    def _settings(self, repo_type: str, repo_id: str, headers: Mapping[str, str],
                  body: bytes) -> tuple[int, dict[str, str], bytes]:
        identity = self._identity(headers)
        repo = self._get_repo(repo_type, repo_id, identity)
        self._check_write(identity, repo.namespace)
        payload = self._load_json(body)
        if "private" in payload:
            repo.private = bool(payload["private"])
        if "visibility" in payload:
            repo.private = payload["visibility"] == "private"
        if "gated" in payload:
            repo.gated = payload["gated"] not in (False, None, "false")
        return self._json({})

    def _card_data(self, commit: _Commit) -> dict | None:
        readme = self._content(commit.files.get("README.md"))
        if readme is None:
            return None
        data, _ = _parse_front_matter(readme.decode("utf-8", "replace"))
        return data

    def _repo_info(self, repo_type: str, repo_id: str, revision: str | None, query: dict[str, list[str]],
                   headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        identity = self._identity(headers)
        repo = self._get_repo(repo_type, repo_id, identity)
        commit = self._resolve_revision(repo, revision or "main")
        blobs = query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for path, entry in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update({"size": entry.size, "blobId": entry.blob_oid})
                if entry.lfs:
                    sibling["lfs"] = {"size": entry.size, "sha256": entry.sha256, "pointerSize": entry.pointer_size}
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo.namespace,
            "sha": commit.oid,
            "createdAt": repo.created_at,
            "lastModified": commit.date,
            "private": repo.private,
            "gated": "auto" if repo.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(entry.size for entry in commit.files.values()),
        }
        card_data = self._card_data(commit)
        if card_data is not None:
            info["cardData"] = card_data
        if repo_type == "model":
            info["modelId"] = repo_id
        return self._json(info)

    def _last_commit_of(self, repo: _Repo, commit: _Commit, path: str, is_dir: bool) -> dict[str, str]:
        """The most recent commit (in the history of `commit`) that changed `path` (file or folder)."""

        def state(c: _Commit) -> Any:
            if not is_dir:
                entry = c.files.get(path)
                return entry.blob_oid if entry else None
            prefix = path + "/"
            return sorted((p, e.blob_oid) for p, e in c.files.items() if p.startswith(prefix))

        history = self._history(repo, commit)
        last = history[0]
        for older in history[1:]:
            if state(older) != state(last):
                break
            last = older
        return {"id": last.oid, "title": last.title, "date": last.date}

    def _tree_entries(self, commit: _Commit) -> dict[str, tuple[str, _Entry | None]]:
        """All paths of a commit: path -> ("file", entry) | ("directory", None)."""
        entries: dict[str, tuple[str, _Entry | None]] = {}
        for path, entry in commit.files.items():
            entries[path] = ("file", entry)
            for parent in _parents(path):
                entries.setdefault(parent, ("directory", None))
        return entries

    def _entry_json(self, repo: _Repo, commit: _Commit, path: str, kind: str, entry: _Entry | None,
                    expand: bool) -> dict[str, Any]:
        if kind == "file":
            assert entry is not None
            out: dict[str, Any] = {"type": "file", "oid": entry.blob_oid, "size": entry.size, "path": path}
            if entry.lfs:
                out["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
        else:
            digest = hashlib.sha1(path.encode())
            for p, e in sorted(commit.files.items()):
                if p.startswith(path + "/"):
                    digest.update(f"{p}\0{e.blob_oid}\n".encode())
            out = {"type": "directory", "oid": digest.hexdigest(), "size": 0, "path": path}
        if expand:
            out["lastCommit"] = self._last_commit_of(repo, commit, path, kind == "directory")
        return out

    def _tree(self, repo_type: str, repo_id: str, revision: str, path: str, query: dict[str, list[str]],
              headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        identity = self._identity(headers)
        repo = self._get_repo(repo_type, repo_id, identity)
        commit = self._resolve_revision(repo, revision)
        path = path.strip("/")
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        expand = query.get("expand", ["false"])[0].lower() in ("1", "true")
        entries = self._tree_entries(commit)
        if path and entries.get(path, ("missing", None))[0] != "directory":
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound",
                           headers={"X-Repo-Commit": commit.oid})
        prefix = path + "/" if path else ""
        selected = []
        for p, (kind, entry) in entries.items():
            if not p.startswith(prefix):
                continue
            if not recursive and "/" in p[len(prefix):]:
                continue
            selected.append((p, kind, entry))
        # directories first, then files (like the Hub's "tree first" order)
        selected.sort(key=lambda item: (item[1] != "directory", item[0]))
        page_size = max(1, self.tree_page_size if not expand else min(self.tree_page_size, 50))
        try:
            start = int(query.get("cursor", ["0"])[0] or 0)
        except ValueError:
            raise HubError(400, "Invalid cursor") from None
        page = selected[start:start + page_size]
        link_headers = {}
        if start + page_size < len(selected):
            next_query = urlencode({"recursive": str(recursive).lower(), "expand": str(expand).lower(),
                                    "cursor": str(start + page_size)})
            encoded_path = "/" + quote(path, safe="") if path else ""
            next_url = (f"{self.url}/api/{repo_type}s/{repo_id}/tree/{quote(revision, safe='')}{encoded_path}"
                        f"?{next_query}")
            link_headers["Link"] = f'<{next_url}>; rel="next"'
        return self._json([self._entry_json(repo, commit, p, kind, entry, expand) for p, kind, entry in page],
                          headers=link_headers)

    def _paths_info(self, repo_type: str, repo_id: str, revision: str, headers: Mapping[str, str],
                    body: bytes) -> tuple[int, dict[str, str], bytes]:
        identity = self._identity(headers)
        repo = self._get_repo(repo_type, repo_id, identity)
        commit = self._resolve_revision(repo, revision)
        content_type = headers.get("Content-Type", "")
        if "json" in content_type:
            payload = self._load_json(body)
            paths = payload.get("paths", [])
            paths = [paths] if isinstance(paths, str) else list(paths)
            expand = payload.get("expand") in (True, "true", "True", "1", 1)
        else:
            form = parse_qs(body.decode(), keep_blank_values=True)
            paths = form.get("paths", [])
            expand = form.get("expand", ["false"])[0].lower() in ("1", "true")
        entries = self._tree_entries(commit)
        out = []
        for p in paths:
            p = p.strip("/")
            if p in entries:
                kind, entry = entries[p]
                out.append(self._entry_json(repo, commit, p, kind, entry, expand))
        return self._json(out)

    def _preupload(self, repo_type: str, repo_id: str, revision: str, query: dict[str, list[str]],
                   headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        identity = self._identity(headers)
        repo = self._get_repo(repo_type, repo_id, identity)
        create_pr = query.get("create_pr", ["0"])[0] in ("1", "true")
        if not create_pr:
            self._check_write(identity, repo.namespace)
        commit = self._resolve_revision(repo, revision)
        payload = self._load_json(body)
        patterns = _lfs_patterns(self._content(commit.files.get(".gitattributes")))
        gitignore = payload.get("gitIgnore")
        if gitignore is None:
            content = self._content(commit.files.get(".gitignore"))
            gitignore = content.decode("utf-8", "replace") if content else ""
        ignore_patterns = [line.strip() for line in gitignore.splitlines()
                           if line.strip() and not line.strip().startswith("#")]
        files_out = []
        for item in payload.get("files", []):
            path = item["path"]
            try:
                sample = base64.b64decode(item.get("sample", ""))
            except ValueError:
                raise HubError(400, f"Invalid sample for {path}") from None
            mode = "lfs" if self._is_lfs(path, int(item.get("size", 0)), sample, patterns) else "regular"
            existing = commit.files.get(path)
            oid = None
            if existing is not None:
                oid = existing.sha256 if existing.lfs else existing.blob_oid
            files_out.append({
                "path": path,
                "uploadMode": mode,
                "shouldIgnore": any(_match_git_pattern(path, p) for p in ignore_patterns),
                "oid": oid,
            })
        return self._json({"files": files_out, "commitOid": commit.oid})

    def _sign(self, *parts: str) -> str:
        return hmac.new(self._secret, "\0".join(parts).encode(), hashlib.sha256).hexdigest()

    def _lfs_href(self, repo_type: str, repo_id: str, oid: str, size: int) -> str:
        """A pre-signed storage URL (like S3's): the client sends no token to it."""
        signature = self._sign(repo_type, repo_id, oid, str(size))
        return f"{self.url}/__lfs__/{repo_type}/{repo_id}/{oid}?size={size}&sig={signature}"

    def _lfs_batch_or_verify(self, method: str, repo_type: str, repo_id: str, segs: list[str],
                             headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        if method != "POST" or segs not in (["batch"], ["verify"]):
            raise HubError(404, "Not found", "_Unhandled")
        identity = self._identity(headers)
        repo = self._get_repo(repo_type, repo_id, identity)
        payload = self._load_json(body)
        lfs_headers = {"Content-Type": "application/vnd.git-lfs+json"}
        if segs == ["verify"]:
            oid, size = payload.get("oid"), payload.get("size")
            if oid not in repo.lfs_objects or len(self._blobs.get(oid, b"")) != size:
                raise HubError(404, f"LFS object {oid} not found")
            return self._json({"message": "Object verified"}, headers=lfs_headers)
        operation = payload.get("operation")
        if operation == "upload":
            self._check_write(identity, repo.namespace)
        elif operation != "download":
            raise HubError(422, f"Invalid LFS operation {operation!r}")
        objects = []
        git_base = f"{self.url}/{_URL_PREFIX[repo_type]}{repo_id}.git/info/lfs/objects"
        for obj in payload.get("objects", []):
            oid, size = str(obj.get("oid")), obj.get("size")
            if not isinstance(size, int) or not re.fullmatch(r"[0-9a-f]{64}", oid):
                objects.append({"oid": oid, "size": size if isinstance(size, int) else 0,
                                "error": {"code": 422, "message": "Invalid object"}})
                continue
            present = oid in repo.lfs_objects and len(self._blobs.get(oid, b"")) == size
            if operation == "download":
                if not present:
                    objects.append({"oid": oid, "size": size, "error": {"code": 404, "message": "Object not found"}})
                else:
                    href = self._lfs_href(repo_type, repo_id, oid, size)
                    objects.append({"oid": oid, "size": size, "authenticated": True,
                                    "actions": {"download": {"href": href}}})
            elif present:
                objects.append({"oid": oid, "size": size})  # already uploaded: no actions
            else:
                href = self._lfs_href(repo_type, repo_id, oid, size)
                objects.append({"oid": oid, "size": size, "authenticated": True,
                                "actions": {"upload": {"href": href},
                                            "verify": {"href": f"{git_base}/verify", "header": {}}}})
        return self._json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}, headers=lfs_headers)

    def _lfs_put(self, method: str, segs: list[str], query: dict[str, list[str]],
                 body: bytes) -> tuple[int, dict[str, str], bytes]:
        if len(segs) != 4:
            raise HubError(404, "Not found", "_Unhandled")
        repo_type, repo_id, oid = segs[0], f"{unquote(segs[1])}/{unquote(segs[2])}", segs[3]
        size = query.get("size", [""])[0]
        if not hmac.compare_digest(query.get("sig", [""])[0], self._sign(repo_type, repo_id, oid, size)):
            raise HubError(403, "Invalid or missing signature")
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found")
        if method == "GET":
            if oid not in repo.lfs_objects:
                raise HubError(404, "Object not found")
            return 200, {"Content-Type": "application/octet-stream"}, self._blobs[oid]
        if method != "PUT":
            raise HubError(405, "Method not allowed")
        if len(body) != int(size or -1) or hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, f"Uploaded content does not match oid {oid} / size {size} (got {len(body)} bytes)")
        self._blobs[oid] = body
        repo.lfs_objects.add(oid)
        with self._lock:
            self._uploads.append((oid, len(body)))
        return 200, {"ETag": f'"{hashlib.md5(body).hexdigest()}"'}, b""

    def _commit(self, repo_type: str, repo_id: str, revision: str, query: dict[str, list[str]],
                headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        identity = self._identity(headers)
        repo = self._get_repo(repo_type, repo_id, identity)
        create_pr = query.get("create_pr", ["0"])[0] in ("1", "true")
        if not create_pr:
            self._check_write(identity, repo.namespace)
        elif identity is None:
            raise HubError(401, "You must be authenticated to open a pull request")
        if not create_pr and revision not in repo.refs and not (
                revision.startswith("refs/heads/") and revision[len("refs/heads/"):] in repo.refs):
            # committing on top of a commit sha (or an unknown branch) is not allowed
            self._resolve_revision(repo, revision)
            raise HubError(400, f"Invalid rev id: {revision} is not a branch")
        base = self._resolve_revision(repo, revision)
        header: dict[str, Any] | None = None
        files = dict(base.files)
        for line_no, line in enumerate(body.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                key, value = item["key"], item["value"]
            except (ValueError, KeyError, TypeError):
                raise HubError(400, f"Invalid NDJSON commit payload at line {line_no}") from None
            if key == "header":
                header = value
            elif key == "file":
                data = (base64.b64decode(value["content"]) if value.get("encoding") == "base64"
                        else str(value["content"]).encode())
                if len(data) > self.lfs_threshold:
                    raise HubError(400, f"Your push was rejected because {value['path']} is larger than "
                                        f"{self.lfs_threshold} bytes: use LFS")
                files[value["path"]] = self._store_regular(data)
            elif key == "lfsFile":
                oid = value.get("oid")
                if oid not in repo.lfs_objects:
                    raise HubError(422, f"Your push was rejected because an LFS pointer pointed to a file that "
                                        f"does not exist. For instance: {value.get('path')} ({oid})")
                size = value.get("size", len(self._blobs[oid]))
                if size != len(self._blobs[oid]):
                    raise HubError(422, f"Size mismatch for LFS file {value.get('path')}")
                files[value["path"]] = _Entry(size, oid, _git_blob_oid(_lfs_pointer(oid, size)), True)
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                doomed = [p for p in files if p.startswith(prefix)]
                if not doomed:
                    raise HubError(404, f"A folder with this name doesn't exist: {value['path']}", "EntryNotFound")
                for p in doomed:
                    del files[p]
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")
        if header is None or not header.get("summary"):
            raise HubError(400, "Missing commit header with a summary")
        parent_commit = header.get("parentCommit")
        if parent_commit and not base.oid.startswith(parent_commit):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        readme = files.get("README.md")
        if readme is not None and readme != base.files.get("README.md"):
            _, error = _parse_front_matter((self._content(readme) or b"").decode("utf-8", "replace"))
            if error:
                raise HubError(400, f"Invalid metadata in README.md: {error}")
        prefix = _URL_PREFIX[repo_type]
        if create_pr:
            repo.n_prs += 1
            ref = f"refs/pr/{repo.n_prs}"
        else:
            ref = revision[len("refs/heads/"):] if revision.startswith("refs/heads/") else revision
        author = identity.user if identity else "anonymous"
        commit = self._new_commit(repo, ref, base.oid, files, header["summary"], header.get("description") or "",
                                  author)
        return self._json({
            "success": True,
            "commitOid": commit.oid,
            "commitUrl": f"{self.url}/{prefix}{repo_id}/commit/{commit.oid}",
            "pullRequestUrl": f"{self.url}/{prefix}{repo_id}/discussions/{repo.n_prs}" if create_pr else None,
            "hookOutput": "",
        })

    def _list_commits(self, repo_type: str, repo_id: str, revision: str,
                      headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        identity = self._identity(headers)
        repo = self._get_repo(repo_type, repo_id, identity)
        commit = self._resolve_revision(repo, revision)
        return self._json([
            {"id": c.oid, "title": c.title, "message": c.message, "date": c.date, "authors": [{"user": c.author}]}
            for c in self._history(repo, commit)
        ])

    def _refs(self, repo_type: str, repo_id: str, query: dict[str, list[str]],
              headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        identity = self._identity(headers)
        repo = self._get_repo(repo_type, repo_id, identity)
        branches = [{"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
                    for name, oid in repo.refs.items() if not name.startswith("refs/")]
        data: dict[str, Any] = {"branches": branches, "converts": [], "tags": []}
        if query.get("include_prs", ["0"])[0] in ("1", "true"):
            data["pullRequests"] = [{"name": name, "ref": name, "targetCommit": oid}
                                    for name, oid in repo.refs.items() if name.startswith("refs/pr/")]
        return self._json(data)

    def _resolve(self, method: str, repo_type: str, repo_id: str, revision: str, path: str,
                 headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        identity = self._identity(headers)
        repo = self._get_repo(repo_type, repo_id, identity)
        commit = self._resolve_revision(repo, revision)
        if repo.gated and not self._owns(identity, repo.namespace):
            raise HubError(401 if identity is None else 403,
                           f"Access to {repo_type} {repo_id} is restricted. You must have access to it.", "GatedRepo")
        entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": commit.oid})
        data = self._blobs[entry.sha256]
        out_headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": f'"{entry.etag}"',
            "X-Repo-Commit": commit.oid,
            "Content-Disposition": f'inline; filename="{posixpath.basename(path)}"',
        }
        if entry.lfs:
            out_headers["X-Linked-Etag"] = f'"{entry.sha256}"'
            out_headers["X-Linked-Size"] = str(entry.size)
        range_header = headers.get("Range")
        match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", range_header or "")
        if match and (match.group(1) or match.group(2)):
            total = len(data)
            start_s, end_s = match.groups()
            if start_s:
                start = int(start_s)
                end = min(int(end_s), total - 1) if end_s else total - 1
            else:  # suffix range: last N bytes
                start = max(total - int(end_s), 0)
                end = total - 1
            if start >= total or start > end:
                raise HubError(416, "Range Not Satisfiable", headers={"Content-Range": f"bytes */{total}",
                                                                      "X-Repo-Commit": commit.oid})
            out_headers["Content-Range"] = f"bytes {start}-{end}/{total}"
            return 206, out_headers, data[start:end + 1]
        return 200, out_headers, data
