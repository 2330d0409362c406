"""Rankings over every neuron at once: which fire most on a text, and which separate texts with a feature from texts
without.

Ties are broken towards the lower layer, then the lower neuron, so every ranking is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DIRECTIONS = ("higher with the feature", "lower with the feature", "either way")
STRONG_AUROC = 0.9


@dataclass(frozen=True)
class TextPeaks:
    """Per neuron of each layer: its max activation over a text's tokens after BOS, and where."""

    values: torch.Tensor  # [layers, d_mlp]
    positions: torch.Tensor  # [layers, d_mlp]


def text_peaks(activations: torch.Tensor) -> TextPeaks:
    """Peaks of [layers, positions, d_mlp] activations, BOS (position 0) excluded as in the harvest's scores."""
    values, positions = activations[:, 1:].max(dim=1)
    return TextPeaks(values, positions + 1)


def descending_order(scores: np.ndarray, count: int) -> list[tuple[int, int]]:
    """(layer row, neuron) of the `count` highest finite scores of a [layers, d_mlp] array, ties to the lower index."""
    flat = scores.ravel()
    finite = np.flatnonzero(np.isfinite(flat))
    ranked = finite[np.argsort(-flat[finite], kind="stable")][:count]
    return [divmod(int(index), scores.shape[1]) for index in ranked]


def relative_to_dataset(peaks: np.ndarray, dataset_max: np.ndarray) -> np.ndarray:
    """Each peak over the neuron's dataset max; NaN where the neuron never fired in the dataset (max <= 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(dataset_max > 0, peaks / dataset_max, np.nan)


@dataclass(frozen=True)
class Separation:
    """How each neuron's pooled activation differs between samples with the feature and without: [layers, d_mlp]
    each."""

    cohens_d: np.ndarray
    auroc: np.ndarray
    mean_with: np.ndarray
    mean_without: np.ndarray


def cohens_d(with_feature: torch.Tensor, without_feature: torch.Tensor) -> torch.Tensor:
    """(mean with - mean without) / pooled standard deviation along dim -2; +-inf when both groups are constant
    and differ, 0 when they are constant and equal."""
    n_with, n_without = with_feature.shape[-2], without_feature.shape[-2]
    difference = with_feature.mean(dim=-2) - without_feature.mean(dim=-2)
    pooled_variance = (
        (n_with - 1) * with_feature.var(dim=-2, correction=1)
        + (n_without - 1) * without_feature.var(dim=-2, correction=1)
    ) / (n_with + n_without - 2)
    pooled_sd = pooled_variance.sqrt()
    spread = torch.where(pooled_sd > 0, pooled_sd, torch.ones_like(pooled_sd))
    constant = torch.where(difference == 0, torch.zeros_like(difference), torch.sign(difference) * torch.inf)
    return torch.where(pooled_sd > 0, difference / spread, constant)


def auroc(with_feature: torch.Tensor, without_feature: torch.Tensor) -> torch.Tensor:
    """P(a sample with the feature scores above one without), ties counting half: Mann-Whitney U / (n1 n2).

    Inputs are [..., samples, neurons]; for each neuron the samples without the feature are sorted once
    and every sample with it is placed among them by binary search."""
    without_sorted = without_feature.transpose(-1, -2).contiguous().sort(dim=-1).values
    queries = with_feature.transpose(-1, -2).contiguous()
    below = torch.searchsorted(without_sorted, queries, right=False).to(torch.float64)
    below_or_equal = torch.searchsorted(without_sorted, queries, right=True).to(torch.float64)
    wins = (below + 0.5 * (below_or_equal - below)).sum(dim=-1)
    return (wins / (with_feature.shape[-2] * without_feature.shape[-2])).to(torch.float32)


def separation(values: torch.Tensor, labels: np.ndarray) -> Separation:
    """Separation statistics of [layers, samples, d_mlp] pooled activations for boolean sample labels."""
    mask = torch.from_numpy(np.asarray(labels, dtype=bool))
    with_feature, without_feature = values[:, mask], values[:, ~mask]
    return Separation(
        cohens_d=cohens_d(with_feature, without_feature).numpy(),
        auroc=auroc(with_feature, without_feature).numpy(),
        mean_with=with_feature.mean(dim=1).numpy(),
        mean_without=without_feature.mean(dim=1).numpy(),
    )


def oriented(result: Separation, direction: str) -> tuple[np.ndarray, np.ndarray]:
    """(AUROC, d) turned so that larger means better separated in the asked direction."""
    if direction == DIRECTIONS[0]:
        return result.auroc, result.cohens_d
    if direction == DIRECTIONS[1]:
        return 1 - result.auroc, -result.cohens_d
    return np.maximum(result.auroc, 1 - result.auroc), np.abs(result.cohens_d)


def separation_order(result: Separation, direction: str, count: int) -> list[tuple[int, int]]:
    """(layer row, neuron) of the best separating neurons: by AUROC, then by effect size, ties to the lower index."""
    area, effect = oriented(result, direction)
    flat_area, flat_effect = area.ravel(), np.nan_to_num(effect.ravel(), nan=-np.inf)
    ranked = np.lexsort((np.arange(flat_area.size), -flat_effect, -flat_area))[:count]
    return [divmod(int(index), area.shape[1]) for index in ranked]


def layer_summary(result: Separation, direction: str) -> list[dict]:
    """Per layer row: its best neuron (same order as separation_order) and how many neurons separate strongly."""
    area, _ = oriented(result, direction)
    rows = []
    for row in range(area.shape[0]):
        single = Separation(
            *(
                np.asarray(field)[row : row + 1]
                for field in (result.cohens_d, result.auroc, result.mean_with, result.mean_without)
            )
        )
        _, best = separation_order(single, direction, 1)[0]
        rows.append({"row": row, "best_neuron": best, "strong": int((area[row] >= STRONG_AUROC).sum())})
    return rows
