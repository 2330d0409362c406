"""Write a dataset folder in format v1 from a harvest's per-layer arrays.

Files are written to temporary names and moved into place; the manifest goes last, so a folder
with a manifest is always complete and a crash mid-write leaves no file a reader would trust.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hub_sync import format as fmt
from hub_sync.card import render_card
from hub_sync.manifest import Manifest, ManifestError


@dataclass
class LayerExamples:
    """Every kept example of one layer, one row per example (any order; the writer sorts)."""

    neuron: np.ndarray  # int [n]
    kind: np.ndarray  # str [n], one of fmt.EXAMPLE_KINDS
    rank: np.ndarray  # int [n]
    score: np.ndarray  # float [n]
    max_position: np.ndarray  # int [n]
    window_index: np.ndarray  # int [n]
    token_ids: np.ndarray  # int [n, window]
    activations: np.ndarray  # float [n, window]


@dataclass
class LayerNeurons:
    """Per-neuron statistics of one layer, one row per neuron in neuron order."""

    max: np.ndarray
    min: np.ndarray
    mean: np.ndarray
    density: np.ndarray
    n_tokens: np.ndarray
    histogram: np.ndarray  # int [d_mlp, len(HISTOGRAM_EDGES) + 1]
    logit_top_ids: np.ndarray  # int [d_mlp, n_logits]
    logit_top_values: np.ndarray
    logit_bottom_ids: np.ndarray
    logit_bottom_values: np.ndarray


def _list_column(values_2d: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    rows, width = values_2d.shape
    offsets = pa.array(np.arange(0, (rows + 1) * width, width, dtype=np.int32))
    flat = pa.array(np.ascontiguousarray(values_2d).reshape(-1), type=value_type)
    return pa.ListArray.from_arrays(offsets, flat)


def token_table(vocab: Sequence[str] | pa.StringArray) -> pa.StringArray:
    """Token strings by id as an Arrow array, so token columns are built by Arrow's take, not Python."""
    return vocab if isinstance(vocab, pa.Array) else pa.array(list(vocab), type=pa.string())


def _string_list_column(ids_2d: np.ndarray, vocab: pa.StringArray) -> pa.ListArray:
    rows, width = ids_2d.shape
    offsets = pa.array(np.arange(0, (rows + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pc.take(vocab, pa.array(ids_2d.reshape(-1).astype(np.int64))))


def examples_table(examples: LayerExamples, vocab: Sequence[str] | pa.StringArray) -> pa.Table:
    """Rows in the format's order: by neuron, then kind (top, random, bottom), then rank."""
    kinds = fmt.kind_codes(examples.kind.astype(str))
    if np.any(kinds < 0):
        raise ValueError(f"unknown example kinds {sorted(set(examples.kind[kinds < 0]))}; expected {fmt.EXAMPLE_KINDS}")
    order = np.argsort(fmt.example_order_keys(examples.neuron, kinds, examples.rank), kind="stable")
    columns = {
        "neuron": pa.array(examples.neuron[order], type=pa.int32()),
        "kind": pa.array(examples.kind[order].astype(str), type=pa.string()),
        "rank": pa.array(examples.rank[order], type=pa.int16()),
        "score": pa.array(examples.score[order], type=pa.float32()),
        "max_position": pa.array(examples.max_position[order], type=pa.int16()),
        "window_index": pa.array(examples.window_index[order], type=pa.int64()),
        "token_ids": _list_column(examples.token_ids[order].astype(np.int32), pa.int32()),
        "tokens": _string_list_column(examples.token_ids[order], token_table(vocab)),
        "activations": _list_column(examples.activations[order].astype(np.float16), pa.float16()),
    }
    return pa.Table.from_pydict(columns, schema=fmt.EXAMPLE_SCHEMA)


def _peak_token_columns(examples: LayerExamples, vocab: pa.StringArray, d_mlp: int) -> dict[str, list]:
    """For each neuron, the tokens its top examples peak on, most frequent first."""
    is_top = examples.kind == "top"
    neurons = examples.neuron[is_top]
    peak_ids = examples.token_ids[is_top, examples.max_position[is_top]]
    tokens: list[list[str]] = [[] for _ in range(d_mlp)]
    counts: list[list[int]] = [[] for _ in range(d_mlp)]
    concentration = np.zeros(d_mlp, dtype=np.float32)
    pairs, pair_counts = np.unique(np.stack([neurons, peak_ids]), axis=1, return_counts=True)
    order = np.lexsort((pairs[1], -pair_counts, pairs[0]))
    for (neuron, token_id), count in zip(pairs.T[order], pair_counts[order], strict=True):
        tokens[neuron].append(vocab[int(token_id)].as_py())
        counts[neuron].append(int(count))
    for neuron in range(d_mlp):
        if counts[neuron]:
            concentration[neuron] = counts[neuron][0] / sum(counts[neuron])
    return {"peak_tokens": tokens, "peak_token_counts": counts, "peak_concentration": concentration}


def neurons_table(
    layer: int, neurons: LayerNeurons, examples: LayerExamples, vocab: Sequence[str] | pa.StringArray
) -> pa.Table:
    d_mlp = len(neurons.max)
    vocab = token_table(vocab)
    columns = {
        "layer": np.full(d_mlp, layer, dtype=np.int16),
        "neuron": np.arange(d_mlp, dtype=np.int32),
        "max": neurons.max.astype(np.float32),
        "min": neurons.min.astype(np.float32),
        "mean": neurons.mean.astype(np.float32),
        "density": neurons.density.astype(np.float32),
        "n_tokens": neurons.n_tokens.astype(np.int64),
        "histogram": _list_column(neurons.histogram.astype(np.int64), pa.int64()),
        **_peak_token_columns(examples, vocab, d_mlp),
        "logit_top_tokens": _string_list_column(neurons.logit_top_ids, vocab),
        "logit_top_values": _list_column(neurons.logit_top_values.astype(np.float32), pa.float32()),
        "logit_bottom_tokens": _string_list_column(neurons.logit_bottom_ids, vocab),
        "logit_bottom_values": _list_column(neurons.logit_bottom_values.astype(np.float32), pa.float32()),
    }
    return pa.Table.from_pydict(columns, schema=fmt.NEURON_SCHEMA)


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_parquet(table: pa.Table, path: Path, rows_per_group: int | None = None) -> None:
    _atomic_write(
        path,
        lambda tmp: pq.write_table(
            table, tmp, compression="zstd", write_statistics=True, row_group_size=rows_per_group
        ),
    )


def write_examples_parquet(table: pa.Table, path: Path, neurons_per_group: int) -> None:
    """One row group per `neurons_per_group` consecutive neurons, so one neuron is one ranged read."""
    neuron_column = table.column("neuron").to_numpy()
    boundaries = np.flatnonzero(np.diff(neuron_column // neurons_per_group)) + 1
    starts = np.concatenate([[0], boundaries]).astype(int)
    ends = np.concatenate([boundaries, [len(neuron_column)]]).astype(int)

    def write(tmp: str) -> None:
        with pq.ParquetWriter(tmp, fmt.EXAMPLE_SCHEMA, compression="zstd", write_statistics=True) as out:
            for start, end in zip(starts, ends, strict=True):
                out.write_table(table.slice(start, end - start), row_group_size=end - start)

    _atomic_write(path, write)


def write_text(path: Path, text: str) -> None:
    def write(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")

    _atomic_write(path, write)


def write_layer(
    out_dir: Path,
    layer: int,
    neurons: LayerNeurons,
    examples: LayerExamples,
    vocab: Sequence[str] | pa.StringArray,
    window: int,
) -> None:
    examples_per_neuron = max(1, len(examples.neuron) // max(1, len(neurons.max)))
    vocab = token_table(vocab)
    write_parquet(neurons_table(layer, neurons, examples, vocab), out_dir / fmt.neurons_path(layer))
    write_examples_parquet(
        examples_table(examples, vocab),
        out_dir / fmt.examples_path(layer),
        fmt.neurons_per_row_group(examples_per_neuron, window),
    )


def explanations_table(rows: Sequence[dict]) -> pa.Table:
    """One row per (neuron, explainer, prompt_version), the last given winning, sorted by that key."""
    latest = {(row["neuron"], row["explainer"], row["prompt_version"]): row for row in rows}
    return pa.Table.from_pylist([latest[key] for key in sorted(latest)], schema=fmt.EXPLANATION_SCHEMA)


def write_explanations(out_dir: Path, layer: int, rows: Sequence[dict]) -> None:
    """Replace a layer's explanations file with these rows (the caller passes the old rows it keeps)."""
    write_parquet(explanations_table(rows), out_dir / fmt.explanations_path(layer))


def finish_dataset(out_dir: Path, manifest: Manifest) -> None:
    """Card, then manifest last: the manifest's presence marks a complete dataset. A manifest that could not
    describe real files is refused before anything is written."""
    problems = manifest.problems()
    if problems:
        raise ManifestError(problems)
    write_text(out_dir / fmt.CARD_FILE, render_card(manifest))
    write_text(out_dir / fmt.MANIFEST_FILE, json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n")
