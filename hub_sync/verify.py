"""Check a dataset folder or Hub repo against format v1 and list everything that is wrong.

Publishing refuses a dataset with problems and readers trust what passes, so every rule a reader
relies on (schemas, sort order, whole neurons per row group, footer statistics) is checked here.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from hub_sync import format as fmt
from hub_sync.manifest import EXPLANATIONS, Manifest
from hub_sync.reader import (
    PARQUET_ERRORS,
    DatasetError,
    DatasetFiles,
    load_manifest,
    locate_dataset,
    schema_differences,
    unreadable_parquet,
)

_SHOWN = 8


def _listing(values) -> str:
    """A short list for a message: the first few values and how many more."""
    values = list(values)
    shown = ", ".join(str(value) for value in values[:_SHOWN])
    return shown if len(values) <= _SHOWN else f"{shown} and {len(values) - _SHOWN} more"


def _front_matter(card: str) -> dict | None:
    if not card.startswith("---"):
        return None
    end = card.find("\n---", 3)
    if end < 0:
        return None
    try:
        parsed = yaml.safe_load(card[3:end])
    except yaml.YAMLError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _config_paths(config: dict) -> list[str]:
    paths: list[str] = []
    data_files = config.get("data_files")
    for entry in data_files if isinstance(data_files, list) else [data_files]:
        path = entry.get("path") if isinstance(entry, dict) else entry
        paths += path if isinstance(path, list) else [path]
    return [path for path in paths if isinstance(path, str)]


def card_problems(files: DatasetFiles, layers: list[int], explained: bool = False) -> list[str]:
    """The card must declare `neurons`, one `layer_N` config per layer and, if `explained`, `explanations`."""
    name = files.describe(fmt.CARD_FILE)
    try:
        card = files.read_bytes(fmt.CARD_FILE).decode("utf-8", errors="replace")
    except DatasetError as error:
        return [str(error)]
    metadata = _front_matter(card)
    if metadata is None or not isinstance(metadata.get("configs"), list):
        return [f"{name}: no YAML front matter with a `configs` list"]
    configs = {
        config.get("config_name"): _config_paths(config) for config in metadata["configs"] if isinstance(config, dict)
    }
    problems = []
    if not any(path.startswith(fmt.NEURONS_DIR) for path in configs.get("neurons", [])):
        problems.append(f"{name}: no `neurons` config reading {fmt.NEURONS_DIR}/")
    for layer in layers:
        config_name = fmt.layer_config_name(layer)
        if fmt.examples_path(layer) not in configs.get(config_name, []):
            problems.append(f"{name}: no `{config_name}` config reading {fmt.examples_path(layer)}")
    expected = {"neurons"} | {fmt.layer_config_name(layer) for layer in layers}
    if explained:
        expected.add(fmt.EXPLANATIONS_CONFIG)
        if not any(path.startswith(fmt.EXPLANATIONS_DIR) for path in configs.get(fmt.EXPLANATIONS_CONFIG, [])):
            problems.append(f"{name}: no `{fmt.EXPLANATIONS_CONFIG}` config reading {fmt.EXPLANATIONS_DIR}/")
    extra = sorted(str(config_name) for config_name in configs if config_name not in expected)
    if extra:
        problems.append(f"{name}: configs {_listing(extra)} are not layers of the manifest")
    return problems


def layer_file_problems(
    files: DatasetFiles, layers: list[int], present: dict[str, set[str]], listed_by: str = "harvest.layers"
) -> list[str]:
    """Every manifest layer has both files; no other file sits where the card's configs would read it.

    `present` maps each data folder to the file names it holds.
    """
    expected = {fmt.layer_file_name(layer): layer for layer in layers}
    problems = []
    for folder, names in present.items():
        for file_name, layer in expected.items():
            if file_name not in names:
                problems.append(
                    f"{files.describe(f'{folder}/{file_name}')}: missing "
                    f"(the manifest's {listed_by} lists layer {layer})"
                )
        for file_name in sorted(names - set(expected)):
            problems.append(f"{files.describe(f'{folder}/{file_name}')}: unexpected file, not a layer of the manifest")
    return problems


def _open_parquet(
    files: DatasetFiles, relative: str, schema: pa.Schema, manifest: Manifest
) -> tuple[pq.ParquetFile, list[str]]:
    """The file, and how its schema differs from the format's (content checks need a matching schema)."""
    data = files.read_bytes(relative)
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
    except PARQUET_ERRORS as error:
        raise unreadable_parquet(files.describe(relative), error) from None
    differences = schema_differences(parquet.schema_arrow, schema, manifest.adds_to_format)
    return parquet, [f"{files.describe(relative)}: schema differs from format v1: {d}" for d in differences]


def _outside_problems(name: str, neurons: np.ndarray, d_mlp: int) -> list[str]:
    outside = np.unique(neurons[(neurons < 0) | (neurons >= d_mlp)])
    return [f"{name}: neurons {_listing(outside)} are outside 0..{d_mlp - 1}"] if len(outside) else []


def _read(
    parquet: pq.ParquetFile, name: str, columns: list[str] | None = None, row_group: int | None = None
) -> pa.Table:
    try:
        if row_group is None:
            return parquet.read(columns=columns)
        return parquet.read_row_group(row_group, columns=columns)
    except PARQUET_ERRORS as error:
        raise DatasetError(f"{name}: data is unreadable (truncated or corrupt): {error}") from None


def neuron_file_problems(files: DatasetFiles, layer: int, manifest: Manifest) -> list[str]:
    """One row per neuron 0..d_mlp-1 in order, all of this layer, histograms of the manifest's bins."""
    d_mlp = manifest.model.d_mlp
    n_bins = len(manifest.harvest.histogram_edges) + 1
    relative = fmt.neurons_path(layer)
    name = files.describe(relative)
    parquet, schema_problems = _open_parquet(files, relative, fmt.NEURON_SCHEMA, manifest)
    if schema_problems:
        return schema_problems
    table = _read(parquet, name, ["layer", "neuron", "histogram"])
    neurons = table.column("neuron").to_numpy()
    problems = []
    values, counts = np.unique(neurons, return_counts=True)
    missing = np.setdiff1d(np.arange(d_mlp), values)
    if len(missing):
        problems.append(f"{name}: neurons {_listing(missing)} have no row")
    if np.any(counts > 1):
        problems.append(f"{name}: neurons {_listing(values[counts > 1])} have more than one row")
    problems += _outside_problems(name, values, d_mlp)
    if not problems and not np.array_equal(neurons, np.arange(d_mlp)):
        problems.append(f"{name}: rows are not in neuron order")
    wrong_layer = np.unique(table.column("layer").to_numpy()[table.column("layer").to_numpy() != layer])
    if len(wrong_layer):
        problems.append(f"{name}: column 'layer' holds {_listing(wrong_layer)}, expected {layer} only")
    bins = pc.list_value_length(table.column("histogram")).to_numpy()
    if np.any(bins != n_bins):
        problems.append(f"{name}: histograms of neurons {_listing(neurons[bins != n_bins])} do not have {n_bins} bins")
    return problems


def _sort_problems(name: str, neurons: np.ndarray, kinds: np.ndarray, ranks: np.ndarray) -> list[str]:
    """Rows must strictly increase in (neuron, kind, rank)."""
    bad = np.flatnonzero(np.diff(fmt.example_order_keys(neurons, kinds, ranks)) <= 0)
    if not len(bad):
        return []
    row = int(bad[0]) + 1
    where = f"row {row} (neuron {neurons[row]}, {fmt.EXAMPLE_KINDS[kinds[row]]}, rank {ranks[row]})"
    before = f"row {row - 1} (neuron {neurons[row - 1]}, {fmt.EXAMPLE_KINDS[kinds[row - 1]]}, rank {ranks[row - 1]})"
    return [f"{name}: rows are not sorted by (neuron, kind, rank): {where} follows {before} ({len(bad)} such rows)"]


def _rank_problems(name: str, neurons: np.ndarray, kinds: np.ndarray, ranks: np.ndarray) -> list[str]:
    """Within each (neuron, kind) the ranks are exactly 0..n-1."""
    order = np.argsort(fmt.example_order_keys(neurons, kinds, ranks), kind="stable")
    group_neuron, group_kind, sorted_ranks = neurons[order], kinds[order], ranks[order]
    starts = np.flatnonzero(np.r_[True, (np.diff(group_neuron) != 0) | (np.diff(group_kind) != 0)])
    position = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    bad = np.unique(group_neuron[sorted_ranks != position])
    return [f"{name}: ranks of neurons {_listing(bad)} are not 0..n-1 within each kind"] if len(bad) else []


def _count_problems(name: str, counts: np.ndarray, manifest: Manifest) -> list[str]:
    """Per kind at most k rows; exactly k for top and bottom when the corpus has at least k windows."""
    windows = manifest.corpus.windows
    problems = []
    missing = np.flatnonzero(counts.sum(axis=1) == 0)
    if len(missing):
        problems.append(f"{name}: neurons {_listing(missing)} have no examples")
    for code, kind in enumerate(fmt.EXAMPLE_KINDS):
        k = manifest.harvest.k_of(kind)
        too_many = np.flatnonzero(counts[:, code] > k)
        if len(too_many):
            problems.append(f"{name}: neurons {_listing(too_many)} have more than {kind}_k={k} {kind} rows")
        if kind != "random" and k > 0 and windows >= k:
            too_few = np.setdiff1d(np.flatnonzero(counts[:, code] < k), missing)
            if len(too_few):
                problems.append(f"{name}: neurons {_listing(too_few)} have fewer than {kind}_k={k} {kind} rows")
    return problems


def _row_group_problems(name: str, parquet: pq.ParquetFile, neurons: np.ndarray) -> list[str]:
    """Each row group has neuron statistics and holds whole neurons."""
    metadata = parquet.metadata
    column = parquet.schema_arrow.get_field_index("neuron")
    problems = []
    starts = np.cumsum([0] + [metadata.row_group(group).num_rows for group in range(metadata.num_row_groups)])
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(column).statistics
        if stats is None or not stats.has_min_max:
            problems.append(
                f"{name}: row group {group} has no min/max statistics for 'neuron' (readers locate neurons by them)"
            )
        start = starts[group]
        if 0 < start < len(neurons) and neurons[start] == neurons[start - 1]:
            problems.append(f"{name}: neuron {neurons[start]} is split across row groups {group - 1} and {group}")
    return problems


def _window_problems(name: str, parquet: pq.ParquetFile, window: int) -> list[str]:
    """token_ids, tokens and activations hold one value per position of the window, row group by row group."""
    bad_neurons: dict[str, set[int]] = {}
    for group in range(parquet.metadata.num_row_groups):
        rows = _read(parquet, name, ["neuron", "token_ids", "tokens", "activations"], group)
        neurons = rows.column("neuron").to_numpy()
        for column in ("token_ids", "tokens", "activations"):
            lengths = pc.list_value_length(rows.column(column)).to_numpy()
            bad_neurons.setdefault(column, set()).update(np.unique(neurons[lengths != window]).tolist())
    return [
        f"{name}: column {column!r} of neurons {_listing(sorted(bad))} does not hold window={window} values"
        for column, bad in bad_neurons.items()
        if bad
    ]


def example_file_problems(files: DatasetFiles, layer: int, manifest: Manifest) -> list[str]:
    relative = fmt.examples_path(layer)
    name = files.describe(relative)
    parquet, schema_problems = _open_parquet(files, relative, fmt.EXAMPLE_SCHEMA, manifest)
    if schema_problems:
        return schema_problems
    d_mlp = manifest.model.d_mlp
    table = _read(parquet, name, ["neuron", "kind", "rank"])
    neurons = table.column("neuron").to_numpy().astype(np.int64)
    kinds = fmt.kind_codes(table.column("kind"))
    ranks = table.column("rank").to_numpy().astype(np.int64)
    problems = []
    unknown = np.unique(table.column("kind").to_numpy(zero_copy_only=False)[kinds < 0])
    if len(unknown):
        problems.append(f"{name}: unknown kinds {_listing(unknown)} (expected {', '.join(fmt.EXAMPLE_KINDS)})")
    problems += _outside_problems(name, neurons, d_mlp)
    if problems:
        return problems
    counts = np.zeros((d_mlp, len(fmt.EXAMPLE_KINDS)), dtype=np.int64)
    np.add.at(counts, (neurons, kinds), 1)
    return (
        _sort_problems(name, neurons, kinds, ranks)
        + _rank_problems(name, neurons, kinds, ranks)
        + _count_problems(name, counts, manifest)
        + _row_group_problems(name, parquet, neurons)
        + _window_problems(name, parquet, manifest.harvest.window)
    )


def _explanation_key_problems(name: str, table: pa.Table, layer: int, d_mlp: int) -> list[str]:
    """All rows of this layer, neurons in range, one row per (neuron, explainer, prompt_version), sorted by it."""
    neurons = table.column("neuron").to_numpy().astype(np.int64)
    problems = _outside_problems(name, neurons, d_mlp)
    wrong_layer = np.unique(table.column("layer").to_numpy()[table.column("layer").to_numpy() != layer])
    if len(wrong_layer):
        problems.append(f"{name}: column 'layer' holds {_listing(wrong_layer)}, expected {layer} only")
    columns = (table.column("explainer").to_pylist(), table.column("prompt_version").to_pylist())
    keys = list(zip(neurons.tolist(), *columns, strict=True))
    if any(later <= earlier for earlier, later in pairwise(keys)):
        problems.append(f"{name}: rows are not sorted by (neuron, explainer, prompt_version), one row each")
    return problems


def _score_problems(name: str, table: pa.Table) -> list[str]:
    """Each score within its range, with n > 0 where it is given and n >= 0 always."""
    neurons = table.column("neuron").to_numpy()
    problems = []
    for score, (low, high) in fmt.SCORE_RANGES.items():
        values = table.column(score).to_numpy(zero_copy_only=False).astype(np.float64)
        counts = table.column(f"{score}_n").to_numpy()
        given = ~np.isnan(values)
        outside = given & ((values < low - 1e-6) | (values > high + 1e-6))
        if outside.any():
            problems.append(f"{name}: {score} of neurons {_listing(neurons[outside])} is outside {low}..{high}")
        uncounted = (given & (counts <= 0)) | (counts < 0)
        if uncounted.any():
            problems.append(f"{name}: {score}_n of neurons {_listing(neurons[uncounted])} is not a count for its score")
    return problems


def explanation_file_problems(files: DatasetFiles, layer: int, manifest: Manifest) -> list[str]:
    """Format 1.1 explanations: keys, score ranges, and an explanation or a refusal reason in every row."""
    relative = fmt.explanations_path(layer)
    name = files.describe(relative)
    parquet, schema_problems = _open_parquet(files, relative, fmt.EXPLANATION_SCHEMA, manifest)
    if schema_problems:
        return schema_problems
    table = _read(parquet, name)
    problems = _explanation_key_problems(name, table, layer, manifest.model.d_mlp) + _score_problems(name, table)
    explained = pc.is_valid(table.column("explanation")).to_numpy(zero_copy_only=False)
    refused = pc.is_valid(table.column("refusal")).to_numpy(zero_copy_only=False)
    both_or_neither = explained == refused
    if both_or_neither.any():
        neurons = table.column("neuron").to_numpy()[both_or_neither]
        problems.append(f"{name}: rows of neurons {_listing(neurons)} need exactly one of explanation and refusal")
    return problems


def _problems_or_error(check, *args) -> list[str]:
    """A check's problems, or the one problem that stopped it (an unreadable file)."""
    try:
        return check(*args)
    except DatasetError as error:
        return [str(error)]


def verify_dataset(source: str, endpoint: str | None = None, token: str | None = None) -> list[str]:
    """Every problem found, each naming the file and what is wrong; [] for a valid dataset."""
    checks = {fmt.NEURONS_DIR: neuron_file_problems, fmt.EXAMPLES_DIR: example_file_problems}
    try:
        files = locate_dataset(source, endpoint=endpoint, token=token)
        manifest = load_manifest(files)
        present = {folder: set(files.list_names(folder)) for folder in checks}
    except DatasetError as error:
        return [str(error)]
    layers = sorted(manifest.harvest.layers)
    explained = manifest.explanation_layers
    problems = card_problems(files, layers, bool(explained)) + layer_file_problems(files, layers, present)
    for layer in layers:
        for folder, check in checks.items():
            if fmt.layer_file_name(layer) in present[folder]:
                problems += _problems_or_error(check, files, layer, manifest)
    return problems + _explanations_problems(files, explained, manifest)


def _explanations_problems(files: DatasetFiles, explained: list[int], manifest: Manifest) -> list[str]:
    """Format 1.1: one explanations file per layer the manifest's `explanations.layers` lists, each valid."""
    try:
        present = set(files.list_names(fmt.EXPLANATIONS_DIR))
    except DatasetError as error:
        return [str(error)]
    listed_by = f"{EXPLANATIONS}.layers"
    problems = layer_file_problems(files, explained, {fmt.EXPLANATIONS_DIR: present}, listed_by)
    for layer in explained:
        if fmt.layer_file_name(layer) in present:
            problems += _problems_or_error(explanation_file_problems, files, layer, manifest)
    return problems
