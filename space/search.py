"""Keyword search over the tokens where neurons peak and the words of their explanations, built once from the
neuron and explanations tables.

The index maps each normalised peak token (lower case, whitespace stripped) to the neurons whose top
examples peak on it, with counts: one token, many neurons. A `pri*` keyword takes every token that starts
with `pri`, a range of the sorted tokens. A neuron also matches when one of its explanations holds the keyword's
words (space.explanation_search); each hit says where it matched. Examples are never read.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hub_sync import format as fmt
from hub_sync.reader import DatasetError, NeuronDataset
from space.explanation_search import ExplainedLayer, ExplanationIndex
from space.text import Keyword

SORT_KEYS = ("max", "density", "peak_concentration", "matches", *fmt.EXPLANATION_SCORES)
MATCHED = {0: "", 1: "peak token", 2: "explanation", 3: "both"}  # bit 1: peak token, bit 2: explanation


@dataclass(frozen=True)
class Hit:
    """One neuron that matches a search, with the matching peak tokens and how many top examples peak on them."""

    model: str
    layer: int
    neuron: int
    tokens: list[tuple[str, int]]
    matches: int
    max: float
    density: float
    peak_concentration: float
    matched: str = ""  # where the keyword matched: a MATCHED label
    explanation: str = ""  # the matching explanation, else the headline one (best-scored), else ""
    scores: dict[str, float | None] = field(default_factory=dict)  # that explanation's scores


@dataclass(frozen=True)
class SearchResult:
    total: int
    hits: list[Hit]


def _flatten_keys(peak_tokens: pa.ChunkedArray) -> pa.Array:
    flat = pc.list_flatten(peak_tokens.combine_chunks())
    return pc.utf8_lower(pc.utf8_trim_whitespace(flat))


class SearchIndex:
    """Peak tokens of every neuron of every model, grouped by normalised token (CSR layout)."""

    def __init__(self, models: dict):
        self._models = models
        self._model_names = list(models)
        self.problems: list[str] = []
        rows: dict[str, list[np.ndarray]] = {
            name: [] for name in ("model", "layer", "neuron", "max", "density", "peak_concentration")
        }
        keys, parents, counts = [], [], []
        explained: list[ExplainedLayer] = []
        base = 0
        for model_index, (name, dataset) in enumerate(models.items()):
            for layer in dataset.layers:
                try:
                    table = dataset.neurons(layer)
                except DatasetError as error:
                    self.problems.append(f"Search skips {name!r} layer {layer}: {error}")
                    continue
                n = table.num_rows
                rows["model"].append(np.full(n, model_index, dtype=np.int16))
                rows["layer"].append(np.full(n, layer, dtype=np.int16))
                for column in ("neuron", "max", "density", "peak_concentration"):
                    rows[column].append(table.column(column).to_numpy())
                peak_tokens = table.column("peak_tokens").combine_chunks()
                keys.append(_flatten_keys(table.column("peak_tokens")))
                parents.append(pc.list_parent_indices(peak_tokens).to_numpy().astype(np.int32) + np.int32(base))
                counts.append(
                    pc.list_flatten(table.column("peak_token_counts").combine_chunks()).to_numpy().astype(np.int32)
                )
                explained += self._explained_layer(name, dataset, layer, base)
                base += n
        self._rows = {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in rows.items()}
        self._build_postings(keys, parents, counts)
        self.explanations = ExplanationIndex(explained, base)
        pa.default_memory_pool().release_unused()

    def _build_postings(self, keys: list[pa.Array], parents: list[np.ndarray], counts: list[np.ndarray]) -> None:
        if not keys:
            self._key_ids: dict[str, int] = {}
            self._sorted_keys: list[str] = []
            self._starts = np.zeros(1, dtype=np.int64)
            self._posting_rows = np.zeros(0, dtype=np.int32)
            self._posting_counts = np.zeros(0, dtype=np.int32)
            return
        encoded = pc.dictionary_encode(pa.chunked_array(keys)).combine_chunks()
        key_ids = encoded.indices.to_numpy()
        order = np.argsort(key_ids, kind="stable").astype(np.int32)
        self._key_ids = {key: i for i, key in enumerate(encoded.dictionary.to_pylist())}
        self._sorted_keys = sorted(self._key_ids)
        self._starts = np.concatenate([[0], np.cumsum(np.bincount(key_ids, minlength=len(self._key_ids)))])
        self._posting_rows = np.concatenate(parents)[order]
        self._posting_counts = np.concatenate(counts)[order]

    def _explained_layer(self, name: str, dataset: NeuronDataset, layer: int, base: int) -> list[ExplainedLayer]:
        """The layer's explanations with the search row of each one's neuron; none for a 1.0 dataset."""
        if layer not in dataset.explanation_layers:
            return []
        try:
            table = dataset.explanations(layer)
        except DatasetError as error:
            self.problems.append(f"Search skips the explanations of {name!r} layer {layer}: {error}")
            return []
        return [ExplainedLayer(table, table.column("neuron").to_numpy() + np.int32(base))]

    @property
    def size(self) -> int:
        """How many neurons the index covers."""
        return len(self._rows["neuron"])

    def _matching_key_ids(self, keyword: Keyword) -> list[int]:
        if not keyword.prefix:
            return [self._key_ids[keyword.key]] if keyword.key in self._key_ids else []
        first = bisect.bisect_left(self._sorted_keys, keyword.key)
        last = bisect.bisect_left(self._sorted_keys, keyword.key + chr(0x10FFFF))
        return [self._key_ids[key] for key in self._sorted_keys[first:last]]

    def _matching_rows(self, keyword: Keyword) -> tuple[np.ndarray, np.ndarray]:
        """Rows whose peak tokens match the keyword and the summed counts; every row for an empty keyword."""
        if not keyword.key:
            return np.arange(self.size), np.zeros(self.size, dtype=np.int64)
        spans = [np.arange(self._starts[i], self._starts[i + 1]) for i in self._matching_key_ids(keyword)]
        postings = np.concatenate(spans) if spans else np.zeros(0, dtype=np.int64)
        unique_rows, inverse = np.unique(self._posting_rows[postings], return_inverse=True)
        return unique_rows, np.bincount(
            inverse, weights=self._posting_counts[postings], minlength=len(unique_rows)
        ).astype(np.int64)

    def search(
        self,
        keyword: str,
        models: list[str] | None = None,
        layer_min: int | None = None,
        layer_max: int | None = None,
        sort: str = "max",
        limit: int = 100,
    ) -> SearchResult:
        """Neurons peaking on the keyword or explained with its words, filtered by model and layer range, best first
        by `sort` (a score sorts by the shown explanation's; neurons without one come last)."""
        if sort not in SORT_KEYS:
            raise ValueError(f"sort must be one of {SORT_KEYS}, got {sort!r}")
        pattern = Keyword.parse(keyword)
        rows, matches, matched, shown = self._with_explanations(pattern, *self._matching_rows(pattern))
        keep = np.ones(len(rows), dtype=bool)
        if models:
            wanted = [i for i, name in enumerate(self._model_names) if name in models]
            keep &= np.isin(self._rows["model"][rows], wanted)
        if layer_min is not None:
            keep &= self._rows["layer"][rows] >= layer_min
        if layer_max is not None:
            keep &= self._rows["layer"][rows] <= layer_max
        rows, matches, matched, shown = rows[keep], matches[keep], matched[keep], shown[keep]
        if sort in fmt.EXPLANATION_SCORES:
            values = self.explanations.score(sort, shown)
        else:
            values = matches if sort == "matches" else self._rows[sort][rows]
        order = np.lexsort((rows, -values.astype(np.float64)))[:limit]  # NaN (no score) sorts last
        hits = [self._hit(int(rows[i]), int(matches[i]), pattern, int(matched[i]), int(shown[i])) for i in order]
        return SearchResult(total=len(rows), hits=hits)

    def _with_explanations(
        self, keyword: Keyword, peak_rows: np.ndarray, peak_counts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The peak-token hits joined with the explanation hits: rows, peak counts (0 where only an explanation
        matched), where each matched (MATCHED codes) and the explanation each shows."""
        if not keyword.key:
            shown = self.explanations.headline[peak_rows]
            return peak_rows, peak_counts, np.zeros(len(peak_rows), dtype=np.int8), shown
        explained_rows, explanation_ids = self.explanations.matching(keyword)
        rows = np.union1d(peak_rows, explained_rows)
        at_peak, at_explained = np.searchsorted(rows, peak_rows), np.searchsorted(rows, explained_rows)
        matches = np.zeros(len(rows), dtype=np.int64)
        matches[at_peak] = peak_counts
        matched = np.zeros(len(rows), dtype=np.int8)
        matched[at_peak] |= 1
        matched[at_explained] |= 2
        shown = self.explanations.headline[rows]
        shown[at_explained] = explanation_ids
        return rows, matches, matched, shown

    def _hit(self, row: int, matches: int, keyword: Keyword, matched: int, shown: int) -> Hit:
        model = self._model_names[self._rows["model"][row]]
        layer, neuron = int(self._rows["layer"][row]), int(self._rows["neuron"][row])
        record = (
            self._models[model]
            .neurons(layer)
            .slice(neuron, 1)
            .select(["peak_tokens", "peak_token_counts"])
            .to_pylist()[0]
        )
        tokens = [
            (token, count)
            for token, count in zip(record["peak_tokens"], record["peak_token_counts"], strict=False)
            if not matched & 1 or keyword.matches(token)  # all its peaks, unless they are what matched
        ]
        return Hit(
            model=model,
            layer=layer,
            neuron=neuron,
            tokens=tokens,
            matches=matches,
            max=float(self._rows["max"][row]),
            density=float(self._rows["density"][row]),
            peak_concentration=float(self._rows["peak_concentration"][row]),
            matched=MATCHED[matched],
            explanation=self.explanations.shown_text(shown),
            scores=self.explanations.scores_of(shown),
        )
