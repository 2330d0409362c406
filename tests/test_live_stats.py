"""The live tabs' statistics on arrays, against brute force and a reference optimiser: AUROC, Cohen's d, the probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from space.live.probe import (
    ProbeDataError,
    consistent_grams,
    held_out_accuracy,
    logistic_decisions,
    probe,
    standardised_folds,
)
from space.live.stats import DIRECTIONS, Separation, auroc, cohens_d, descending_order, separation_order
from space.live.texts import strip_marks


def test_auroc_and_cohens_d_equal_pairwise_brute_force_with_ties():
    rng = np.random.default_rng(0)
    with_feature = rng.integers(0, 4, size=(7, 30)).astype(np.float32)  # small integers: many ties
    without_feature = rng.integers(0, 4, size=(9, 30)).astype(np.float32)
    areas = auroc(torch.from_numpy(with_feature), torch.from_numpy(without_feature)).numpy()
    effects = cohens_d(torch.from_numpy(with_feature), torch.from_numpy(without_feature)).numpy()
    for neuron in range(30):
        a, b = with_feature[:, neuron].astype(np.float64), without_feature[:, neuron].astype(np.float64)
        wins = sum((x > y) + 0.5 * (x == y) for x in a for y in b) / (len(a) * len(b))
        pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
        assert areas[neuron] == pytest.approx(wins, abs=1e-6)
        assert effects[neuron] == pytest.approx((a.mean() - b.mean()) / pooled, rel=1e-5)


def test_constant_groups_have_infinite_or_zero_effect():
    effects = cohens_d(torch.tensor([[1.0, 2.0], [1.0, 2.0]]), torch.tensor([[0.0, 2.0], [0.0, 2.0]]))
    assert effects.tolist() == [float("inf"), 0.0]


def test_rankings_break_ties_towards_the_lower_layer_and_neuron():
    scores = np.array([[1.0, 3.0, np.nan], [3.0, 2.0, 3.0]])
    assert descending_order(scores, 4) == [(0, 1), (1, 0), (1, 2), (1, 1)]
    result = Separation(np.array([[1.0, 5.0, -5.0]]), np.array([[1.0, 1.0, 0.0]]), np.zeros((1, 3)), np.zeros((1, 3)))
    assert separation_order(result, DIRECTIONS[0], 3) == [(0, 1), (0, 0), (0, 2)]
    assert separation_order(result, DIRECTIONS[1], 1) == [(0, 2)]
    assert separation_order(result, DIRECTIONS[2], 3) == [(0, 1), (0, 2), (0, 0)]


def test_logistic_regression_equals_a_reference_optimiser():
    """Newton on the Gram matrix reaches the optimum of sklearn's objective that L-BFGS finds in the primal."""
    generator = torch.Generator().manual_seed(1)
    data = torch.randn(3, 30, 50, generator=generator, dtype=torch.float64)
    labels = (torch.rand(30, generator=generator) > 0.5).to(torch.float64)
    data[1] += 2 * labels[:, None]  # one separable problem
    train = torch.ones(3, 30, dtype=torch.float64)
    train[:, :6] = 0
    gram, train_gram = consistent_grams(data, train)
    decisions = logistic_decisions(gram, train_gram, labels.expand(1, 3, 30), train)[0]
    weights = torch.zeros(3, 50, dtype=torch.float64, requires_grad=True)
    biases = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weights, biases], max_iter=5000, tolerance_grad=1e-12, tolerance_change=1e-15, line_search_fn="strong_wolfe"
    )

    def objective():
        optimizer.zero_grad()
        logits = torch.einsum("psw,pw->ps", data, weights) + biases[:, None]
        losses = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.expand(3, 30), reduction="none")
        total = (losses * train).sum() + 0.5 * (weights**2).sum()
        total.backward()
        return total

    optimizer.step(objective)
    reference = (torch.einsum("psw,pw->ps", data, weights) + biases[:, None]).detach()
    torch.testing.assert_close(decisions, reference, atol=1e-5, rtol=1e-5)


def test_probe_finds_the_layer_that_carries_a_constructed_feature():
    rng = np.random.default_rng(2)
    labels = np.arange(60) % 2 == 0
    features = torch.from_numpy(rng.normal(size=(3, 60, 40)).astype(np.float32))
    direction = torch.from_numpy(rng.normal(size=40).astype(np.float32))
    features[2] += (
        3.0 * torch.from_numpy(np.where(labels, 1.0, -1.0).astype(np.float32))[:, None] * direction / direction.norm()
    )
    result = probe(features, labels)
    assert result.accuracy[2] >= 0.95
    assert abs(result.accuracy[0] - 0.5) < 0.2 and abs(result.accuracy[1] - 0.5) < 0.2
    assert np.all(np.abs(result.shuffled_mean - 0.5) < 0.15) and result.chance == 0.5 and result.folds == 5


def test_held_out_samples_never_shape_their_own_standardisation():
    features = torch.zeros(1, 10, 2)
    features[0, 0] = 100.0  # an outlier in fold 0 only
    fold_of = np.arange(10) % 5
    standardised, train = standardised_folds(features, fold_of, 5)
    assert train[0, 0] == 0 and train[1, 0] == 1
    assert standardised[0, 1:].abs().max() == 0  # fold 0's training rows are all zero: mean 0, spread 0
    assert held_out_accuracy(features, np.array([np.arange(10) % 2 == 0]), fold_of, 5).shape == (1, 1)


def test_probe_refuses_too_little_data():
    with pytest.raises(ProbeDataError, match="3 samples with the feature and 5 without"):
        probe(torch.zeros(1, 8, 4), np.array([True] * 3 + [False] * 5))


def test_marked_spans_are_stripped_with_their_positions():
    assert strip_marks("a [[big]] cat [[sat]]") == ("a big cat sat", [(2, 5), (10, 13)])
    assert strip_marks("no marks [[ here") == ("no marks [[ here", [])


def test_gpu_wrapper_returns_the_function_itself_off_zero_gpu(monkeypatch):
    """`spaces.GPU` is imported for real; without SPACES_ZERO_GPU it must not wrap (no ZeroGPU client calls)."""
    import spaces.config

    from space.live.model import gpu

    monkeypatch.setattr(spaces.config.Config, "zero_gpu", False)

    def forward() -> int:
        return 1

    assert gpu(60)(forward) is forward
