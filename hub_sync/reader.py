"""Lazy reading of a Neuroscope dataset from a local folder or a Hub repo pinned at one commit.

A neuron page costs one ranged read of one row group: each examples file's footer is read once and
kept, its `neuron` statistics locate the row group, and pyarrow's pre-buffering coalesces that row
group's column chunks into a single read of an fsspec file that has no read-ahead cache.
"""

from __future__ import annotations

import json
import operator
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, Generic, TypeVar

import fsspec
import httpx2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from huggingface_hub import HfApi, HfFileSystem

from hub_sync import format as fmt

HUB_PREFIX = "hf://datasets/"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_HUB_ERRORS = (OSError, ValueError, httpx2.HTTPError)
PARQUET_ERRORS = (OSError, pa.ArrowException)

REQUIRED_MANIFEST_KEYS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "model": {"name": str, "n_layers": int, "d_mlp": int},
    "corpus": {"windows": int},
    "harvest": {
        "window": int,
        "top_k": int,
        "random_k": int,
        "bottom_k": int,
        "layers": list,
        "histogram_edges": list,
    },
}


class DatasetError(ValueError):
    """A dataset that cannot be read, or a request it cannot answer; the message names the file."""


@dataclass(frozen=True)
class DatasetFiles:
    """Where a dataset's files live: one fsspec filesystem and a root path (pinned for the Hub)."""

    fs: fsspec.AbstractFileSystem
    root: str
    label: str  # how messages name the dataset: the folder, or org/name@sha
    revision: str | None

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def describe(self, relative: str) -> str:
        return f"{relative} (in {self.label})"

    def open(self, relative: str) -> BinaryIO:
        """A file handle without read-ahead, so each read is one ranged request of exactly its bytes."""
        try:
            return self.fs.open(self.path(relative), "rb", cache_type="none")
        except FileNotFoundError:
            raise DatasetError(f"{self.describe(relative)}: file is missing") from None
        except _HUB_ERRORS as error:
            raise DatasetError(f"{self.describe(relative)}: cannot open ({error})") from None

    def read_bytes(self, relative: str) -> bytes:
        try:
            return self.fs.cat_file(self.path(relative))
        except FileNotFoundError:
            raise DatasetError(f"{self.describe(relative)}: file is missing") from None
        except _HUB_ERRORS as error:
            raise DatasetError(f"{self.describe(relative)}: cannot read ({error})") from None

    def list_names(self, relative_dir: str) -> list[str]:
        """File names directly under a folder of the dataset; [] when the folder does not exist."""
        try:
            entries = self.fs.ls(self.path(relative_dir), detail=False)
        except FileNotFoundError:
            return []
        except _HUB_ERRORS as error:
            raise DatasetError(f"{self.describe(relative_dir)}: cannot list ({error})") from None
        return sorted(str(entry).rstrip("/").rsplit("/", 1)[-1] for entry in entries)


def parse_hub_source(source: str) -> tuple[str, str | None] | None:
    """(repo_id, revision) for "org/name[@rev]" or "hf://datasets/org/name[@rev]"; None otherwise."""
    text = source.removeprefix(HUB_PREFIX)
    repo_id, _, revision = text.partition("@")
    if not _REPO_ID.match(repo_id):
        return None
    return repo_id, revision or None


def locate_dataset(source: str | os.PathLike, endpoint: str | None = None, token: str | None = None) -> DatasetFiles:
    """An existing local folder wins; otherwise a Hub id whose revision is resolved to its commit sha now."""
    text = os.fspath(source)
    if os.path.isdir(text):
        root = os.path.abspath(text)
        return DatasetFiles(fsspec.filesystem("file"), root, root, None)
    hub = parse_hub_source(text)
    if hub is None:
        raise DatasetError(
            f"{text!r} is neither a local folder nor a Hub dataset id (org/name, org/name@revision, "
            f"hf://datasets/org/name@revision)"
        )
    repo_id, revision = hub
    try:
        sha = HfApi(endpoint=endpoint, token=token).dataset_info(repo_id, revision=revision).sha
    except _HUB_ERRORS as error:
        raise DatasetError(f"cannot open Hub dataset {text!r}: {error}") from None
    if not sha:
        raise DatasetError(f"Hub dataset {text!r}: the Hub did not report a commit sha for it")
    fs = HfFileSystem(endpoint=endpoint, token=token)
    return DatasetFiles(fs, f"datasets/{repo_id}@{sha}", f"{repo_id}@{sha}", sha)


def _format_version(version: Any) -> tuple[int, int] | None:
    match = re.fullmatch(r"(\d+)\.(\d+)", version) if isinstance(version, str) else None
    return (int(match.group(1)), int(match.group(2))) if match else None


def is_newer_minor_version(manifest: dict) -> bool:
    """A newer minor version of the known major only adds: extra columns are expected, not errors."""
    version = _format_version(manifest.get("format_version"))
    return version is not None and version > _format_version(fmt.NEWEST_FORMAT_VERSION)


def manifest_problems(manifest: Any) -> list[str]:
    """What makes a parsed manifest unusable: unknown major version, missing or mistyped keys."""
    if not isinstance(manifest, dict):
        return ["is not a JSON object"]
    version = manifest.get("format_version")
    parsed = _format_version(version)
    if parsed is None:
        return [f"format_version {version!r} is not MAJOR.MINOR"]
    major = parsed[0]
    if major != fmt.FORMAT_MAJOR:
        return [
            f"format_version {version} has major version {major}; this reader knows major version "
            f"{fmt.FORMAT_MAJOR} only (upgrade neuroscope-hub to read it)"
        ]
    problems = []
    for section, keys in REQUIRED_MANIFEST_KEYS.items():
        part = manifest.get(section)
        if not isinstance(part, dict):
            problems.append(f"section {section!r} is missing")
            continue
        for key, expected in keys.items():
            value = part.get(key)
            if not isinstance(value, expected) or isinstance(value, bool):
                problems.append(f"{section}.{key} is missing or not a {getattr(expected, '__name__', expected)}")
    if problems:
        return problems
    layers = manifest["harvest"]["layers"]
    if not all(isinstance(layer, int) and 0 <= layer < manifest["model"]["n_layers"] for layer in layers):
        problems.append(f"harvest.layers {layers} must be layer numbers in 0..model.n_layers-1")
    if len(set(layers)) != len(layers):
        problems.append(f"harvest.layers {layers} repeats a layer")
    if manifest["model"]["d_mlp"] <= 0:
        problems.append(f"model.d_mlp {manifest['model']['d_mlp']} must be positive")
    return problems + explanation_manifest_problems(manifest)


def explanation_manifest_problems(manifest: dict) -> list[str]:
    """Format 1.1's optional `explanations` section: layers of the harvest, and a list of runs."""
    section = manifest.get(fmt.EXPLANATIONS_MANIFEST_KEY)
    if section is None:
        return []
    key = fmt.EXPLANATIONS_MANIFEST_KEY
    if _format_version(manifest["format_version"]) < _format_version(fmt.EXPLANATIONS_FORMAT_VERSION):
        return [f"section {key!r} needs format_version {fmt.EXPLANATIONS_FORMAT_VERSION} or later"]
    if not isinstance(section, dict) or not isinstance(section.get("layers"), list) or not isinstance(
        section.get("runs"), list
    ):
        return [f"section {key!r} must hold a list of `layers` and a list of `runs`"]
    stray = [layer for layer in section["layers"] if layer not in manifest["harvest"]["layers"]]
    return [f"{key}.layers {stray} are not layers of harvest.layers"] if stray else []


def load_manifest(files: DatasetFiles) -> dict:
    """The parsed manifest, or DatasetError naming what is wrong with it."""
    name = files.describe(fmt.MANIFEST_FILE)
    raw = files.read_bytes(fmt.MANIFEST_FILE)
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{name}: not valid JSON ({error})") from None
    problems = manifest_problems(manifest)
    if problems:
        raise DatasetError(f"{name}: " + "; ".join(problems))
    return manifest


def unreadable_parquet(name: str, error: Exception) -> DatasetError:
    return DatasetError(f"{name}: not a readable Parquet file (truncated or corrupt): {error}")


def schema_differences(actual: pa.Schema, expected: pa.Schema, extra_columns_allowed: bool = False) -> list[str]:
    """Column names and types that differ from the format's schema (top-level nullability aside)."""
    actual_types = {field.name: field.type for field in actual}
    expected_types = {field.name: field.type for field in expected}
    differences = [f"column {name!r} is missing" for name in expected_types if name not in actual_types]
    if not extra_columns_allowed:
        differences += [f"unexpected column {name!r}" for name in actual_types if name not in expected_types]
    differences += [
        f"column {name!r} is {actual_types[name]}, expected {kind}"
        for name, kind in expected_types.items()
        if name in actual_types and actual_types[name] != kind
    ]
    known_order = [name for name in actual.names if name in expected_types]
    if not differences and known_order != expected.names:
        differences.append(f"columns are in order {known_order}, expected {expected.names}")
    return differences


def _kind_then_rank_order(table: pa.Table) -> pa.Table:
    kind_codes = pc.index_in(table.column("kind"), value_set=pa.array(fmt.EXAMPLE_KINDS))
    order = np.lexsort((table.column("rank").to_numpy(), kind_codes.to_numpy(zero_copy_only=False)))
    return table.take(pa.array(order))


class ExamplesFile:
    """One layer's examples file, opened once: its footer, the neuron range of each row group, a lock."""

    def __init__(self, files: DatasetFiles, relative: str):
        self.name = files.describe(relative)
        self._handle = files.open(relative)
        self._lock = threading.Lock()
        try:
            self._parquet = pq.ParquetFile(self._handle, pre_buffer=True)
        except PARQUET_ERRORS as error:
            raise unreadable_parquet(self.name, error) from None
        differences = schema_differences(self._parquet.schema_arrow, fmt.EXAMPLE_SCHEMA, extra_columns_allowed=True)
        if differences:
            raise DatasetError(f"{self.name}: not format v1 examples: " + "; ".join(differences))
        self._first_neuron, self._last_neuron = self._neuron_ranges()

    def _neuron_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        metadata = self._parquet.metadata
        column = self._parquet.schema_arrow.get_field_index("neuron")
        firsts, lasts = [], []
        for group in range(metadata.num_row_groups):
            stats = metadata.row_group(group).column(column).statistics
            if stats is None or not stats.has_min_max:
                raise DatasetError(f"{self.name}: row group {group} has no min/max statistics for 'neuron'")
            firsts.append(stats.min)
            lasts.append(stats.max)
        return np.array(firsts, dtype=np.int64), np.array(lasts, dtype=np.int64)

    def row_groups_of(self, neuron: int) -> list[int]:
        """Row groups whose neuron range holds `neuron`: exactly one in a valid file (whole neurons, sorted)."""
        return np.flatnonzero((self._first_neuron <= neuron) & (neuron <= self._last_neuron)).tolist()

    def examples(self, neuron: int) -> pa.Table:
        groups = self.row_groups_of(neuron)
        if not groups:
            return fmt.EXAMPLE_SCHEMA.empty_table()
        try:
            with self._lock:
                rows = self._parquet.read_row_groups(groups)
        except PARQUET_ERRORS as error:
            raise DatasetError(f"{self.name}: row groups {groups} are unreadable (corrupt): {error}") from None
        return _kind_then_rank_order(rows.filter(pc.equal(rows.column("neuron"), neuron)))


def read_whole_table(files: DatasetFiles, relative: str, schema: pa.Schema, what: str) -> pa.Table:
    """A whole small file (one row per neuron at most), read in one request and checked against its schema."""
    name = files.describe(relative)
    data = files.read_bytes(relative)
    try:
        table = pq.read_table(pa.BufferReader(data))
    except PARQUET_ERRORS as error:
        raise unreadable_parquet(name, error) from None
    differences = schema_differences(table.schema, schema, extra_columns_allowed=True)
    if differences:
        raise DatasetError(f"{name}: not format v1 {what}: " + "; ".join(differences))
    return table


def read_neuron_table(files: DatasetFiles, relative: str) -> pa.Table:
    return read_whole_table(files, relative, fmt.NEURON_SCHEMA, "neuron statistics")


K = TypeVar("K")
V = TypeVar("V")


class _OnceCache(Generic[K, V]):
    """Build each key's value once, even when many threads ask for it at the same time."""

    def __init__(self, make: Callable[[K], V]):
        self._make = make
        self._values: dict[K, V] = {}
        self._key_locks: dict[K, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: K) -> V:
        with self._lock:
            if key in self._values:
                return self._values[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            if key not in self._values:
                value = self._make(key)
                with self._lock:
                    self._values[key] = value
            return self._values[key]


class NeuronDataset:
    """One model's dataset, opened at a fixed revision; layer files are opened on first use."""

    def __init__(self, source: str, files: DatasetFiles, manifest: dict):
        self.source = source
        self.files = files
        self.revision = files.revision
        self.manifest = manifest
        self.name: str = manifest["model"]["name"]
        self.layers: list[int] = sorted(manifest["harvest"]["layers"])
        self.d_mlp: int = manifest["model"]["d_mlp"]
        self.histogram_edges: list[float] = [float(edge) for edge in manifest["harvest"]["histogram_edges"]]
        self._neuron_tables = _OnceCache(lambda layer: read_neuron_table(files, fmt.neurons_path(layer)))
        self._examples_files = _OnceCache(lambda layer: ExamplesFile(files, fmt.examples_path(layer)))
        self.explanation_layers: list[int] = fmt.explanation_layers(manifest)
        self._explanation_tables = _OnceCache(
            lambda layer: read_whole_table(files, fmt.explanations_path(layer), fmt.EXPLANATION_SCHEMA, "explanations")
        )

    def __repr__(self) -> str:
        return f"NeuronDataset({self.name!r}, source={self.source!r}, revision={self.revision!r})"

    def _check_layer(self, layer: Any) -> int:
        try:
            number = operator.index(layer)
        except TypeError:
            raise DatasetError(f"layer must be an integer, got {layer!r}") from None
        if number not in self.layers:
            raise DatasetError(f"layer {number} is not in dataset {self.name!r} (its layers: {self.layers})")
        return number

    def _check_neuron(self, neuron: Any) -> int:
        try:
            number = operator.index(neuron)
        except TypeError:
            raise DatasetError(f"neuron must be an integer, got {neuron!r}") from None
        if not 0 <= number < self.d_mlp:
            raise DatasetError(f"neuron {number} is out of range: {self.name!r} has neurons 0..{self.d_mlp - 1}")
        return number

    def neurons(self, layer: int) -> pa.Table:
        """That layer's per-neuron statistics, one row per neuron."""
        return self._neuron_tables.get(self._check_layer(layer))

    def examples(self, layer: int, neuron: int) -> pa.Table:
        """That neuron's examples, sorted by kind (top, random, bottom) then rank: one ranged read."""
        layer_number = self._check_layer(layer)
        neuron_number = self._check_neuron(neuron)
        return self._examples_files.get(layer_number).examples(neuron_number)

    def explanations(self, layer: int) -> pa.Table:
        """That layer's explanations (format 1.1), one row per (neuron, explainer, prompt_version); empty if none."""
        layer_number = self._check_layer(layer)
        if layer_number not in self.explanation_layers:
            return fmt.EXPLANATION_SCHEMA.empty_table()
        return self._explanation_tables.get(layer_number)

    def neuron_explanations(self, layer: int, neuron: int) -> list[dict]:
        """One neuron's explanations as records (explanation, explainer, scores and their n, refusal, created)."""
        table = self.explanations(layer)
        neuron_number = self._check_neuron(neuron)
        return table.filter(pc.equal(table.column("neuron"), neuron_number)).to_pylist()


def open_dataset(source: str | os.PathLike, *, endpoint: str | None = None, token: str | None = None) -> NeuronDataset:
    """Open a local folder, "org/name", "org/name@revision" or "hf://datasets/org/name@revision"."""
    files = locate_dataset(source, endpoint=endpoint, token=token)
    return NeuronDataset(os.fspath(source), files, load_manifest(files))
