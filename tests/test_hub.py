"""Publishing: the real huggingface_hub client pushes a fixture build to the local Hub server (tests/hub_server.py),
and the real `datasets` client loads it back; re-push, interrupted push, auth errors, token hygiene."""

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import built_once

from salient_imagenet_builder.builder import build

try:
    from tests.hub_server import HubServer
except ImportError:
    from hub_server import HubServer

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_secret_token_do_not_print_42"
REPO = "user/salient_imagenet"


@pytest.fixture
def hub():
    with HubServer(token=TOKEN, user="user") as server:
        yield server
        assert not server.token_leaks


@pytest.fixture(scope="module")
def builds(inputs, tmp_path_factory):
    """Two builds of the same classes: three default shards, then one."""
    return built_once(tmp_path_factory, "test_hub", lambda root: _builds(inputs, root))


def _builds(inputs, root):
    from salient_imagenet_builder.builder import BuildConfig

    made = {}
    for name, shard_bytes in (("many", 150_000), ("one", 10**9)):
        config = BuildConfig(source=str(inputs["folder"]), out=str(root / name), model="resnet18",
                             model_checkpoint=str(inputs["checkpoint"]), annotations=str(inputs["annotations"]),
                             workers=0, batch_size=8, top_k=4, group_by="label", max_shard_bytes=shard_bytes)
        build(config)
        made[name] = root / name
    assert len(list((made["many"] / "data").glob("train-*"))) >= 3
    return made


def cli(hub, home, *args, token=True):
    return subprocess.run([sys.executable, str(ROOT / "build_dataset.py"), *args],
                          env=hub.client_env(home, token=token), capture_output=True, text=True, timeout=300)


def load_remote(hub, home, out: Path) -> None:
    """load_dataset from the Hub, both configs, in a fresh interpreter; rows saved as parquet for comparison."""
    code = (f"from datasets import load_dataset\n"
            f"load_dataset({REPO!r}, split='train').to_parquet({str(out / 'default.parquet')!r})\n"
            f"load_dataset({REPO!r}, 'annotations', split='train').to_parquet({str(out / 'annotations.parquet')!r})\n")
    result = subprocess.run([sys.executable, "-c", code], env=hub.client_env(home), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]


def load_local(folder: Path, out: Path) -> None:
    from datasets import load_dataset

    load_dataset(str(folder), split="train").to_parquet(out / "default.parquet")
    load_dataset(str(folder), "annotations", split="train").to_parquet(out / "annotations.parquet")


def assert_same_rows(a: Path, b: Path):
    for name in ("default.parquet", "annotations.parquet"):
        left, right = pq.read_table(a / name), pq.read_table(b / name)
        assert left.num_rows > 0 and left.equals(right), name


def test_push_then_load_returns_identical_rows(hub, builds, tmp_path):
    result = cli(hub, tmp_path / "hf", "--push", "--out", str(builds["many"]))
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"Pushed {builds['many']} to" in result.stdout and "user/salient_imagenet" in result.stdout
    assert TOKEN not in result.stdout + result.stderr
    assert hub.is_private(REPO)  # private unless --public
    files = hub.files(REPO)
    local = {str(p.relative_to(builds["many"])) for p in builds["many"].rglob("*") if p.is_file()}
    assert set(files) - {".gitattributes"} == local
    assert f"load_dataset(\"{REPO}\"" in files["README.md"].decode()  # the card names the repo it lives in
    (tmp_path / "remote").mkdir()
    (tmp_path / "local").mkdir()
    load_remote(hub, tmp_path / "hf", tmp_path / "remote")
    load_local(builds["many"], tmp_path / "local")
    assert_same_rows(tmp_path / "remote", tmp_path / "local")
    written = [p.read_bytes() for p in builds["many"].rglob("*") if p.is_file()] + list(files.values())
    assert not any(TOKEN.encode() in data for data in written)  # in no file, local or pushed

    check = subprocess.run([sys.executable, "-m", "salient_imagenet_builder.cli", "check", REPO],
                           env=hub.client_env(tmp_path / "hf"), capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr


def test_repush_with_fewer_shards_leaves_no_stale_shard(hub, builds, tmp_path):
    assert cli(hub, tmp_path / "hf", "--push", "--out", str(builds["many"])).returncode == 0
    result = cli(hub, tmp_path / "hf", "--push", "--out", str(builds["one"]))
    assert result.returncode == 0, result.stderr[-4000:]
    data = sorted(p for p in hub.files(REPO) if p.startswith("data/"))
    assert data == ["data/annotations-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]
    (tmp_path / "remote").mkdir()
    (tmp_path / "local").mkdir()
    load_remote(hub, tmp_path / "hf", tmp_path / "remote")
    load_local(builds["one"], tmp_path / "local")
    assert_same_rows(tmp_path / "remote", tmp_path / "local")


def test_transient_commit_failure_is_retried(hub, builds, tmp_path):
    hub.fail_next(2, status=503, path_contains="/commit/")
    result = cli(hub, tmp_path / "hf", "--push", "--out", str(builds["many"]), "--repo-id", REPO)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "retrying" in result.stderr
    assert set(hub.files(REPO)) - {".gitattributes"} == {
        str(p.relative_to(builds["many"])) for p in builds["many"].rglob("*") if p.is_file()}


PUSH_ONE_FILE_PER_COMMIT = (
    "import importlib, sys, types; h = importlib.import_module('salient_imagenet_builder.publish.upload')\n"
    "assert isinstance(h, types.ModuleType) and hasattr(h, 'BACKOFF_SECONDS'), h\n"
    "h.FILES_PER_COMMIT = 1; h.BACKOFF_SECONDS = 0.01\n"
    "from salient_imagenet_builder.cli import build_main; sys.exit(build_main(sys.argv[1:]))")


def push_in_subprocess(hub, home, folder):
    """`build_dataset.py --push` with one file per commit and a short back-off, so a test sees several commits."""
    return subprocess.run([sys.executable, "-c", PUSH_ONE_FILE_PER_COMMIT, "--push", "--out", str(folder)],
                          env=hub.client_env(home), capture_output=True, text=True, timeout=300)


def count_lfs_puts(hub):
    return sum(1 for r in hub.requests if r.method == "PUT" and "__lfs__" in r.path)


def test_interrupted_push_resumes_without_reuploading(hub, builds, tmp_path):
    hub.create_repo(REPO, private=True)
    commits_before = hub.commits(REPO)
    hub.fail_next(1000, status=500, path_contains="/commit/", method="POST", skip=1)  # a lasting outage
    first = push_in_subprocess(hub, tmp_path / "hf", builds["many"])
    assert first.returncode == 3 and "500" in first.stderr, first.stderr[-3000:]
    assert hub.commits(REPO) - commits_before == 1  # one data shard landed, then the outage
    assert "README.md" not in hub.files(REPO)  # the card comes last: never half-published
    hub.clear_faults()
    hub.clear_requests()
    second = push_in_subprocess(hub, tmp_path / "hf", builds["many"])
    assert second.returncode == 0, second.stderr[-3000:]
    data = [p for p in builds["many"].rglob("*.parquet")]
    assert count_lfs_puts(hub) <= len(data) - 1  # the shard already on the Hub is not uploaded again
    assert set(hub.files(REPO)) - {".gitattributes"} == {
        str(p.relative_to(builds["many"])) for p in builds["many"].rglob("*") if p.is_file()}


def test_a_killed_push_resumes_sending_only_what_is_missing_and_the_card_last(hub, builds, tmp_path):
    """SIGKILL a push after two of its data commits (each commit slowed to 0.5 s by the server), push again: only
    the files not yet on the Hub are uploaded, the card never names shards that are not all there, and the repo
    ends equal to the folder."""
    folder = builds["many"]
    local = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    data = [p for p in local if p.startswith("data/")]
    assert len(data) >= 4
    hub.create_repo(REPO, private=True)
    before = hub.commits(REPO)
    hub.fail_next(1000, action="delay", delay=0.5, path_contains="/commit/", method="POST")
    first = subprocess.Popen([sys.executable, "-c", PUSH_ONE_FILE_PER_COMMIT, "--push", "--out", str(folder)],
                             env=hub.client_env(tmp_path / "hf"), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while hub.commits(REPO) - before < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    time.sleep(1.0)  # a commit request already sent may still land
    committed = {p for p in hub.files(REPO) if p in local}
    assert 2 <= len(committed) < len(data) and "README.md" not in committed, committed  # killed mid-way
    first_sent = hub.lfs_uploads
    hub.clear_faults()
    hub.clear_requests()
    second = push_in_subprocess(hub, tmp_path / "hf", folder)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "already on the Hub (skipped)" in second.stderr
    sha = {p: hashlib.sha256(content).hexdigest() for p, content in local.items()}
    sent = {oid for oid, _ in hub.lfs_uploads}
    assert sent and sent <= {sha[p] for p in local if p not in committed}  # nothing committed is sent again
    assert not sent & {oid for oid, _ in first_sent}  # nor what the killed run uploaded
    for _, paths in hub.history(REPO):  # the card lands with (after) every file of its build
        assert "README.md" not in paths or set(local) <= set(paths), paths
    remote = hub.files(REPO)
    assert {p: hashlib.sha256(c).hexdigest() for p, c in remote.items() if p != ".gitattributes"} == sha
    print(f"killed push sent {sum(n for _, n in first_sent)} B, the resumed one {sum(n for _, n in hub.lfs_uploads)} "
          f"B, of {sum(len(local[p]) for p in data)} B of data")


def test_unauthorised_push_is_clear_and_never_prints_the_token(hub, builds, tmp_path):
    result = cli(hub, tmp_path / "hf", "--push", "--out", str(builds["one"]), token="hf_wrong_token_777")
    assert result.returncode == 3
    assert "not logged in or invalid token (401)" in result.stderr
    assert "hf_wrong_token_777" not in result.stdout + result.stderr and TOKEN not in result.stdout + result.stderr
    assert not hub.repo_exists(REPO)


def test_read_only_token_gets_a_clear_403(hub, builds, tmp_path):
    hub.add_token("hf_read_only_token_9", read_only=True)
    result = cli(hub, tmp_path / "hf", "--push", "--out", str(builds["one"]), token="hf_read_only_token_9")
    assert result.returncode == 3 and "no write access (403)" in result.stderr, result.stderr[-2000:]
    assert "hf_read_only_token_9" not in result.stdout + result.stderr


def test_public_push_warns_about_imagenet_terms(hub, builds, tmp_path):
    result = cli(hub, tmp_path / "hf", "--push", "--out", str(builds["one"]), "--public", "--repo-id", "user/pub")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PUBLIC repo" in result.stderr and "ImageNet's terms of access" in result.stderr
    assert not hub.is_private("user/pub")


def test_build_from_a_hub_parquet_dataset_equals_the_folder_build(hub, inputs, parquet_source, builds, tmp_path):
    """`--source user/imagenet`: the shards are read from the Hub (HfFileSystem) and give the same dataset."""
    shards = {str(p.relative_to(parquet_source)): p.read_bytes() for p in parquet_source.rglob("*.parquet")}
    hub.seed("user/imagenet", shards, private=True)
    out = tmp_path / "from_hub"
    result = cli(hub, tmp_path / "hf", "--source", "user/imagenet", "--out", str(out), "--model", "resnet18",
                 "--model-checkpoint", str(inputs["checkpoint"]), "--annotations", str(inputs["annotations"]),
                 "--workers", "0", "--batch-size", "8", "--top-k", "4", "--group-by", "label")
    assert result.returncode == 0, result.stderr[-3000:]
    for shard in ("train-00000-of-00001.parquet", "annotations-00000-of-00001.parquet"):
        assert pq.read_table(out / "data" / shard).equals(pq.read_table(builds["one"] / "data" / shard)), shard
    assert "parquet shards user/imagenet" in (out / "README.md").read_text()


def test_push_without_token_or_repo_id_names_hf_auth_login(hub, builds, tmp_path):
    result = cli(hub, tmp_path / "hf", "--push", "--out", str(builds["one"]), token=False)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 3 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "no Hugging Face token" in lines[0] and "`hf auth login`" in lines[0] and "HF_TOKEN" in lines[0]
    assert "huggingface-cli" not in result.stderr and not hub.repo_exists(REPO)


@pytest.mark.parametrize("network", ["offline", "unreachable"])
def test_push_without_network_is_one_line_and_not_retried(network, hub, builds, tmp_path):
    import socket

    if network == "offline":
        extra = {"HF_HUB_OFFLINE": "1"}
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            extra = {"HF_ENDPOINT": f"http://127.0.0.1:{s.getsockname()[1]}"}  # closed once the block ends
    result = subprocess.run([sys.executable, str(ROOT / "build_dataset.py"), "--push", "--out", str(builds["one"]),
                             "--repo-id", REPO], env=hub.client_env(tmp_path / "hf", extra=extra),
                            capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 4 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "nothing was pushed" in lines[0] and "retrying" not in result.stderr
    assert "what was committed is kept" not in result.stderr
    assert ("HF_HUB_OFFLINE=1" if network == "offline" else "could not be reached") in lines[0]
    assert not hub.repo_exists(REPO)


def test_a_lasting_outage_before_any_commit_says_nothing_was_committed(hub, builds, tmp_path):
    hub.create_repo(REPO, private=True)
    hub.fail_next(1000, status=503, path_contains="/commit/", method="POST")
    result = push_in_subprocess(hub, tmp_path / "hf", builds["many"])
    assert result.returncode == 3, result.stderr[-3000:]
    final = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(final) == 1 and "nothing was committed" in final[0] and "is kept" not in final[0]
