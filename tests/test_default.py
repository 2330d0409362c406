"""The README's first command: the app on the embedded default (real SmolLM2, offline), built on first launch."""

from __future__ import annotations

import fnmatch
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harvest.default import DATASET_NAME
from hub_sync import format as fmt
from hub_sync.verify import verify_dataset
from testkit.support import REPO, free_port

TOKENS = 6 * 64


@pytest.fixture
def cache(tmp_path, smollm2_folder) -> Path:
    """A fresh cache that already holds the exported model (the export itself is tested elsewhere)."""
    models = tmp_path / "cache" / "models"
    models.mkdir(parents=True)
    (models / "smollm2-135m-instruct").symlink_to(smollm2_folder, target_is_directory=True)
    return tmp_path / "cache"


def launch(cache: Path, port: int) -> subprocess.Popen:
    """`python app.py` with no source, exactly as `bash dev.sh app` runs it, with a small token budget."""
    environment = {**os.environ, "NEUROSCOPE_CACHE": str(cache), "NEUROSCOPE_DEFAULT_TOKENS": str(TOKENS),
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
def serving(cache: Path, port: int, timeout: float = 600) -> Iterator[str]:
    """Launch the app, wait until it serves, yield what it printed, stop it."""
    app = launch(cache, port)
    try:
        yield wait_for_line(app, r"Serving \d+ model", timeout)
    finally:
        stop(app)


@pytest.mark.slow
def test_first_launch_builds_the_default_and_serves_real_neurons(cache):
    from gradio_client import Client

    port = free_port()
    with serving(cache, port) as log:
        assert "building (once" in log
        dataset = cache / "datasets" / DATASET_NAME
        assert verify_dataset(str(dataset)) == []
        manifest = (dataset / fmt.MANIFEST_FILE).read_text()
        assert "HuggingFaceTB/SmolLM2-135M-Instruct" in manifest and "dequantised" in manifest
        card = (dataset / fmt.CARD_FILE).read_text()
        assert "Q4_1" in card and "python-docs" in card and f"{TOKENS:,} tokens" in card

        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        model, layer, neuron, _, page = client.predict(
            "HuggingFaceTB/SmolLM2-135M-Instruct", 5, 100, api_name="/neuron"
        )
        assert (model, layer, neuron) == ("HuggingFaceTB/SmolLM2-135M-Instruct", 5, 100)
        assert "top" in page.lower() and "<script" not in page

        notice, html, values = client.predict(
            "HuggingFaceTB/SmolLM2-135M-Instruct", 5, 100, "def add(a, b):\n    return a + b", api_name="/activations"
        )
        assert notice == "" and len(values["activations"]) == len(values["token_ids"]) > 5
        assert "return" in "".join(values["tokens"]) and "title=" in html

    with serving(cache, port, timeout=120) as log:
        assert "building" not in log and "resuming" not in log


@pytest.mark.slow
def test_interrupted_first_build_resumes_and_a_damaged_cache_is_rebuilt(cache):
    port = free_port()
    app = launch(cache, port)
    wait_for_line(app, r"building \(once")
    dataset = cache / "datasets" / DATASET_NAME
    deadline = time.monotonic() + 300
    while not any(dataset.glob("data/examples/*.parquet")) and app.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    app.send_signal(signal.SIGINT)
    output, _ = app.communicate(timeout=120)
    assert app.returncode == 130, output
    assert not (dataset / fmt.MANIFEST_FILE).exists(), "a half-built dataset is never marked finished"

    with serving(cache, port) as log:
        assert "resuming the interrupted build" in log
    assert verify_dataset(str(dataset)) == []

    examples = sorted(dataset.glob("data/examples/*.parquet"))[0]
    examples.write_bytes(examples.read_bytes()[:1000])
    with serving(cache, port) as log:
        assert "damaged or stale: rebuilding" in log
    assert verify_dataset(str(dataset)) == []


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
