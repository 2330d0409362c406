"""/ablate and /steer against an independent computation: the same Hugging Face model run by transformers, with a
forward pre-hook on the MLP's down projection (`c_proj` for GPT-2, `down_proj` for Llama) setting the neuron's input
after BOS. Tiny GPT-2 and Llama models harvested into datasets, served by the real server, called by gradio_client;
and a GPT-2 whose prediction is carried by one planted neuron, where ablating it must show."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from gradio_client import Client
from transformers import AutoModelForCausalLM, GPT2LMHeadModel

from harvest.corpus import CorpusSpec
from harvest.models import PROVENANCE_FILE, load_model
from harvest.run import HarvestConfig, harvest
from hub_sync import format as fmt
from space.links import NeuronRef
from space.live.effects import compare, paired_generation, paired_log_probs, until_eos
from space.live.interventions import Clamp, Intervention, parse_intervention, parse_neurons
from space.live.model import keep_resident
from space.live.texts import TextError
from space.live.ui import live_tabs
from space.server import build_app, running
from space.sources import open_sources
from space.text import visible_token
from testkit.hf_clamped import hf_greedy, hf_log_probs, hf_sampled
from testkit.live_reference import doc_lines, text_ids
from testkit.tiny_models import hf_gpt2, hf_llama

WINDOW = 24
GPT2, LLAMA, PLANTED = "test/gpt2", "test/llama", "test/planted"
PLANTED_LAYER, PLANTED_NEURON = 1, 3
TEXT = "The value of a variable is <b>bound</b> to its name & kept."


def plant_neuron(folder: Path) -> int:
    """Make one neuron carry the prediction: it fires at 4 on every token, and its output row points along the
    (tied) embedding of one token, scaled up so that token wins everywhere. Returns the token's id."""
    model = GPT2LMHeadModel.from_pretrained(folder)
    token = model.config.vocab_size - 7
    with torch.no_grad():
        direction = torch.randn(model.config.n_embd, generator=torch.Generator().manual_seed(1))
        direction = (direction - direction.mean()) / (direction - direction.mean()).norm()
        model.transformer.wte.weight[token] = 10 * direction
        mlp = model.transformer.h[PLANTED_LAYER].mlp
        mlp.c_fc.weight[:, PLANTED_NEURON] = 0.0
        mlp.c_fc.bias[PLANTED_NEURON] = 4.0
        mlp.c_proj.weight[PLANTED_NEURON] = 30 * direction
    model.save_pretrained(folder)
    return token


def harvested(root: Path, name: str, make) -> tuple[Path, Path]:
    """A tiny Hugging Face model saved by `make`, named `name`, harvested over the Python docs: (dataset, model)."""
    folder = make(root / "model")
    (folder / PROVENANCE_FILE).write_text(json.dumps({"name": name}))
    config = HarvestConfig(
        model=str(folder), corpus=CorpusSpec("python-docs"), out=root / "dataset", tokens=24 * WINDOW, window=WINDOW,
        batch_size=8, top_k=4, random_k=2, bottom_k=2, progress=False,
    )
    return harvest(config, load_model(str(folder), "cpu")), folder


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("effects")
    planted_token = {}

    def planted_gpt2(folder: Path) -> Path:
        hf_gpt2(folder)
        planted_token["id"] = plant_neuron(folder)
        return folder

    made = {name: harvested(root / name.split("/")[1], name, make)
            for name, make in ((GPT2, hf_gpt2), (LLAMA, hf_llama), (PLANTED, planted_gpt2))}
    catalog = open_sources([str(dataset) for dataset, _ in made.values()])
    with running(build_app(catalog, live_tabs())) as url:
        yield SimpleNamespace(
            client=Client(url, verbose=False), catalog=catalog, planted_token=planted_token["id"],
            datasets={name: dataset for name, (dataset, _) in made.items()},
            models={name: keep_resident(load_model(str(folder), "cpu")) for name, (_, folder) in made.items()},
            hf={name: AutoModelForCausalLM.from_pretrained(folder).eval() for name, (_, folder) in made.items()},
        )


def neuron_stat(dataset: Path, layer: int, neuron: int, column: str) -> float:
    return float(pq.read_table(dataset / fmt.neurons_path(layer)).column(column)[neuron].as_py())


def check_against_hf(values: dict, clean: torch.Tensor, intervened: torch.Tensor, token_ids: list[int]) -> None:
    """An /ablate answer against log-probabilities computed by transformers: losses, KL and the top changes."""
    following = torch.tensor(token_ids[1:])
    positions = torch.arange(len(following))
    np.testing.assert_allclose(values["loss"][:-1], -clean[positions, following], atol=1e-4)
    np.testing.assert_allclose(values["intervened_loss"][:-1], -intervened[positions, following], atol=1e-4)
    assert values["loss"][-1] is None and values["intervened_loss"][-1] is None
    kl = torch.nn.functional.kl_div(intervened, clean, log_target=True, reduction="none").sum(dim=-1)
    np.testing.assert_allclose(values["kl"], kl.clamp(min=0), atol=1e-5)
    before, after = clean[1:].mean(dim=0), intervened[1:].mean(dim=0)
    for rows, sign in ((values["top_changes"]["raised"], 1), (values["top_changes"]["lowered"], -1)):
        moved = sign * (after - before)
        listed = [row["token_id"] for row in rows]
        assert len(listed) == min(10, int((moved > 0).sum())) and len(set(listed)) == len(listed)
        assert [sign * row["change"] for row in rows] == sorted((sign * row["change"] for row in rows), reverse=True)
        for row in rows:
            assert row["before"] == pytest.approx(float(before[row["token_id"]]), abs=1e-4)
            assert row["after"] == pytest.approx(float(after[row["token_id"]]), abs=1e-4)
        unlisted = moved.clone()
        unlisted[listed] = -float("inf")
        assert unlisted.max() <= sign * rows[-1]["change"] + 1e-4, "a token left out moved more than one listed"


@pytest.mark.parametrize("name", [GPT2, LLAMA])
def test_log_probs_equal_transformers_with_a_down_projection_pre_hook(served, name):
    model, hf = served.models[name], served.hf[name]
    token_ids = text_ids(model, TEXT)
    clamps = [Clamp(0, 5, 0.0), Clamp(0, 17, 3.5), Clamp(1, 2, -2.0)]
    ours = paired_log_probs(model, token_ids, clamps)
    clean, intervened = hf_log_probs(hf, token_ids, []), hf_log_probs(hf, token_ids, clamps)
    torch.testing.assert_close(ours[0], clean, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(ours[1], intervened, atol=2e-5, rtol=1e-5)
    assert (ours[1] - ours[0]).abs().max() > 1e-3, "the clamps must change something for the test to mean anything"
    effect = compare(token_ids, ours)
    following = torch.tensor(token_ids[1:])
    torch.testing.assert_close(effect.intervened_loss, -intervened[torch.arange(len(following)), following])


@pytest.mark.parametrize("name", [GPT2, LLAMA])
def test_ablate_endpoint_with_dataset_values_equals_transformers(served, name):
    model, hf, dataset = served.models[name], served.hf[name], served.datasets[name]
    token_ids = text_ids(model, TEXT)
    for intervention, column, scale in (("mean", "mean", 1.0), ("clamp 2x max", "max", 2.0)):
        notice, html, values = served.client.predict(name, "L1N4, l0n9", TEXT, intervention, api_name="/ablate")
        clamps = [Clamp(layer, neuron, scale * neuron_stat(dataset, layer, neuron, column))
                  for layer, neuron in ((1, 4), (0, 9))]
        assert notice == "" and values["token_ids"] == token_ids and values["intervention"] == intervention
        expected = [{"layer": c.layer, "neuron": c.neuron, "value": pytest.approx(c.value)} for c in clamps]
        assert values["neurons"] == expected
        check_against_hf(values, hf_log_probs(hf, token_ids, []), hf_log_probs(hf, token_ids, clamps), token_ids)
        assert "<b>" not in html and escape(visible_token(values["tokens"][-1]), quote=True) in html
        assert "L1N4" in html and "Direct logit effects" in html


def test_blank_neurons_mean_the_current_one(served):
    _, _, values = served.client.predict(GPT2, "", TEXT, "clamp 1.5", 1, 6, api_name="/ablate")
    assert values["neurons"] == [{"layer": 1, "neuron": 6, "value": 1.5}]
    _, _, values = served.client.predict(GPT2, " ", TEXT, "", api_name="/ablate")
    assert values["neurons"] == [{"layer": 0, "neuron": 0, "value": 0.0}] and values["intervention"] == "zero"


def test_ablating_the_planted_neuron_removes_the_prediction_it_carries(served):
    token, model = served.planted_token, served.models[PLANTED]
    text = " ".join(doc_lines(1, start=40))
    assert token not in text_ids(model, text)
    clean = hf_log_probs(served.hf[PLANTED], text_ids(model, text), [])
    assert clean[1:, token].exp().min() > 0.9, "the planted neuron carries the prediction"
    planted = f"L{PLANTED_LAYER}N{PLANTED_NEURON}"
    notice, html, values = served.client.predict(PLANTED, planted, text, "zero", api_name="/ablate")
    assert notice == "" and values["mean_kl"] > 2
    lowered = values["top_changes"]["lowered"][0]
    assert lowered["token_id"] == token and np.exp(lowered["before"]) > 0.9 and np.exp(lowered["after"]) < 0.1
    assert values["mean_intervened_loss"] < values["mean_loss"] - 1, "the text does not hold the planted token"
    direct = pq.read_table(served.datasets[PLANTED] / fmt.neurons_path(PLANTED_LAYER)).to_pylist()[PLANTED_NEURON]
    assert direct["logit_top_tokens"][0] == lowered["token"], "direct and total effects agree on the planted token"
    assert html.count(escape(visible_token(lowered["token"]))) >= 2
    neighbour = f"L{PLANTED_LAYER}N{PLANTED_NEURON + 1}"
    _, _, other = served.client.predict(PLANTED, neighbour, text, "zero", api_name="/ablate")
    assert other["mean_kl"] < 0.01 * values["mean_kl"]


@pytest.mark.parametrize("name", [GPT2, LLAMA])
def test_steering_equals_transformers_generate(served, name):
    model, hf = served.models[name], served.hf[name]
    text = "The value of a variable"
    token_ids = text_ids(model, text)
    clamps = [Clamp(1, 4, 25.0), Clamp(0, 9, -10.0)]
    greedy = paired_generation(model, token_ids, clamps, 12, None).tolist()
    assert greedy[0] != greedy[1], "the clamps must change the continuation for the test to mean anything"
    assert until_eos(greedy[0], model.eos_id) == hf_greedy(hf, token_ids, [], 12, model.eos_id)
    assert until_eos(greedy[1], model.eos_id) == hf_greedy(hf, token_ids, clamps, 12, model.eos_id)
    sampled = paired_generation(model, token_ids, clamps, 12, 7).tolist()
    assert sampled[0] == hf_sampled(hf, token_ids, [], len(sampled[0]), 7)
    assert sampled[1] == hf_sampled(hf, token_ids, clamps, len(sampled[1]), 7)
    assert sampled != greedy
    notice, html, values = served.client.predict(name, "L1N4, L0N9", text, "clamp 25", 12, 7, api_name="/steer")
    assert notice == "" and values["seed"] == 7 and values["new_tokens"] == 12
    assert values["clean"]["token_ids"] == until_eos(sampled[0], model.eos_id)
    assert values["steered"]["text"] == model.tokenizer.decode(values["steered"]["token_ids"])


def test_the_planted_neuron_steers_generation(served):
    model = served.models[PLANTED]
    ref = f"L{PLANTED_LAYER}N{PLANTED_NEURON}"
    _, html, values = served.client.predict(PLANTED, ref, "The value", "zero", 8, api_name="/steer")
    assert values["clean"]["token_ids"] == [served.planted_token] * 8 and values["seed"] is None
    assert served.planted_token not in values["steered"]["token_ids"]
    ablated = [Clamp(PLANTED_LAYER, PLANTED_NEURON, 0.0)]
    expected = hf_greedy(served.hf[PLANTED], text_ids(model, "The value"), ablated, 8, model.eos_id)
    assert values["steered"]["token_ids"] == until_eos(expected, model.eos_id)
    assert "Unsteered" in html and "ns-diverged" in html


def test_references_and_interventions_parse_strictly(served):
    dataset = served.catalog.models[GPT2]
    current = NeuronRef(GPT2, 1, 2)
    assert parse_neurons("L1N5, l0n3;L1N5\tL0N+7", dataset, current) == [(1, 5), (0, 3), (0, 7)]
    assert parse_neurons("  ", dataset, current) == [(1, 2)]
    for text, said in (("L2N1", "layer 2 is not a harvested layer of 'test/gpt2' (layers [0, 1])"),
                       ("L1N128", "neuron 128 is not in 0..127"), ("L1N-1", "neuron -1 is not in 0..127"),
                       ("L1.5N3", "its layer '1.5' is not a whole number"), ("L1N³", "its neuron '³' is not a whole"),
                       ("12:313", "'12:313' is not a neuron reference of the form L<layer>N<neuron>"),
                       (", ".join(["L0N1"] * 65), "65 neuron references: at most 64 per run")):
        with pytest.raises(TextError, match=None) as refused:
            parse_neurons(text, dataset, current)
        assert said in str(refused.value)
    assert parse_intervention(" Clamp   2X  MAX ") == Intervention("clamp", 2.0, of_max=True)
    assert parse_intervention("clamp -1.5e1") == Intervention("clamp", -15.0)
    assert parse_intervention("clamp 0.5 × max") == Intervention("clamp", 0.5, of_max=True)
    assert parse_intervention(None) == Intervention("zero") and parse_intervention("MEAN") == Intervention("mean")
    assert str(parse_intervention("clamp 2.50x max")) == "clamp 2.5x max"
    for text in ("clamp", "clamp nan", "clamp inf", "clamp 5 max", "ablate", "zero 3", "clamp ５", "clamp 1e99"):
        with pytest.raises(TextError):
            parse_intervention(text)


def test_bad_input_gives_a_message_never_an_error(served):
    client = served.client
    cases = [
        (("org/unknown", "L1N1", "hello", "zero"), "Unknown model 'org/unknown'", True),
        ((GPT2, "L7N1, L1N900", "hello", "zero"), "layer 7 is not a harvested layer", False),
        ((GPT2, "L1N900", "hello", "zero"), "neuron 900 is not in 0..127", False),
        ((GPT2, "L1N1", "hello", "clamp a lot"), "is not one of: zero, mean", False),
        ((GPT2, "L1N1", "hello", "clamp 1e6"), "is out of range (at most ±10000)", False),
        ((GPT2, "L1N1", "", "zero"), "The text is empty", False),
    ]
    for args, said, answered in cases:
        for endpoint in ("/ablate", "/steer"):
            notice, html, values = client.predict(*args, api_name=endpoint)
            assert escape(said, quote=True) in notice and bool(values) is answered, (endpoint, args, notice)
    long_text = " ".join(doc_lines(30, start=200))
    notice, _, values = client.predict(GPT2, "L1N1", long_text, "zero", api_name="/ablate")
    assert "exceeded 63 tokens and was cut to its first 63" in notice
    assert len(values["tokens"]) == 64 and values["truncated"]
    notice, _, values = client.predict(GPT2, "L1N1", long_text, "zero", 64, api_name="/steer")
    assert "The text fills the model&#x27;s context (64 tokens)" in notice and values == {}
    notice, _, values = client.predict(GPT2, "L1N1", "hello there", "zero", 64, api_name="/steer")
    assert f"leaves room for {64 - len(values['token_ids'])} new tokens" in notice
    notice, _, values = client.predict(GPT2, "L1N1", "hello", "zero", 0, 3.5, api_name="/steer")
    assert "New tokens: 0 is not in 1..64; generating 1." in notice
    assert "Seed &#x27;3.5&#x27; is not a whole number; generating greedily" in notice  # the seed box is text
    assert values["seed"] is None and len(values["clean"]["token_ids"]) == 1
