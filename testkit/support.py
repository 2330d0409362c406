"""Helpers several test modules share (fixtures live in conftest.py): the repository, a free port, the harvest
command and what a dataset holds, and a manifest edited in place. Test modules import these rather than each other."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from hub_sync import format as fmt

REPO = Path(__file__).resolve().parent.parent


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
