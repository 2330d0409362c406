"""The harvest command as a user runs it: --help, bad input, SIGKILL and resume."""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from harvest.__main__ import build_parser, config_from
from harvest.config import HarvestConfig
from harvest.plan import PACKAGE, code_version
from harvest.run_folder import checkpoint_file
from hub_sync import format as fmt
from testkit.support import dataset_contents, run_harvest

OPTIONS = ["--window", "24", "--batch-size", "4", "--top-k", "4", "--random-k", "3", "--no-progress"]


def test_help_explains_every_option():
    result = run_harvest("--help")
    assert result.returncode == 0
    for option in ("--model", "--corpus", "--out", "--tokens", "--window", "--batch-size", "--top-k", "--random-k",
                   "--bottom-k", "--layers", "--device", "--dtype", "--seed", "--split", "--text-column", "--revision"):
        assert option in result.stdout


def _assert_refused(result: subprocess.CompletedProcess, out: Path, *phrases: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for phrase in phrases:
        assert phrase in result.stderr
    assert not out.exists(), "nothing may be written for bad input"


def test_the_command_lines_defaults_are_harvest_configs():
    parsed = config_from(build_parser().parse_args(["--model", "m", "--out", "o"]))
    assert parsed == HarvestConfig(model="m", out=Path("o"))


def test_the_recorded_code_version_is_the_installed_packages():
    assert code_version() == importlib.metadata.version(PACKAGE) == importlib.metadata.version("neuroscope-hub")


def test_unknown_model_names_what_model_accepts(tmp_path):
    result = run_harvest("--model", "no-such-org/no-such-model-xyz", "--out", str(tmp_path / "out"), *OPTIONS)
    _assert_refused(result, tmp_path / "out", "could not load model", "MODEL must be one of")


def test_folder_that_is_no_model(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_harvest("--model", str(tmp_path / "empty"), "--out", str(tmp_path / "out"), *OPTIONS)
    _assert_refused(result, tmp_path / "out", "neither config.json")


def test_empty_corpus(model_folder, tmp_path):
    corpus = tmp_path / "empty.txt"
    corpus.write_text("")
    result = run_harvest("--model", str(model_folder), "--corpus", str(corpus), "--out", str(tmp_path / "out"),
                         *OPTIONS)
    _assert_refused(result, tmp_path / "out", "fewer tokens than one window")


def test_unreadable_corpus(model_folder, tmp_path):
    corpus = tmp_path / "broken.jsonl"
    corpus.write_text('{"text": "fine"}\nnot json at all\n')
    result = run_harvest("--model", str(model_folder), "--corpus", str(corpus), "--out", str(tmp_path / "out"),
                         *OPTIONS)
    _assert_refused(result, tmp_path / "out", "broken.jsonl:2")


def test_missing_corpus_file(model_folder, tmp_path):
    result = run_harvest("--model", str(model_folder), "--corpus", str(tmp_path / "nope.txt"),
                         "--out", str(tmp_path / "out"), *OPTIONS)
    _assert_refused(result, tmp_path / "out", "does not exist")


def test_window_longer_than_context(model_folder, tmp_path):
    result = run_harvest("--model", str(model_folder), "--out", str(tmp_path / "out"), *OPTIONS, "--window", "65")
    _assert_refused(result, tmp_path / "out", "longer than the model's context of 64")


def test_layers_out_of_range(model_folder, tmp_path):
    result = run_harvest("--model", str(model_folder), "--out", str(tmp_path / "out"), *OPTIONS, "--layers", "0,2")
    _assert_refused(result, tmp_path / "out", "out of range", "0..1")


def test_tokens_smaller_than_a_window(model_folder, tmp_path):
    result = run_harvest("--model", str(model_folder), "--out", str(tmp_path / "out"), *OPTIONS, "--tokens", "10")
    _assert_refused(result, tmp_path / "out", "smaller than one window")


def test_local_corpus_formats_give_the_same_windows(model_folder, tmp_path):
    """The same documents as .txt files, .jsonl and .parquet make the same dataset."""
    import pyarrow as pa

    documents = [f"Document {i}: the quick brown fox jumps over the lazy dog {i} times.\n" * 3 for i in range(30)]
    txt_dir = tmp_path / "txt"
    txt_dir.mkdir()
    for i, text in enumerate(documents):
        (txt_dir / f"{i:03d}.txt").write_text(text)
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"body": text}) + "\n" for text in documents))
    pq.write_table(pa.table({"body": documents}), tmp_path / "docs.parquet")
    contents = []
    for corpus in (txt_dir, tmp_path / "docs.jsonl", tmp_path / "docs.parquet"):
        out = tmp_path / f"out-{corpus.name}"
        result = run_harvest("--model", str(model_folder), "--corpus", str(corpus), "--text-column", "body",
                             "--out", str(out), *OPTIONS, "--tokens", str(20 * 24))
        assert result.returncode == 0, result.stderr
        contents.append(dataset_contents(out)["tables"])
    assert contents[0] == contents[1] == contents[2]


def test_other_runs_checkpoint_is_refused(model_folder, tmp_path):
    out = tmp_path / "out"
    args = ["--model", str(model_folder), "--out", str(out), *OPTIONS, "--tokens", str(400 * 24)]
    process = subprocess.Popen([sys.executable, "-m", "harvest", *args, "--checkpoint-every", "0"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(checkpoint_file(out), process)
    process.kill()
    process.wait()
    result = run_harvest(*args, "--seed", "1")
    assert result.returncode == 2
    assert "checkpoint of a different run" in result.stderr
    assert checkpoint_file(out).is_file(), "the other run's checkpoint is left untouched"


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, "harvest ended before writing a checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume_equals_uninterrupted_run(model_folder, tmp_path):
    args = [*OPTIONS, "--model", str(model_folder), "--tokens", str(600 * 24), "--checkpoint-every", "0"]
    reference = tmp_path / "reference"
    assert run_harvest(*args, "--out", str(reference)).returncode == 0

    out = tmp_path / "resumed"
    for delay in (0.0, 0.3, 0.7, 1.5):
        process = subprocess.Popen([sys.executable, "-m", "harvest", *args, "--out", str(out)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for(checkpoint_file(out), process)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (out / fmt.MANIFEST_FILE).exists() or not checkpoint_file(out).exists()
    result = run_harvest(*args, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert not checkpoint_file(out).parent.exists()
    assert dataset_contents(out) == dataset_contents(reference)
    again = run_harvest(*args, "--out", str(out))
    assert again.returncode == 0 and dataset_contents(out) == dataset_contents(reference)


def test_ctrl_c_saves_progress_and_the_rerun_finishes(model_folder, tmp_path):
    out = tmp_path / "out"
    args = ["--model", str(model_folder), "--out", str(out), *OPTIONS[:-1], "--tokens", str(3000 * 24),
            "--checkpoint-every", "1000"]
    process = subprocess.Popen([sys.executable, "-m", "harvest", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    progress = ""
    while not re.search(r"(?<![\d.])[1-9][\d.]*k?/72.0k", progress):  # the bar has counted a finished batch
        character = process.stderr.read(1)
        assert character, "harvest ended before showing progress"
        progress += character
    process.send_signal(signal.SIGINT)
    stderr = progress + process.stderr.read()
    process.wait(timeout=60)
    assert process.returncode == 130, stderr
    assert "run the same command to resume" in stderr
    assert checkpoint_file(out).is_file()
    assert run_harvest(*args).returncode == 0
    assert (out / fmt.MANIFEST_FILE).is_file()
    assert not checkpoint_file(out).exists()


def test_hub_corpus_streams_through_datasets_and_equals_the_local_file(model_folder, hub_server, tmp_path):
    """A Hub dataset id is streamed by `datasets` (over HTTP from the loopback Hub) into the same windows."""
    import pyarrow as pa

    from harvest.corpus import CorpusSpec
    from harvest.run import harvest

    documents = [f"Record {i}: streaming text about neurons, windows and tokens number {i}.\n" * 2 for i in range(40)]
    corpus = tmp_path / "corpus"
    (corpus / "data").mkdir(parents=True)
    pq.write_table(pa.table({"content": documents}), corpus / "data" / "train-00000-of-00001.parquet")
    hub_server.add_folder("someone/tiny-corpus", corpus)
    hub_server.clear_log()

    outputs = {}
    for name, spec in {"hub": CorpusSpec("someone/tiny-corpus", split="train", text_column="content"),
                       "local": CorpusSpec(str(corpus / "data"), text_column="content")}.items():
        config = HarvestConfig(model=str(model_folder), corpus=spec, out=tmp_path / name, tokens=20 * 24, window=24,
                               batch_size=4, top_k=4, random_k=3, progress=False)
        outputs[name] = dataset_contents(harvest(config))
    assert any("tiny-corpus" in request.path for request in hub_server.requests())
    assert outputs["hub"]["tables"] == outputs["local"]["tables"]
    assert outputs["hub"]["manifest"]["corpus"]["name"] == "someone/tiny-corpus"


def test_a_model_from_a_local_folder_is_named_after_the_folder_not_its_path(model_folder, tmp_path):
    """The name the dataset and the Space show is the model's own; the path it was loaded from is its source."""
    from harvest.run import harvest
    from space.sources import open_sources

    folder = Path(shutil.copytree(model_folder, tmp_path / "tiny-gelu-2l"))
    config = HarvestConfig(model=str(folder), out=tmp_path / "out", tokens=8 * 24, window=24, batch_size=4,
                           top_k=2, random_k=1, progress=False)
    manifest = json.loads((harvest(config) / fmt.MANIFEST_FILE).read_text())
    assert (manifest["model"]["name"], manifest["model"]["source"]) == ("tiny-gelu-2l", str(folder))
    assert open_sources([str(tmp_path / "out")]).model_names == ["tiny-gelu-2l"]
