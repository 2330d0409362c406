"""One colour rule for every view: positive activations on the neuron's positive range, negative ones on its negative
range (the neuron page, the live tab, the PNG card), checked against values computed here by hand."""

from __future__ import annotations

import re

import numpy as np
import pyarrow.parquet as pq
import pytest

from hub_sync import format as fmt
from hub_sync.records import Example
from hub_sync.synthetic import write_synthetic_dataset
from space.links import NeuronRef
from space.live.render import live_tokens_html, value_cell
from space.preview import NEGATIVE, POSITIVE, tint
from space.render import ColourScale, examples_html, shade_class
from space.sources import open_sources
from space.views import neuron_view

TOKEN_CLASS = re.compile(r'<span class="t ([pn]\d+)(?: pk)?" title="([^"]*)">')


def expected_class(value: float, positive: float, negative: float) -> str:
    """The rule written out: the share of the value's own sign's range, in ten steps."""
    if value >= 0:
        return f"p{round(10 * min(1, value / positive))}"
    step = round(10 * min(1, -value / negative))
    return f"n{step}" if step else "p0"


def gated_example(kind: str, rank: int, values: list[float]) -> Example:
    tokens = ["<bos>", *(f" t{i}" for i in range(len(values) - 1))]
    peak = int(np.argmax(values[1:])) + 1 if kind != "bottom" else int(np.argmin(values[1:])) + 1
    return Example(kind, rank, float(values[peak]), peak, rank, tokens, np.array(values, dtype=np.float32))


def test_a_gated_neuron_colours_its_top_examples_on_its_positive_range():
    """The issue's case: max 0.73, min -4.75. On one ±4.75 range the top peak would be step 2 of 10 (near blank)."""
    examples = [
        gated_example("top", 0, [9.0, 0.1, 0.73, 0.365]),
        gated_example("bottom", 0, [0.0, -4.75, -2.375, 0.2]),
    ]
    scale = ColourScale.of_examples(examples)
    assert (scale.positive, scale.negative) == (pytest.approx(0.73), pytest.approx(4.75))  # BOS's 9.0 left out
    html = examples_html(examples)
    classes = {float(value): shade for shade, value in TOKEN_CLASS.findall(html)}
    assert classes[0.73] == "p10" and classes[0.365] == "p5"
    assert classes[-4.75] == "n10" and classes[-2.375] == "n5"
    assert classes[9.0] == "p10"  # BOS beyond the range: clipped, not rescaling the rest
    assert "0 to +0.73 (orange), 0 to −4.75 (blue)" in html


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.0, "p0"), (0.5, "p5"), (1.0, "p10"), (3.0, "p10"), (-0.2, "n1"), (-1.0, "n5"), (-2.0, "n10"), (-0.04, "p0")],
)
def test_shade_class_takes_each_sign_on_its_own_range(value, expected):
    assert shade_class(value, ColourScale(positive=1.0, negative=2.0)) == expected


def test_a_neuron_without_one_sign_gets_a_unit_range_for_it():
    assert ColourScale.of_values(np.array([0.0, 0.5, 2.0])) == ColourScale(2.0, 1.0)
    assert ColourScale.of_values(np.array([-3.0, -1.0])) == ColourScale(1.0, 3.0)
    assert ColourScale.of_values(np.zeros(0)) == ColourScale(1.0, 1.0)
    assert ColourScale(1.0, 1.0).share(float("nan")) == 0.0


def test_the_card_and_the_live_tab_follow_the_same_rule():
    scale = ColourScale(positive=0.73, negative=4.75)
    assert tint(0.73, scale) == POSITIVE and tint(-4.75, scale) == NEGATIVE
    assert tint(0.0, scale) == (255, 255, 255)
    halfway = tint(-2.375, scale)
    assert all(abs(shade - (255 + (colour - 255) / 2)) <= 0.5 for shade, colour in zip(halfway, NEGATIVE, strict=True))
    values = np.array([0.0, 0.73, -4.75, 0.2, -1.0], dtype=np.float32)
    html = live_tokens_html(NeuronRef("m", 0, 1), ["<bos>", " a", " b", " c", " d"], values, scale)
    shown = [shade for shade, _ in TOKEN_CLASS.findall(html)]
    assert shown == [expected_class(float(value), 0.73, 4.75) for value in values]
    assert "background:rgba(255,112,0,1.00)" in value_cell(0.73, scale)
    assert "background:rgba(28,126,214,0.50)" in value_cell(-2.375, scale)


def test_every_token_of_a_neuron_page_follows_the_rule(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "gated", n_layers=1, d_mlp=6, bottom_k=3, name="org/gated", seed=4)
    catalog = open_sources([str(folder)])
    rows = pq.read_table(folder / fmt.examples_path(0)).to_pylist()
    for neuron in range(6):
        mine = [row for row in rows if row["neuron"] == neuron]
        after_bos = np.array([value for row in mine for value in row["activations"][1:]], dtype=np.float64)
        positive = after_bos.max() if after_bos.max() > 0 else 1.0
        negative = -after_bos.min() if after_bos.min() < 0 else 1.0
        page = neuron_view(catalog, "org/gated", 0, neuron).page
        full_windows = re.findall(r'<div class="ns-text ns-full">(.*?)</div>', page)
        assert len(full_windows) == len(mine)
        for window, row in zip(full_windows, mine, strict=True):
            shown = [shade for shade, _ in TOKEN_CLASS.findall(window)]
            assert shown == [expected_class(float(np.float32(v)), positive, negative) for v in row["activations"]]
