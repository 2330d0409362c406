"""A small real model harvested into a dataset over the Python docs: the live, overview and compare tests' fixture."""

from __future__ import annotations

import json
from pathlib import Path

from harvest.corpus import CorpusSpec
from harvest.models import PROVENANCE_FILE, load_model
from harvest.run import HarvestConfig, harvest
from testkit.tiny_models import native_model

WINDOW = 24


def harvested_dataset(root: Path, name: str, n_windows: int = 40, **model_options) -> tuple[Path, object]:
    """A small real model (with a provenance name) harvested over the Python docs, and the loaded model."""
    folder = native_model(root / "model", **model_options)
    (folder / PROVENANCE_FILE).write_text(json.dumps({"name": name}))
    model = load_model(str(folder), "cpu")
    config = HarvestConfig(
        model=str(folder),
        corpus=CorpusSpec("python-docs"),
        out=root / "dataset",
        tokens=n_windows * WINDOW,
        window=WINDOW,
        batch_size=8,
        top_k=4,
        random_k=3,
        bottom_k=2,
        progress=False,
    )
    return harvest(config, model), model
