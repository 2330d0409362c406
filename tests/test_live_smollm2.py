"""The live tab on the real SmolLM2-135M, offline: its values for a stored window are the harvest's."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from gradio_client import Client

from harvest.corpus import CorpusSpec
from harvest.models import load_model
from harvest.run import HarvestConfig, harvest
from hub_sync import format as fmt
from space.live.model import LiveModels
from space.live.ui import live_tabs
from space.server import build_app, running
from space.sources import open_sources

pytestmark = pytest.mark.slow
WINDOW = 32
LAYERS = [0, 20]


def test_smollm2_live_values_equal_the_harvest(smollm2_folder, tmp_path):
    model = load_model(str(smollm2_folder), "cpu")
    config = HarvestConfig(
        model=str(smollm2_folder), corpus=CorpusSpec("python-docs"), out=tmp_path / "dataset", tokens=12 * WINDOW,
        window=WINDOW, batch_size=6, top_k=2, random_k=1, layers=LAYERS, progress=False,
    )
    dataset = harvest(config, model)
    catalog = open_sources([str(dataset)])
    name = catalog.model_names[0]
    table = pq.read_table(
        dataset / fmt.examples_path(20), filters=[("neuron", "<", 64), ("kind", "=", "top")]
    ).to_pylist()
    rows = [
        row
        for row in table
        if model.tokenizer("".join(row["tokens"][1:]), add_special_tokens=False)["input_ids"] == row["token_ids"][1:]
    ]
    assert len(rows) >= 10, "most stored windows should re-tokenize to their own ids"
    with running(build_app(catalog, live_tabs(LiveModels(device="cpu")))) as url:
        client = Client(url, verbose=False)
        for row in rows[:3]:
            text = "".join(row["tokens"][1:])
            notice, _, values = client.predict(name, 20, row["neuron"], text, api_name="/activations")
            assert notice == "" and values["token_ids"] == row["token_ids"]
            np.testing.assert_allclose(values["activations"], row["activations"], atol=1e-2, rtol=2e-3)
            _, _, top = client.predict(name, text, 100, api_name="/top_neurons")
            assert {hit["layer"] for hit in top["by_max"]} <= set(LAYERS)
            assert top["by_max"][0]["max"] >= max(values["activations"][1:]) - 1e-4
