"""The Finder's worked example on the real SmolLM2-135M, offline: the tab opens with it, and it demonstrates what
it says (neurons that separate code from prose, a probe that reads it clear of the shuffled-label baseline)."""

from __future__ import annotations

import pytest
from gradio_client import Client

from harvest.corpus import CorpusSpec
from harvest.models import load_model
from harvest.run import HarvestConfig, harvest
from space.live import worked_example as example
from space.live.model import LiveModels
from space.live.ui import live_tabs
from space.server import build_app, running
from space.sources import open_sources

pytestmark = pytest.mark.slow
LAYERS = [3, 15, 27]


def test_the_worked_example_opens_filled_in_and_finds_code_neurons_on_smollm2(smollm2_folder, tmp_path):
    model = load_model(str(smollm2_folder), "cpu")
    config = HarvestConfig(
        model=str(smollm2_folder),
        corpus=CorpusSpec("python-docs"),
        out=tmp_path / "dataset",
        tokens=8 * 32,
        window=32,
        batch_size=8,
        top_k=2,
        random_k=1,
        layers=LAYERS,
        progress=False,
    )
    catalog = open_sources([str(harvest(config, model))])
    with running(build_app(catalog, live_tabs(LiveModels(loader=lambda spec, device, dtype: model)))) as url:
        client = Client(url, verbose=False)
        boxes = {c["props"].get("elem_id"): c["props"].get("value") for c in client.config["components"]}
        assert (boxes["ns-with"], boxes["ns-without"]) == (example.WITH_FEATURE, example.WITHOUT_FEATURE)
        name = catalog.model_names[0]
        notice, _, found = client.predict(
            name, boxes["ns-with"], boxes["ns-without"], "higher with the feature", 10, api_name="/find"
        )
        assert notice == ""
        assert [row["layer"] for row in found["layers"]] == LAYERS
        assert all(row["auroc"] >= 0.95 and row["strong"] >= 1 for row in found["layers"])
        notice, _, probed = client.predict(name, boxes["ns-with"], boxes["ns-without"], api_name="/probe")
        assert probed["trusted"] and probed["n_with"] == probed["n_without"] == 20
        best = max(range(len(probed["layers"])), key=lambda layer: probed["accuracy"][layer])
        assert probed["accuracy"][best] >= 0.95 > probed["shuffled_max"][best]
        assert "no evidence" not in notice and "Only" not in notice
