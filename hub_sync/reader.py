"""Lazy reading of a Neuroscope dataset from a local folder or a Hub repo pinned at one commit.

Opening checks the files against the manifest from their footers alone and keeps the examples footers. A
neuron page then costs one ranged read of one row group: the footer's `neuron` statistics locate the row
group, and pyarrow's pre-buffering coalesces its column chunks into a single read of an fsspec file that has
no read-ahead cache.
"""

from __future__ import annotations

import json
import operator
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
from hub_sync.manifest import Manifest, ManifestError
from hub_sync.records import Example, NeuronRecord, NeuronStats, examples_from_table

HUB_PREFIX = "hf://datasets/"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_HUB_ERRORS = (OSError, ValueError, httpx2.HTTPError)
PARQUET_ERRORS = (OSError, pa.ArrowException)


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


def load_manifest(files: DatasetFiles) -> Manifest:
    """The dataset's manifest, or DatasetError naming what is wrong with it."""
    name = files.describe(fmt.MANIFEST_FILE)
    raw = files.read_bytes(fmt.MANIFEST_FILE)
    try:
        return Manifest.from_json(json.loads(raw))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{name}: not valid JSON ({error})") from None
    except ManifestError as error:
        raise DatasetError(f"{name}: {error}") from None


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


def _in_row_order(table: pa.Table) -> pa.Table:
    """The rows by (neuron, kind, rank); a table already in that order (as the writer leaves it) is returned as it
    is: taking rows copies every token list and activation array."""
    keys = fmt.example_order_keys(
        table.column("neuron").to_numpy(), fmt.kind_codes(table.column("kind")), table.column("rank").to_numpy()
    )
    if np.all(keys[1:] >= keys[:-1]):
        return table
    return table.take(pa.array(np.argsort(keys, kind="stable")))


_PARQUET_MAGIC = b"PAR1"
_FOOTER_GUESS = 16 << 10


def read_footer(files: DatasetFiles, relative: str) -> pq.FileMetaData:
    """A Parquet file's footer alone, in one ranged read of the file's tail (two when the footer is larger than
    16 KB): pyarrow's own footer read would fetch the last 64 KB, which is the whole of a small neurons file."""
    name = files.describe(relative)
    handle = files.open(relative)
    try:
        size = handle.size
        tail_start = max(0, size - _FOOTER_GUESS)
        handle.seek(tail_start)
        tail = handle.read()
        length = int.from_bytes(tail[-8:-4], "little")
        if len(tail) < 12 or tail[-4:] != _PARQUET_MAGIC or length + 12 > size:
            raise unreadable_parquet(name, ValueError("no Parquet footer at the end of the file"))
        if length + 8 > len(tail):
            handle.seek(size - 8 - length)
            tail = handle.read(length + 8 - len(tail)) + tail
        return pq.read_metadata(pa.BufferReader(_PARQUET_MAGIC + tail[-(length + 8) :]))
    except DatasetError:
        raise
    except PARQUET_ERRORS as error:
        raise unreadable_parquet(name, error) from None
    except _HUB_ERRORS as error:
        raise DatasetError(f"{name}: cannot read ({error})") from None
    finally:
        handle.close()


def neuron_ranges(name: str, footer: pq.FileMetaData) -> tuple[np.ndarray, np.ndarray]:
    """The first and last neuron of each row group of an examples file, from its footer's statistics."""
    column = footer.schema.to_arrow_schema().get_field_index("neuron")
    firsts, lasts = [], []
    for group in range(footer.num_row_groups):
        stats = footer.row_group(group).column(column).statistics
        if stats is None or not stats.has_min_max:
            raise DatasetError(f"{name}: row group {group} has no min/max statistics for 'neuron'")
        firsts.append(stats.min)
        lasts.append(stats.max)
    return np.array(firsts, dtype=np.int64), np.array(lasts, dtype=np.int64)


def _check_schema(name: str, footer: pq.FileMetaData, schema: pa.Schema, what: str) -> None:
    differences = schema_differences(footer.schema.to_arrow_schema(), schema, extra_columns_allowed=True)
    if differences:
        raise DatasetError(f"{name}: not format v1 {what}: " + "; ".join(differences))


def check_neuron_rows(name: str, rows: int, manifest: Manifest) -> None:
    """A neurons file holds one row per neuron of the manifest's model."""
    if rows != manifest.model.d_mlp:
        raise DatasetError(
            f"{name}: holds {rows} neuron rows, but the manifest's model.d_mlp is {manifest.model.d_mlp}"
        )


def check_neurons_footer(name: str, footer: pq.FileMetaData, manifest: Manifest) -> None:
    _check_schema(name, footer, fmt.NEURON_SCHEMA, "neuron statistics")
    check_neuron_rows(name, footer.num_rows, manifest)


def check_examples_footer(name: str, footer: pq.FileMetaData, manifest: Manifest) -> None:
    """An examples file holds examples of the manifest's neurons only, located by footer statistics."""
    _check_schema(name, footer, fmt.EXAMPLE_SCHEMA, "examples")
    firsts, lasts = neuron_ranges(name, footer)
    d_mlp = manifest.model.d_mlp
    if len(firsts) and (firsts.min() < 0 or lasts.max() >= d_mlp):
        raise DatasetError(
            f"{name}: holds examples of neurons {firsts.min()}..{lasts.max()}, but the manifest's model.d_mlp "
            f"is {d_mlp} (neurons 0..{d_mlp - 1})"
        )


_SHOWN_PROBLEMS = 4
_FOOTER_READERS = 8


@dataclass(frozen=True)
class LayerFooters:
    """What opening a dataset read of its layer files: each layer's examples footer (None if it could not be read),
    and every layer file whose footer could not be read, hence not checked."""

    examples: dict[int, pq.FileMetaData | None]
    unreadable: list[str]


def read_layer_footers(files: DatasetFiles, manifest: Manifest) -> LayerFooters:
    """Every manifest layer's examples footer, after checking both of its files against the manifest.

    This is the cheap check that a source matches its data (listings and footers: a few small ranged reads per
    layer on the Hub, read concurrently), so a mismatch is refused when the source opens, naming the files, instead
    of failing page by page. A footer that cannot be read (a damaged file, a failed request) cannot be checked: its
    layer is left to say so on its own pages while the other layers serve. Damage inside row groups is
    found by `verify_dataset` or when a page reads it.
    """
    checks = {fmt.NEURONS_DIR: check_neurons_footer, fmt.EXAMPLES_DIR: check_examples_footer}
    present = {folder: set(files.list_names(folder)) for folder in checks}
    missing = [
        f"{files.describe(f'{folder}/{fmt.layer_file_name(layer)}')}: file is missing "
        f"(the manifest's harvest.layers lists layer {layer})"
        for layer in manifest.harvest.layers
        for folder in checks
        if fmt.layer_file_name(layer) not in present[folder]
    ]
    if missing:
        raise DatasetError(_summary(missing))

    def checked(job: tuple[int, str]) -> pq.FileMetaData | str | None:
        layer, folder = job
        relative = f"{folder}/{fmt.layer_file_name(layer)}"
        try:
            footer = read_footer(files, relative)
        except DatasetError:
            return None
        try:
            checks[folder](files.describe(relative), footer, manifest)
        except DatasetError as error:
            return str(error)
        except PARQUET_ERRORS as error:  # a footer that parses but describes no readable schema
            return str(unreadable_parquet(files.describe(relative), error))
        return footer

    jobs = [(layer, folder) for layer in manifest.harvest.layers for folder in checks]
    with ThreadPoolExecutor(max_workers=min(_FOOTER_READERS, len(jobs))) as pool:
        results = dict(zip(jobs, pool.map(checked, jobs), strict=True))
    problems = [result for result in results.values() if isinstance(result, str)]
    if problems:
        raise DatasetError(_summary(problems))
    return LayerFooters(
        examples={layer: results[(layer, fmt.EXAMPLES_DIR)] for layer in manifest.harvest.layers},
        unreadable=[f"{folder}/{fmt.layer_file_name(layer)}" for (layer, folder), result in results.items()
                    if result is None],
    )


def _summary(problems: list[str]) -> str:
    shown = "; ".join(problems[:_SHOWN_PROBLEMS])
    more = len(problems) - _SHOWN_PROBLEMS
    return shown if more <= 0 else f"{shown}; and {more} more such problems"


class ExamplesFile:
    """One layer's examples file: its footer (checked when the dataset opened), each row group's neurons, a lock."""

    def __init__(self, files: DatasetFiles, relative: str, footer: pq.FileMetaData):
        self.name = files.describe(relative)
        self._first_neuron, self._last_neuron = neuron_ranges(self.name, footer)
        self._handle = files.open(relative)
        self._lock = threading.Lock()
        try:
            self._parquet = pq.ParquetFile(self._handle, metadata=footer, pre_buffer=True)
        except PARQUET_ERRORS as error:
            raise unreadable_parquet(self.name, error) from None

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
        return _in_row_order(rows.filter(pc.equal(rows.column("neuron"), neuron)))


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

    def __init__(self, source: str, files: DatasetFiles, manifest: Manifest, footers: LayerFooters):
        self.source = source
        self.files = files
        self.revision = files.revision
        self.manifest = manifest
        self.name: str = manifest.model.display_name
        self.layers: list[int] = sorted(manifest.harvest.layers)
        self.d_mlp: int = manifest.model.d_mlp
        self.histogram_edges: list[float] = manifest.harvest.histogram_edges
        self.unreadable_files: list[str] = footers.unreadable  # footers unreadable at open: their pages say why
        self._footers = footers.examples
        self._neuron_tables = _OnceCache(self._read_neurons)
        self._examples_files = _OnceCache(self._open_examples)
        self.explanation_layers: list[int] = manifest.explanation_layers
        self._explanation_tables = _OnceCache(
            lambda layer: read_whole_table(files, fmt.explanations_path(layer), fmt.EXPLANATION_SCHEMA, "explanations")
        )

    def __repr__(self) -> str:
        return f"NeuronDataset({self.name!r}, source={self.source!r}, revision={self.revision!r})"

    def _read_neurons(self, layer: int) -> pa.Table:
        relative = fmt.neurons_path(layer)
        table = read_neuron_table(self.files, relative)
        check_neuron_rows(self.files.describe(relative), table.num_rows, self.manifest)
        return table

    def _open_examples(self, layer: int) -> ExamplesFile:
        relative = fmt.examples_path(layer)
        footer = self._footers[layer]
        if footer is None:  # unreadable when the dataset opened: read it again, so the page names the damage
            footer = read_footer(self.files, relative)
            check_examples_footer(self.files.describe(relative), footer, self.manifest)
        return ExamplesFile(self.files, relative, footer)

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

    def neuron_stats(self, layer: int, neuron: int) -> NeuronStats:
        """That neuron's row of its layer's statistics (the layer's small file is read once, then kept)."""
        return NeuronStats.from_table(self.neurons(layer), self._check_neuron(neuron))

    def neuron_examples(self, layer: int, neuron: int) -> list[Example]:
        """That neuron's examples as records, top then random then bottom, each by rank: one ranged read."""
        return examples_from_table(self.examples(layer, neuron))

    def neuron(self, layer: int, neuron: int) -> NeuronRecord:
        """Everything a neuron page shows: its statistics and its examples."""
        return NeuronRecord(layer, neuron, self.neuron_stats(layer, neuron), self.neuron_examples(layer, neuron))

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
    """Open a local folder, "org/name", "org/name@revision" or "hf://datasets/org/name@revision", after checking
    that its files match its manifest (DatasetError naming what does not)."""
    files = locate_dataset(source, endpoint=endpoint, token=token)
    manifest = load_manifest(files)
    return NeuronDataset(os.fspath(source), files, manifest, read_layer_footers(files, manifest))
