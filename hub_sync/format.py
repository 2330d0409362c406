"""Dataset format v1: the one place that fixes file layout, column names and types.

Everything that writes or reads a Neuroscope dataset imports these names, so a change of
format is a change of this file (and docs/FORMAT.md, which documents it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FORMAT_VERSION = "1.0"
FORMAT_MAJOR = 1
# 1.1 only adds data/explanations/ (and the manifest's `explanations` section): a harvest still writes 1.0, and a
# dataset declares 1.1 once explanations are added to it. Readers know every version up to the newest.
EXPLANATIONS_FORMAT_VERSION = "1.1"
NEWEST_FORMAT_VERSION = EXPLANATIONS_FORMAT_VERSION

MANIFEST_FILE = "neuroscope.json"
CARD_FILE = "README.md"
NEURONS_DIR = "data/neurons"
EXAMPLES_DIR = "data/examples"
EXPLANATIONS_DIR = "data/explanations"
EXPLANATIONS_CONFIG = "explanations"

# The TransformerLens hooks the format is defined on: a neuron's activation is the MLP's `hook_post` (the input to
# its output matrix); the residual stream after a block is what the live tools pool into text features.
MLP_HOOK = "blocks.{layer}.mlp.hook_post"
RESIDUAL_HOOK = "blocks.{layer}.hook_resid_post"

# The kinds of kept example, in the order rows are stored: an examples file is sorted by (neuron, kind, rank).
EXAMPLE_KINDS = ("top", "random", "bottom")

# Fixed histogram edges shared by every neuron of every model: a signed log scale from 1e-3 to 1e3 around an
# exact zero, so histograms from different shards and runs add up bin for bin. Each edge is rounded to the nearest
# bfloat16 value: then every float32 sharing a bfloat16 prefix falls in one bin, and the harvest bins a value by
# its top 16 bits through a lookup table, exactly and much faster than a search.


def _bfloat16(values: np.ndarray) -> np.ndarray:
    """Round float32 values to the nearest bfloat16 (ties to even), returned as float32."""
    bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    return rounded.view(np.float32)


_POSITIVE_EDGES = _bfloat16(np.logspace(-3, 3, 37))
HISTOGRAM_EDGES: list[float] = [float(-e) for e in _POSITIVE_EDGES[::-1]] + [0.0] + [
    float(e) for e in _POSITIVE_EDGES
]
ZERO_EDGE = len(_POSITIVE_EDGES)



@dataclass(frozen=True)
class HistogramBin:
    """The values one histogram bin counts. Positive values fall in `low <= v < high`; zero and negative values
    in `low < v <= high` (the mirror image); bin 0 has no `low`, the last bin no `high`. So an edge belongs to the
    bin farther from zero, zero to the bin just below it, and every float32 sharing a bfloat16 prefix to one bin.
    """

    low: float | None
    high: float | None
    positive: bool  # the bin counts values > 0 (else values <= 0)

    def contains(self, value: float) -> bool:
        if self.positive:
            return value > 0 and (self.low is None or self.low <= value) and (self.high is None or value < self.high)
        return value <= 0 and (self.low is None or self.low < value) and (self.high is None or value <= self.high)


def histogram_bin(index: int, edges: list[float]) -> HistogramBin:
    """Bin `index` of a histogram on `edges` (len(edges) + 1 bins), as the harvest counts it."""
    low = edges[index - 1] if index > 0 else None
    high = edges[index] if index < len(edges) else None
    return HistogramBin(low, high, positive=low is not None and low >= 0)


MIN_NEURONS_PER_ROW_GROUP = 16
MAX_NEURONS_PER_ROW_GROUP = 64
TARGET_ROW_GROUP_BYTES = 1 << 20

NEURON_SCHEMA = pa.schema(
    [
        pa.field("layer", pa.int16(), nullable=False),
        pa.field("neuron", pa.int32(), nullable=False),
        pa.field("max", pa.float32(), nullable=False),
        pa.field("min", pa.float32(), nullable=False),
        pa.field("mean", pa.float32(), nullable=False),
        pa.field("density", pa.float32(), nullable=False),
        pa.field("n_tokens", pa.int64(), nullable=False),
        pa.field("histogram", pa.list_(pa.int64()), nullable=False),
        pa.field("peak_tokens", pa.list_(pa.string()), nullable=False),
        pa.field("peak_token_counts", pa.list_(pa.int32()), nullable=False),
        pa.field("peak_concentration", pa.float32(), nullable=False),
        pa.field("logit_top_tokens", pa.list_(pa.string()), nullable=False),
        pa.field("logit_top_values", pa.list_(pa.float32()), nullable=False),
        pa.field("logit_bottom_tokens", pa.list_(pa.string()), nullable=False),
        pa.field("logit_bottom_values", pa.list_(pa.float32()), nullable=False),
    ]
)

EXAMPLE_SCHEMA = pa.schema(
    [
        pa.field("neuron", pa.int32(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("rank", pa.int16(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("max_position", pa.int16(), nullable=False),
        pa.field("window_index", pa.int64(), nullable=False),
        pa.field("token_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("tokens", pa.list_(pa.string()), nullable=False),
        pa.field("activations", pa.list_(pa.float16()), nullable=False),
    ]
)


# One row per (neuron, explainer, prompt_version), sorted by neuron then explainer then prompt_version: a rerun
# with the same explainer and prompt replaces its rows, another explainer adds rows beside them. Each score is
# null when it was not computed, and comes with its n (what it was computed over; see docs/FORMAT.md).
EXPLANATION_SCORES = ("detection", "embedding", "simulation")
SCORE_RANGES = {"detection": (0.0, 1.0), "embedding": (0.0, 1.0), "simulation": (-1.0, 1.0)}

EXPLANATION_SCHEMA = pa.schema(
    [
        pa.field("layer", pa.int16(), nullable=False),
        pa.field("neuron", pa.int32(), nullable=False),
        pa.field("explanation", pa.string()),
        pa.field("explainer", pa.string(), nullable=False),
        pa.field("prompt_version", pa.string(), nullable=False),
        *(
            field
            for score in EXPLANATION_SCORES
            for field in (pa.field(score, pa.float32()), pa.field(f"{score}_n", pa.int32(), nullable=False))
        ),
        pa.field("refusal", pa.string()),
        pa.field("created", pa.timestamp("ms", tz="UTC"), nullable=False),
    ]
)


def layer_file_name(layer: int) -> str:
    return f"layer_{layer:02d}.parquet"


def neurons_path(layer: int) -> str:
    return f"{NEURONS_DIR}/{layer_file_name(layer)}"


def examples_path(layer: int) -> str:
    return f"{EXAMPLES_DIR}/{layer_file_name(layer)}"


def explanations_path(layer: int) -> str:
    return f"{EXPLANATIONS_DIR}/{layer_file_name(layer)}"


def layer_config_name(layer: int) -> str:
    return f"layer_{layer}"


def neurons_per_row_group(examples_per_neuron: int, window: int) -> int:
    """Whole neurons per row group: as many as fit ~1 MB uncompressed, clamped to 16-64."""
    bytes_per_neuron = max(1, examples_per_neuron * window * 16)
    fitting = TARGET_ROW_GROUP_BYTES // bytes_per_neuron
    return int(min(MAX_NEURONS_PER_ROW_GROUP, max(MIN_NEURONS_PER_ROW_GROUP, fitting)))


def kind_codes(kinds: pa.Array | pa.ChunkedArray | np.ndarray) -> np.ndarray:
    """Each kind's position in EXAMPLE_KINDS (0 top, 1 random, 2 bottom), -1 for a kind the format does not know."""
    codes = pc.index_in(pa.array(kinds, type=pa.string()) if isinstance(kinds, np.ndarray) else kinds,
                        value_set=pa.array(EXAMPLE_KINDS))
    return pc.fill_null(codes, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def example_order_keys(neurons: np.ndarray, kinds: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """One int64 per example row that sorts like (neuron, kind code, rank): the stored row order, defined once.

    Any int32 neuron, kind code -1..2 and int16 rank fit: 32 + 2 + 16 bits.
    """
    neuron_part = (np.asarray(neurons, dtype=np.int64) + (1 << 31)) << 18
    kind_part = (np.asarray(kinds, dtype=np.int64) + 1) << 16
    return neuron_part | kind_part | (np.asarray(ranks, dtype=np.int64) + (1 << 15))
