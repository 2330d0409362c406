"""Compare, the SoLU-vs-GELU question, on datasets harvested from natively built SoLU and GELU models over the
Python docs. Their weights are random: this tests the machinery (every number against the neuron tables), not the
science."""

from __future__ import annotations

from html import escape

import numpy as np
import pyarrow.parquet as pq
import pytest
from gradio_client import Client

from hub_sync import format as fmt
from hub_sync.synthetic import write_synthetic_dataset
from space.compare import CAVEAT, compare_view
from space.overview import CONCENTRATION_EDGES, DENSITY_EDGES, VERY_DENSE_DENSITY, VERY_SPARSE_DENSITY, Overviews
from space.rating import RatingStore
from space.research_tabs import research_tabs
from space.server import build_app, running
from space.sources import open_sources
from testkit.harvested import harvested_dataset

SOLU, GELU = "test/solu-2l", "test/gelu-2l"


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    solu, _ = harvested_dataset(root / "solu", SOLU, n_windows=40, n_layers=2, d_mlp=32, act_fn="solu_ln")
    gelu, _ = harvested_dataset(root / "gelu", GELU, n_windows=40, n_layers=2, d_mlp=32, act_fn="gelu")
    catalog = open_sources([str(solu), str(gelu)])
    store = RatingStore(root / "ratings")
    answers = {SOLU: ["interpretable", "interpretable", "not", "unsure"], GELU: ["not", "not", "interpretable"]}
    for model, given in answers.items():
        for answer in given:
            sample = store.issue(catalog, "compare-rater")
            while sample.model != model:
                sample = store.issue(catalog, "compare-rater")
            store.rate(catalog, "compare-rater", sample.token, answer, "")
    return catalog, store, {SOLU: solu, GELU: gelu}, answers


def reference_histogram(values: np.ndarray, edges: list[float]) -> list[int]:
    """numpy's histogram, values clipped into the edges' span (the overview puts lower ones in the first bin)."""
    counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=np.asarray(edges))
    return counts.tolist()


def test_compare_puts_both_models_on_the_same_statistics(compared):
    catalog, store, folders, answers = compared
    with running(build_app(catalog, research_tabs(store))) as url:
        notice, page, values = Client(url, verbose=False).predict([SOLU, GELU], api_name="/compare")
    assert notice == "" and values["models"] == [SOLU, GELU]
    for model, folder in folders.items():
        rows = (
            pq.read_table(folder / fmt.neurons_path(0)).to_pylist()
            + pq.read_table(folder / fmt.neurons_path(1)).to_pylist()
        )
        maxima = np.array([row["max"] for row in rows])
        density = np.array([row["density"] for row in rows])
        counts = values["counts"][model]
        assert counts["neurons"] == 64 and counts["never_fired"] == int((maxima <= 0).sum())
        assert counts["very_sparse"] == int(((maxima > 0) & (density <= VERY_SPARSE_DENSITY)).sum())
        assert counts["very_dense"] == int((density >= VERY_DENSE_DENSITY).sum())
        fired = [row for row in rows if row["max"] > 0]
        by_name = {d["name"]: d for d in values["distributions"][model]}
        assert by_name["density"]["counts"] == reference_histogram(
            np.array([r["density"] for r in fired]), DENSITY_EDGES
        )
        assert by_name["peak concentration"]["counts"] == reference_histogram(
            np.array([r["peak_concentration"] for r in fired]), CONCENTRATION_EDGES
        )
        rating = next(row for row in values["ratings"][model] if row["band"] == "all")
        given = answers[model]
        assert (rating["interpretable"], rating["not_interpretable"], rating["unsure"]) == (
            given.count("interpretable"),
            given.count("not"),
            given.count("unsure"),
        )
    assert escape(CAVEAT) in page and page.count("<svg") == 4
    assert f"<th>{SOLU}</th><th>{GELU}</th>" in page


def test_compare_needs_two_known_models(compared):
    catalog, store, _, _ = compared
    overviews = Overviews(catalog)
    notice, page, values = compare_view(overviews, store, catalog, [SOLU, "org/nope"], 60)
    assert "Unknown models ignored: &#x27;org/nope&#x27;" in notice and "pick at least two" in notice
    assert page == "" and values == {}
    notice, page, values = compare_view(overviews, store, catalog, [GELU, GELU], 60)
    assert "pick at least two" in notice and page == "" and values == {}  # one model twice is not two
    notice, page, values = compare_view(overviews, store, catalog, None, 60)
    assert notice == "" and values["models"] == [SOLU, GELU]
    lonely = open_sources([str(catalog.models[SOLU].source)])
    notice, _, _ = compare_view(Overviews(lonely), store, lonely, None, 60)
    assert "this server serves 1" in notice


def test_a_model_name_made_of_markup_is_escaped(compared, tmp_path):
    catalog, store, _, _ = compared
    evil = 'Evil<img src=x onerror="window.__pwned=1">'
    folder = write_synthetic_dataset(tmp_path / "evil", n_layers=1, d_mlp=4, name=evil)
    both = open_sources([str(catalog.models[SOLU].source), str(folder)])
    sample = store.issue(both, "markup-rater")
    while sample.model != evil:
        sample = store.issue(both, "markup-rater")
    store.rate(both, "markup-rater", sample.token, "not", "")
    notice, page, values = compare_view(Overviews(both), store, both, None, 60)
    assert values["models"] == [SOLU, evil] and "<img" not in notice + page
    assert page.count(escape(evil, quote=True)) == 2  # its column's heading and its ratings row
