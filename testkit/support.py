"""Helpers several test modules share (fixtures live in conftest.py): the repository, a free port, the harvest
command and what a dataset holds, a manifest edited in place, what the loopback servers have in common, and two
views' values compared. Test modules import these rather than each other."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pyarrow.parquet as pq

from hub_sync import format as fmt

REPO = Path(__file__).resolve().parent.parent
Served = TypeVar("Served", bound="LoopbackServer")


class OwnedHTTPServer(ThreadingHTTPServer):
    """An HTTP server whose request handlers reach the test server that owns it as `self.server.owner`."""

    daemon_threads = True
    owner: Any


class LoopbackServer:
    """A test server on a free loopback port, answered on a daemon thread: `start()`/`stop()` or a with block. It
    keeps a log of the requests it answered, for the tests to read."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], name: str):
        self._log: list = []
        self._log_lock = threading.Lock()
        self._httpd = OwnedHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
        )
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self: Served) -> Served:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self: Served) -> Served:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def record(self, request: object) -> None:
        with self._log_lock:
            self._log.append(request)

    def requests(self) -> list:
        with self._log_lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._log_lock:
            self._log.clear()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_harvest(*args: str, **popen) -> subprocess.CompletedProcess:
    """`python -m harvest ARGS` as a user runs it."""
    command = [sys.executable, "-m", "harvest", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **popen)


def dataset_contents(folder: Path) -> dict:
    """Everything a dataset says, minus the wall-clock dates in its manifest."""
    manifest = json.loads((folder / fmt.MANIFEST_FILE).read_text())
    for key in ("started", "finished"):
        manifest["harvest"].pop(key)
    tables = {
        path.relative_to(folder).as_posix(): pq.read_table(path).to_pydict() for path in folder.rglob("*.parquet")
    }
    return {"manifest": manifest, "tables": tables}


def edit_manifest(folder: Path, change: Callable[[dict], None]) -> None:
    """Rewrite a dataset's neuroscope.json after `change` edits the parsed object in place."""
    path = folder / fmt.MANIFEST_FILE
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def assert_same(concurrent: object, alone: object, where: str = "") -> None:
    """Equal structure and equal numbers (to float32 rounding of a reordered sum)."""
    if isinstance(alone, dict):
        assert isinstance(concurrent, dict) and concurrent.keys() == alone.keys(), where
        for key in alone:
            assert_same(concurrent[key], alone[key], f"{where}.{key}")
    elif isinstance(alone, list):
        assert isinstance(concurrent, list) and len(concurrent) == len(alone), where
        for index, (got, expected) in enumerate(zip(concurrent, alone, strict=True)):
            assert_same(got, expected, f"{where}[{index}]")
    elif isinstance(alone, float) and not isinstance(concurrent, str):
        assert math.isclose(concurrent, alone, rel_tol=1e-5, abs_tol=1e-6), f"{where}: {concurrent} != {alone}"
    else:
        assert concurrent == alone, where
