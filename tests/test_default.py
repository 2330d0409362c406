"""The README's first command: the app on the embedded default (real SmolLM2, offline), built on first launch."""

from __future__ import annotations

import fcntl
import fnmatch
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harvest.default import DATASET_NAME, MODEL_FOLDER
from harvest.models import PROVENANCE_FILE
from harvest.run_folder import CHECKPOINT_DIR, CHECKPOINT_FILE
from hub_sync import format as fmt
from hub_sync.verify import verify_dataset
from testkit.support import REPO, free_port

TOKENS = 6 * 64


@pytest.fixture
def cache(tmp_path, smollm2_folder) -> Path:
    """A fresh cache that already holds the exported model (the export itself is tested elsewhere)."""
    models = tmp_path / "cache" / "models"
    models.mkdir(parents=True)
    (models / MODEL_FOLDER).symlink_to(smollm2_folder, target_is_directory=True)
    return tmp_path / "cache"


def launch(cache: Path, port: int, tokens: int = TOKENS) -> subprocess.Popen:
    """`python app.py` with no source, exactly as `bash dev.sh app` runs it, with a small token budget."""
    environment = {**os.environ, "NEUROSCOPE_CACHE": str(cache), "NEUROSCOPE_DEFAULT_TOKENS": str(tokens),
                   "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "PYTHONUNBUFFERED": "1"}
    environment.pop("NEUROSCOPE_SOURCES", None)
    return subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for_line(process: subprocess.Popen, pattern: str, timeout: float = 600) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            raise AssertionError(f"app exited ({process.returncode}) before {pattern!r}:\n{seen[-3000:]}")
        seen += line
        if re.search(pattern, line):
            return seen
    raise AssertionError(f"no {pattern!r} within {timeout} s:\n{seen[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@contextmanager
def serving(cache: Path, port: int, tokens: int = TOKENS, timeout: float = 600) -> Iterator[str]:
    """Launch the app, wait until it serves, yield what it printed, stop it."""
    app = launch(cache, port, tokens)
    try:
        yield wait_for_line(app, r"Serving \d+ model", timeout)
    finally:
        stop(app)


def page_status(port: int, timeout: float = 60) -> int:
    """The page's HTTP status, once the server accepts connections ("Serving" is printed just before it does)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=timeout) as response:
                return response.status
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.slow
def test_first_launch_serves_the_page_at_once_then_the_built_neurons_without_a_restart(cache):
    from gradio_client import Client

    port = free_port()
    app = launch(cache, port)
    try:
        log = wait_for_line(app, r"Serving 0 model", timeout=120)
        assert page_status(port) == 200
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        building = client.predict(api_name="/build_status")
        assert "Building the embedded default dataset" in building, building
        log += wait_for_line(app, r"its model is exported; the live tabs run it while the dataset builds")
        text = "def add(a, b):\n    return a + b"
        notice, _, while_building = client.predict(None, 5, 100, text, api_name="/activations")
        assert "scaled to this text" in notice and len(while_building["activations"]) == len(while_building["tokens"])
        log += wait_for_line(app, r"harvesting: 384 of 384 tokens \(100%\), \d[\d,]* tokens/s")
        log += wait_for_line(app, r"writing the dataset: layer 0: logit effects \(step 1 of 60\)")
        log += wait_for_line(app, r"writing the dataset: layer 0: Parquet files \(step 2 of 60\)")
        log += wait_for_line(app, r"default dataset: .* is ready\.")
        assert "building (once" in log
        assert all(f"layer {layer}: Parquet files" in log for layer in range(30)), "every layer's writing is reported"

        dataset = cache / "datasets" / DATASET_NAME
        assert verify_dataset(str(dataset)) == []
        manifest = (dataset / fmt.MANIFEST_FILE).read_text()
        assert "HuggingFaceTB/SmolLM2-135M-Instruct" in manifest and "dequantised" in manifest
        card = (dataset / fmt.CARD_FILE).read_text()
        assert "Q4_1" in card and "python-docs" in card and f"{TOKENS:,} tokens" in card

        model, layer, neuron, _, page = client.predict(None, 5, 100, api_name="/neuron")
        assert (model, layer, neuron) == ("HuggingFaceTB/SmolLM2-135M-Instruct", 5, 100)
        assert "top" in page.lower() and "<script" not in page
        assert client.predict(api_name="/build_status") == "", "the notice goes once the neurons are served"

        notice, html, values = client.predict(model, 5, 100, text, api_name="/activations")
        assert notice == "" and len(values["activations"]) == len(values["token_ids"]) > 5
        assert "return" in "".join(values["tokens"]) and "title=" in html
        assert values["model"] == while_building["model"] and values["tokens"] == while_building["tokens"]
        assert values["activations"] == while_building["activations"], "the same model, before and after the build"
    finally:
        stop(app)

    with serving(cache, port, timeout=120) as log:
        assert "Serving 1 model" in log and "building" not in log and "resuming" not in log


@pytest.mark.slow
def test_interrupted_first_build_resumes_where_it_stopped_and_a_damaged_cache_is_rebuilt(cache):
    port = free_port()
    tokens = 4 * 16 * 64  # four batches: time to interrupt between two
    app = launch(cache, port, tokens)
    log = wait_for_line(app, r"harvesting: [1-9][\d,]* of 4,096 tokens")
    done_before = int(re.findall(r"harvesting: ([\d,]+) of", log)[-1].replace(",", ""))
    app.send_signal(signal.SIGINT)
    output, _ = app.communicate(timeout=180)
    assert app.returncode == 130, output
    assert "interrupted: the next launch resumes the default dataset's build" in output
    dataset = cache / "datasets" / DATASET_NAME
    assert (dataset / CHECKPOINT_DIR / CHECKPOINT_FILE).is_file(), "the progress is kept"
    assert not (dataset / fmt.MANIFEST_FILE).exists(), "a half-built dataset is never marked finished"

    app = launch(cache, port, tokens)
    try:
        log = wait_for_line(app, r"harvesting: [\d,]+ of 4,096 tokens")
        assert "resuming the interrupted build" in log
        resumed_from = int(re.findall(r"harvesting: ([\d,]+) of", log)[-1].replace(",", ""))
        assert resumed_from >= done_before > 0
        wait_for_line(app, r"default dataset: .* is ready\.")
    finally:
        stop(app)
    assert verify_dataset(str(dataset)) == []

    examples = sorted(dataset.glob("data/examples/*.parquet"))[0]
    examples.write_bytes(examples.read_bytes()[:1000])
    app = launch(cache, port, tokens)
    try:
        log = wait_for_line(app, r"default dataset: .* is ready\.")
        assert "damaged or stale: rebuilding" in log
    finally:
        stop(app)
    assert verify_dataset(str(dataset)) == []


@pytest.mark.slow
def test_a_failing_build_is_shown_on_the_page_and_in_the_terminal_and_the_app_keeps_serving(tmp_path):
    from gradio_client import Client

    broken = tmp_path / "cache" / "models" / MODEL_FOLDER
    broken.mkdir(parents=True)
    (broken / PROVENANCE_FILE).write_text("{}")  # an export that looks finished, with no weights
    (broken / "config.json").write_text("{not json")
    port = free_port()
    app = launch(tmp_path / "cache", port)
    try:
        log = wait_for_line(app, r"Serving 0 model", timeout=120)
        log += wait_for_line(app, r"error: the embedded default dataset could not be built")
        assert "its build resumes on the next launch" in wait_for_line(app, r"resumes on the next launch")
        assert page_status(port) == 200
        banner = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(api_name="/build_status")
        assert "could not be built" in banner and "Building" not in banner, banner
        assert app.poll() is None
    finally:
        stop(app)


def test_a_relaunch_build_waits_for_the_last_launch_build_to_stop(tmp_path):
    """Two builds never write one folder: the second waits for the first's lock, and stops cleanly meanwhile."""
    lock = tmp_path / "datasets" / f"{DATASET_NAME}.lock"
    lock.parent.mkdir(parents=True)
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        child = subprocess.Popen([sys.executable, "-m", "harvest.default"], cwd=REPO, text=True,
                                 env={**os.environ, "NEUROSCOPE_CACHE": str(tmp_path)}, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE)
        assert "waiting for the previous launch's build to stop" in child.stdout.readline()
        child.stdin.close()
        assert child.wait(timeout=120) == 130
    assert not (tmp_path / "datasets" / DATASET_NAME).exists()


def test_readme_commands_are_the_ones_ci_and_the_app_use():
    readme = (REPO / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["bash dev.sh app", "bash dev.sh test"]
    assert readme.index("```bash") < readme.index("\n## "), "the two commands come first"
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash dev.sh test" in ci
    dev = (REPO / "dev.sh").read_text()
    assert re.search(r'app\)\n.*?exec "\$VENV/bin/python" app\.py', dev, re.S)
    assert re.search(r"test\)\n.*?run_checks", dev, re.S)
    usage = subprocess.run(["bash", str(REPO / "dev.sh"), "nonsense"], capture_output=True, text=True)
    assert usage.returncode == 2 and "bash dev.sh app" in usage.stderr


def test_the_space_readme_links_only_files_the_deployed_space_holds():
    """docs/space/README.md becomes the Space's README: a link must lead to a file the README's deploy uploads."""
    deploy = re.search(r"hf upload your-name/neuroscope \. \. --repo-type space \\\n\s+--include (.*)\n",
                       (REPO / "README.md").read_text()).group(1)
    uploaded = re.findall(r'"([^"]+)"', deploy)
    links = re.findall(r"\]\(([^)]+)\)", (REPO / "docs" / "space" / "README.md").read_text())
    assert links, "the Space README says where its code is"
    for link in links:
        assert "://" not in link, f"{link}: an address outside the Space"
        assert (REPO / link).is_file() and any(fnmatch.fnmatch(link, pattern) for pattern in uploaded), link
