"""Forward passes for the live tabs: the same hooks the harvest reads, stopped after the last layer needed.

Texts of different lengths run together right-padded: the models are causal, so padding after a
text's last token cannot change its activations. The functions that run the model are wrapped with
`spaces.GPU` (a no-op off ZeroGPU Spaces): they take the model's key and token ids (on ZeroGPU their
arguments are pickled to a worker process, which holds the model already: space.live.model), run the
forward and return CPU float32 tensors. They run one at a time per process: `run_with_hooks` adds its
hooks to the shared model, where they would fire on any other request's forward pass running at the same time.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch

from harvest.models import LoadedModel
from hub_sync.format import MLP_HOOK
from space.live.model import gpu, model_key, resident
from space.live.texts import EncodedText, Sample

Progress = Callable[..., object]  # called as progress(fraction, desc=...): gr.Progress, which spaces.GPU forwards
BATCH_TEXTS = 16
CACHED_TEXTS = 2  # one text's activations of every layer: ~24 MB for SmolLM2-135M, ~160 MB for GPT-2 XL
MODEL_LOCK = threading.Lock()


def one_at_a_time(model_call: Callable) -> Callable:
    """Hold MODEL_LOCK around a `spaces.GPU` call, in the serving process and never inside the call: on ZeroGPU
    its body runs in a forked worker, where a lock copied while held would never be released."""

    @functools.wraps(model_call)
    def serialised(*args, **kwargs):
        with MODEL_LOCK:
            return model_call(*args, **kwargs)

    return serialised


def model_device(model: LoadedModel) -> torch.device:
    """Where the model's weights are: inputs go there."""
    return next(model.bridge.parameters()).device


def token_activations(model: LoadedModel, token_ids: Sequence[int], layers: Sequence[int]) -> torch.Tensor:
    """[len(layers), positions, d_mlp]: every neuron's activation at every position of one BOS-led text."""
    return _token_activations(model_key(model), tuple(token_ids), tuple(layers))


@one_at_a_time
@gpu(duration=60)
@torch.inference_mode()
def _token_activations(key: str, token_ids: tuple[int, ...], layers: tuple[int, ...]) -> torch.Tensor:
    model = resident(key)
    captured: dict[int, torch.Tensor] = {}

    def keep(layer: int):
        def hook(acts: torch.Tensor, hook) -> None:
            captured[layer] = acts[0].float().cpu()

        return hook

    tokens = torch.tensor([list(token_ids)], device=model_device(model))
    hooks = [(MLP_HOOK.format(layer=layer), keep(layer)) for layer in layers]
    model.bridge.run_with_hooks(tokens, fwd_hooks=hooks, stop_at_layer=max(layers) + 1, return_type=None)
    return torch.stack([captured[layer] for layer in layers])


def _pool(acts: torch.Tensor, masks: torch.Tensor, reduce: str) -> torch.Tensor:
    """[samples, positions, width] -> [samples, width]: max or mean over each sample's positions."""
    if reduce == "max":
        return acts.masked_fill(~masks[..., None], float("-inf")).amax(dim=1)
    weights = masks[..., None].to(acts.dtype)
    return (acts * weights).sum(dim=1) / weights.sum(dim=1)


def pooled_activations(
    model: LoadedModel, texts: list[EncodedText], samples: list[Sample], hook_names: list[str], reduce: str,
    progress: Progress | None = None,
) -> torch.Tensor:
    """[len(hook_names), len(samples), width]: each hook's output pooled (max or mean) over each sample's positions;
    `progress` hears before each batch how many texts have run, and at the end."""
    return _pooled_activations(model_key(model), texts, samples, hook_names, reduce, progress)


@one_at_a_time
@gpu(duration=120)
@torch.inference_mode()
def _pooled_activations(
    key: str, texts: list[EncodedText], samples: list[Sample], hook_names: list[str], reduce: str,
    progress: Progress | None,
) -> torch.Tensor:
    model = resident(key)
    device = model_device(model)
    stop_at_layer = max(int(name.split(".")[1]) for name in hook_names) + 1
    pooled: torch.Tensor | None = None
    order = sorted(range(len(texts)), key=lambda index: len(texts[index].token_ids))
    for start in range(0, len(order), BATCH_TEXTS):
        if progress is not None:
            progress(start / len(texts), desc=f"Running the model: {start} of {len(texts)} texts")
        batch = order[start : start + BATCH_TEXTS]
        width = len(texts[batch[-1]].token_ids)
        rows = {text_index: row for row, text_index in enumerate(batch)}
        tokens = torch.full((len(batch), width), model.bos_id, dtype=torch.long)
        for row, text_index in enumerate(batch):
            ids = texts[text_index].token_ids
            tokens[row, : len(ids)] = torch.tensor(ids)
        chosen = [index for index, sample in enumerate(samples) if sample.text_index in rows]
        if not chosen:
            continue
        sample_rows = torch.tensor([rows[samples[index].text_index] for index in chosen], device=device)
        masks = torch.zeros((len(chosen), width), dtype=torch.bool)
        for slot, index in enumerate(chosen):
            positions = torch.from_numpy(samples[index].positions)
            masks[slot, : len(positions)] = positions
        masks = masks.to(device)
        captured: dict[str, torch.Tensor] = {}

        def keep(name: str):
            def hook(acts: torch.Tensor, hook) -> None:
                captured[name] = _pool(acts[sample_rows].float(), masks, reduce).cpu()  # noqa: B023 - run in this loop

            return hook

        model.bridge.run_with_hooks(
            tokens.to(device),
            fwd_hooks=[(name, keep(name)) for name in hook_names],
            stop_at_layer=stop_at_layer,
            return_type=None,
        )
        if pooled is None:
            pooled = torch.zeros((len(hook_names), len(samples), captured[hook_names[0]].shape[-1]))
        pooled[:, chosen] = torch.stack([captured[name] for name in hook_names])
    if progress is not None:
        progress(1.0, desc=f"Running the model: {len(texts)} of {len(texts)} texts")
    if pooled is None:
        raise ValueError("no samples to run")
    return pooled


class ActivationCache:
    """The last few texts' activations per model, so /activations then /top_neurons on one text run the model once."""

    def __init__(self, size: int = CACHED_TEXTS):
        self.size = size
        self._entries: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def activations(self, model: LoadedModel, token_ids: Sequence[int], layers: Sequence[int]) -> torch.Tensor:
        """token_activations(model, token_ids, layers), from the cache when this text ran last."""
        key = (model.spec, model.dtype, tuple(token_ids), tuple(layers))
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        values = token_activations(model, token_ids, layers)
        with self._lock:
            self._entries[key] = values
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return values
