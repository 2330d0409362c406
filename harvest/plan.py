"""One harvest run as decided: the config, the loaded model, and what they resolve to (layers, bottom_k).

The plan names the run: its settings are everything that decides a number in the dataset, and their fingerprint
(`run_id`) ties checkpoints, shard parts and the finished dataset to the run that made them. `merge` rebuilds the
same plan from the settings a part recorded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass
from functools import cached_property
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from harvest.config import HarvestConfig, HarvestError
from harvest.corpus import CorpusSpec
from harvest.models import LoadedModel, load_model
from hub_sync import format as fmt
from hub_sync.manifest import HarvestInfo, Manifest

PACKAGE = "neuroscope-hub"
# The config fields that go into a run's settings under their own names; the rest are derived or not settings.
_NAMED_SETTINGS = ("model", "tokens", "window", "batch_size", "top_k", "random_k", "dtype", "seed")
_DERIVED_SETTINGS = ("corpus", "bottom_k", "layers", "format_version", "d_mlp")


def code_version() -> str:
    """The installed neuroscope-hub version; a checkout run without installing it (a Space) says so."""
    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return "unknown (not installed)"


def fingerprint(settings: dict) -> str:
    """Same settings, same windows, same values: the id a checkpoint, a part or a dataset must match."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RunPlan:
    """A config on a loaded model, with the layers and bottom_k it resolves to: what every part of a run reads."""

    config: HarvestConfig
    model: LoadedModel
    layers: list[int]
    bottom_k: int

    @classmethod
    def for_model(cls, config: HarvestConfig, model: LoadedModel) -> RunPlan:
        """The plan of running `config` on `model`, after checking that the model can run it."""
        if config.window > model.n_ctx:
            raise HarvestError(f"--window {config.window} is longer than the model's context of {model.n_ctx} tokens")
        layers = sorted(set(config.layers)) if config.layers else list(range(model.n_layers))
        outside = [layer for layer in layers if not 0 <= layer < model.n_layers]
        if outside:
            raise HarvestError(f"--layers {outside} out of range: {model.spec} has layers 0..{model.n_layers - 1}")
        bottom_k = config.bottom_k if config.bottom_k is not None else (config.top_k if model.gated else 0)
        return cls(config, model, layers, bottom_k)

    @classmethod
    def recorded(cls, settings: dict, out: Path, device: str, model_path: str | None = None) -> RunPlan:
        """The plan of the run whose settings a shard recorded, writing to `out`, its model loaded again (from
        `model_path` where it now lives elsewhere)."""
        extra = {key: value for key, value in settings.items() if key not in _NAMED_SETTINGS + _DERIVED_SETTINGS}
        config = HarvestConfig(
            out=out,
            corpus=CorpusSpec(**settings["corpus"]),
            layers=settings["layers"],
            bottom_k=settings["bottom_k"],
            device=device,
            progress=False,
            settings_extra=extra,
            **{key: settings[key] for key in _NAMED_SETTINGS},
        )
        model = load_model(model_path or config.model, device, config.dtype)
        return cls(config, model, settings["layers"], settings["bottom_k"])

    @cached_property
    def settings(self) -> dict:
        """What decides every number in the dataset: a checkpoint is only resumed under the same settings."""
        config = self.config
        return {
            **{key: getattr(config, key) for key in _NAMED_SETTINGS},
            "corpus": asdict(config.corpus),
            "bottom_k": self.bottom_k,
            "layers": self.layers,
            "format_version": fmt.FORMAT_VERSION,
            "d_mlp": self.model.d_mlp,
            **config.settings_extra,
        }

    @cached_property
    def run_id(self) -> str:
        return fingerprint(self.settings)

    def manifest(self, docs: int, windows: int, started: str) -> Manifest:
        """The finished dataset's manifest, for `windows` windows cut from `docs` documents."""
        config = self.config
        return Manifest(
            model=self.model.manifest_entry(),
            corpus=config.corpus.manifest_entry(docs=docs, windows=windows, window=config.window),
            harvest=HarvestInfo(
                window=config.window,
                top_k=config.top_k,
                random_k=config.random_k,
                bottom_k=self.bottom_k,
                layers=self.layers,
                histogram_edges=fmt.HISTOGRAM_EDGES,
                seed=config.seed,
                batch_size=config.batch_size,
                device=str(self.model.bridge.cfg.device),
                code_version=code_version(),
                run_id=self.run_id,
                started=started,
                finished=utc_now(),
            ),
        )
