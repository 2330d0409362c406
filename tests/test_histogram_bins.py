"""What a histogram bin holds, defined once: the values the harvest counts in a bin are the ones
hub_sync.format.histogram_bin says it holds, and the page's hover label says so too."""

from __future__ import annotations

import html
import re

import numpy as np
import pytest
import torch

from harvest.selection import Stats, histogram_bins_of_prefixes
from hub_sync.format import HISTOGRAM_EDGES, histogram_bin
from space.plots import histogram_svg

EDGES = np.array(HISTOGRAM_EDGES, dtype=np.float32)
SMALLEST_POSITIVE = np.nextafter(np.float32(0), np.float32(1))


def counted_bins(values: np.ndarray) -> np.ndarray:
    """The bin the harvest counts each value in: one neuron per value, one window of BOS and that value."""
    acts = np.zeros((1, 2, len(values)), dtype=np.float32)
    acts[0, 1] = values
    stats = Stats.empty(len(values), "cpu")
    stats.add(torch.from_numpy(acts), histogram_bins_of_prefixes("cpu"))
    histogram = stats.histogram.numpy()
    assert (histogram.sum(axis=1) == 1).all()
    return histogram.argmax(axis=1)


@pytest.fixture(scope="module")
def labels() -> list[str]:
    """The hover label of every bin, as the neuron page renders it."""
    svg = histogram_svg([1] * (len(HISTOGRAM_EDGES) + 1), HISTOGRAM_EDGES)
    found = [html.unescape(title) for title in re.findall(r"<title>(.*?): 1 tokens</title>", svg)]
    assert len(found) == len(HISTOGRAM_EDGES) + 1
    return found


def test_every_counted_value_lies_in_its_bin_and_in_no_other():
    values = np.concatenate([EDGES, np.nextafter(EDGES, np.float32(np.inf)), np.nextafter(EDGES, np.float32(-np.inf)),
                             [0.0, -0.0, SMALLEST_POSITIVE, -SMALLEST_POSITIVE, 3e38, -3e38]]).astype(np.float32)
    for value, counted in zip(values, counted_bins(values), strict=True):
        holding = [index for index in range(len(EDGES) + 1) if histogram_bin(index, HISTOGRAM_EDGES).contains(value)]
        assert holding == [counted], value


def test_hover_labels_say_where_the_harvest_counts_each_edge(labels):
    def label_of(value: float) -> str:
        return labels[counted_bins(np.array([value], dtype=np.float32))[0]]

    for edge in EDGES[1:-1]:
        if edge > 0:
            assert label_of(edge).startswith(f"{edge:.3g} ≤ v < "), edge  # a positive edge opens the bin above it
        elif edge < 0:
            assert label_of(edge).endswith(f" < v ≤ {edge:.3g}"), edge  # a negative edge closes the bin below it
    assert label_of(0.0).endswith(" < v ≤ 0")
    assert label_of(SMALLEST_POSITIVE).startswith("0 < v < ")
    assert label_of(EDGES[-1]) == label_of(3e38) == f"v ≥ {EDGES[-1]:.3g}"
    assert label_of(EDGES[0]) == label_of(-3e38) == f"v ≤ {EDGES[0]:.3g}"
