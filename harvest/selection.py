"""Per-layer harvest state: top / random / bottom examples and statistics, updated batch by batch.

All work is whole-layer tensor operations on the model's device; memory is O(neurons x k x window).
Every selection is "the k candidates with the smallest key, ties to the lower window index", which
makes the result independent of batch size, batch order, resumption and sharding, and lets two
states merge exactly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from harvest import cpu_stats
from hub_sync.format import EXAMPLE_KINDS, HISTOGRAM_EDGES, ZERO_EDGE

EMPTY_WINDOW = torch.iinfo(torch.int64).max
HISTOGRAM_PREFIXES = 1 << 16
_MASK64 = (1 << 64) - 1


def _signed(constant: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits (torch has no uint64 arithmetic)."""
    return constant - (1 << 64) if constant >= 1 << 63 else constant


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical (not arithmetic) right shift of int64 bit patterns."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def sample_keys(seed: int, layer: int, windows: torch.Tensor, d_mlp: int) -> torch.Tensor:
    """A uniform [0, 1) key per (window, neuron) from a splitmix64 hash of (seed, layer, neuron, window).

    Keys depend on nothing but those four numbers, so the random sample is the same for any batching,
    device, resumption or sharding.
    """
    neurons = torch.arange(d_mlp, device=windows.device, dtype=torch.int64)
    stream = _signed(((seed * 1_000_003 + layer + 1) * 0x9E3779B97F4A7C15) & _MASK64)
    x = windows[:, None] * d_mlp + neurons[None, :] + stream
    x = x ^ _shift_right(x, 30)
    x = x * _signed(0xBF58476D1CE4E5B9)
    x = x ^ _shift_right(x, 27)
    x = x * _signed(0x94D049BB133111EB)
    x = x ^ _shift_right(x, 31)
    return _shift_right(x, 11).to(torch.float64) / float(1 << 53)


def activation_dtype(device: torch.device | str) -> torch.dtype:
    """float16 on GPUs (half the memory); float32 on CPUs, whose float16 copies are slow.

    Either way the dataset stores float16, and rounding once at the end gives the same values.
    """
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def _rank_order(keys: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """Per row, the column order by key, ties to the lower window index."""
    by_window = windows.argsort(dim=1, stable=True)
    return by_window.gather(1, keys.gather(1, by_window).argsort(dim=1, stable=True))


@dataclass
class Kept:
    """The k best windows per neuron under one ordering (smallest key first, ties to the lower window).

    Slots are unordered while a run goes on, so a newcomer is written only into the slot it frees: a
    batch moves the activations of the windows that enter, not of the whole kept set. `ranked()` sorts.
    """

    keys: torch.Tensor  # [d_mlp, k] float64; +inf marks an empty slot
    windows: torch.Tensor  # [d_mlp, k] int64
    scores: torch.Tensor  # [d_mlp, k] float32
    positions: torch.Tensor  # [d_mlp, k] int64
    activations: torch.Tensor  # [d_mlp, k, window], see activation_dtype

    @classmethod
    def empty(cls, d_mlp: int, k: int, window: int, device: torch.device | str) -> Kept:
        return cls(
            keys=torch.full((d_mlp, k), float("inf"), dtype=torch.float64, device=device),
            windows=torch.full((d_mlp, k), EMPTY_WINDOW, dtype=torch.int64, device=device),
            scores=torch.zeros((d_mlp, k), dtype=torch.float32, device=device),
            positions=torch.zeros((d_mlp, k), dtype=torch.int64, device=device),
            activations=torch.zeros((d_mlp, k, window), dtype=activation_dtype(device), device=device),
        )

    def offer(
        self,
        keys: torch.Tensor,
        windows: torch.Tensor,
        scores: torch.Tensor,
        entrants: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    ) -> None:
        """Merge candidates ([d_mlp, n] each) into the kept set.

        `entrants(neurons, columns)` gives the score positions [m] and activations [m, window] of just
        the m candidates that enter, so nothing is gathered for the others.
        """
        k = self.keys.shape[1]
        if k == 0:
            return
        rows = (keys.min(dim=1).values <= self.keys.max(dim=1).values).nonzero().squeeze(1)
        if rows.numel() == 0:
            return
        all_keys = torch.cat([self.keys[rows], keys[rows]], dim=1)
        all_windows = torch.cat([self.windows[rows], windows[rows]], dim=1)
        best = _rank_order(all_keys, all_windows)[:, :k]
        chosen = torch.zeros_like(all_keys, dtype=torch.bool).scatter_(1, best, True)
        # Per row, as many slots are freed as candidates enter; both lists come out row by row, so they pair up.
        freed_row, freed_slot = (~chosen[:, :k]).nonzero(as_tuple=True)
        entering_row, entering_column = chosen[:, k:].nonzero(as_tuple=True)
        neurons = rows[entering_row]
        self.keys[neurons, freed_slot] = keys[neurons, entering_column]
        self.windows[neurons, freed_slot] = windows[neurons, entering_column]
        self.scores[neurons, freed_slot] = scores[neurons, entering_column].float()
        positions, activations = entrants(neurons, entering_column)
        self.positions[neurons, freed_slot] = positions
        self.activations[neurons, freed_slot] = activations.to(self.activations.dtype)

    def absorb(self, other: Kept) -> None:
        """Merge another state's kept set (from another shard or rank) into this one."""
        self.offer(
            other.keys,
            other.windows,
            other.scores,
            lambda neurons, columns: (other.positions[neurons, columns], other.activations[neurons, columns]),
        )

    def ranked(self) -> Kept:
        """A copy with each neuron's slots in rank order (best first, empty slots last)."""
        order = _rank_order(self.keys, self.windows)
        return Kept(
            **{f.name: getattr(self, f.name).gather(1, order) for f in fields(self) if f.name != "activations"},
            activations=self.activations.gather(1, order[:, :, None].expand_as(self.activations)),
        )

    def filled(self) -> torch.Tensor:
        """[d_mlp, k] bool: which slots hold a real window."""
        return torch.isfinite(self.keys) & (self.windows != EMPTY_WINDOW)


@functools.cache
def histogram_bins_of_prefixes(device: str) -> torch.Tensor:
    """Histogram bin of every float32 by its top 16 bits (its bfloat16 prefix), as a uint8 table of 65,536
    (the 76 bins fit a byte; a 64 KB table stays in cache where a hot loop reads it).

    A bin holds edges[i-1] <= v < edges[i] for v > 0 and edges[i-1] < v <= edges[i] for v <= 0: with
    bfloat16 edges, all float32 values sharing a prefix (truncated towards zero) land in one bin, so a
    table lookup bins exactly what a search over the edges would. The one exception is prefix 0: it holds
    +0.0 and positive denormals below 2**-133, so callers look those denormals up as prefix 1. One table
    per device, shared by all layers.
    """
    prefixes = torch.arange(HISTOGRAM_PREFIXES, dtype=torch.int32, device=device)
    values = (prefixes << 16).view(torch.float32)
    edges = torch.tensor(HISTOGRAM_EDGES, dtype=torch.float32, device=device)
    above_zero = torch.bucketize(values, edges, right=True, out_int32=True)
    at_or_below_zero = torch.bucketize(values, edges, right=False, out_int32=True)
    return torch.where(values > 0, above_zero, at_or_below_zero).to(torch.uint8)


@dataclass
class Stats:
    """Running per-neuron statistics over every non-BOS token."""

    max: torch.Tensor  # [d_mlp] float32
    min: torch.Tensor
    sum: torch.Tensor  # float64
    histogram: torch.Tensor  # [d_mlp, bins] int64
    n_tokens: torch.Tensor  # int64 scalar

    @classmethod
    def empty(cls, d_mlp: int, device: torch.device | str) -> Stats:
        return cls(
            max=torch.full((d_mlp,), float("-inf"), device=device),
            min=torch.full((d_mlp,), float("inf"), device=device),
            sum=torch.zeros(d_mlp, dtype=torch.float64, device=device),
            histogram=torch.zeros((d_mlp, len(HISTOGRAM_EDGES) + 1), dtype=torch.int64, device=device),
            n_tokens=torch.zeros((), dtype=torch.int64, device=device),
        )

    def add(self, acts: torch.Tensor, bin_of_prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Count every non-BOS token of acts [batch, window, d_mlp] float32 (BOS at position 0); return each
        window's max and min over its non-BOS positions, [batch, d_mlp], which the selections score by.

        Density is not counted here: it is the histogram's mass above zero.
        """
        batch, window, d_mlp = acts.shape
        body = acts[:, 1:, :]
        window_max, window_min = body.amax(dim=1), body.amin(dim=1)
        torch.maximum(self.max, window_max.amax(dim=0), out=self.max)
        torch.minimum(self.min, window_min.amin(dim=0), out=self.min)
        ones = torch.ones(1, batch * window, device=acts.device, dtype=acts.dtype)
        all_positions = (ones @ acts.reshape(batch * window, d_mlp))[0]
        self.sum += (all_positions - acts[:, 0, :].sum(dim=0)).double()
        self.n_tokens += batch * (window - 1)
        if acts.device.type == "cpu":
            counts = cpu_stats.histogram_counts(acts.numpy(), bin_of_prefix.numpy(), self.histogram.shape[1])
            self.histogram += torch.from_numpy(counts)
        else:
            self.histogram += self._histogram_counts(acts, bin_of_prefix)
        return window_max, window_min

    def _histogram_counts(self, acts: torch.Tensor, bin_of_prefix: torch.Tensor) -> torch.Tensor:
        """`cpu_stats.histogram_counts` as whole-tensor operations, for GPUs. BOS activations go to a discarded
        extra bin rather than being sliced off, which would copy the whole tensor."""
        batch, window, d_mlp = acts.shape
        bits = acts.contiguous().view(torch.int32)
        prefixes = (bits >> 16) & 0xFFFF
        prefixes += (prefixes == 0) & (bits != 0)  # a tiny positive denormal: not +0.0's bin
        bins = bin_of_prefix.index_select(0, prefixes.reshape(-1)).view(batch, window, d_mlp).to(torch.int32)
        bins *= d_mlp
        bins += torch.arange(d_mlp, device=acts.device, dtype=torch.int32)
        discard = self.histogram.numel()
        bins[:, 0, :] = discard
        bins = bins.reshape(-1)
        once = torch.ones((), dtype=torch.int64, device=acts.device).expand(bins.numel())
        counts = torch.zeros(discard + 1, dtype=torch.int64, device=acts.device).index_add_(0, bins, once)
        return counts[:discard].reshape(-1, d_mlp).T  # index_add_, unlike bincount, needs no sync with the host

    def positive(self) -> torch.Tensor:
        """How many tokens had activation > 0: the histogram bins above the zero edge."""
        return self.histogram[:, ZERO_EDGE + 1 :].sum(dim=1)

    def absorb(self, other: Stats) -> None:
        torch.maximum(self.max, other.max, out=self.max)
        torch.minimum(self.min, other.min, out=self.min)
        self.sum += other.sum
        self.histogram += other.histogram
        self.n_tokens += other.n_tokens


class LayerState:
    """Everything the harvest keeps for one layer: a kept set per example kind, and the statistics."""

    def __init__(
        self, layer: int, d_mlp: int, window: int, top_k: int, random_k: int, bottom_k: int, seed: int, device
    ):
        self.layer = layer
        self.seed = seed
        sizes = {"top": top_k, "random": random_k, "bottom": bottom_k}
        self.kept = {kind: Kept.empty(d_mlp, sizes[kind], window, device) for kind in EXAMPLE_KINDS}
        self.stats = Stats.empty(d_mlp, device)
        self.bin_of_prefix = histogram_bins_of_prefixes(str(torch.device(device)))

    def update(self, acts: torch.Tensor, windows: torch.Tensor) -> None:
        """acts: [batch, window, d_mlp] from the layer's hook (hub_sync.format.MLP_HOOK); windows: [batch] indices."""
        acts = acts.float()
        d_mlp = acts.shape[2]
        window_grid = windows[None, :].expand(d_mlp, -1)

        def entrants_by(extreme: Callable[..., torch.Tensor]):
            def entrants(neurons: torch.Tensor, batch_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                examples = acts[batch_rows, :, neurons]
                return extreme(examples[:, 1:], dim=1) + 1, examples

            return entrants

        window_max, window_min = self.stats.add(acts, self.bin_of_prefix)
        top_scores = window_max.T.contiguous()  # [d_mlp, batch], the layout offer reduces over
        self.kept["top"].offer(-top_scores.double(), window_grid, top_scores, entrants_by(torch.argmax))
        if self.kept["random"].keys.shape[1]:
            fired = top_scores > 0
            keys = sample_keys(self.seed, self.layer, windows, d_mlp).T.contiguous()
            self.kept["random"].offer(
                torch.where(fired, keys, float("inf")),
                torch.where(fired, window_grid, EMPTY_WINDOW),
                top_scores,
                entrants_by(torch.argmax),
            )
        if self.kept["bottom"].keys.shape[1]:
            bottom_scores = window_min.T.contiguous()
            self.kept["bottom"].offer(bottom_scores.double(), window_grid, bottom_scores, entrants_by(torch.argmin))

    def absorb(self, other: LayerState) -> None:
        for kind in EXAMPLE_KINDS:
            self.kept[kind].absorb(other.kept[kind])
        self.stats.absorb(other.stats)

    def referenced_windows(self) -> torch.Tensor:
        """Window indices any kept example points to (their tokens must be kept too)."""
        return torch.cat([kept.windows[kept.filled()] for kept in self.kept.values()])

    def state_dict(self) -> dict[str, torch.Tensor]:
        tensors = {f"stats.{f.name}": getattr(self.stats, f.name) for f in fields(Stats)}
        for kind, kept in self.kept.items():
            tensors |= {f"{kind}.{f.name}": getattr(kept, f.name) for f in fields(Kept)}
        return tensors

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        for f in fields(Stats):
            setattr(self.stats, f.name, tensors[f"stats.{f.name}"].to(self.bin_of_prefix.device))
        for kind, kept in self.kept.items():
            for f in fields(Kept):
                setattr(kept, f.name, tensors[f"{kind}.{f.name}"].to(self.bin_of_prefix.device))


def state_bytes(
    n_layers: int, d_mlp: int, window: int, top_k: int, random_k: int, bottom_k: int, activation_bytes: int
) -> int:
    """Bytes of the harvest state every rank holds on its device (LayerState, all layers).

    Per kept slot: key float64, window int64, score float32, position int64 and `window` activations
    (float16 on CUDA, float32 on CPU: activation_dtype); per neuron: max, min float32, sum float64 and the
    histogram's int64 bins; per layer: the token count; once: the uint8 table binning float prefixes
    (histogram_bins_of_prefixes).
    """
    slots = top_k + random_k + bottom_k
    per_neuron = slots * (8 + 8 + 4 + 8 + window * activation_bytes) + 4 + 4 + 8 + 8 * (len(HISTOGRAM_EDGES) + 1)
    return n_layers * (d_mlp * per_neuron + 8) + HISTOGRAM_PREFIXES
