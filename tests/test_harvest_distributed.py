"""Data-parallel harvests: torchrun ranks (gloo on CPU), --shard parts and their merge, all equal to one process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from harvest.batches import Slice, parse_shard, slice_windows
from harvest.config import HarvestConfig, HarvestError
from harvest.corpus import CorpusError, CorpusSpec
from harvest.merge import MergeError, merge
from harvest.models import load_model
from harvest.run import _interrupt_after_batch, harvest
from harvest.run_folder import CHECKPOINT_DIR, PART_FILE, CheckpointMismatch, checkpoint_file
from harvest.selection import LayerState, activation_dtype, state_bytes
from harvest.tokens import token_store_bytes
from hub_sync import format as fmt
from testkit.support import dataset_contents, run_harvest

WINDOW, BATCH, TOP_K, RANDOM_K, BOTTOM_K, WINDOWS = 24, 4, 4, 3, 2, 150
OPTIONS = ["--window", str(WINDOW), "--batch-size", str(BATCH), "--top-k", str(TOP_K), "--random-k", str(RANDOM_K),
           "--bottom-k", str(BOTTOM_K), "--tokens", str(WINDOWS * WINDOW), "--no-progress"]


@pytest.fixture(scope="module")
def model(model_folder):
    return load_model(str(model_folder))


@pytest.fixture(scope="module")
def reference(model_folder, tmp_path_factory) -> Path:
    """The single-process dataset every data-parallel run must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "dataset"
    result = run_harvest("--model", str(model_folder), "--out", str(out), *OPTIONS)
    assert result.returncode == 0, result.stderr
    return out


def shard_config(model_folder: Path, out: Path, shard: Slice | None, **changes) -> HarvestConfig:
    """The config the CLI builds from OPTIONS (so parts made in-process are parts of the CLI's run)."""
    settings = dict(model=str(model_folder), corpus=CorpusSpec("python-docs"), out=out, tokens=WINDOWS * WINDOW,
                    window=WINDOW, batch_size=BATCH, top_k=TOP_K, random_k=RANDOM_K, bottom_k=BOTTOM_K,
                    progress=False, shard=shard)
    return HarvestConfig(**(settings | changes))


@pytest.fixture(scope="module")
def parts(model_folder, model, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("parts")
    folders = [root / f"part{index}" for index in range(3)]
    for index, folder in enumerate(folders):
        harvest(shard_config(model_folder, folder, Slice(index, 3)), model)
    return folders


def assert_same_dataset(folder: Path, reference: Path) -> None:
    """Equal row for row and value for value; only `mean` may differ in its last bit (float64 sums added in
    another order), so it is compared to a relative 1e-6."""
    ours, theirs = dataset_contents(folder), dataset_contents(reference)
    for contents in (ours, theirs):
        contents["means"] = {name: np.array(table.pop("mean")) for name, table in contents["tables"].items()
                             if name.startswith("data/neurons/")}
    assert ours["manifest"] == theirs["manifest"]
    assert ours["tables"] == theirs["tables"]
    assert ours["means"].keys() == theirs["means"].keys()
    for name, mean in ours["means"].items():
        np.testing.assert_allclose(mean, theirs["means"][name], rtol=1e-6, atol=0)


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "harvest", *args]


def test_slices_take_every_batch_exactly_once():
    for count in range(1, 5):
        slices = [Slice(index, count) for index in range(count)]
        for batch in range(20):
            assert sum(part.owns(batch) for part in slices) == 1
        for total in (1, 7, 8, 9, 150):
            assert sum(slice_windows(part, total, BATCH) for part in slices) == total


@pytest.mark.parametrize("text", ["3/3", "-1/2", "a/b", "1", "1/0"])
def test_bad_shard_is_refused(text):
    with pytest.raises(ValueError, match="--shard"):
        parse_shard(text)


def test_bad_shard_on_the_command_line(model_folder, tmp_path):
    result = run_harvest("--model", str(model_folder), "--out", str(tmp_path / "out"), *OPTIONS, "--shard", "2/2")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "I must be in 0..N-1" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("top_k,random_k,bottom_k,window", [(20, 10, 0, 128), (4, 3, 2, 24), (1, 0, 5, 7)])
def test_state_bytes_is_the_allocated_state(top_k, random_k, bottom_k, window):
    d_mlp, n_layers = 48, 3
    states = [LayerState(layer, d_mlp, window, top_k, random_k, bottom_k, 0, "cpu") for layer in range(n_layers)]
    tensors = [tensor for state in states for tensor in state.state_dict().values()]
    shared = {state.bin_of_prefix.data_ptr(): state.bin_of_prefix for state in states}
    allocated = sum(tensor.numel() * tensor.element_size() for tensor in [*tensors, *shared.values()])
    activation_bytes = torch.finfo(activation_dtype("cpu")).bits // 8
    assert state_bytes(n_layers, d_mlp, window, top_k, random_k, bottom_k, activation_bytes) == allocated


def test_token_store_bound_counts_windows_of_int64_ids():
    assert token_store_bytes(2, 10, 24, 4, 3, 2, windows=10**9) == 2 * 10 * 9 * 24 * 8
    assert token_store_bytes(2, 10, 24, 4, 3, 2, windows=5) == 5 * 24 * 8


@pytest.mark.slow
def test_three_shards_merged_equal_one_process(parts, reference, model_folder, tmp_path):
    records = [json.loads((folder / PART_FILE).read_text()) for folder in parts]
    assert [record["shard"] for record in records] == ["0/3", "1/3", "2/3"]
    assert sum(record["windows"] for record in records) == WINDOWS
    out = tmp_path / "merged"
    result = run_harvest("merge", *map(str, parts), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert_same_dataset(out, reference)


def test_finished_shard_is_kept_and_its_folder_refuses_another_shard(parts, model_folder, model):
    before = checkpoint_file(parts[0]).stat().st_mtime_ns
    harvest(shard_config(model_folder, parts[0], Slice(0, 3)), model)
    assert checkpoint_file(parts[0]).stat().st_mtime_ns == before
    with pytest.raises(CheckpointMismatch, match="already holds shard 0/3"):
        harvest(shard_config(model_folder, parts[0], Slice(1, 3)), model)


def test_merge_refuses_parts_that_are_not_one_whole_run(parts, model_folder, model, tmp_path):
    out = tmp_path / "merged"
    with pytest.raises(MergeError, match="shard 2/3 missing"):
        merge(parts[:2], out)
    with pytest.raises(MergeError, match="shard 1/3 is given twice"):
        merge([*parts, parts[1]], out)
    other_seed = tmp_path / "seed1"
    harvest(shard_config(model_folder, other_seed, Slice(0, 3), seed=1), model)
    with pytest.raises(MergeError, match="settings differ in seed"):
        merge([other_seed, *parts[1:]], out)
    halves = tmp_path / "halves"
    shutil.copytree(parts[0], halves)
    record = json.loads((halves / PART_FILE).read_text())
    (halves / PART_FILE).write_text(json.dumps(record | {"shard": "0/2"}))
    with pytest.raises(MergeError, match="different numbers of shards"):
        merge([halves, *parts[1:]], out)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(parts[0], unfinished)
    (unfinished / PART_FILE).unlink()
    with pytest.raises(MergeError, match="unfinished shard"):
        merge([unfinished, *parts[1:]], out)
    garbled = tmp_path / "garbled"
    shutil.copytree(parts[0], garbled)
    (garbled / PART_FILE).write_text('{"run_id": "x"')
    with pytest.raises(CheckpointMismatch, match="is not a readable part record"):
        merge([garbled, *parts[1:]], out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MergeError, match="holds no harvest part"):
        merge([tmp_path / "empty", *parts[1:]], out)
    with pytest.raises(MergeError, match="is one of the parts"):
        merge(parts, parts[2])
    assert not out.exists()


def test_merge_command_refuses_clearly(parts, tmp_path):
    result = run_harvest("merge", *map(str, parts[1:]), "--out", str(tmp_path / "merged"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "shard 0/3 missing" in result.stderr
    assert not (tmp_path / "merged").exists()


def test_shard_under_torchrun_is_refused(model_folder, model, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(HarvestError, match="under torchrun the ranks already share"):
        harvest(shard_config(model_folder, tmp_path / "out", Slice(0, 2)), model)


def test_corpus_error_from_the_batch_thread_reaches_the_caller(model_folder, model, tmp_path):
    corpus = tmp_path / "late-error.jsonl"
    good = [json.dumps({"text": f"Line {i}: the quick brown fox jumps over the lazy dog."}) for i in range(200)]
    corpus.write_text("\n".join([*good, "not json"]) + "\n")
    config = shard_config(model_folder, tmp_path / "out", None, corpus=CorpusSpec(str(corpus)), tokens=None)
    with pytest.raises(CorpusError, match="late-error.jsonl:201"):
        harvest(config, model)


def test_ctrl_c_during_a_batch_waits_for_the_batch():
    handler = signal.getsignal(signal.SIGINT)
    finished = []
    with pytest.raises(KeyboardInterrupt), _interrupt_after_batch():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        finished.append(True)
    assert finished == [True]
    assert signal.getsignal(signal.SIGINT) is handler


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process(model_folder, reference, tmp_path):
    out = tmp_path / "dataset"
    result = subprocess.run(torchrun("--model", str(model_folder), "--out", str(out), *OPTIONS),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("dataset written") == 1
    assert not (out / CHECKPOINT_DIR).exists()
    assert_same_dataset(out, reference)


def _rank_process(launcher: subprocess.Popen, rank: int) -> psutil.Process:
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "harvest" in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    raise AssertionError(f"no rank {rank} process under torchrun")


@pytest.mark.slow
def test_rank_killed_mid_run_then_restarted_equals_one_process(model_folder, reference, tmp_path):
    out = tmp_path / "dataset"
    args = ["--model", str(model_folder), "--out", str(out), *OPTIONS, "--checkpoint-every", "0"]
    rank_checkpoints = [checkpoint_file(out / CHECKPOINT_DIR / f"rank-{rank}-of-2") for rank in (0, 1)]
    launcher = subprocess.Popen(torchrun(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not all(path.exists() for path in rank_checkpoints):
        assert launcher.poll() is None, "torchrun ended before both ranks checkpointed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    _rank_process(launcher, 1).send_signal(signal.SIGKILL)
    assert launcher.wait(timeout=120) != 0
    assert not (out / fmt.MANIFEST_FILE).exists()
    done = [torch.load(path, weights_only=False)["progress"]["windows"] for path in rank_checkpoints]
    assert 0 < sum(done) < WINDOWS, "the kill must land mid-run"

    single = run_harvest(*args)
    assert single.returncode == 2 and "torchrun and 2 processes" in single.stderr

    restarted = subprocess.run(torchrun(*args), capture_output=True, text=True, timeout=300)
    assert restarted.returncode == 0, restarted.stderr
    assert not (out / CHECKPOINT_DIR).exists()
    assert_same_dataset(out, reference)
