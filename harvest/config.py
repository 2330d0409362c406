"""What a harvest is asked to do: the one place its settings and their defaults are written down.

`python -m harvest` builds its options' defaults from `HarvestConfig`, so the command line and the Python API
cannot disagree.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harvest.batches import Slice
from harvest.corpus import PYTHON_DOCS, CorpusSpec


class HarvestError(ValueError):
    """Bad settings for this model or corpus; nothing was written."""


@dataclass
class HarvestConfig:
    """Everything a harvest is asked to do (see `python -m harvest --help` for each option)."""

    model: str
    out: Path
    corpus: CorpusSpec = field(default_factory=lambda: CorpusSpec(PYTHON_DOCS))
    tokens: int | None = None  # None: the whole corpus
    window: int = 128
    batch_size: int = 16
    top_k: int = 20
    random_k: int = 10
    bottom_k: int | None = None  # None: top_k for gated MLPs, else 0
    layers: list[int] | None = None  # None: every layer
    device: str = "auto"
    dtype: str = "float32"
    seed: int = 0
    checkpoint_every: float = 180.0  # seconds of work between checkpoints
    progress: bool = True
    shard: Slice | None = None
    settings_extra: dict = field(default_factory=dict)  # recorded settings this code does not know (see plan.py)

    def check(self) -> None:
        """Refuse settings no model could run, before anything is loaded or written."""
        if self.window < 2:
            raise HarvestError(f"--window must be at least 2 (BOS plus one token), got {self.window}")
        if self.tokens is not None and self.tokens < self.window:
            raise HarvestError(f"--tokens {self.tokens} is smaller than one window of {self.window} tokens")
        if self.batch_size < 1:
            raise HarvestError(f"--batch-size must be at least 1, got {self.batch_size}")
        for name in ("top_k", "random_k", "bottom_k"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise HarvestError(f"--{name.replace('_', '-')} must be >= 0")

    @property
    def max_windows(self) -> int | None:
        """The token budget in whole windows; None for the whole corpus."""
        return self.tokens // self.window if self.tokens else None


def default(name: str) -> Any:
    """The default of a HarvestConfig field, for the command line's options."""
    found = {f.name: f for f in dataclasses.fields(HarvestConfig)}[name]
    return found.default_factory() if found.default_factory is not dataclasses.MISSING else found.default


def corpus_default(name: str) -> Any:
    """The default of a CorpusSpec field, for the command line's corpus options."""
    return {f.name: f.default for f in dataclasses.fields(CorpusSpec)}[name]
