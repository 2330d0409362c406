"""A brute-force reference harvest: every activation from one plain forward pass, selection by sorting in numpy.

It shares nothing with harvest/ but the document reader and the definition of the random keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harvest.corpus import CorpusSpec, iter_documents
from harvest.selection import sample_keys
from hub_sync.format import HISTOGRAM_EDGES


def reference_windows(tokenizer, corpus: str, window: int, n_windows: int) -> np.ndarray:
    """EOS-joined stream cut into BOS-led windows, written out the plain way."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    stream: list[int] = []
    for number, text in enumerate(iter_documents(CorpusSpec(corpus))):
        if number:
            stream.append(tokenizer.eos_token_id)
        stream.extend(tokenizer.encode(text, add_special_tokens=False))
        if len(stream) >= n_windows * (window - 1):
            break
    body = window - 1
    return np.array([[bos, *stream[i * body : (i + 1) * body]] for i in range(n_windows)], dtype=np.int64)


@torch.inference_mode()
def all_activations(bridge, windows: np.ndarray, layers: list[int]) -> dict[int, np.ndarray]:
    """[n_windows, window, d_mlp] float32 per layer from run_with_cache over every window at once."""
    names = {f"blocks.{layer}.mlp.hook_post": layer for layer in layers}
    _, cache = bridge.run_with_cache(torch.from_numpy(windows), names_filter=lambda name: name in names)
    return {layer: cache[name].float().numpy() for name, layer in names.items()}


@dataclass
class NeuronReference:
    top: np.ndarray  # window indices, best first
    random: np.ndarray
    bottom: np.ndarray
    max: float
    min: float
    mean: float
    density: float
    histogram: np.ndarray


def reference_neuron(acts: np.ndarray, neuron: int, layer: int, k: tuple[int, int, int], seed: int) -> NeuronReference:
    """acts: [n_windows, window, d_mlp] of one layer."""
    top_k, random_k, bottom_k = k
    body = acts[:, 1:, neuron].astype(np.float64)
    windows = np.arange(len(acts))
    scores = body.max(axis=1)
    lows = body.min(axis=1)
    top = np.lexsort((windows, -scores))[:top_k]
    bottom = np.lexsort((windows, lows))[:bottom_k]
    keys = sample_keys(seed, layer, torch.from_numpy(windows), acts.shape[2])[:, neuron].numpy()
    firing = windows[scores > 0]
    random = firing[np.lexsort((firing, keys[firing]))][:random_k]
    values = body.reshape(-1)
    edges = np.array(HISTOGRAM_EDGES)
    above, at_or_below = np.searchsorted(edges, values, side="right"), np.searchsorted(edges, values, side="left")
    bins = np.where(values > 0, above, at_or_below)
    return NeuronReference(
        top=top,
        random=random,
        bottom=bottom,
        max=values.max(),
        min=values.min(),
        mean=values.mean(),
        density=(values > 0).mean(),
        histogram=np.bincount(bins, minlength=len(HISTOGRAM_EDGES) + 1),
    )
