"""The harvest loop: stream windows through the model, update layer states in hooks, checkpoint, write."""

from __future__ import annotations

import datetime as dt
import json
import queue
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from harvest import checkpoint, distributed
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
    shard: distributed.Slice | None = None
    settings_extra: dict = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: dict, out: Path, device: str = "auto") -> "HarvestConfig":
        """The config of a recorded run (its `run_settings`), writing to `out`: how merge rebuilds a run."""
        named = ("model", "tokens", "window", "batch_size", "top_k", "random_k", "bottom_k", "layers", "dtype", "seed")
        derived = ("corpus", "format_version", "d_mlp")
        extra = {key: value for key, value in settings.items() if key not in named + derived}
        return cls(
            corpus=CorpusSpec(**settings["corpus"]),
            out=out,
            device=device,
            progress=False,
            settings_extra=extra,
            **{key: settings[key] for key in named},
        )

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


def check_out_dir(out: Path, run_id: str) -> bool:
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
    """One harvest run, or one slice of it: owns the model, the states, the window token store and the checkpoints."""

    def __init__(
        self,
        config: HarvestConfig,
        model: LoadedModel,
        layers: list[int],
        bottom_k: int,
        run_id: str,
        part: distributed.Slice = distributed.Slice(0, 1),
        checkpoint_root: Path | None = None,
    ):
        self.config = config
        self.model = model
        self.layers = layers
        self.bottom_k = bottom_k
        self.part = part
        self.checkpoint_root = checkpoint_root or config.out
        self.device = next(model.bridge.parameters()).device
        self.states = {layer: self._empty_state(layer) for layer in layers}
        self.tokens = WindowTokens(config.window)
        self.progress = {
            "run_id": run_id,
            "slice": str(part),
            "windows": 0,
            "next_window": 0,
            "docs": 0,
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def _empty_state(self, layer: int) -> LayerState:
        c = self.config
        return LayerState(layer, self.model.d_mlp, c.window, c.top_k, c.random_k, self.bottom_k, c.seed, self.device)

    def restore(self, payload: dict) -> None:
        if payload["progress"]["slice"] != self.progress["slice"]:
            raise checkpoint.CheckpointMismatch(
                f"{self.checkpoint_root} holds shard {payload['progress']['slice']} of this run, "
                f"not {self.progress['slice']}; choose another --out"
            )
        for layer, tensors in payload["layers"].items():
            self.states[layer].load_state_dict(tensors)
        self.tokens.load_state_dict(payload["tokens"])
        self.progress = payload["progress"]

    def absorb(self, payload: dict) -> None:
        """Merge another slice's final state (a checkpoint payload) into this one: same run, other windows."""
        for layer, tensors in payload["layers"].items():
            self.absorb_layer(layer, tensors)
        self.absorb_windows(payload["tokens"], payload["progress"])

    def absorb_layer(self, layer: int, tensors: dict[str, torch.Tensor]) -> None:
        other = self._empty_state(layer)
        other.load_state_dict(tensors)
        self.states[layer].absorb(other)

    def absorb_windows(self, tokens: dict[str, np.ndarray], progress: dict) -> None:
        """The other slice's kept windows' tokens, and its window and document counts."""
        for index, row in zip(tokens["indices"], tokens["tokens"]):
            self.tokens.add(int(index), row[None])
        self.progress["windows"] += progress["windows"]
        self.progress["docs"] = max(self.progress["docs"], progress["docs"])

    def save(self, settings: dict) -> None:
        self._prune_tokens()
        checkpoint.save(
            self.checkpoint_root,
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
    def process(self, batch: np.ndarray, first_window: int) -> None:
        """Run one batch of consecutive windows, the first being stream window `first_window`.

        On CUDA the tokens go through pinned memory and every step is queued without waiting for the device.
        """
        windows = torch.arange(first_window, first_window + len(batch), device=self.device)
        host = torch.from_numpy(batch)
        if self.device.type == "cuda":
            host = host.pin_memory()
        tokens = host.to(self.device, non_blocking=True)
        self.model.bridge.run_with_hooks(
            tokens, fwd_hooks=self._hooks(windows), stop_at_layer=max(self.layers) + 1, return_type=None
        )
        self.tokens.add(first_window, batch)
        self.progress["windows"] += len(batch)
        self.progress["next_window"] = first_window + len(batch)
        upper_bound = len(self.layers) * self.model.d_mlp * (self.config.top_k + self.config.random_k)
        if self.tokens.needs_prune(upper_bound):
            self._prune_tokens()

    def manifest(self) -> dict:
        return _manifest(self.config, self.model, self.layers, self.bottom_k, self.progress)

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


_END = object()


def _prefetched(batches: Iterator[distributed.SliceBatch], depth: int = 4) -> Iterator[distributed.SliceBatch]:
    """`batches` made up to `depth` ahead on a background thread, so tokenizing overlaps the forward pass."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fill() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(_END)
        except Exception as error:  # noqa: BLE001 - handed to the consuming thread, which raises it
            put(error)

    thread = threading.Thread(target=fill, name="harvest-batches", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not _END:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)  # a thread stuck on a slow corpus read is a daemon: it cannot keep the process up


@contextmanager
def _interrupt_after_batch() -> Iterator[None]:
    """Ctrl-C during a batch takes effect once the batch is done: a half-applied batch must never be saved."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _run_batches(harvester: Harvester, stream: WindowStream, settings: dict, show_progress: bool) -> None:
    """Stream the slice's remaining batches through the model; checkpoint every `checkpoint_every` s."""
    config = harvester.config
    max_windows = config.tokens // config.window if config.tokens else None
    total = distributed.slice_windows(harvester.part, max_windows, config.batch_size) if max_windows else None
    bar = tqdm(
        total=total * config.window if total else None,
        initial=harvester.progress["windows"] * config.window,
        unit="tok",
        unit_scale=True,
        desc=f"harvest {harvester.model.name}",
        disable=not show_progress,
    )
    owned = distributed.owned_batches(
        stream, harvester.part, config.batch_size, harvester.progress["next_window"], max_windows
    )
    batches = _prefetched(owned)
    last_save = time.monotonic()
    try:
        for batch in batches:
            with _interrupt_after_batch():
                harvester.process(batch.tokens, batch.first_window)
                harvester.progress["docs"] = batch.docs
            bar.update(batch.tokens.size)
            if time.monotonic() - last_save >= config.checkpoint_every:
                harvester.save(settings)
                last_save = time.monotonic()
    finally:
        batches.close()
        bar.close()


def harvest(config: HarvestConfig, model: LoadedModel | None = None) -> Path:
    """Run (or resume, or recognise as done) a harvest into config.out; returns the folder.

    Under torchrun every rank runs its slice and rank 0 writes the merged dataset; with `config.shard`
    this process runs one slice and leaves a part for `python -m harvest merge`.
    """
    _check_settings(config)
    world = distributed.current_world()
    if world.size > 1 and config.shard is not None:
        raise HarvestError("--shard is for independent processes; under torchrun the ranks already share the windows")
    device = str(next(model.bridge.parameters()).device) if model else distributed.rank_device(world, config.device)
    with distributed.process_group(world, device):
        return _harvest_slice(config, model or load_model(config.model, device, config.dtype), world, device)


def _harvest_slice(config: HarvestConfig, model: LoadedModel, world: distributed.World, device: str) -> Path:
    layers = _check_model_fit(config, model)
    bottom_k = config.bottom_k if config.bottom_k is not None else (config.top_k if model.gated else 0)
    settings = config.run_settings(model, layers, bottom_k)
    run_id = checkpoint.fingerprint(settings)
    done = check_out_dir(config.out, run_id)
    if config.shard is not None:
        done = distributed.part_finished(config.out, run_id, config.shard)
    distributed.check_checkpoints(config.out, world)
    if distributed.main_decides(done, world, device):
        return config.out
    root = distributed.checkpoint_root(config.out, world)
    saved = checkpoint.load(root, run_id)
    stream = _open_windows(config, model)

    harvester = Harvester(config, model, layers, bottom_k, run_id, config.shard or world.slice, root)
    if saved:
        harvester.restore(saved)
    try:
        _run_batches(harvester, stream, settings, show_progress=config.progress and world.rank == 0)
    except KeyboardInterrupt:
        harvester.save(settings)  # wherever in the loop Ctrl-C lands, only whole batches have been applied
        raise
    harvester.save(settings)
    if config.shard is not None:
        distributed.write_part_record(config.out, config.shard, settings, harvester.progress, CODE_VERSION)
        return config.out
    distributed.reduce_to_main(harvester, world)
    if world.rank == 0:
        harvester.write(harvester.manifest())
    distributed.remove_checkpoints(config.out, world)
    return config.out
