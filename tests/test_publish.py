"""Publishing and fetching with the real Hub clients over real HTTP, against the suite's loopback Hub."""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import datasets
import huggingface_hub.lfs
import pyarrow.parquet as pq
import pytest
from huggingface_hub import HfApi, HfFileSystem, hf_hub_download
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import http_backoff

from hub_sync import format as fmt
from hub_sync.card import render_card
from hub_sync.manifest import Manifest
from hub_sync.publish import PublishError, pull, push
from hub_sync.synthetic import write_synthetic_dataset
from hub_sync.verify import verify_dataset
from testkit.support import REPO

REPO_ID = "neuroscope-test/synthetic-model"
D_MLP = 64
TOP_K, RANDOM_K = 5, 3


def make_dataset(folder: Path, seed: int = 0) -> Path:
    return write_synthetic_dataset(folder, n_layers=2, d_mlp=D_MLP, top_k=TOP_K, random_k=RANDOM_K, seed=seed)


@pytest.fixture
def dataset_dir(tmp_path) -> Path:
    return make_dataset(tmp_path / "dataset")


def dataset_files(folder: Path) -> dict[str, bytes]:
    """Every file of a dataset folder by repo path, leaving out huggingface_hub's local .cache."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".cache" not in p.relative_to(folder).parts
    }


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def commit_posts(server) -> list:
    commit_path = f"/api/datasets/{REPO_ID}/commit/"
    return [r for r in server.requests() if r.method == "POST" and r.path.startswith(commit_path)]


def lfs_put_oids(server) -> list[str]:
    return [r.path.rsplit("/", 1)[-1] for r in server.requests() if r.method == "PUT"]


def fetched_files(server) -> set[str]:
    """Repo paths whose content (or part of it) was sent by a GET on the resolve endpoint."""
    marker = f"/datasets/{REPO_ID}/resolve/"
    return {
        r.path.split(marker, 1)[1].split("/", 1)[1]
        for r in server.requests()
        if r.method == "GET" and marker in r.path and r.bytes_sent > 0
    }


@pytest.fixture
def quick_retries(monkeypatch):
    """huggingface_hub retries a dropped LFS upload 5 times, sleeping 1+2+4+8+8 s: keep the retries, not the sleeps."""
    monkeypatch.setattr(
        huggingface_hub.lfs, "http_backoff", functools.partial(http_backoff, base_wait_time=0.01, max_wait_time=0.01)
    )


def test_push_creates_exactly_the_dataset_files_in_one_commit(hub_server, dataset_dir):
    sha = push(dataset_dir, REPO_ID, endpoint=hub_server.url)

    api = HfApi(endpoint=hub_server.url)
    commits = api.list_repo_commits(REPO_ID, repo_type="dataset")
    assert [c.title for c in commits] == ["Publish Neuroscope neurons of synthetic/model (2 layers)", "initial commit"]
    assert commits[0].commit_id == sha and len(commit_posts(hub_server)) == 1
    manifest = Manifest.from_json(json.loads((dataset_dir / fmt.MANIFEST_FILE).read_text()))
    assert (dataset_dir / fmt.CARD_FILE).read_text() == render_card(manifest, repo_id=REPO_ID)
    remote = hub_server.files(REPO_ID, revision=sha)
    assert remote.pop(".gitattributes")  # the Hub's own, from the initial commit
    assert remote == dataset_files(dataset_dir)
    tree = api.list_repo_tree(REPO_ID, repo_type="dataset", recursive=True)
    listed = {entry.path for entry in tree if isinstance(entry, RepoFile)}
    assert listed == set(remote) | {".gitattributes"}
    parquet = sorted(p for p in remote if p.endswith(".parquet"))
    assert sorted(lfs_put_oids(hub_server)) == sorted(sha256_of(dataset_dir / p) for p in parquet)
    assert len(parquet) == 4


def test_second_push_makes_no_commit(hub_server, dataset_dir):
    first = push(dataset_dir, REPO_ID, endpoint=hub_server.url)
    hub_server.clear_log()

    assert push(dataset_dir, REPO_ID, endpoint=hub_server.url) is None

    assert hub_server.commit_shas(REPO_ID)[-1] == first
    assert commit_posts(hub_server) == [] and lfs_put_oids(hub_server) == []


def test_changed_layer_uploads_only_that_file(hub_server, dataset_dir, tmp_path):
    push(dataset_dir, REPO_ID, endpoint=hub_server.url)
    changed = fmt.examples_path(1)
    shutil.copyfile(make_dataset(tmp_path / "other", seed=1) / changed, dataset_dir / changed)
    hub_server.clear_log()

    sha = push(dataset_dir, REPO_ID, endpoint=hub_server.url, message="Re-harvest layer 1")

    assert sha == hub_server.commit_shas(REPO_ID)[-1] and len(commit_posts(hub_server)) == 1
    assert lfs_put_oids(hub_server) == [sha256_of(dataset_dir / changed)]
    assert hub_server.files(REPO_ID)[changed] == (dataset_dir / changed).read_bytes()


def test_removed_layer_file_is_deleted_in_the_same_commit(hub_server, tmp_path):
    three_layers = write_synthetic_dataset(tmp_path / "three", n_layers=3, d_mlp=D_MLP, top_k=TOP_K, random_k=RANDOM_K)
    push(three_layers, REPO_ID, endpoint=hub_server.url)
    two_layers = make_dataset(tmp_path / "two")

    push(two_layers, REPO_ID, endpoint=hub_server.url)

    remote = hub_server.files(REPO_ID)
    remote.pop(".gitattributes")
    assert remote == dataset_files(two_layers)
    assert len(hub_server.commit_shas(REPO_ID)) == 3


def test_interrupted_push_leaves_the_previous_revision_and_the_rerun_succeeds(
    hub_server, dataset_dir, tmp_path, quick_retries
):
    before = push(dataset_dir, REPO_ID, endpoint=hub_server.url)
    published = hub_server.files(REPO_ID)
    new_version = make_dataset(tmp_path / "v2", seed=1)
    hub_server.drop_lfs_upload(nth=2)  # every attempt at the second new LFS object loses its connection
    hub_server.clear_log()

    with pytest.raises(PublishError, match=r"Publishing .* failed: Error while uploading 'data/.*\.parquet'"):
        push(new_version, REPO_ID, endpoint=hub_server.url)

    assert commit_posts(hub_server) == []
    assert hub_server.commit_shas(REPO_ID)[-1] == before
    assert hub_server.files(REPO_ID) == published
    assert HfApi(endpoint=hub_server.url).dataset_info(REPO_ID).sha == before
    dropped = [r for r in hub_server.requests() if r.method == "PUT" and r.status == 0]
    assert len(dropped) == 6  # the first try and huggingface_hub's 5 retries

    hub_server.clear_faults()
    hub_server.clear_log()
    after = push(new_version, REPO_ID, endpoint=hub_server.url)

    assert after != before and hub_server.commit_shas(REPO_ID)[-2:] == [before, after]
    assert dropped[0].path.rsplit("/", 1)[-1] in lfs_put_oids(hub_server)
    remote = hub_server.files(REPO_ID)
    remote.pop(".gitattributes")
    assert remote == dataset_files(new_version)


def test_a_dropped_upload_is_retried_within_the_push(hub_server, dataset_dir, quick_retries):
    hub_server.drop_lfs_upload(nth=1, times=1)

    sha = push(dataset_dir, REPO_ID, endpoint=hub_server.url)

    statuses = [r.status for r in hub_server.requests() if r.method == "PUT"]
    assert statuses.count(0) == 1 and statuses.count(200) == 4
    assert hub_server.commit_shas(REPO_ID)[-1] == sha


def test_load_dataset_layer_config_fetches_only_the_card_and_that_layer(hub_server, dataset_dir, tmp_path):
    push(dataset_dir, REPO_ID, endpoint=hub_server.url)
    hub_server.clear_log()

    layer_1 = datasets.load_dataset(REPO_ID, "layer_1", split="train", cache_dir=str(tmp_path / "cache"))

    assert fetched_files(hub_server) == {fmt.CARD_FILE, fmt.examples_path(1)}
    expected = pq.read_table(dataset_dir / fmt.examples_path(1))
    assert layer_1.num_rows == D_MLP * (TOP_K + RANDOM_K) == expected.num_rows
    assert layer_1.data.table.column("neuron").to_pylist() == expected.column("neuron").to_pylist()
    assert layer_1[7]["tokens"] == expected.column("tokens")[7].as_py()


def test_load_dataset_neurons_config_reads_every_layer(hub_server, dataset_dir, tmp_path):
    push(dataset_dir, REPO_ID, endpoint=hub_server.url)
    hub_server.clear_log()

    neurons = datasets.load_dataset(REPO_ID, "neurons", split="train", cache_dir=str(tmp_path / "cache"))

    assert fetched_files(hub_server) == {fmt.CARD_FILE, fmt.neurons_path(0), fmt.neurons_path(1)}
    assert sorted(set(neurons["layer"])) == [0, 1] and neurons.num_rows == 2 * D_MLP


def test_pull_round_trips_byte_for_byte(hub_server, dataset_dir, tmp_path):
    sha = push(dataset_dir, REPO_ID, endpoint=hub_server.url)
    target = tmp_path / "pulled"

    assert pull(REPO_ID, target, endpoint=hub_server.url) == sha

    assert dataset_files(target) == dataset_files(dataset_dir)
    assert verify_dataset(str(target)) == []


def test_hf_hub_download_is_served_once_then_from_the_cache(hub_server, dataset_dir, tmp_path):
    sha = push(dataset_dir, REPO_ID, endpoint=hub_server.url)
    hub_server.clear_log()

    paths = [
        hf_hub_download(REPO_ID, fmt.examples_path(0), repo_type="dataset", revision="main", cache_dir=tmp_path / "c")
        for _ in range(2)
    ]

    assert paths[0] == paths[1] and f"/snapshots/{sha}/" in paths[0]
    assert Path(paths[0]).read_bytes() == (dataset_dir / fmt.examples_path(0)).read_bytes()
    assert fetched_files(hub_server) == {fmt.examples_path(0)}
    assert len([r for r in hub_server.requests() if r.method == "GET"]) == 1  # the second call only HEADs the ETag


def test_pull_at_an_older_commit(hub_server, dataset_dir, tmp_path):
    old = push(dataset_dir, REPO_ID, endpoint=hub_server.url)
    old_files = dataset_files(dataset_dir)
    push(make_dataset(tmp_path / "v2", seed=1), REPO_ID, endpoint=hub_server.url)

    assert pull(REPO_ID, tmp_path / "old", revision=old, endpoint=hub_server.url) == old

    assert dataset_files(tmp_path / "old") == old_files


def test_push_to_a_branch_of_a_new_private_repo(hub_server, dataset_dir):
    sha = push(dataset_dir, REPO_ID, private=True, revision="harvest-2", endpoint=hub_server.url)

    info = HfApi(endpoint=hub_server.url).dataset_info(REPO_ID, revision="harvest-2")
    assert info.private is True and info.sha == sha
    assert set(hub_server.files(REPO_ID, revision="main")) == {".gitattributes"}
    assert fmt.MANIFEST_FILE in hub_server.files(REPO_ID, revision="harvest-2")


def test_broken_folder_is_refused_and_nothing_is_uploaded(hub_server, dataset_dir):
    broken = dataset_dir / fmt.examples_path(1)
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])

    with pytest.raises(PublishError, match="nothing was uploaded") as refused:
        push(dataset_dir, REPO_ID, endpoint=hub_server.url)

    assert any(fmt.examples_path(1) in problem for problem in refused.value.problems)
    assert hub_server.requests() == []


def test_hf_file_system_serves_ranged_reads_at_a_pinned_commit(hub_server, dataset_dir):
    sha = push(dataset_dir, REPO_ID, endpoint=hub_server.url)
    local = dataset_dir / fmt.examples_path(0)
    fs = HfFileSystem(endpoint=hub_server.url)
    path = f"datasets/{REPO_ID}@{sha}/{fmt.examples_path(0)}"
    hub_server.clear_log()

    with fs.open(path, "rb", cache_type="none") as remote:
        remote.seek(100)
        chunk = remote.read(1000)
        row_group = pq.ParquetFile(remote).read_row_group(0)

    assert chunk == local.read_bytes()[100:1100]
    assert row_group.equals(pq.ParquetFile(local).read_row_group(0))
    first_read = next(r for r in hub_server.requests() if r.method == "GET" and "/resolve/" in r.path)
    assert (first_read.status, first_read.range, first_read.bytes_sent) == (206, "bytes=100-1099", 1000)
    assert fs.info(path)["size"] == local.stat().st_size
    assert sorted(fs.ls(f"datasets/{REPO_ID}@{sha}/{fmt.EXAMPLES_DIR}", detail=False)) == [
        f"datasets/{REPO_ID}@{sha}/{fmt.examples_path(layer)}" for layer in (0, 1)
    ]


def test_resolve_headers_and_range_edge_cases(hub_server, dataset_dir):
    sha = push(dataset_dir, REPO_ID, endpoint=hub_server.url)
    local = (dataset_dir / fmt.examples_path(0)).read_bytes()
    url = f"{hub_server.url}/datasets/{REPO_ID}/resolve/main/{fmt.examples_path(0)}"

    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as head:
        assert head.headers["X-Repo-Commit"] == sha
        assert head.headers["X-Linked-Etag"] == f'"{hashlib.sha256(local).hexdigest()}"'
        assert head.headers["X-Linked-Size"] == str(len(local))
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=-8"})) as tail:
        assert (tail.status, tail.read()) == (206, local[-8:])
        assert tail.headers["Content-Range"] == f"bytes {len(local) - 8}-{len(local) - 1}/{len(local)}"
    with pytest.raises(urllib.error.HTTPError) as unsatisfiable:
        urllib.request.urlopen(urllib.request.Request(url, headers={"Range": f"bytes={len(local)}-"}))
    assert unsatisfiable.value.code == 416


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hub_sync", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_cli_help_lists_the_commands_and_their_options():
    top = run_cli("--help")
    push_help = run_cli("push", "--help")

    assert top.returncode == 0 and all(command in top.stdout for command in ("push", "pull", "verify"))
    assert push_help.returncode == 0
    assert all(option in push_help.stdout for option in ("--private", "--revision", "--message", "--endpoint"))


@pytest.mark.slow
def test_cli_push_then_pull_then_verify(hub_server, dataset_dir, tmp_path):
    pushed = run_cli("push", str(dataset_dir), REPO_ID)  # endpoint from HF_ENDPOINT, set by the fixture
    again = run_cli("push", str(dataset_dir), REPO_ID, "--endpoint", hub_server.url)
    pulled = run_cli("pull", REPO_ID, str(tmp_path / "pulled"))
    verified = run_cli("verify", REPO_ID)

    sha = hub_server.commit_shas(REPO_ID)[-1]
    assert (pushed.returncode, pushed.stdout.strip()) == (0, f"{REPO_ID}: committed {sha}")
    assert (again.returncode, again.stdout.strip()) == (0, f"{REPO_ID}: unchanged, no commit made")
    assert pulled.returncode == 0 and sha in pulled.stdout
    assert dataset_files(tmp_path / "pulled") == dataset_files(dataset_dir)
    assert verified.returncode == 0, verified.stderr


def test_cli_errors_are_one_clear_line_without_traceback(hub_server, dataset_dir):
    broken = dataset_dir / fmt.examples_path(1)
    broken.write_bytes(broken.read_bytes()[:100])

    refused = run_cli("push", str(dataset_dir), REPO_ID)
    verified = run_cli("verify", str(dataset_dir))
    missing = run_cli("pull", "neuroscope-test/absent", str(dataset_dir.parent / "absent"))
    usage = run_cli("push", str(dataset_dir))

    assert refused.returncode == 1 and refused.stderr.startswith("error: ")
    assert fmt.examples_path(1) in refused.stderr
    assert verified.returncode == 1 and fmt.examples_path(1) in verified.stderr
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1
    assert missing.stderr.startswith(f"error: Pulling neuroscope-test/absent from {hub_server.url} failed: 404")
    assert usage.returncode == 2
    assert all("Traceback" not in run.stderr for run in (refused, verified, missing, usage))
    assert not any(r.path == "/api/repos/create" for r in hub_server.requests())
