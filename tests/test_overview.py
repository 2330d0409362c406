"""The Overview: counts, distributions and notable neurons against brute force over the neuron tables' rows, the
/overview endpoint through gradio_client, bad input, and a first page that never waits for the computation."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from gradio_client import Client

from hub_sync import format as fmt
from hub_sync.synthetic import write_synthetic_dataset
from space.overview import (
    CONCENTRATION_EDGES,
    DENSITY_EDGES,
    MAX_BINS,
    NOTABLE_COUNT,
    VERY_DENSE_DENSITY,
    VERY_SPARSE_DENSITY,
    Overviews,
    compute_overview,
)
from space.overview_view import ALL_LAYERS, overview_view
from space.rating import RatingStore
from space.research_tabs import research_tabs
from space.server import build_app, running
from space.sources import open_sources
from testkit.wilson_reference import wilson_by_inversion

SHAPED, GATED = "org/shaped", "org/gated"
# neuron -> what its row is edited to be, so every rule has a case on each side of it
EDITS = {
    0: {"max": -0.5, "density": 0.0},  # never fired
    1: {"max": 0.0, "density": 0.0},  # never fired (max exactly 0)
    2: {"density": 5e-4},  # very sparse
    3: {"density": 0.99 * VERY_SPARSE_DENSITY},  # very sparse, near the edge
    4: {"density": 1e-4, "peak_tokens": ["x"], "peak_token_counts": [5]},  # fully concentrated, but fired too rarely
    5: {"density": 0.95},  # very dense
    6: {"density": 0.3, "peak_tokens": ["y"], "peak_token_counts": [5]},  # 5 of 5 on one token
    7: {"density": 0.3, "peak_tokens": ["z", "w"], "peak_token_counts": [4, 1]},  # 4 of 5
    8: {"density": 0.3, "peak_tokens": ["v"], "peak_token_counts": [1]},  # a single peak: not specific
    9: {"density": VERY_DENSE_DENSITY},  # very dense, on the edge
}


def edit_neurons(folder: Path, layer: int, edits: dict[int, dict]) -> None:
    """Rewrite rows of a layer's neuron table (same schema), keeping peak_concentration consistent with counts."""
    path = folder / fmt.neurons_path(layer)
    rows = pq.read_table(path).to_pylist()
    for neuron, changes in edits.items():
        rows[neuron].update(changes)
        counts = rows[neuron]["peak_token_counts"]
        rows[neuron]["peak_concentration"] = counts[0] / sum(counts) if counts else 0.0
    pq.write_table(pa.Table.from_pylist(rows, schema=fmt.NEURON_SCHEMA), path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("overview")
    shaped = write_synthetic_dataset(root / "shaped", n_layers=3, d_mlp=24, name=SHAPED, seed=5)
    edit_neurons(shaped, 0, EDITS)
    edit_neurons(shaped, 2, {neuron: {"max": -1.0, "density": 0.0} for neuron in range(4)})
    gated = write_synthetic_dataset(root / "gated", n_layers=2, d_mlp=16, bottom_k=2, name=GATED, seed=6)
    return {SHAPED: shaped, GATED: gated}


@pytest.fixture(scope="module")
def catalog(folders):
    return open_sources([str(folders[SHAPED]), str(folders[GATED])])


def all_rows(folder: Path, layers: list[int]) -> list[dict]:
    return [row for layer in layers for row in pq.read_table(folder / fmt.neurons_path(layer)).to_pylist()]


def fired(row: dict) -> bool:
    return row["max"] > 0


def test_counts_per_layer_and_model_match_the_rows(folders, catalog):
    overview = compute_overview(SHAPED, catalog.models[SHAPED])
    for layer in (None, 0, 1, 2):
        rows = all_rows(folders[SHAPED], [0, 1, 2] if layer is None else [layer])
        counts = overview.counts(layer)
        assert counts.neurons == len(rows)
        assert counts.never_fired == sum(1 for row in rows if row["max"] <= 0)
        assert counts.very_sparse == sum(1 for row in rows if fired(row) and row["density"] <= VERY_SPARSE_DENSITY)
        assert counts.very_dense == sum(1 for row in rows if row["density"] >= VERY_DENSE_DENSITY)
    layer_0 = overview.counts(0)
    assert layer_0.never_fired >= 2 and layer_0.very_sparse >= 3 and layer_0.very_dense >= 2
    assert overview.counts(2).never_fired >= 4


def brute_force_bin(value: float, edges: list[float]) -> int:
    """The bin a value falls in, by walking the edges: below the first edge is bin 0, the last edge is the last bin."""
    for index in range(len(edges) - 2, -1, -1):
        if value >= edges[index]:
            return index
    return 0


def test_distributions_bin_every_fired_neuron_like_a_walk_over_the_edges(folders, catalog):
    overview = compute_overview(SHAPED, catalog.models[SHAPED])
    rows = all_rows(folders[SHAPED], [0, 1, 2])
    largest = max(row["max"] for row in rows)
    for layer in (None, 1):
        mine = [row for row in rows if fired(row) and (layer is None or row["layer"] == layer)]
        by_name = {d.name: d for d in overview.distributions(layer)}
        for name, column, edges in (
            ("max", "max", list(np.linspace(0, largest, MAX_BINS + 1))),
            ("density", "density", DENSITY_EDGES),
            ("peak concentration", "peak_concentration", CONCENTRATION_EDGES),
        ):
            expected = [0] * (len(edges) - 1)
            for row in mine:
                expected[brute_force_bin(row[column], edges)] += 1
            assert by_name[name].counts == expected, name
            np.testing.assert_allclose(by_name[name].edges, edges)
            assert sum(by_name[name].counts) == len(mine)


def brute_force_lists(rows: list[dict], gated: bool) -> dict[str, list[tuple[int, int]]]:
    """Each notable list, written the obvious way: filter, sort by the rule, ties to lower (layer, neuron)."""

    def ranked(kept, key):
        return [(row["layer"], row["neuron"]) for row in sorted(kept, key=lambda r: (key(r), r["layer"], r["neuron"]))][
            :NOTABLE_COUNT
        ]

    def specific(row):
        counts = row["peak_token_counts"]
        firing_tokens = row["density"] * row["n_tokens"]
        return fired(row) and counts and counts[0] >= 2 and firing_tokens >= sum(counts)

    def surely(row):
        counts = row["peak_token_counts"]
        return -round(wilson_by_inversion(counts[0], sum(counts))[0], 9), -row["peak_concentration"]

    lists = {
        "token": ranked([row for row in rows if specific(row)], surely),
        "max": ranked(rows, lambda r: -r["max"]),
        "rare": ranked([row for row in rows if fired(row)], lambda r: r["density"]),
        "dense": ranked(rows, lambda r: -r["density"]),
    }
    if gated:
        lists["negative"] = ranked(rows, lambda r: r["min"])
    return lists


@pytest.mark.parametrize(("model", "layer"), [(SHAPED, None), (SHAPED, 0), (GATED, None), (GATED, 1)])
def test_notable_lists_match_a_brute_force_ranking(folders, catalog, model, layer):
    dataset = catalog.models[model]
    overview = compute_overview(model, dataset)
    rows = all_rows(folders[model], dataset.layers if layer is None else [layer])
    lists = {notable.key: [(n.layer, n.neuron) for n in notable.neurons] for notable in overview.notable(layer)}
    assert lists == brute_force_lists(rows, gated=model == GATED)
    tokens = {(row["layer"], row["neuron"]): (row["peak_tokens"] or [""])[0] for row in rows}
    for notable in overview.notable(layer):
        assert all(n.top_token == tokens[(n.layer, n.neuron)] for n in notable.neurons)


def test_token_specific_wants_repeated_peaks_on_a_neuron_that_fired_enough(catalog):
    specific = compute_overview(SHAPED, catalog.models[SHAPED]).notable(0)[0]
    assert specific.key == "token"
    ranked = [n.neuron for n in specific.neurons]
    assert ranked[:2] == [6, 7]  # 5 of 5, then 4 of 5
    assert 4 not in ranked and 8 not in ranked  # fired on 4 tokens for 5 top examples; one peak only


def test_overview_view_values_and_links(catalog):
    overviews = Overviews(catalog)
    notice, page, values = overview_view(overviews, catalog, GATED, "1", 30)
    assert notice == "" and values["ready"] and values["layer"] == 1 and values["gated"]
    assert set(values["notable"]) == {"token", "max", "rare", "dense", "negative"}
    first = values["notable"]["max"][0]
    assert f'data-model="{GATED}" data-layer="1" data-neuron="{first["neuron"]}"' in page
    assert f'href="?model=org%2Fgated&amp;layer=1&amp;neuron={first["neuron"]}"' in page
    _, shaped_page, shaped = overview_view(overviews, catalog, SHAPED, ALL_LAYERS, 30)
    assert "negative" not in shaped["notable"] and "Most negative" not in shaped_page
    assert shaped["layers"][0]["layer"] is None and [row["layer"] for row in shaped["layers"][1:]] == [0, 1, 2]


@pytest.mark.parametrize(
    ("model", "layer", "message"),
    [
        ("org/nope", ALL_LAYERS, "Unknown model &#x27;org/nope&#x27;; showing &#x27;org/shaped&#x27;"),
        (SHAPED, "7", "Layer 7 is not in"),
        (SHAPED, "1.5", "Layer &#x27;1.5&#x27; is not a whole number"),
    ],
)
def test_bad_model_or_layer_gives_a_message_and_a_valid_overview(catalog, model, layer, message):
    notice, page, values = overview_view(Overviews(catalog), catalog, model, layer, 30)
    assert message in notice and values["ready"] and values["layer"] is None and page


def test_an_unreadable_layer_is_named_and_the_rest_is_shown(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "cut", n_layers=2, d_mlp=8, name="org/cut")
    (folder / fmt.neurons_path(1)).write_bytes(b"not parquet")
    catalog = open_sources([str(folder)])
    notice, page, values = overview_view(Overviews(catalog), catalog, "org/cut", ALL_LAYERS, 30)
    assert "The overview skips layer 1" in notice and values["layers"][0]["neurons"] == 8 and page


def test_the_first_page_never_waits_for_the_overview(catalog, tmp_path):
    """While an overview is still being computed, pages answer and the Overview says it is coming; then it shows."""
    release = threading.Event()

    def slow(name, dataset):
        release.wait(timeout=60)
        return compute_overview(name, dataset)

    overviews = Overviews(catalog, compute=slow)
    overviews.start()
    notice, page, values = overview_view(overviews, catalog, SHAPED, ALL_LAYERS, 0)
    assert "is being computed" in notice and page == "" and values == {"model": SHAPED, "ready": False}
    release.set()
    assert overview_view(overviews, catalog, SHAPED, ALL_LAYERS, 30)[2]["ready"]


def test_overview_endpoint_through_the_client(catalog, tmp_path):
    with running(build_app(catalog, research_tabs(RatingStore(tmp_path / "ratings")))) as url:
        client = Client(url, verbose=False)
        notice, page, values = client.predict(SHAPED, "0", api_name="/overview")
        assert notice == "" and values["layer"] == 0
        reference = compute_overview(SHAPED, catalog.models[SHAPED])
        assert values["layers"][1] == {
            "layer": 0,
            **{k: v for k, v in vars(reference.counts(0)).items() if k != "layer"},
        }
        assert [n["neuron"] for n in values["notable"]["token"]] == [n.neuron for n in reference.notable(0)[0].neurons]
        notice, _, values = client.predict("org/nope", "all layers", api_name="/overview")
        assert "Unknown model" in notice and values["model"] == SHAPED
        model, layer, neuron, _, _ = client.predict(SHAPED, 0, 6, api_name="/neuron")
        assert (model, layer, neuron) == (SHAPED, 0, 6)
