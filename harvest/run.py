"""The harvest loop: stream windows through the model, update layer states in hooks, checkpoint, write."""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from harvest import checkpoint
from harvest.corpus import CorpusError, CorpusSpec, WindowStream, iter_documents
from harvest.models import HOOK_TEMPLATE, LoadedModel, load_model
from harvest.results import WindowTokens, layer_examples, layer_neurons
from harvest.selection import LayerState
from hub_sync import format as fmt
from hub_sync.writer import finish_dataset, write_layer

CODE_VERSION = "0.1.0"


class HarvestError(ValueError):
    """Bad settings for this model or corpus; nothing was written."""


@dataclass
class HarvestConfig:
    model: str
    corpus: CorpusSpec
    out: Path
    tokens: int | None = None
    window: int = 128
    batch_size: int = 16
    top_k: int = 20
    random_k: int = 10
    bottom_k: int | None = None
    layers: list[int] | None = None
    device: str = "auto"
    dtype: str = "float32"
    seed: int = 0
    checkpoint_every: float = 180.0
    progress: bool = True
    settings_extra: dict = field(default_factory=dict)

    def run_settings(self, model: LoadedModel, layers: list[int], bottom_k: int) -> dict:
        """What decides every number in the dataset: a checkpoint is only resumed under the same settings."""
        return {
            "model": self.model,
            "corpus": asdict(self.corpus),
            "tokens": self.tokens,
            "window": self.window,
            "batch_size": self.batch_size,
            "top_k": self.top_k,
            "random_k": self.random_k,
            "bottom_k": bottom_k,
            "layers": layers,
            "dtype": self.dtype,
            "seed": self.seed,
            "format_version": fmt.FORMAT_VERSION,
            "d_mlp": model.d_mlp,
            **self.settings_extra,
        }


def _check_settings(config: HarvestConfig) -> None:
    if config.window < 2:
        raise HarvestError(f"--window must be at least 2 (BOS plus one token), got {config.window}")
    if config.tokens is not None and config.tokens < config.window:
        raise HarvestError(f"--tokens {config.tokens} is smaller than one window of {config.window} tokens")
    if config.batch_size < 1:
        raise HarvestError(f"--batch-size must be at least 1, got {config.batch_size}")
    for name in ("top_k", "random_k"):
        if getattr(config, name) < 0:
            raise HarvestError(f"--{name.replace('_', '-')} must be >= 0")
    if config.bottom_k is not None and config.bottom_k < 0:
        raise HarvestError("--bottom-k must be >= 0")


def _check_model_fit(config: HarvestConfig, model: LoadedModel) -> list[int]:
    if config.window > model.n_ctx:
        raise HarvestError(f"--window {config.window} is longer than the model's context of {model.n_ctx} tokens")
    layers = sorted(set(config.layers)) if config.layers else list(range(model.n_layers))
    outside = [layer for layer in layers if not 0 <= layer < model.n_layers]
    if outside:
        raise HarvestError(f"--layers {outside} out of range: {model.spec} has layers 0..{model.n_layers - 1}")
    return layers


def _check_out_dir(out: Path, run_id: str) -> bool:
    """True when `out` already holds this run's finished dataset; refuses a folder holding anything else."""
    manifest_path = out / fmt.MANIFEST_FILE
    has_checkpoint = checkpoint.checkpoint_path(out).parent.exists()
    if manifest_path.is_file() and not has_checkpoint:
        finished_run = json.loads(manifest_path.read_text()).get("harvest", {}).get("run_id")
        if finished_run == run_id:
            return True
        raise checkpoint.CheckpointMismatch(
            f"{out} already holds a different dataset (run {finished_run}); choose another --out or delete it"
        )
    if out.exists() and not has_checkpoint and any(out.iterdir()):
        raise checkpoint.CheckpointMismatch(f"{out} is not empty and holds no harvest of this run; choose another --out")
    return False


def _manifest(config: HarvestConfig, model: LoadedModel, layers: list[int], bottom_k: int, progress: dict) -> dict:
    return {
        "format_version": fmt.FORMAT_VERSION,
        "model": model.manifest_entry(),
        "corpus": config.corpus.manifest_entry()
        | {"docs": progress["docs"], "tokens": progress["windows"] * config.window, "windows": progress["windows"]},
        "harvest": {
            "window": config.window,
            "top_k": config.top_k,
            "random_k": config.random_k,
            "bottom_k": bottom_k,
            "seed": config.seed,
            "layers": layers,
            "histogram_edges": fmt.HISTOGRAM_EDGES,
            "batch_size": config.batch_size,
            "device": str(model.bridge.cfg.device),
            "code_version": CODE_VERSION,
            "run_id": progress["run_id"],
            "started": progress["started"],
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }


class Harvester:
    """One harvest run: owns the model, the states, the window token store and the checkpoint schedule."""

    def __init__(self, config: HarvestConfig, model: LoadedModel, layers: list[int], bottom_k: int, run_id: str):
        self.config = config
        self.model = model
        self.layers = layers
        self.device = next(model.bridge.parameters()).device
        self.states = {
            layer: LayerState(
                layer, model.d_mlp, config.window, config.top_k, config.random_k, bottom_k, config.seed, self.device
            )
            for layer in layers
        }
        self.tokens = WindowTokens(config.window)
        self.progress = {
            "run_id": run_id,
            "windows": 0,
            "docs": 0,
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def restore(self, payload: dict) -> None:
        for layer, tensors in payload["layers"].items():
            self.states[layer].load_state_dict(tensors)
        self.tokens.load_state_dict(payload["tokens"])
        self.progress = payload["progress"]

    def save(self, settings: dict) -> None:
        self._prune_tokens()
        checkpoint.save(
            self.config.out,
            {
                "run_id": self.progress["run_id"],
                "settings": settings,
                "progress": self.progress,
                "layers": {layer: state.state_dict() for layer, state in self.states.items()},
                "tokens": self.tokens.state_dict(),
            },
        )

    def _prune_tokens(self) -> None:
        referenced = torch.cat([state.referenced_windows() for state in self.states.values()])
        self.tokens.prune(referenced.cpu().numpy())

    def _hooks(self, windows: torch.Tensor) -> list:
        def hook_for(state: LayerState):
            def hook(acts: torch.Tensor, hook) -> None:
                state.update(acts, windows)

            return hook

        return [(HOOK_TEMPLATE.format(layer=layer), hook_for(state)) for layer, state in self.states.items()]

    @torch.inference_mode()
    def process(self, batch: np.ndarray) -> None:
        first = self.progress["windows"]
        windows = torch.arange(first, first + len(batch), device=self.device)
        tokens = torch.from_numpy(batch).to(self.device)
        self.model.bridge.run_with_hooks(
            tokens, fwd_hooks=self._hooks(windows), stop_at_layer=max(self.layers) + 1, return_type=None
        )
        self.tokens.add(first, batch)
        self.progress["windows"] += len(batch)
        upper_bound = len(self.layers) * self.model.d_mlp * (self.config.top_k + self.config.random_k)
        if self.tokens.needs_prune(upper_bound):
            self._prune_tokens()

    def write(self, manifest: dict) -> None:
        """Layer files first, manifest last; an old manifest goes first so no reader trusts a half-written folder."""
        out = self.config.out
        (out / fmt.MANIFEST_FILE).unlink(missing_ok=True)
        vocab = self.model.token_strings()
        w_out = self.model.bridge.W_out
        w_unembed = self.model.bridge.W_U
        for layer, state in self.states.items():
            write_layer(
                out,
                layer,
                layer_neurons(state, w_out[layer], w_unembed),
                layer_examples(state, self.tokens),
                vocab,
                self.config.window,
            )
        finish_dataset(out, manifest)


def _open_windows(config: HarvestConfig, model: LoadedModel) -> WindowStream:
    """A window stream, after checking the corpus yields at least one whole window."""
    probe = WindowStream(iter_documents(config.corpus), model.tokenizer, config.window, model.bos_id, model.eos_id)
    if next(probe.windows(), None) is None:
        raise CorpusError(f"corpus {config.corpus.name!r} holds fewer tokens than one window of {config.window}")
    return WindowStream(iter_documents(config.corpus), model.tokenizer, config.window, model.bos_id, model.eos_id)


def harvest(config: HarvestConfig, model: LoadedModel | None = None) -> Path:
    """Run (or resume, or recognise as done) a harvest into config.out; returns the dataset folder."""
    _check_settings(config)
    model = model or load_model(config.model, config.device, config.dtype)
    layers = _check_model_fit(config, model)
    bottom_k = config.bottom_k if config.bottom_k is not None else (config.top_k if model.gated else 0)
    settings = config.run_settings(model, layers, bottom_k)
    run_id = checkpoint.fingerprint(settings)
    if _check_out_dir(config.out, run_id):
        return config.out
    saved = checkpoint.load(config.out, run_id)
    stream = _open_windows(config, model)

    harvester = Harvester(config, model, layers, bottom_k, run_id)
    if saved:
        harvester.restore(saved)
    max_windows = config.tokens // config.window if config.tokens else None
    done = harvester.progress["windows"]
    bar = tqdm(
        total=max_windows * config.window if max_windows else None,
        initial=done * config.window,
        unit="tok",
        unit_scale=True,
        desc=f"harvest {model.name}",
        disable=not config.progress,
    )
    last_save = time.monotonic()
    try:
        for batch in stream.batches(config.batch_size, skip_windows=done, max_windows=max_windows):
            harvester.process(batch)
            harvester.progress["docs"] = stream.docs_consumed
            bar.update(batch.size)
            if time.monotonic() - last_save >= config.checkpoint_every:
                harvester.save(settings)
                last_save = time.monotonic()
    except KeyboardInterrupt:
        harvester.save(settings)
        bar.close()
        raise
    bar.close()
    harvester.save(settings)
    harvester.write(_manifest(config, model, layers, bottom_k, harvester.progress))
    checkpoint.remove(config.out)
    return config.out
