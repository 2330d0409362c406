"""One neuron as the reader serves it: its statistics and its kept examples as typed records.

Every view of a neuron (the page, the short link's card, the live tab's colour scale, the explainer's prompt) reads
these records, so the columns of `data/neurons` and `data/examples` are named in the format and here, nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class NeuronStats:
    """One row of a layer's neurons file (docs/FORMAT.md says what each number means)."""

    layer: int
    neuron: int
    max: float
    min: float
    mean: float
    density: float
    n_tokens: int
    histogram: list[int]
    peak_tokens: list[str]
    peak_token_counts: list[int]
    peak_concentration: float
    logit_top_tokens: list[str]
    logit_top_values: list[float]
    logit_bottom_tokens: list[str]
    logit_bottom_values: list[float]

    @classmethod
    def from_table(cls, table: pa.Table, neuron: int) -> NeuronStats:
        """Row `neuron` of a neurons table, whose rows are in neuron order (the reader checked its row count)."""
        row = table.slice(neuron, 1).select([f.name for f in fields(cls)]).to_pylist()[0]
        return cls(**row)

    @property
    def peaks(self) -> list[tuple[str, int]]:
        """The tokens the top examples peak on, with how many peak there, most frequent first."""
        return list(zip(self.peak_tokens, self.peak_token_counts, strict=True))


@dataclass(frozen=True)
class Example:
    """One kept window of one neuron: every token of the window and the neuron's activation at each."""

    kind: str
    rank: int
    score: float
    max_position: int
    window_index: int
    tokens: list[str]
    activations: np.ndarray  # float32, one per token; position 0 is BOS

    def around_peak(self, before: int, after: int) -> range:
        """Positions from `before` tokens before the peak to `after` after it, BOS left out: the short view."""
        return range(max(1, self.max_position - before), min(len(self.tokens), self.max_position + after + 1))


def examples_from_table(table: pa.Table) -> list[Example]:
    """A neuron's examples table as records, in stored order (kind, then rank)."""
    activations = table.column("activations").combine_chunks()
    offsets = activations.offsets.to_numpy()
    flat = pc.list_flatten(activations).to_numpy(zero_copy_only=False).astype(np.float32)
    names = ("kind", "rank", "score", "max_position", "window_index", "tokens")
    columns = {name: table.column(name).to_pylist() for name in names}
    return [
        Example(**{name: columns[name][i] for name in names}, activations=flat[offsets[i] : offsets[i + 1]])
        for i in range(table.num_rows)
    ]


@dataclass(frozen=True)
class NeuronRecord:
    """What a neuron page shows: the neuron's statistics and its examples (top, random, bottom, each by rank)."""

    layer: int
    neuron: int
    stats: NeuronStats
    examples: list[Example]
