"""Write a finished state as a dataset: each layer's examples, statistics and logit effects, then the manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from harvest.progress import WRITING, Report, Step, ignore
from harvest.selection import LayerState
from harvest.state import HarvestState
from harvest.tokens import WindowTokens
from hub_sync import format as fmt
from hub_sync.writer import LayerExamples, LayerNeurons, finish_dataset, write_layer

N_LOGIT_TOKENS = 10


def layer_examples(state: LayerState, tokens: WindowTokens) -> LayerExamples:
    columns = ("neuron", "kind", "rank", "score", "position", "window", "acts")
    parts: dict[str, list[np.ndarray]] = {name: [] for name in columns}
    for kind, unranked in state.kept.items():
        kept = unranked.ranked()
        filled = kept.filled().cpu().numpy()
        neuron, rank = np.nonzero(filled)
        parts["neuron"].append(neuron)
        parts["rank"].append(rank)
        parts["kind"].append(np.full(len(neuron), kind, dtype=object))
        parts["score"].append(kept.scores.cpu().numpy()[filled])
        parts["position"].append(kept.positions.cpu().numpy()[filled])
        parts["window"].append(kept.windows.cpu().numpy()[filled])
        parts["acts"].append(kept.activations.cpu().numpy()[filled])
    window_index = np.concatenate(parts["window"])
    return LayerExamples(
        neuron=np.concatenate(parts["neuron"]),
        kind=np.concatenate(parts["kind"]),
        rank=np.concatenate(parts["rank"]),
        score=np.concatenate(parts["score"]),
        max_position=np.concatenate(parts["position"]),
        window_index=window_index,
        token_ids=tokens.lookup(window_index),
        activations=np.concatenate(parts["acts"]),
    )


@torch.inference_mode()
def logit_effects(w_out: torch.Tensor, w_unembed: torch.Tensor, chunk: int = 256) -> tuple[np.ndarray, ...]:
    """Top and bottom tokens of W_out[n] @ W_U for every neuron of one layer, chunked to bound memory."""
    top_ids, top_values, bottom_ids, bottom_values = [], [], [], []
    count = min(N_LOGIT_TOKENS, w_unembed.shape[1])
    for start in range(0, w_out.shape[0], chunk):
        effects = w_out[start : start + chunk].float() @ w_unembed.float()
        top = effects.topk(count, dim=1)
        bottom = effects.topk(count, dim=1, largest=False)
        top_ids.append(top.indices.cpu().numpy())
        top_values.append(top.values.cpu().numpy())
        bottom_ids.append(bottom.indices.cpu().numpy())
        bottom_values.append(bottom.values.cpu().numpy())
    return tuple(np.concatenate(part) for part in (top_ids, top_values, bottom_ids, bottom_values))


def layer_neurons(state: LayerState, w_out: torch.Tensor, w_unembed: torch.Tensor) -> LayerNeurons:
    stats = state.stats
    n_tokens = int(stats.n_tokens)
    top_ids, top_values, bottom_ids, bottom_values = logit_effects(w_out, w_unembed)
    return LayerNeurons(
        max=stats.max.cpu().numpy(),
        min=stats.min.cpu().numpy(),
        mean=(stats.sum / max(n_tokens, 1)).cpu().numpy(),
        density=(stats.positive().double() / max(n_tokens, 1)).cpu().numpy(),
        n_tokens=np.full(len(stats.max), n_tokens, dtype=np.int64),
        histogram=stats.histogram.cpu().numpy(),
        logit_top_ids=top_ids,
        logit_top_values=top_values,
        logit_bottom_ids=bottom_ids,
        logit_bottom_values=bottom_values,
    )


def write_dataset(state: HarvestState, out: Path, report: Report = ignore) -> None:
    """Layer files first, manifest last; an old manifest goes first so no reader trusts a half-written folder.
    `report` hears before each layer's logit effects and its Parquet files: on a big vocabulary they take minutes."""
    (out / fmt.MANIFEST_FILE).unlink(missing_ok=True)
    model, window = state.plan.model, state.plan.config.window
    vocab = model.token_strings()
    w_out, w_unembed = model.bridge.W_out, model.bridge.W_U  # each access stacks every layer's weights: once
    steps = 2 * len(state.layers)
    for index, (layer, layer_state) in enumerate(state.layers.items()):
        report(Step(WRITING, 2 * index, steps, "steps", f"layer {layer}: logit effects"))
        neurons = layer_neurons(layer_state, w_out[layer], w_unembed)
        report(Step(WRITING, 2 * index + 1, steps, "steps", f"layer {layer}: Parquet files"))
        write_layer(out, layer, neurons, layer_examples(layer_state, state.tokens), vocab, window)
    report(Step(WRITING, steps, steps, "steps", "manifest"))
    progress = state.progress
    finish_dataset(out, state.plan.manifest(docs=progress.docs, windows=progress.windows, started=progress.started))
