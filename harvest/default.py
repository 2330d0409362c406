"""The embedded default dataset: SmolLM2-135M over the built-in python-docs corpus, built on first launch.

It is made by the same harvest a user runs, into a cache folder; later launches reuse it. An
interrupted build resumes from its checkpoint; a corrupt cache is rebuilt, never served.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from harvest.config import HarvestConfig
from harvest.corpus import PYTHON_DOCS, CorpusSpec
from harvest.run import harvest
from harvest.smollm2 import export_smollm2
from hub_sync import format as fmt
from hub_sync.reader import DatasetError, open_dataset

DEFAULT_TOKENS = 65_536
DEFAULT_WINDOW = 64
DATASET_NAME = "smollm2-135m-python-docs"


def cache_root() -> Path:
    configured = os.environ.get("NEUROSCOPE_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "neuroscope"


def _is_finished(folder: Path, windows: int) -> bool:
    """A finished build of these many windows that opens with every footer read and matching its manifest:
    cheap enough for every launch."""
    try:
        dataset = open_dataset(folder)
    except (DatasetError, OSError):  # anything unreadable means the cache cannot be trusted
        return False
    return not dataset.unreadable_files and dataset.manifest.corpus.windows == windows


def default_source(cache: Path | None = None, tokens: int | None = None) -> Path:
    """Path of the embedded default dataset, building or finishing it first when needed."""
    root = cache or cache_root()
    tokens = tokens or int(os.environ.get("NEUROSCOPE_DEFAULT_TOKENS", DEFAULT_TOKENS))
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
    model = export_smollm2(root / "models" / "smollm2-135m-instruct")
    config = HarvestConfig(
        model=str(model), corpus=CorpusSpec(PYTHON_DOCS), out=out, tokens=tokens, window=DEFAULT_WINDOW,
        batch_size=16, top_k=10, random_k=5, bottom_k=5, device="auto", checkpoint_every=60.0,
    )
    return harvest(config)
