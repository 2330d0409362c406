"""The embedded default dataset: SmolLM2-135M over the built-in python-docs corpus, built on first launch.

It is made by the same harvest a user runs, into a cache folder; later launches reuse it. An
interrupted build resumes from its checkpoint; a corrupt cache is rebuilt, never served.
`python -m harvest.default` builds it in a child process of the app (harvest.background): one JSON
progress report a line on stdout, and a clean stop, progress kept, when its stdin closes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import sys
import threading
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import IO

from harvest.config import HarvestConfig
from harvest.corpus import PYTHON_DOCS, CorpusSpec
from harvest.models import PROVENANCE_FILE
from harvest.progress import DONE, FAILED, LOADING, MODEL, Report, Step, ignore
from harvest.run import harvest
from harvest.smollm2 import export_smollm2
from hub_sync import format as fmt
from hub_sync.reader import DatasetError, open_dataset

DEFAULT_TOKENS = 65_536
DEFAULT_WINDOW = 64
DATASET_NAME = "smollm2-135m-python-docs"
MODEL_FOLDER = "smollm2-135m-instruct"
MODEL_DTYPE = "float32"


def cache_root() -> Path:
    configured = os.environ.get("NEUROSCOPE_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "neuroscope"


def default_tokens() -> int:
    return int(os.environ.get("NEUROSCOPE_DEFAULT_TOKENS", DEFAULT_TOKENS))


def _is_finished(folder: Path, windows: int) -> bool:
    """A finished build of these many windows that opens with every footer read and matching its manifest:
    cheap enough for every launch."""
    try:
        dataset = open_dataset(folder)
    except (DatasetError, OSError):  # anything unreadable means the cache cannot be trusted
        return False
    return not dataset.unreadable_files and dataset.manifest.corpus.windows == windows


def finished_default(cache: Path | None = None, tokens: int | None = None) -> Path | None:
    """The embedded default's folder when a finished build of it is cached, else None (it needs building)."""
    out = (cache or cache_root()) / "datasets" / DATASET_NAME
    return out if _is_finished(out, (tokens or default_tokens()) // DEFAULT_WINDOW) else None


def default_source(cache: Path | None = None, tokens: int | None = None, report: Report = ignore) -> Path:
    """Path of the embedded default dataset, building or finishing it first when needed."""
    root = cache or cache_root()
    tokens = tokens or default_tokens()
    out = root / "datasets" / DATASET_NAME
    manifest = out / fmt.MANIFEST_FILE
    if _is_finished(out, tokens // DEFAULT_WINDOW):
        return out
    if manifest.is_file():
        print(f"the cached default dataset in {out} is damaged or stale: rebuilding it", file=sys.stderr)
        shutil.rmtree(out)
    else:
        state = "resuming the interrupted build of" if out.exists() else "building (once, a few minutes)"
        print(f"{state} the default dataset: SmolLM2-135M over {PYTHON_DOCS}, {tokens:,} tokens, in {out}",
              file=sys.stderr)
    model_folder = root / "models" / MODEL_FOLDER
    if not (model_folder / PROVENANCE_FILE).is_file():
        report(Step(LOADING, detail="exporting SmolLM2 from its GGUF file (once, about a minute)"))
    model = export_smollm2(model_folder)
    report(Step(MODEL, detail=str(model)))
    report(Step(LOADING, detail="loading the model"))
    config = HarvestConfig(
        model=str(model), corpus=CorpusSpec(PYTHON_DOCS), out=out, tokens=tokens, window=DEFAULT_WINDOW,
        batch_size=16, top_k=10, random_k=5, bottom_k=5, device="auto", dtype=MODEL_DTYPE, checkpoint_every=60.0,
        progress=report is ignore,
    )
    return harvest(config, report=report)


def _emit(step: Step) -> None:
    """One report for the parent; a parent gone (closed pipe) is noticed by stdin instead."""
    with contextlib.suppress(OSError):
        print(json.dumps(asdict(step)), flush=True)


def _interrupt_when_stdin_closes() -> None:
    """The parent closes our stdin to stop us, or it died: either way, stop as Ctrl-C does (checkpoint kept).
    Raw reads: a daemon thread blocked in sys.stdin's buffered reader aborts the interpreter's exit."""
    while os.read(sys.stdin.fileno(), 4096):
        pass
    os.kill(os.getpid(), signal.SIGINT)


def _wait_for_other_builds(root: Path) -> IO:
    """One build of the default at a time: a relaunch's build waits while the last launch's finishes its batch and
    saves its checkpoint. The lock lasts while the returned file is open, at most as long as this process."""
    lock = root / "datasets" / f"{DATASET_NAME}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    handle = lock.open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        _emit(Step(LOADING, detail="waiting for the previous launch's build to stop"))
        fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def main() -> int:
    """Build the default, reporting to the parent; 0 built, 1 failed (reported), 130 interrupted (resumable)."""
    # Python leaves SIGINT ignored when it starts so (a shell's background job, nohup): our own stop must still work.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=_interrupt_when_stdin_closes, name="stdin-watch", daemon=True).start()
    try:
        with _wait_for_other_builds(cache_root()):
            path = default_source(report=_emit)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # noqa: BLE001 - any failure is reported to the page and the terminal, never a crash
        traceback.print_exc()
        _emit(Step(FAILED, detail=f"{type(error).__name__}: {error}"))
        return 1
    _emit(Step(DONE, detail=str(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
