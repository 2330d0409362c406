"""A model at a glance: per layer, how many neurons never fired, fire very rarely or very often, the distributions of
their max, density and peak concentration, and the neurons worth opening first.

Everything comes from the neuron tables (one small file per layer, which the dataset keeps once read for the search
index); no example is read. Each model's overview is computed once, in a background thread that starts after the
search index is built, so neither the first page nor the index waits for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hub_sync.reader import DatasetError, NeuronDataset
from space.intervals import wilson_interval
from space.sources import Catalog

VERY_SPARSE_DENSITY = 1e-3  # fired, on at most 1 token in 1,000
VERY_DENSE_DENSITY = 0.5  # fires on at least half of the tokens
NOTABLE_COUNT = 10
MAX_BINS = 20
DENSITY_EDGES = [10.0 ** (k / 2) for k in range(-12, 1)]  # 1e-6 .. 1 in half decades; lower values join the first bin
CONCENTRATION_EDGES = [k / 10 for k in range(11)]
COLUMNS = (
    "layer",
    "neuron",
    "max",
    "min",
    "density",
    "n_tokens",
    "peak_concentration",
    "top_count",
    "top_examples",
    "top_token",
)


@dataclass(frozen=True)
class Notable:
    """One neuron of a notable list, with the numbers that put it there."""

    layer: int
    neuron: int
    max: float
    min: float
    density: float
    peak_concentration: float
    top_count: int  # top examples that peak on the most frequent peak token
    top_examples: int
    top_token: str


@dataclass(frozen=True)
class NotableList:
    """A ranking of neurons: its title, what ranks it (said on the page) and its neurons, best first."""

    key: str
    title: str
    rule: str
    neurons: list[Notable]


@dataclass(frozen=True)
class LayerCounts:
    """How many neurons a layer (or the whole model) has, and how many never fired, fire very rarely, very often."""

    layer: int | None  # None: every layer
    neurons: int
    never_fired: int
    very_sparse: int
    very_dense: int


@dataclass(frozen=True)
class Distribution:
    """Counts of fired neurons per bin of one statistic, with the bins' edges (len(counts) + 1 of them)."""

    name: str
    edges: list[float]
    counts: list[int]


@dataclass(frozen=True)
class ModelOverview:
    """Every readable neuron of one model as columns (one entry per neuron), and the layers that could not be read."""

    model: str
    gated: bool
    layers: list[int]
    columns: dict[str, np.ndarray]
    problems: list[str]

    def _mask(self, layer: int | None) -> np.ndarray:
        return np.ones(len(self.columns["neuron"]), dtype=bool) if layer is None else self.columns["layer"] == layer

    def counts(self, layer: int | None = None) -> LayerCounts:
        mask = self._mask(layer)
        maxima, density = self.columns["max"][mask], self.columns["density"][mask]
        fired = maxima > 0
        return LayerCounts(
            layer=layer,
            neurons=int(mask.sum()),
            never_fired=int((~fired).sum()),
            very_sparse=int((fired & (density <= VERY_SPARSE_DENSITY)).sum()),
            very_dense=int((density >= VERY_DENSE_DENSITY).sum()),
        )

    def max_edges(self) -> list[float]:
        """MAX_BINS equal bins from 0 to the model's largest max, shared by its layers so their shapes compare."""
        top = float(self.columns["max"].max()) if len(self.columns["max"]) else 0.0
        return np.linspace(0.0, top if top > 0 else 1.0, MAX_BINS + 1).tolist()

    def distributions(self, layer: int | None = None) -> list[Distribution]:
        """Max, density and peak concentration of the fired neurons (never-fired ones are counted apart)."""
        mask = self._mask(layer) & (self.columns["max"] > 0)
        return [
            binned("max", self.columns["max"][mask], self.max_edges()),
            binned("density", self.columns["density"][mask], DENSITY_EDGES),
            binned("peak concentration", self.columns["peak_concentration"][mask], CONCENTRATION_EDGES),
        ]

    def notable(self, layer: int | None = None, count: int = NOTABLE_COUNT) -> list[NotableList]:
        """The lists of neurons worth opening first, over one layer or every layer."""
        c, mask = self.columns, self._mask(layer)
        fired = mask & (c["max"] > 0)
        firing_tokens = c["density"] * c["n_tokens"]
        specific = fired & (c["top_count"] >= 2) & (firing_tokens >= c["top_examples"])
        surely, _ = wilson_interval(c["top_count"], c["top_examples"])
        lists = [
            ("token", "Most token-specific", TOKEN_SPECIFIC_RULE, specific, (-surely, -c["peak_concentration"])),
            ("max", "Highest max", "largest activation over the corpus", mask, (-c["max"],)),
            ("rare", "Rarest firing", "lowest density among neurons that fired", fired, (c["density"],)),
            ("dense", "Densest", "highest density: fraction of tokens > 0", mask, (-c["density"],)),
        ]
        if self.gated:
            lists.append(
                ("negative", "Most negative", "lowest activation (gated MLPs fire negative)", mask, (c["min"],))
            )
        return [
            NotableList(key, title, rule, self._ranked(kept, keys, count)) for key, title, rule, kept, keys in lists
        ]

    def _ranked(self, kept: np.ndarray, keys: tuple[np.ndarray, ...], count: int) -> list[Notable]:
        """The first `count` kept neurons by the keys, ties to the lower layer then the lower neuron."""
        rows = np.flatnonzero(kept)
        c = self.columns
        order = np.lexsort((c["neuron"][rows], c["layer"][rows], *(key[rows] for key in reversed(keys))))[:count]
        return [
            Notable(
                layer=int(c["layer"][row]),
                neuron=int(c["neuron"][row]),
                max=float(c["max"][row]),
                min=float(c["min"][row]),
                density=float(c["density"][row]),
                peak_concentration=float(c["peak_concentration"][row]),
                top_count=int(c["top_count"][row]),
                top_examples=int(c["top_examples"][row]),
                top_token=str(c["top_token"][row]),
            )
            for row in rows[order]
        ]


TOKEN_SPECIFIC_RULE = (
    "share of top examples peaking on one token, by the low end of its 95% Wilson interval (18 of 20 beats 3 of 3); "
    "at least 2 such peaks, and fired on as many tokens as it has top examples (else some never fired)"
)


def binned(name: str, values: np.ndarray, edges: list[float]) -> Distribution:
    """Counts per bin; values below the first edge join the first bin, the last edge belongs to the last bin."""
    inner = np.asarray(edges[1:-1], dtype=np.float64)
    bins = np.searchsorted(inner, np.asarray(values, dtype=np.float64), side="right")
    return Distribution(name, list(edges), np.bincount(bins, minlength=len(edges) - 1).tolist())


def _first_and_total(counts: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron: the count of its most frequent peak token (lists are most frequent first) and the sum of counts."""
    lists = counts.combine_chunks()
    offsets = lists.offsets.to_numpy()
    offsets = offsets - offsets[0]
    flat = np.concatenate([[0], pc.list_flatten(lists).to_numpy().astype(np.int64)])
    sums = np.cumsum(flat)
    totals = sums[offsets[1:]] - sums[offsets[:-1]]
    firsts = np.where(np.diff(offsets) > 0, flat[np.minimum(offsets[:-1] + 1, len(flat) - 1)], 0)
    return firsts, totals


def _first_tokens(peak_tokens: pa.ChunkedArray) -> np.ndarray:
    """Per neuron: its most frequent peak token, "" where it has none."""
    lists = peak_tokens.combine_chunks()
    offsets = lists.offsets.to_numpy()
    offsets = offsets - offsets[0]
    flat = pc.list_flatten(lists).to_numpy(zero_copy_only=False)
    has_one = np.diff(offsets) > 0
    tokens = np.full(len(lists), "", dtype=object)
    tokens[has_one] = flat[offsets[:-1][has_one]]
    return tokens


def layer_columns(table: pa.Table) -> dict[str, np.ndarray]:
    """The overview's columns of one layer's neuron table; statistics as float64 (thresholds compare as in Python)."""
    top_count, top_examples = _first_and_total(table.column("peak_token_counts"))
    columns = {name: table.column(name).to_numpy() for name in ("layer", "neuron", "n_tokens")}
    columns |= {
        name: table.column(name).to_numpy().astype(np.float64)
        for name in ("max", "min", "density", "peak_concentration")
    }
    top_token = _first_tokens(table.column("peak_tokens"))
    return {**columns, "top_count": top_count, "top_examples": top_examples, "top_token": top_token}


def compute_overview(name: str, dataset: NeuronDataset) -> ModelOverview:
    """One model's overview from its neuron tables; a layer that cannot be read is named and left out."""
    parts, problems, layers = [], [], []
    for layer in dataset.layers:
        try:
            parts.append(layer_columns(dataset.neurons(layer)))
            layers.append(layer)
        except DatasetError as error:
            problems.append(f"The overview skips layer {layer}: {error}")
    columns = {key: np.concatenate([part[key] for part in parts]) if parts else np.zeros(0) for key in COLUMNS}
    return ModelOverview(name, dataset.manifest.model.gated, layers, columns, problems)


class Overviews:
    """Each served model's overview, computed once per model in one background thread, after the search index."""

    def __init__(self, catalog: Catalog, compute: Callable[[str, NeuronDataset], ModelOverview] = compute_overview):
        self._catalog = catalog
        self._compute = compute
        self._futures: dict[str, Future] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neuroscope-overview")

    def start(self) -> None:
        """Queue every model now served, in catalog order."""
        for name in self._catalog.model_names:
            self.future(name)

    def future(self, model: str) -> Future:
        """The model's overview, queued on first request."""
        with self._lock:
            if model not in self._futures:
                self._futures[model] = self._executor.submit(self._after_index, model)
            return self._futures[model]

    def _after_index(self, model: str) -> ModelOverview:
        self._catalog.index_build.exception()  # wait for the index: it reads the same tables (its failure is its own)
        return self._compute(model, self._catalog.models[model])
