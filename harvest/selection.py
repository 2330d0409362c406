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

from hub_sync.format import HISTOGRAM_EDGES, ZERO_EDGE

EMPTY_WINDOW = torch.iinfo(torch.int64).max
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


@dataclass
class Kept:
    """The k best windows per neuron under one ordering (smallest key first, ties to the lower window)."""

    keys: torch.Tensor  # [d_mlp, k] float64; +inf marks an empty slot
    windows: torch.Tensor  # [d_mlp, k] int64
    scores: torch.Tensor  # [d_mlp, k] float32
    positions: torch.Tensor  # [d_mlp, k] int64
    activations: torch.Tensor  # [d_mlp, k, window], see activation_dtype

    @classmethod
    def empty(cls, d_mlp: int, k: int, window: int, device: torch.device | str) -> "Kept":
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
        positions_of: Callable[[torch.Tensor], torch.Tensor],
        activations_of: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        """Merge candidates ([d_mlp, n] each) into the kept set.

        Only neurons with a candidate at least as good as their current k-th example are touched;
        `positions_of(rows)` [len(rows), n] and `activations_of(rows)` [len(rows), n, window] give those
        neurons' candidate score positions and activations, so nothing is computed for the others.
        """
        k = self.keys.shape[1]
        if k == 0:
            return
        rows = (keys.min(dim=1).values <= self.keys[:, -1]).nonzero().squeeze(1)
        if rows.numel() == 0:
            return
        all_keys = torch.cat([self.keys[rows], keys[rows]], dim=1)
        all_windows = torch.cat([self.windows[rows], windows[rows]], dim=1)
        by_window = all_windows.argsort(dim=1, stable=True)
        by_key = all_keys.gather(1, by_window).argsort(dim=1, stable=True)
        chosen = by_window.gather(1, by_key)[:, :k]
        self.keys[rows] = all_keys.gather(1, chosen)
        self.windows[rows] = all_windows.gather(1, chosen)
        self.scores[rows] = torch.cat([self.scores[rows], scores[rows].float()], dim=1).gather(1, chosen)
        self.positions[rows] = torch.cat([self.positions[rows], positions_of(rows)], dim=1).gather(1, chosen)
        candidates = torch.cat([self.activations[rows], activations_of(rows).to(self.activations.dtype)], dim=1)
        self.activations[rows] = candidates.gather(1, chosen[:, :, None].expand(-1, -1, candidates.shape[2]))

    def absorb(self, other: "Kept") -> None:
        """Merge another state's kept set (from another shard or rank) into this one."""
        self.offer(
            other.keys, other.windows, other.scores, lambda rows: other.positions[rows], lambda rows: other.activations[rows]
        )

    def filled(self) -> torch.Tensor:
        """[d_mlp, k] bool: which slots hold a real window."""
        return torch.isfinite(self.keys) & (self.windows != EMPTY_WINDOW)


@functools.lru_cache(maxsize=None)
def histogram_bins_of_prefixes(device: str) -> torch.Tensor:
    """Histogram bin of every float32 by its top 16 bits (its bfloat16 prefix), as an int32 table of 65,536.

    A bin holds edges[i-1] <= v < edges[i] for v > 0 and edges[i-1] < v <= edges[i] for v <= 0: with
    bfloat16 edges, all float32 values sharing a prefix (truncated towards zero) land in one bin, so a
    table lookup bins exactly what a search over the edges would. One table per device, shared by all layers.
    """
    prefixes = torch.arange(1 << 16, dtype=torch.int32, device=device)
    values = (prefixes << 16).view(torch.float32)
    edges = torch.tensor(HISTOGRAM_EDGES, dtype=torch.float32, device=device)
    above_zero = torch.bucketize(values, edges, right=True, out_int32=True)
    at_or_below_zero = torch.bucketize(values, edges, right=False, out_int32=True)
    return torch.where(values > 0, above_zero, at_or_below_zero)


@dataclass
class Stats:
    """Running per-neuron statistics over every non-BOS token."""

    max: torch.Tensor  # [d_mlp] float32
    min: torch.Tensor
    sum: torch.Tensor  # float64
    histogram: torch.Tensor  # [d_mlp, bins] int64
    n_tokens: torch.Tensor  # int64 scalar

    @classmethod
    def empty(cls, d_mlp: int, device: torch.device | str) -> "Stats":
        return cls(
            max=torch.full((d_mlp,), float("-inf"), device=device),
            min=torch.full((d_mlp,), float("inf"), device=device),
            sum=torch.zeros(d_mlp, dtype=torch.float64, device=device),
            histogram=torch.zeros((d_mlp, len(HISTOGRAM_EDGES) + 1), dtype=torch.int64, device=device),
            n_tokens=torch.zeros((), dtype=torch.int64, device=device),
        )

    def add(self, acts: torch.Tensor, window_max: torch.Tensor, window_min: torch.Tensor, bin_of_prefix: torch.Tensor) -> None:
        """acts: [batch, window, d_mlp] float32 with BOS at position 0; window_max/min: [batch, d_mlp] without BOS.

        Density is not counted here: it is the histogram's mass above zero. BOS activations go to a discarded
        extra bin rather than being sliced off, which would copy the whole tensor.
        """
        batch, window, d_mlp = acts.shape
        torch.maximum(self.max, window_max.amax(dim=0), out=self.max)
        torch.minimum(self.min, window_min.amin(dim=0), out=self.min)
        ones = torch.ones(1, batch * window, device=acts.device, dtype=acts.dtype)
        all_positions = (ones @ acts.reshape(batch * window, d_mlp))[0]
        self.sum += (all_positions - acts[:, 0, :].sum(dim=0)).double()
        self.n_tokens += batch * (window - 1)
        prefixes = (acts.contiguous().view(torch.int32) >> 16) & 0xFFFF
        bins = bin_of_prefix.index_select(0, prefixes.reshape(-1)).view(batch, window, d_mlp) * d_mlp
        bins += torch.arange(d_mlp, device=acts.device, dtype=torch.int32)
        discard = self.histogram.numel()
        bins[:, 0, :] = discard
        counts = torch.bincount(bins.reshape(-1), minlength=discard + 1)[:discard]
        self.histogram += counts.reshape(-1, d_mlp).T

    def positive(self) -> torch.Tensor:
        """How many tokens had activation > 0: the histogram bins above the zero edge."""
        return self.histogram[:, ZERO_EDGE + 1 :].sum(dim=1)

    def absorb(self, other: "Stats") -> None:
        torch.maximum(self.max, other.max, out=self.max)
        torch.minimum(self.min, other.min, out=self.min)
        self.sum += other.sum
        self.histogram += other.histogram
        self.n_tokens += other.n_tokens


class LayerState:
    """Everything the harvest keeps for one layer."""

    KINDS = ("top", "random", "bottom")

    def __init__(
        self, layer: int, d_mlp: int, window: int, top_k: int, random_k: int, bottom_k: int, seed: int, device
    ):
        self.layer = layer
        self.seed = seed
        self.kept = {
            "top": Kept.empty(d_mlp, top_k, window, device),
            "random": Kept.empty(d_mlp, random_k, window, device),
            "bottom": Kept.empty(d_mlp, bottom_k, window, device),
        }
        self.stats = Stats.empty(d_mlp, device)
        self.bin_of_prefix = histogram_bins_of_prefixes(str(torch.device(device)))

    def update(self, acts: torch.Tensor, windows: torch.Tensor) -> None:
        """acts: [batch, window, d_mlp] from `blocks.{layer}.mlp.hook_post`; windows: [batch] indices."""
        acts = acts.float()
        body = acts[:, 1:, :]
        d_mlp = body.shape[2]
        window_grid = windows[None, :].expand(d_mlp, -1)

        def activations_of(rows: torch.Tensor) -> torch.Tensor:
            return acts[:, :, rows].permute(2, 0, 1)

        def peaks_of(rows: torch.Tensor) -> torch.Tensor:
            return body[:, :, rows].argmax(dim=1).T + 1

        def troughs_of(rows: torch.Tensor) -> torch.Tensor:
            return body[:, :, rows].argmin(dim=1).T + 1

        top_values = body.amax(dim=1)
        bottom_values = body.amin(dim=1)
        top_scores = top_values.T
        self.kept["top"].offer(-top_scores.double(), window_grid, top_scores, peaks_of, activations_of)
        if self.kept["random"].keys.shape[1]:
            fired = top_scores > 0
            keys = sample_keys(self.seed, self.layer, windows, d_mlp).T
            self.kept["random"].offer(
                torch.where(fired, keys, float("inf")),
                torch.where(fired, window_grid, EMPTY_WINDOW),
                top_scores,
                peaks_of,
                activations_of,
            )
        if self.kept["bottom"].keys.shape[1]:
            bottom_scores = bottom_values.T
            self.kept["bottom"].offer(bottom_scores.double(), window_grid, bottom_scores, troughs_of, activations_of)
        self.stats.add(acts, top_values, bottom_values, self.bin_of_prefix)

    def absorb(self, other: "LayerState") -> None:
        for kind in self.KINDS:
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
