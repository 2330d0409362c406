"""A linear probe per layer: L2-regularised logistic regression, cross-validated, against shuffled labels.

Every (layer, fold) problem is fitted at once, batched: each by Newton's method in the span of its
training samples. Features are standardised with the training fold's statistics only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

MAX_FOLDS = 5
MIN_PER_CLASS = 4
TRUSTED_SAMPLES = 40
SHUFFLES = 5
NEWTON_STEPS = 50
NEWTON_TOLERANCE = 1e-6
NEWTON_DAMPING = 1e-9


class ProbeDataError(ValueError):
    """Too little or too lopsided data to fit a probe; the message says what to add."""


@dataclass(frozen=True)
class ProbeResult:
    """Held-out accuracy per layer, with the same procedure on shuffled labels as a baseline."""

    accuracy: np.ndarray  # [layers]
    shuffled_mean: np.ndarray  # [layers]
    shuffled_max: np.ndarray  # [layers]
    chance: float  # the majority class's share: what always guessing it scores
    folds: int
    n_samples: int

    @property
    def standard_error(self) -> float:
        """The binomial standard error of an accuracy of 0.5 measured on n_samples held-out predictions."""
        return math.sqrt(0.25 / self.n_samples)


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold number per sample, each class spread evenly over the folds in a seeded random order."""
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels), dtype=np.int64)
    for value in (False, True):
        members = rng.permutation(np.flatnonzero(labels == value))
        assignment[members] = np.arange(len(members)) % folds
    return assignment


def fit_logistic(features: torch.Tensor, labels: torch.Tensor, train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights [problems, width] and biases [problems] of independent L2-regularised logistic regressions.

    features: [problems, samples, width] (standardised); labels: [problems, samples] in {0, 1}; train:
    [problems, samples] 1 where the sample is in that problem's training set. The objective is sklearn's
    default (C = 1): sum of training log-losses + ||w||^2 / 2. The optimal w lies in the span of the
    training rows, so each problem is solved by Newton's method in that span (at most `samples`
    coordinates) rather than in the full width: small Hessians, batched over every problem at once."""
    problems, n_samples, _ = features.shape
    basis = torch.linalg.svd(features * train[..., None], full_matrices=False).Vh.transpose(1, 2)  # [p, width, r]
    reduced = torch.cat([features @ basis, torch.ones(problems, n_samples, 1, dtype=features.dtype)], dim=2)
    rank = basis.shape[2]
    penalty = torch.diag(torch.cat([torch.ones(rank), torch.zeros(1)])).to(features.dtype)
    coefficients = torch.zeros(problems, rank + 1, dtype=features.dtype)
    for _ in range(NEWTON_STEPS):
        probabilities = torch.sigmoid(torch.einsum("psr,pr->ps", reduced, coefficients))
        gradient = torch.einsum("psr,ps->pr", reduced, train * (probabilities - labels)) + coefficients @ penalty
        curvature = train * probabilities * (1 - probabilities)
        hessian = torch.einsum("psr,ps,psq->prq", reduced, curvature, reduced) + penalty
        step = torch.linalg.solve(hessian + NEWTON_DAMPING * torch.eye(rank + 1, dtype=features.dtype), gradient)
        coefficients = coefficients - step
        if step.abs().max() < NEWTON_TOLERANCE:
            break
    weights = torch.einsum("pwr,pr->pw", basis, coefficients[:, :rank])
    return weights, coefficients[:, rank]


def held_out_accuracy(features: torch.Tensor, labels: np.ndarray, fold_of: np.ndarray, folds: int) -> np.ndarray:
    """[layers] share of samples predicted right by the probe fitted without their fold."""
    layers, n_samples, width = features.shape
    test = torch.from_numpy(fold_of[None, :] == np.arange(folds)[:, None]).to(features.dtype)  # [folds, samples]
    train = 1 - test
    data = features[:, None].expand(layers, folds, n_samples, width)
    weight = train[None, :, :, None]
    mean = (data * weight).sum(dim=2, keepdim=True) / weight.sum(dim=2, keepdim=True)
    spread = (((data - mean) ** 2 * weight).sum(dim=2, keepdim=True) / weight.sum(dim=2, keepdim=True)).sqrt()
    standardised = ((data - mean) / torch.where(spread > 0, spread, torch.ones_like(spread))).reshape(layers * folds, n_samples, width)
    target = torch.from_numpy(labels.astype(np.float32)).to(features.dtype).expand(layers * folds, n_samples)
    train_sets = train.repeat(layers, 1)
    weights, biases = fit_logistic(standardised, target, train_sets)
    predicted = (torch.einsum("psw,pw->ps", standardised, weights) + biases[:, None]) > 0
    correct = (predicted == target.bool()).to(features.dtype) * (1 - train_sets)
    return (correct.reshape(layers, folds, n_samples).sum(dim=(1, 2)) / n_samples).numpy()


def check_probe_data(labels: np.ndarray) -> None:
    """Refuse lists too small for cross-validation, naming how many samples each side has."""
    n_with, n_without = int(labels.sum()), int((~labels).sum())
    if min(n_with, n_without) < MIN_PER_CLASS:
        raise ProbeDataError(
            f"Too little data for a probe: {n_with} samples with the feature and {n_without} without; "
            f"each side needs at least {MIN_PER_CLASS} (better 20 or more)."
        )


def probe(features: torch.Tensor, labels: np.ndarray, seed: int = 0) -> ProbeResult:
    """Cross-validated probe accuracy per layer of [layers, samples, width] features, and shuffled-label baselines."""
    labels = np.asarray(labels, dtype=bool)
    check_probe_data(labels)
    folds = min(MAX_FOLDS, int(labels.sum()), int((~labels).sum()))
    features = features.to(torch.float32)
    accuracy = held_out_accuracy(features, labels, stratified_folds(labels, folds, seed), folds)
    rng = np.random.default_rng(seed + 1)
    shuffled = []
    for _ in range(SHUFFLES):
        permuted = rng.permutation(labels)
        shuffled.append(held_out_accuracy(features, permuted, stratified_folds(permuted, folds, seed), folds))
    baseline = np.stack(shuffled)
    chance = max(labels.mean(), 1 - labels.mean())
    return ProbeResult(accuracy, baseline.mean(axis=0), baseline.max(axis=0), float(chance), folds, len(labels))
