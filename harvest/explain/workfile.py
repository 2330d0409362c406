"""Crash-safe progress of an explanation run: one JSON line per finished neuron, appended and fsynced.

It lives in a hidden folder of the dataset, named by the run's settings, so rerunning the same command finds
it and skips what is done; a line torn by a crash is ignored (that neuron is simply asked again). When the run
folds its records into the Parquet files, the work file is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

WORK_DIR = ".neuroscope-explain"


def work_file_path(dataset: Path, settings: dict) -> Path:
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return dataset / WORK_DIR / f"run-{key}.jsonl"


class WorkFile:
    """The first line holds the run's settings and start time; each further line one neuron's record."""

    def __init__(self, path: Path, settings: dict, started: str):
        self.path = path
        self.header, self.records = self._load()
        if self.header is None:
            self.header = {"settings": settings, "started": started}
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.header) + "\n", encoding="utf-8")

    def _load(self) -> tuple[dict | None, list[dict]]:
        if not self.path.is_file():
            return None, []
        text = self.path.read_text(encoding="utf-8")
        parsed = []
        for line in text.splitlines():
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line torn by a crash: nothing after it was fsynced either
        if not parsed:
            return None, []
        kept = "".join(json.dumps(item) + "\n" for item in parsed)
        if kept != text:  # cut the torn tail, so the next append starts a line of its own
            self.path.write_text(kept, encoding="utf-8")
        return parsed[0], parsed[1:]

    def done(self) -> set[tuple[int, int]]:
        return {(record["layer"], record["neuron"]) for record in self.records}

    def append(self, record: dict) -> None:
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
            out.flush()
            os.fsync(out.fileno())
        self.records.append(record)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # other runs' work files are still there
            self.path.parent.rmdir()
