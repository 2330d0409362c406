"""A linear probe per layer: L2-regularised logistic regression, cross-validated, against shuffled labels.

Every (layer, fold) problem is fitted at once, batched: each by Newton's method on the combination
of its training samples that makes up the weights. Features are standardised with the training fold's statistics only.
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


def logistic_decisions(
    gram: torch.Tensor, train_gram: torch.Tensor, labels: torch.Tensor, train: torch.Tensor
) -> torch.Tensor:
    """Decision values w.x + b on every sample of independent L2-regularised logistic regressions.

    gram: [problems, samples, samples], x_s . x_j for training samples j (0 in held-out columns);
    train_gram: the same with held-out rows zeroed too; labels: [label sets, problems, samples] in {0, 1};
    train: [problems, samples], 1 in the training set. The objective is sklearn's default (C = 1): sum of
    training log-losses + ||w||^2 / 2. Its optimum is a combination of the training rows, w = X_train^T beta,
    so Newton's method runs on (beta, b): one coordinate per sample, batched over every problem at once."""
    label_sets, problems, n_samples = labels.shape
    design = torch.cat([gram, torch.ones(problems, n_samples, 1, dtype=gram.dtype)], dim=2)
    penalty = torch.zeros(problems, n_samples + 1, n_samples + 1, dtype=gram.dtype)
    penalty[:, :n_samples, :n_samples] = train_gram
    scale = 1 + train_gram.diagonal(dim1=1, dim2=2).mean(dim=1)
    regularised = penalty + NEWTON_DAMPING * scale[:, None, None] * torch.eye(n_samples + 1, dtype=gram.dtype)
    coefficients = torch.zeros(label_sets, problems, n_samples + 1, dtype=gram.dtype)
    for _ in range(NEWTON_STEPS):
        probabilities = torch.sigmoid(torch.einsum("psc,lpc->lps", design, coefficients))
        residual = train * (probabilities - labels)
        gradient = torch.einsum("psc,lps->lpc", design, residual) + torch.einsum("pcd,lpd->lpc", penalty, coefficients)
        weighted = design * (train * probabilities * (1 - probabilities))[..., None]
        hessian = weighted.transpose(-1, -2) @ design + regularised
        step = torch.linalg.solve(hessian, gradient)
        coefficients = coefficients - step
        if step.abs().max() < NEWTON_TOLERANCE:
            break
    return torch.einsum("psc,lpc->lps", design, coefficients)


def standardised_folds(features: torch.Tensor, fold_of: np.ndarray, folds: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[layers * folds, samples, width] features standardised by each training fold's mean and spread, and
    the [layers * folds, samples] training masks."""
    layers, n_samples, width = features.shape
    train = torch.from_numpy(fold_of[None, :] != np.arange(folds)[:, None]).to(features.dtype)  # [folds, samples]
    data = features[:, None].expand(layers, folds, n_samples, width)
    weight = train[None, :, :, None]
    count = weight.sum(dim=2, keepdim=True)
    mean = (data * weight).sum(dim=2, keepdim=True) / count
    spread = (((data - mean) ** 2 * weight).sum(dim=2, keepdim=True) / count).sqrt()
    standardised = (data - mean) / torch.where(spread > 0, spread, torch.ones_like(spread))
    return standardised.reshape(layers * folds, n_samples, width), train.repeat(layers, 1)


def consistent_grams(data: torch.Tensor, train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_s . x_j for training j, its training block) with the training rows of the first taken from the second,
    made exactly symmetric: a direction the penalty cannot see must not move the training loss either, or a
    separable problem has an unregularised direction and Newton's method diverges along it."""
    training_rows = data * train[..., None]
    gram = data @ training_rows.transpose(1, 2)
    mask = train[:, :, None] * train[:, None, :]
    train_gram = 0.5 * (gram + gram.transpose(1, 2)) * mask
    return torch.where(train[:, :, None] > 0, train_gram, gram), train_gram


def held_out_accuracy(features: torch.Tensor, label_sets: np.ndarray, fold_of: np.ndarray, folds: int) -> np.ndarray:
    """[label sets, layers] share of samples predicted right by the probe fitted without their fold."""
    layers, n_samples, _ = features.shape
    data, train = standardised_folds(features.to(torch.float32), fold_of, folds)
    train = train.to(torch.float64)
    gram, train_gram = consistent_grams(data.to(torch.float64), train)
    targets = torch.from_numpy(np.asarray(label_sets, dtype=np.float64))[:, None, :].expand(-1, layers * folds, -1)
    decisions = logistic_decisions(gram, train_gram, targets, train)
    correct = ((decisions > 0) == targets.bool()).to(torch.float64) * (1 - train)
    return (correct.reshape(len(label_sets), layers, folds, n_samples).sum(dim=(2, 3)) / n_samples).numpy()


def check_probe_data(labels: np.ndarray) -> None:
    """Refuse lists too small for cross-validation, naming how many samples each side has."""
    n_with, n_without = int(labels.sum()), int((~labels).sum())
    if min(n_with, n_without) < MIN_PER_CLASS:
        raise ProbeDataError(
            f"Too little data for a probe: {n_with} samples with the feature and {n_without} without; "
            f"each side needs at least {MIN_PER_CLASS} (better 20 or more)."
        )


def probe(features: torch.Tensor, labels: np.ndarray, seed: int = 0) -> ProbeResult:
    """Cross-validated probe accuracy per layer of [layers, samples, width] features, and shuffled-label baselines
    (the same folds, the labels permuted)."""
    labels = np.asarray(labels, dtype=bool)
    check_probe_data(labels)
    folds = min(MAX_FOLDS, int(labels.sum()), int((~labels).sum()))
    rng = np.random.default_rng(seed)
    label_sets = np.stack([labels, *(rng.permutation(labels) for _ in range(SHUFFLES))])
    accuracy = held_out_accuracy(features, label_sets, stratified_folds(labels, folds, seed), folds)
    chance = max(labels.mean(), 1 - labels.mean())
    shuffled = accuracy[1:]
    return ProbeResult(accuracy[0], shuffled.mean(axis=0), shuffled.max(axis=0), float(chance), folds, len(labels))
