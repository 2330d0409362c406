"""`python app.py` itself: what it prints at start-up about sources it cannot fully serve."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time

import pytest

from hub_sync import format as fmt
from hub_sync.synthetic import write_synthetic_dataset
from testkit.support import REPO, free_port

pytestmark = pytest.mark.slow


def output_until(process: subprocess.Popen, patterns: list[str], timeout: float) -> str:
    """The process's output until every pattern has matched; read by a thread, so a silent process cannot block
    the wait past its timeout."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    seen = ""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            seen += lines.get(timeout=left)
        except queue.Empty:
            break
        if all(re.search(pattern, seen) for pattern in patterns):
            return seen
    raise AssertionError(f"not all of {patterns} within {timeout} s:\n{seen[-3000:]}")


def test_start_up_prints_unopenable_sources_and_the_layers_search_skips(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "cut", n_layers=2, d_mlp=8, name="org/cut")
    (folder / fmt.neurons_path(1)).write_bytes(b"not parquet")
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "app.py", "--source", str(folder), "--source", str(tmp_path / "absent"),
               "--host", "127.0.0.1", "--port", str(free_port())]
    process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        seen = output_until(process, [r"Serving 1 model", r"Search skips 'org/cut' layer 1"], timeout=120)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "absent' is unavailable" in seen and seen.count("Search skips") == 1
