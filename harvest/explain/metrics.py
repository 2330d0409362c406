"""The scorers' statistics, each defined where it is undefined (one class missing, a constant series): None."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def balanced_accuracy(labels: Sequence[bool], predictions: Sequence[bool | None]) -> float | None:
    """Mean of the true-positive and true-negative rates; an unparsed prediction (None) is never correct."""
    labels_array = np.asarray(labels, dtype=bool)
    positives, negatives = labels_array.sum(), (~labels_array).sum()
    if positives == 0 or negatives == 0:
        return None
    said_yes = np.array([prediction is True for prediction in predictions])
    said_no = np.array([prediction is False for prediction in predictions])
    true_positive_rate = (said_yes & labels_array).sum() / positives
    true_negative_rate = (said_no & ~labels_array).sum() / negatives
    return float((true_positive_rate + true_negative_rate) / 2)


def auroc(positive_scores: Sequence[float], negative_scores: Sequence[float]) -> float | None:
    """P(a positive scores above a negative), ties counting half: the Mann-Whitney U statistic over n_pos * n_neg."""
    positive = np.asarray(positive_scores, dtype=np.float64)
    negative = np.asarray(negative_scores, dtype=np.float64)
    if len(positive) == 0 or len(negative) == 0:
        return None
    combined = np.concatenate([positive, negative])
    order = np.argsort(combined, kind="mergesort")
    ranks = np.empty(len(combined))
    sorted_values = combined[order]
    starts = np.flatnonzero(np.r_[True, np.diff(sorted_values) != 0])
    ends = np.r_[starts[1:], len(combined)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2  # average 1-based rank of a run of ties
    u_statistic = ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2
    return float(u_statistic / (len(positive) * len(negative)))


def correlation(predicted: Sequence[float], actual: Sequence[float]) -> float | None:
    """Pearson's r; None when either series is constant (OpenAI's simulation score is this over all tokens)."""
    x = np.asarray(predicted, dtype=np.float64)
    y = np.asarray(actual, dtype=np.float64)
    if len(x) < 2 or len(x) != len(y):
        return None
    x_centred, y_centred = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x_centred**2).sum() * (y_centred**2).sum())
    if denominator == 0:
        return None
    return float(np.clip((x_centred * y_centred).sum() / denominator, -1.0, 1.0))
