"""A small dataset in the real format with planted features, for testing explanations and their scores.

Windows are short English-like sentences (real words, so a sentence model and a small LM can read them). In each
layer, neuron 0 fires on the word " dog" and nowhere else, neuron 1 on colour words, neuron 2 never fires, and
the other neurons fire weakly at random. Top windows hold the feature; random windows are ordinary sentences
without it, where the neuron barely fires.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from hub_sync import format as fmt
from hub_sync.synthetic import synthetic_manifest
from hub_sync.writer import LayerExamples, LayerNeurons, finish_dataset, write_layer

BOS = "<|endoftext|>"
NOUNS = [" cat", " bird", " horse", " fish", " car", " tree", " house", " book", " river", " chair", " boat", " lamp"]
VERBS = [" ran", " sat", " jumped", " slept", " looked", " walked", " waited", " stopped"]
WORDS = [" the", " a", " by", " near", " old", " big", " small", " .", " and", " under"]
COLOURS = [" red", " blue", " green", " yellow"]
DOG = " dog"
VOCAB = [BOS, DOG, *COLOURS, *NOUNS, *VERBS, *WORDS]
ID = {token: index for index, token in enumerate(VOCAB)}
DOG_NEURON, COLOUR_NEURON, SILENT_NEURON = 0, 1, 2


def _sentence_ids(rng: np.random.Generator, length: int) -> list[int]:
    """A stream of "the big cat sat near the house ." sentences, cut to `length` tokens."""
    ids: list[int] = []
    while len(ids) < length:
        words = [
            " the",
            rng.choice([" old", " big", " small"]),
            rng.choice(NOUNS),
            rng.choice(VERBS),
            rng.choice([" near", " by", " under"]),
            " the",
            rng.choice(NOUNS),
            " .",
        ]
        ids += [ID[word] for word in words]
    return ids[:length]


def _planted_window(rng: np.random.Generator, window: int, feature: list[str]) -> tuple[list[int], int]:
    ids = [ID[BOS]] + _sentence_ids(rng, window - 1)
    position = int(rng.integers(2, window - 1))
    ids[position] = ID[str(rng.choice(feature))]
    return ids, position


def _neuron_rows(neuron: int, rng: np.random.Generator, window: int, top_k: int, random_k: int) -> list[dict]:
    """Top and random rows of one neuron: window ids, activations, kind, rank."""
    feature = {DOG_NEURON: [DOG], COLOUR_NEURON: COLOURS}.get(neuron)
    top = []
    for _ in range(top_k):
        if feature is None:
            ids, peak = [ID[BOS]] + _sentence_ids(rng, window - 1), int(rng.integers(1, window))
        else:
            ids, peak = _planted_window(rng, window, feature)
        activations = rng.uniform(0.0, 0.2, window) if neuron != SILENT_NEURON else -rng.uniform(0.1, 1.0, window)
        if neuron != SILENT_NEURON:
            activations[peak] = rng.uniform(4.0, 8.0) if feature else rng.uniform(0.5, 1.0)
        top.append((ids, activations))
    top.sort(key=lambda pair: -pair[1][1:].max())
    rows = [{"kind": "top", "rank": rank, "ids": ids, "activations": acts} for rank, (ids, acts) in enumerate(top)]
    if neuron == SILENT_NEURON:
        return rows
    for rank in range(random_k):
        ids = [ID[BOS]] + _sentence_ids(rng, window - 1)
        rows.append({"kind": "random", "rank": rank, "ids": ids, "activations": rng.uniform(0.0, 0.3, window)})
    return rows


def write_planted_dataset(
    folder: Path, d_mlp: int = 6, n_layers: int = 1, window: int = 16, top_k: int = 8, random_k: int = 8, seed: int = 0
) -> Path:
    rng = np.random.default_rng(seed)
    for layer in range(n_layers):
        rows = []
        for neuron in range(d_mlp):
            rows += [row | {"neuron": neuron} for row in _neuron_rows(neuron, rng, window, top_k, random_k)]
        activations = np.array([row["activations"] for row in rows], dtype=np.float32)
        activations[:, 0] = 0.0
        max_position = 1 + np.argmax(activations[:, 1:], axis=1)
        examples = LayerExamples(
            neuron=np.array([row["neuron"] for row in rows]),
            kind=np.array([row["kind"] for row in rows], dtype=object),
            rank=np.array([row["rank"] for row in rows]),
            score=activations[np.arange(len(rows)), max_position],
            max_position=max_position,
            window_index=rng.permutation(100_000)[: len(rows)],
            token_ids=np.array([row["ids"] for row in rows]),
            activations=activations,
        )
        maxima = np.array([activations[examples.neuron == n].max() for n in range(d_mlp)])
        histogram = np.zeros((d_mlp, len(fmt.HISTOGRAM_EDGES) + 1), dtype=np.int64)
        histogram[:, fmt.ZERO_EDGE] = window
        neurons = LayerNeurons(
            max=maxima,
            min=np.zeros(d_mlp),
            mean=maxima / window,
            density=np.full(d_mlp, 0.5),
            n_tokens=histogram.sum(axis=1),
            histogram=histogram,
            logit_top_ids=np.zeros((d_mlp, 10), dtype=np.int64),
            logit_top_values=np.zeros((d_mlp, 10)),
            logit_bottom_ids=np.zeros((d_mlp, 10), dtype=np.int64),
            logit_bottom_values=np.zeros((d_mlp, 10)),
        )
        write_layer(folder, layer, neurons, examples, VOCAB, window)
    manifest = synthetic_manifest("planted/model", n_layers, d_mlp, window, top_k, random_k, 0, len(VOCAB))
    notes = ["Planted features: neuron 0 fires on ' dog', 1 on colour words, 2 never."]
    manifest = dataclasses.replace(
        manifest,
        model=dataclasses.replace(manifest.model, notes=notes),
        corpus=dataclasses.replace(manifest.corpus, docs=1000, windows=1000, tokens=1000 * window),
    )
    finish_dataset(folder, manifest)
    return folder
