"""The live tabs while the only dataset is still being built (the embedded default's first launch): through
gradio_client against the real server, they run the build's model alone, and give the values they give once the
dataset is served, checked against a plain forward pass. What needs the dataset says so, and the model is loaded
once for both."""

from __future__ import annotations

import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from html import unescape
from types import SimpleNamespace

import numpy as np
import pytest
from gradio_client import Client

from harvest.models import load_model
from hub_sync.reader import open_dataset
from space.live.model import LiveModels
from space.live.ui import live_tabs
from space.server import build_app, running
from space.sources import open_sources
from testkit.harvested import harvested_dataset
from testkit.live_reference import brute_force_ranking, doc_lines, forward, text_ids
from testkit.scripted_build import ScriptedBuild
from testkit.support import assert_same

MODEL = "test/built"
LAYERS = [0, 1, 2]
TEXT = "for index, item in enumerate(items):\n    if item is None:\n        continue"


@pytest.fixture(scope="module")
def harvested(tmp_path_factory) -> SimpleNamespace:
    dataset, model = harvested_dataset(tmp_path_factory.mktemp("live_building"), MODEL, n_layers=3, d_mlp=48)
    return SimpleNamespace(dataset=dataset, model=model, spec=open_dataset(dataset).manifest.model.source)


@pytest.fixture
def app(harvested):
    """The app serving nothing yet, with one build under way, and the specs its live tabs loaded."""
    catalog = open_sources([])
    build = ScriptedBuild(catalog)
    catalog.building.append(build)
    loads: list[str] = []

    def counting_loader(spec: str, device: str, dtype: str):
        loads.append(spec)
        return load_model(spec, device, dtype)

    with running(build_app(catalog, live_tabs(LiveModels(loader=counting_loader)))) as url:
        yield SimpleNamespace(client=Client(url, verbose=False), url=url, build=build, loads=loads)


def every_view(client: Client) -> dict[str, tuple]:
    """Each live endpoint once, on the same inputs, the model left to the app (the Neuron tab's, none yet)."""
    with_feature, without_feature = "\n".join(doc_lines(6, start=300)), "\n".join(doc_lines(6, start=900))
    return {
        "activations": client.predict(None, 1, 5, TEXT, api_name="/activations"),
        "top_neurons": client.predict(None, TEXT, 12, api_name="/top_neurons"),
        "find": client.predict(None, with_feature, without_feature, "either way", 8, api_name="/find"),
        "probe": client.predict(None, with_feature, without_feature, api_name="/probe"),
        "ablate": client.predict(None, "L1N5, L2N7", TEXT, "zero", api_name="/ablate"),
        "steer": client.predict(None, "L1N5", "The value of", "clamp 5.0", 6, "", api_name="/steer"),
    }


def model_values(values: dict) -> dict:
    """What the model alone and the served dataset must agree on: all but the colour scale and the dataset's
    maxima (the ranking relative to them among them)."""
    kept = {key: value for key, value in values.items() if key not in ("scale", "by_relative")}
    if "by_max" in kept:
        dataset_keys = ("dataset_max", "relative")
        kept["by_max"] = [{key: hit[key] for key in hit if key not in dataset_keys} for hit in kept["by_max"]]
    return kept


def test_before_the_model_is_ready_the_live_tabs_say_so(app):
    notice, html, values = app.client.predict(None, 0, 0, "hello", api_name="/activations")
    assert "not ready yet" in notice and html == "" and values == {}
    assert "meanwhile" not in app.client.predict(api_name="/build_status")
    assert app.loads == []


def test_the_model_alone_gives_the_values_the_built_dataset_gives(app, harvested):
    app.build.model_spec = harvested.spec
    assert "meanwhile the Live, Effect and Finder &amp; probe tabs run its model" in app.client.predict(
        api_name="/build_status"
    )
    alone = every_view(app.client)
    for name, (notice, _, values) in alone.items():
        assert values and values["model"] == MODEL, (name, notice)

    acts = forward(harvested.model, text_ids(harvested.model, TEXT), LAYERS)
    notice, _, values = alone["activations"]
    np.testing.assert_allclose(values["activations"], acts[1, :, 5], atol=1e-5, rtol=1e-5)
    assert "scaled to this text" in notice
    peak = acts[1, 1:, 5]
    assert values["scale"]["positive"] == pytest.approx(max(peak.max(), 0) or 1.0, rel=1e-6)
    notice, _, values = alone["top_neurons"]
    by_peak = {(layer, n): float(acts[row, 1:, n].max()) for row, layer in enumerate(LAYERS) for n in range(48)}
    assert [(hit["layer"], hit["neuron"]) for hit in values["by_max"]] == brute_force_ranking(by_peak, 12)
    assert values["by_relative"] == [] and all(hit["dataset_max"] is None for hit in values["by_max"])
    assert "ranked by their activation on this text" in notice

    app.build.finish(harvested.dataset)
    served = every_view(app.client)
    assert served["activations"][0] == "" and served["top_neurons"][0] == ""
    assert len(served["top_neurons"][2]["by_relative"]) == 12
    assert served["activations"][2]["scale"] != alone["activations"][2]["scale"], "now the dataset's scale"
    for name in alone:
        assert_same(model_values(served[name][2]), model_values(alone[name][2]), name)
    assert app.loads == [harvested.spec], "the model loaded for the build's live tabs serves its dataset too"


def test_what_needs_the_dataset_says_so_and_links_fall_back_as_they_do_on_a_dataset(app, harvested):
    app.build.model_spec = harvested.spec
    client = app.client
    for intervention in ("mean", "clamp 2x max"):
        notice, _, values = client.predict(None, "L1N5", TEXT, intervention, api_name="/ablate")
        assert "works once the dataset is built" in notice and values == {}, intervention
    notice, html, values = client.predict(None, "L1N5", TEXT, "zero", api_name="/ablate")
    assert "They come with the dataset" in html and values["neurons"] == [{"layer": 1, "neuron": 5, "value": 0.0}]
    notice, _, values = client.predict("org/other", 7, 9999, TEXT, api_name="/activations")
    notice = unescape(notice)
    assert "Unknown model 'org/other'; showing 'test/built'." in notice
    assert "Layer 7 is not in 'test/built' (layers [0, 1, 2]); showing layer 0." in notice
    assert "Neuron 9999 is not in 0..47; showing neuron 0." in notice
    assert (values["layer"], values["neuron"]) == (0, 0)
    notice, _, values = client.predict(None, "L3N1", TEXT, "zero", api_name="/ablate")
    assert "layer 3 is not a harvested layer of 'test/built'" in unescape(notice) and values == {}


def test_a_build_model_that_cannot_load_turns_the_live_tabs_off_with_the_reason(app, tmp_path):
    app.build.model_spec = str(tmp_path / "gone")
    notice, _, values = app.client.predict(None, TEXT, 5, api_name="/top_neurons")
    assert "the model cannot be loaded" in notice and "gone" in notice and values == {}


def test_two_visitors_at_once_get_what_each_gets_alone_and_short_links_say_the_dataset_is_coming(app, harvested):
    app.build.model_spec = harvested.spec
    texts = [TEXT, "The value of a variable is bound to its name."]
    clients = [Client(app.url, verbose=False) for _ in texts]

    def activations(index: int) -> dict:
        return clients[index].predict(None, 2, 11 + index, texts[index], api_name="/activations")[2]

    with ThreadPoolExecutor(len(texts)) as pool:
        together = list(pool.map(activations, range(len(texts))))
    for index, values in enumerate(together):
        assert_same(values, activations(index), f"visitor {index}")
    assert app.loads == [harvested.spec]

    bodies = {}
    for path in ("/n/test/built/0/0", "/n/test/built/0/0.png"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(app.url.rstrip("/") + path, timeout=30)
        assert refused.value.code == 404, path
        bodies[path] = unescape(refused.value.read().decode())
    assert "it is being built" in bodies["/n/test/built/0/0"]
