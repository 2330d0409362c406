"""Does a GPU harvest equal the CPU harvest of the same run? The rule, stated so that bfloat16 ties cannot fool it.

Two bfloat16 forwards on different devices (cuBLAS against the CPU's kernels) round differently, so a window's
activations differ between them by a few bfloat16 steps, more in deeper layers; and with 8 significant bits
scores tie exactly far more often than in float32, a tie going to the lower window index. "The same windows in
the same order" would then fail runs that are right. What is compared instead, per layer l, neuron and kind:

    tol = rtol x sqrt(l + 1) x max(s, the median s of the layer),  s = the neuron's max |activation| on the CPU

(bfloat16's unit roundoff is 2^-8 and its error grows about as the square root of depth; the layer's median keeps
a nearly silent neuron from getting a tolerance of nothing.)

- every window kept on both devices: each of its activations, its score, and the activation the CPU has at the
  GPU's max position (a near-tie inside the window may move `max_position`) agree within tol;
- top and bottom: the k best scores, best first, agree within tol (order statistics move no more than the values
  do), and a window kept on one device only must be a near-tie at the other's boundary: its score is within tol
  of the other device's k-th score;
- random: keys are hashes of (seed, layer, neuron, window), the same on both devices, so kept sets can differ
  only through a window whose "fired" (score > 0) differs, which then has |score| <= tol where it is kept; it
  pushes out at most one window on that side. So a window kept on one device only is allowed if it is such an
  unsure window, or if it lost its place to one: its key lies past every key the other device kept, and the
  other device keeps at least as many unsure windows of its own as there are such displaced ones;
- statistics: token count and each neuron's histogram mass exactly; max and min within tol; the share of
  histogram counts in another bin (values near an edge) is reported, not judged.

On the same activations (`exact`) the selection must agree to the bit: same windows, scores and histograms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harvest.selection import Kept, Stats
from harvest.state import HarvestState

MAX_LISTED = 10


@dataclass
class Comparison:
    """Counts over every (layer, neuron, kind) compared; `violations` lists the first few that broke the rule."""

    rtol: float
    neuron_kinds: int = 0
    same_windows: int = 0  # kept exactly the same set of windows
    near_ties: int = 0  # kept sets differ, and every difference is one the rule allows
    windows_compared: int = 0  # windows kept on both devices, their activations compared
    max_activation_error: float = 0.0  # max |a_cpu - a_gpu| / max(s, the layer's median s)
    max_score_error: float = 0.0
    max_error_over_tol: float = 0.0  # the margin: below 1 passes
    histogram_moved: float = 0.0  # the largest share of a layer's histogram counts found in another bin
    violation_count: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.violation_count == 0

    @property
    def exact(self) -> bool:
        """Equal to the bit but for float16 storage of kept activations: what identical inputs must give."""
        return (self.passed and self.same_windows == self.neuron_kinds and self.max_score_error == 0
                and self.histogram_moved == 0)

    def as_dict(self) -> dict:
        return {**{name: getattr(self, name) for name in self.__dataclass_fields__}, "passed": self.passed,
                "exact": self.exact}

    def flag(self, where: str, neurons: torch.Tensor, reason: str) -> torch.Tensor:
        """Record the neurons (a [d_mlp] bool mask) that broke the rule; returns the mask."""
        broken = neurons.nonzero().flatten().tolist()
        self.violation_count += len(broken)
        room = max(0, MAX_LISTED - len(self.violations))
        self.violations.extend(f"{where} neuron {n}: {reason}" for n in broken[:room])
        return neurons


def _on_cpu(kept: Kept) -> Kept:
    ranked = kept.ranked()
    return Kept(**{name: getattr(ranked, name).cpu() for name in ranked.__dataclass_fields__})


def _boundary(kept: Kept, sign: float) -> torch.Tensor:
    """Per neuron, the signed score of the k-th kept window (-inf when fewer than k are kept: then every window
    entered, and none may be missing)."""
    filled = kept.filled()
    worst = torch.where(filled, sign * kept.scores, float("inf")).amin(dim=1)
    return torch.where(filled.all(dim=1), worst, float("-inf"))


def _last_key(kept: Kept) -> torch.Tensor:
    """Per neuron, the largest key kept (+inf when fewer than k are kept: then no window lost its place)."""
    filled = kept.filled()
    return torch.where(filled.all(dim=1), torch.where(filled, kept.keys, float("-inf")).amax(dim=1), float("inf"))


def compare_kept(result: Comparison, where: str, kind: str, reference: Kept, candidate: Kept,
                 scale: torch.Tensor, tol: torch.Tensor) -> None:
    """Add one layer's kept set of one kind to `result`; scale and tol are per neuron, [d_mlp, 1]."""
    ref, cand = _on_cpu(reference), _on_cpu(candidate)
    ref_filled, cand_filled = ref.filled(), cand.filled()
    ref_acts, cand_acts = ref.activations.float(), cand.activations.float()

    same = (ref.windows[:, :, None] == cand.windows[:, None, :]) & ref_filled[:, :, None] & cand_filled[:, None, :]
    ref_matched, cand_matched = same.any(dim=2), same.any(dim=1)
    partner = same.int().argmax(dim=2)  # the candidate slot holding each reference slot's window
    partner_acts = cand_acts.gather(1, partner[:, :, None].expand_as(cand_acts))
    activation_error = torch.where(ref_matched, (ref_acts - partner_acts).abs().amax(dim=2), 0.0)
    score_error = torch.where(ref_matched, (ref.scores - cand.scores.gather(1, partner)).abs(), 0.0)
    at_partner_max = ref_acts.gather(2, cand.positions.gather(1, partner)[:, :, None])[:, :, 0]
    position_error = torch.where(ref_matched, (at_partner_max - ref.scores).abs(), 0.0)
    broken = result.flag(where, (activation_error > tol).any(dim=1), f"{kind}: an activation differs by more than tol")
    broken |= result.flag(where, (score_error > tol).any(dim=1), f"{kind}: a score differs by more than tol")
    broken |= result.flag(where, (position_error > tol).any(dim=1), f"{kind}: max_position is no near-max on the CPU")

    ref_only, cand_only = ref_filled & ~ref_matched, cand_filled & ~cand_matched
    if kind == "random":
        ref_unsure, cand_unsure = ref_only & (ref.scores.abs() <= tol), cand_only & (cand.scores.abs() <= tol)
        ref_firm, cand_firm = ref_only & ~ref_unsure, cand_only & ~cand_unsure
        kept_its_place = (ref_firm & (ref.keys < _last_key(cand)[:, None])) | (
            cand_firm & (cand.keys < _last_key(ref)[:, None])
        )
        too_many = (ref_firm.sum(dim=1) > cand_unsure.sum(dim=1)) | (cand_firm.sum(dim=1) > ref_unsure.sum(dim=1))
        broken |= result.flag(where, kept_its_place.any(dim=1) | too_many,
                              f"{kind}: a window kept on one device only neither fired near 0 nor lost its place")
    else:
        sign = 1.0 if kind == "top" else -1.0
        past_boundary = (ref_only & (sign * ref.scores - _boundary(cand, sign)[:, None] > tol)) | (
            cand_only & (sign * cand.scores - _boundary(ref, sign)[:, None] > tol)
        )
        broken |= result.flag(where, past_boundary.any(dim=1), f"{kind}: a window kept on one device is no near-tie")
        order_error = torch.where(ref_filled & cand_filled, (ref.scores - cand.scores).abs(), 0.0)
        broken |= result.flag(where, ((order_error > tol) | (ref_filled != cand_filled)).any(dim=1),
                              f"{kind}: the k best scores differ by more than tol")

    differ = (ref_only | cand_only).any(dim=1)
    result.neuron_kinds += len(differ)
    result.same_windows += int((~differ).sum())
    result.near_ties += int((differ & ~broken).sum())
    result.windows_compared += int(ref_matched.sum())
    result.max_activation_error = max(result.max_activation_error, float((activation_error / scale).max()))
    result.max_score_error = max(result.max_score_error, float((score_error / scale).max()))
    result.max_error_over_tol = max(result.max_error_over_tol, float((activation_error / tol).max()))


def compare_stats(result: Comparison, where: str, reference: Stats, candidate: Stats, tol: torch.Tensor) -> None:
    ref = {name: getattr(reference, name).cpu() for name in reference.__dataclass_fields__}
    cand = {name: getattr(candidate, name).cpu() for name in candidate.__dataclass_fields__}
    if int(ref["n_tokens"]) != int(cand["n_tokens"]):
        result.violation_count += 1
        result.violations.append(f"{where}: stats counted {int(ref['n_tokens'])} vs {int(cand['n_tokens'])} tokens")
    result.flag(where, ref["histogram"].sum(dim=1) != cand["histogram"].sum(dim=1), "stats: histogram mass differs")
    result.flag(where, ((ref["max"] - cand["max"]).abs() > tol) | ((ref["min"] - cand["min"]).abs() > tol),
                "stats: max or min differs by more than tol")
    moved = float((ref["histogram"] - cand["histogram"]).abs().sum()) / 2 / max(1, int(ref["histogram"].sum()))
    result.histogram_moved = max(result.histogram_moved, moved)


def neuron_scale(stats: Stats) -> torch.Tensor:
    """Per neuron, max(s, the layer's median s), s = its max |activation| over every token counted."""
    s = torch.maximum(stats.max.abs(), stats.min.abs()).cpu()
    return torch.maximum(s, s.median())


def compare_states(reference: HarvestState, candidate: HarvestState, rtol: float) -> Comparison:
    """The reference (CPU) harvest state against the candidate (GPU) one, over the same windows."""
    result = Comparison(rtol)
    for layer, ref_layer in reference.layers.items():
        cand_layer = candidate.layers[layer]
        scale = neuron_scale(ref_layer.stats)
        tol = rtol * (layer + 1) ** 0.5 * scale
        for kind, ref_kept in ref_layer.kept.items():
            if ref_kept.keys.shape[1]:
                compare_kept(result, f"layer {layer}", kind, ref_kept, cand_layer.kept[kind], scale[:, None],
                             tol[:, None])
        compare_stats(result, f"layer {layer}", ref_layer.stats, cand_layer.stats, tol)
    return result
