"""The probe's chart: every point where its value puts it, the shuffled-label band between their mean and best,
chance as a labelled line, and the axes and legend a reader needs."""

from __future__ import annotations

import re

import pytest

from space.live.render import PLOT_BOTTOM, PLOT_HEIGHT, PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_WIDTH, probe_plot_svg

LAYERS = [0, 1, 2, 3, 4]
ACCURACY = [0.5, 0.75, 1.0, 0.9, 0.6]
SHUFFLED_MEAN = [0.48, 0.52, 0.5, 0.49, 0.51]
SHUFFLED_MAX = [0.6, 0.65, 0.62, 0.58, 0.7]


def expected_point(index: int, value: float) -> tuple[float, float]:
    """Where a layer's value belongs: layers evenly across the plot area, 0 at its bottom and 1 at its top."""
    width = PLOT_WIDTH - PLOT_LEFT - PLOT_RIGHT
    height = PLOT_HEIGHT - PLOT_TOP - PLOT_BOTTOM
    return PLOT_LEFT + width * index / (len(LAYERS) - 1), PLOT_TOP + height * (1 - value)


def points(text: str) -> list[float]:
    """An SVG points list as flat coordinates x0, y0, x1, y1, ..."""
    return [float(number) for pair in text.split() for number in pair.split(",")]


def flat(pairs: list[tuple[float, float]]) -> list[float]:
    return [number for pair in pairs for number in pair]


def test_the_chart_puts_every_value_where_it_belongs():
    svg = probe_plot_svg(LAYERS, ACCURACY, SHUFFLED_MEAN, SHUFFLED_MAX, 0.5)
    solid, dashed = (
        points(re.search(rf'<polyline points="([^"]*)" fill="none" stroke="{colour}"', svg).group(1))
        for colour in ("#e8590c", "#1c7ed6")
    )
    assert solid == pytest.approx(flat([expected_point(i, v) for i, v in enumerate(ACCURACY)]), abs=0.06)
    assert dashed == pytest.approx(flat([expected_point(i, v) for i, v in enumerate(SHUFFLED_MEAN)]), abs=0.06)
    band = points(re.search(r'<polygon points="([^"]*)"', svg).group(1))
    expected_band = [expected_point(i, v) for i, v in enumerate(SHUFFLED_MAX)]
    expected_band += [expected_point(i, v) for i, v in reversed(list(enumerate(SHUFFLED_MEAN)))]
    assert band == pytest.approx(flat(expected_band), abs=0.06)
    dots = [float(number) for pair in re.findall(r'<circle cx="([^"]*)" cy="([^"]*)"', svg) for number in pair]
    assert dots == pytest.approx(flat([expected_point(i, v) for i, v in enumerate(ACCURACY)]), abs=0.06)
    titles = re.findall(r"<circle[^>]*><title>([^<]*)</title>", svg)
    assert titles[2] == "layer 2: 1.000 (shuffled labels: mean 0.500, best 0.620)"


def test_the_chart_names_its_axes_its_lines_and_chance():
    svg = probe_plot_svg(LAYERS, ACCURACY, SHUFFLED_MEAN, SHUFFLED_MAX, 0.25)
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    assert {"held-out accuracy", "layer (residual stream after it)", "probe", "chance", "chance 0.25"} <= set(texts)
    assert any(text.startswith("shuffled labels") for text in texts)
    assert [t for t in texts if re.fullmatch(r"[01](\.\d+)?|0\.\d+", t)][:5] == ["0", "0.25", "0.5", "0.75", "1"]
    chance_y = PLOT_TOP + (PLOT_HEIGHT - PLOT_TOP - PLOT_BOTTOM) * 0.75
    assert f'y1="{chance_y:.1f}" y2="{chance_y:.1f}" stroke="currentColor" stroke-dasharray="2 3"' in svg
    x_ticks = re.findall(rf'<text x="[^"]*" y="{PLOT_HEIGHT - PLOT_BOTTOM + 16}"[^>]*>([^<]*)</text>', svg)
    assert x_ticks == [str(layer) for layer in LAYERS]
