"""Atomic checkpoints of a harvest, tied to the run that wrote them by a fingerprint of its settings."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

CHECKPOINT_DIR = ".neuroscope-checkpoint"
CHECKPOINT_FILE = "state.pt"


class CheckpointMismatch(RuntimeError):
    """--out holds the checkpoint or dataset of a different run."""


def fingerprint(settings: dict) -> str:
    """Same settings, same windows, same values: the id a checkpoint must match to be resumed."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def checkpoint_path(out_dir: Path) -> Path:
    return out_dir / CHECKPOINT_DIR / CHECKPOINT_FILE


def save(out_dir: Path, payload: dict) -> None:
    """Write to a temporary file, fsync, then rename: a kill at any moment leaves the old or the new file."""
    path = checkpoint_path(out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load(out_dir: Path, run_id: str) -> dict | None:
    path = checkpoint_path(out_dir)
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - a torn or foreign file: say so, never guess
        raise CheckpointMismatch(
            f"{path} is not a readable checkpoint ({type(error).__name__}); delete {path.parent} to start over"
        ) from error
    if payload.get("run_id") != run_id:
        raise CheckpointMismatch(
            f"{out_dir} holds the checkpoint of a different run (settings {payload.get('settings')}); "
            f"rerun with that run's exact options to resume it, or choose another --out"
        )
    return payload


def remove(out_dir: Path) -> None:
    path = checkpoint_path(out_dir)
    path.unlink(missing_ok=True)
    path.with_suffix(".tmp").unlink(missing_ok=True)
    if path.parent.is_dir() and not any(path.parent.iterdir()):
        path.parent.rmdir()
