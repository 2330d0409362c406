"""A synthetic dataset in format v1, for benchmarks and tests of readers at any size.

Its numbers are random but well-formed: every neuron has exactly its k examples of each kind and
statistics consistent with them. With `hostile=True` token strings carry HTML payloads, the way an
untrusted dataset could. `write_synthetic_explanations` adds format 1.1's explanations: random phrases of real
words, random scores (some null), some refused, optionally hostile.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

import numpy as np

from hub_sync import format as fmt
from hub_sync.manifest import CorpusInfo, ExplanationRun, HarvestInfo, Manifest, ModelInfo
from hub_sync.writer import (
    LayerExamples,
    LayerNeurons,
    finish_dataset,
    neurons_table,
    write_explanations,
    write_layer,
    write_parquet,
)

SYNTHETIC_WINDOWS = 1_000_000

HOSTILE_TOKENS = [
    "<script>window.__pwned = 1</script>",
    '<img src=x onerror="window.__pwned=1">',
    "\"'&amp;<b>bold</b>",
    "\n",
    " ",
    "\t",
]


HOSTILE_EXPLANATIONS = [
    '<img src=x onerror="window.__pwned=1"> fires on images',
    "<script>window.__pwned = 1</script> script tags",
    "\"'&amp;<b>bold</b> quotes & ampersands",
]
EXPLANATION_WORDS = [  # real words, some in two forms or cases
    "the", "word", "dog", "Dogs", "cats", "colour", "colours", "red", "blue", "numbers", "years", "dates", "closing",
    "brackets", "Python", "keywords", "def", "return", "plural", "nouns", "after", "verbs", "in", "code", "comments",
    "questions", "names", "of", "cities", "French", "text", "URLs", "emails", "end", "lists",
]
SYNTHETIC_EXPLAINERS = ("synthetic/explainer-a", "synthetic/explainer-b")
REFUSALS = ("empty explanation", "leaks the prompt ('<<')", "never fired: no positive activation in its top examples")


def synthetic_vocab(size: int, hostile: bool = False) -> np.ndarray:
    words = [f" w{i}" if i % 3 else f"tok{i}" for i in range(size)]
    if hostile:
        words[: len(HOSTILE_TOKENS)] = HOSTILE_TOKENS
    return np.array(words, dtype=object)


def synthetic_layer(
    d_mlp: int, window: int, top_k: int, random_k: int, bottom_k: int, d_vocab: int, rng: np.random.Generator
) -> tuple[LayerNeurons, LayerExamples]:
    kinds = ["top"] * top_k + ["random"] * random_k + ["bottom"] * bottom_k
    per_neuron = len(kinds)
    n_rows = d_mlp * per_neuron
    neuron = np.repeat(np.arange(d_mlp), per_neuron)
    kind = np.tile(np.array(kinds, dtype=object), d_mlp)
    rank = np.tile(np.concatenate([np.arange(top_k), np.arange(random_k), np.arange(bottom_k)]), d_mlp)
    activations = rng.standard_normal((n_rows, window)).astype(np.float32)
    activations[:, 0] = 0.0
    max_position = 1 + np.argmax(activations[:, 1:], axis=1)
    is_bottom = kind == "bottom"
    max_position[is_bottom] = 1 + np.argmin(activations[is_bottom, 1:], axis=1)
    score = activations[np.arange(n_rows), max_position]
    token_ids = rng.integers(0, d_vocab, size=(n_rows, window))
    examples = LayerExamples(
        neuron=neuron,
        kind=kind,
        rank=rank,
        score=score,
        max_position=max_position,
        window_index=rng.integers(0, SYNTHETIC_WINDOWS, size=n_rows),
        token_ids=token_ids,
        activations=activations,
    )
    top_scores = score.reshape(d_mlp, per_neuron)[:, 0]
    histogram = rng.integers(0, 1000, size=(d_mlp, len(fmt.HISTOGRAM_EDGES) + 1))
    neurons = LayerNeurons(
        max=top_scores,
        min=-np.abs(top_scores),
        mean=rng.standard_normal(d_mlp) * 0.1,
        density=rng.random(d_mlp),
        n_tokens=histogram.sum(axis=1),
        histogram=histogram,
        logit_top_ids=rng.integers(0, d_vocab, size=(d_mlp, 10)),
        logit_top_values=np.sort(rng.random((d_mlp, 10)))[:, ::-1],
        logit_bottom_ids=rng.integers(0, d_vocab, size=(d_mlp, 10)),
        logit_bottom_values=-np.sort(rng.random((d_mlp, 10)))[:, ::-1],
    )
    return neurons, examples


def synthetic_manifest(
    name: str, n_layers: int, d_mlp: int, window: int, top_k: int, random_k: int, bottom_k: int, d_vocab: int
) -> Manifest:
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return Manifest(
        model=ModelInfo(
            name=name,
            n_layers=n_layers,
            d_mlp=d_mlp,
            loader="synthetic",
            d_model=64,
            d_vocab=d_vocab,
            n_ctx=window,
            act_fn="gelu",
            gated=bottom_k > 0,
            transformer_lens_version="none",
            notes=["Synthetic data: random numbers in the dataset format, not a real model."],
        ),
        corpus=CorpusInfo(
            windows=SYNTHETIC_WINDOWS, name="synthetic", docs=SYNTHETIC_WINDOWS, tokens=SYNTHETIC_WINDOWS * window
        ),
        harvest=HarvestInfo(
            window=window,
            top_k=top_k,
            random_k=random_k,
            bottom_k=bottom_k,
            layers=list(range(n_layers)),
            histogram_edges=fmt.HISTOGRAM_EDGES,
            seed=0,
            batch_size=0,
            device="none",
            code_version="synthetic",
            started=now,
            finished=now,
        ),
    )


def write_synthetic_dataset(
    out_dir: str | os.PathLike,
    n_layers: int = 2,
    d_mlp: int = 64,
    window: int = 16,
    top_k: int = 5,
    random_k: int = 3,
    bottom_k: int = 0,
    d_vocab: int = 500,
    name: str = "synthetic/model",
    hostile: bool = False,
    share_layer_content: bool = False,
    seed: int = 0,
) -> Path:
    """Write a synthetic dataset; `share_layer_content` copies layer 0's files to every layer (fast, big stores)."""
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    vocab = synthetic_vocab(d_vocab, hostile)
    neurons, examples = synthetic_layer(d_mlp, window, top_k, random_k, bottom_k, d_vocab, rng)
    for layer in range(n_layers):
        if share_layer_content and layer > 0:
            shutil.copyfile(out / fmt.examples_path(0), out / fmt.examples_path(layer))
            write_parquet(neurons_table(layer, neurons, examples, vocab), out / fmt.neurons_path(layer))
            continue
        if layer > 0:
            neurons, examples = synthetic_layer(d_mlp, window, top_k, random_k, bottom_k, d_vocab, rng)
        write_layer(out, layer, neurons, examples, vocab, window)
    finish_dataset(out, synthetic_manifest(name, n_layers, d_mlp, window, top_k, random_k, bottom_k, d_vocab))
    return out


def _synthetic_explanation(
    layer: int, neuron: int, explainer: str, text: str, refusal: str | None, rng: np.random.Generator
) -> dict:
    row = {
        "layer": layer,
        "neuron": neuron,
        "explainer": explainer,
        "prompt_version": "neuroscope-1",
        "explanation": None if refusal else text,
        "refusal": refusal,
        "created": dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc) + dt.timedelta(days=layer),
    }
    for name in fmt.EXPLANATION_SCORES:
        low, high = fmt.SCORE_RANGES[name]
        computed = refusal is None and (name != "simulation" or rng.random() < 0.5)
        row[name] = float(rng.uniform(low, high)) if computed else None
        row[f"{name}_n"] = int(rng.integers(5, 40)) if computed else 0
    return row


def synthetic_explanation_rows(
    layer: int, d_mlp: int, rng: np.random.Generator, explainers: tuple[str, ...], extra_words: int, hostile: bool
) -> list[dict]:
    """Explainer i explains a random share 0.8/(i+1) of the neurons; a tenth are refused; simulation is often null.
    With `hostile`, the first explainer's first neurons carry HOSTILE_EXPLANATIONS."""
    vocabulary = EXPLANATION_WORDS + [f"w{i}" for i in range(extra_words)]
    rows = []
    for number, explainer in enumerate(explainers):
        chosen = rng.random(d_mlp) < 0.8 / (number + 1)
        chosen[: len(HOSTILE_EXPLANATIONS)] |= hostile and number == 0
        for neuron in np.flatnonzero(chosen).tolist():
            text = " ".join(rng.choice(vocabulary, size=int(rng.integers(2, 8))).tolist())
            refusal = str(rng.choice(REFUSALS)) if rng.random() < 0.1 else None
            if hostile and number == 0 and neuron < len(HOSTILE_EXPLANATIONS):
                text, refusal = HOSTILE_EXPLANATIONS[neuron], None
            rows.append(_synthetic_explanation(layer, neuron, explainer, text, refusal, rng))
    return rows


def write_synthetic_explanations(
    out_dir: str | os.PathLike,
    explainers: tuple[str, ...] = SYNTHETIC_EXPLAINERS,
    extra_words: int = 0,
    hostile: bool = False,
    seed: int = 0,
) -> Path:
    """Add explanations of every harvested layer to a dataset folder (format 1.1), as `harvest explain` would;
    `extra_words` synthetic words (w0, w1, ...) join the real ones, for a realistic vocabulary at scale."""
    out = Path(out_dir)
    manifest = Manifest.from_json(json.loads((out / fmt.MANIFEST_FILE).read_text(encoding="utf-8")))
    rng = np.random.default_rng(seed)
    layers = manifest.harvest.layers
    written: list[dict] = []
    for layer in layers:
        rows = synthetic_explanation_rows(layer, manifest.model.d_mlp, rng, explainers, extra_words, hostile)
        write_explanations(out, layer, rows)
        written += [{"explainer": row["explainer"], "refused": row["refusal"] is not None} for row in rows]
    for explainer in explainers:
        mine = [row for row in written if row["explainer"] == explainer]
        run = ExplanationRun(
            explainer=explainer,
            prompt_version="neuroscope-1",
            scorers=list(fmt.EXPLANATION_SCORES),
            layers=layers,
            neurons=len(mine),
            refused=sum(row["refused"] for row in mine),
            started="2026-05-01T00:00:00+00:00",
            finished="2026-05-01T01:00:00+00:00",
        )
        manifest = manifest.with_explanation_run(layers, run)
    finish_dataset(out, manifest)
    return out
