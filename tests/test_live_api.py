"""The live endpoints through gradio_client against the real server, on a real small model harvested into a dataset.

Every number is checked against an independent computation: a plain forward pass with run_with_cache,
the values the harvest stored, and brute-force rankings written the obvious way.
"""

from __future__ import annotations

import json
import shutil
import threading
import urllib.request
from html import escape
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
from gradio_client import Client

from harvest.models import load_model
from hub_sync import format as fmt
from hub_sync.synthetic import write_synthetic_dataset
from space.live.model import LiveModels
from space.live.texts import MAX_LIST_TOKENS, MAX_TEXTS_PER_LIST
from space.live.ui import live_tabs
from space.live.views import LiveContext, find_view, probe_view
from space.server import build_app, running
from space.sources import open_sources
from space.text import visible_token
from testkit.harvested import harvested_dataset
from testkit.live_reference import brute_force_ranking, doc_lines, forward, text_ids

LAYERS = [0, 1, 2]
MODEL = "test/tiny"
MISSING = "test/missing-weights"
SYNTHETIC = "org/synthetic"
CAP = 63  # the tiny model's context is 64 tokens, BOS included


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("live_api")
    dataset, model = harvested_dataset(root, MODEL, n_layers=3, d_mlp=48)
    missing = root / "missing"
    shutil.copytree(dataset, missing)
    manifest = json.loads((missing / fmt.MANIFEST_FILE).read_text())
    manifest["model"].update(name=MISSING, source=str(root / "deleted-model"))
    (missing / fmt.MANIFEST_FILE).write_text(json.dumps(manifest))
    synthetic = write_synthetic_dataset(root / "synthetic", n_layers=2, d_mlp=16, name=SYNTHETIC)
    loads: list[str] = []

    def counting_loader(spec: str, device: str, dtype: str):
        loads.append(spec)
        return load_model(spec, device, dtype)

    catalog = open_sources([str(dataset), str(missing), str(synthetic)])
    with running(build_app(catalog, live_tabs(LiveModels(loader=counting_loader)))) as url:
        yield SimpleNamespace(client=Client(url, verbose=False), url=url, model=model, dataset=dataset, loads=loads)


def test_live_activations_equal_the_forward_pass_and_the_stored_windows(live):
    rows = [row for row in pq.read_table(live.dataset / fmt.examples_path(1)).to_pylist() if row["kind"] == "top"]
    checked = 0
    for row in rows[:40]:
        text = "".join(row["tokens"][1:])
        if text_ids(live.model, text) != row["token_ids"]:
            continue  # this window's text does not re-tokenize to the same ids (a token cut mid-character)
        notice, html, values = live.client.predict(MODEL, 1, row["neuron"], text, api_name="/activations")
        assert notice == "" and values["token_ids"] == row["token_ids"] and values["tokens"] == row["tokens"]
        np.testing.assert_allclose(values["activations"], row["activations"], atol=2e-3, rtol=2e-3)
        direct = forward(live.model, row["token_ids"], [1])[0, :, row["neuron"]]
        np.testing.assert_allclose(values["activations"], direct, atol=1e-5, rtol=1e-5)
        titles = [
            f'title="{value:.4g}">{escape(visible_token(token), quote=True)}</span>'
            for token, value in zip(row["tokens"], direct, strict=True)
        ]
        assert all(title in html for title in titles)
        checked += 1
    assert checked >= 10, "most stored windows should re-tokenize to their own ids"


def test_top_neurons_equal_a_brute_force_ranking(live):
    text = "for index, item in enumerate(items):\n    if item is None:\n        continue"
    notice, html, values = live.client.predict(MODEL, text, 12, api_name="/top_neurons")
    acts = forward(live.model, text_ids(live.model, text), LAYERS)
    dataset_max = {
        layer: pq.read_table(live.dataset / fmt.neurons_path(layer)).column("max").to_pylist() for layer in LAYERS
    }
    peak = {(layer, n): float(acts[i, 1:, n].max()) for i, layer in enumerate(LAYERS) for n in range(acts.shape[2])}
    relative = {
        key: value / dataset_max[key[0]][key[1]] if dataset_max[key[0]][key[1]] > 0 else np.nan
        for key, value in peak.items()
    }
    assert [(hit["layer"], hit["neuron"]) for hit in values["by_max"]] == brute_force_ranking(peak, 12)
    assert [(hit["layer"], hit["neuron"]) for hit in values["by_relative"]] == brute_force_ranking(relative, 12)
    for hit in values["by_max"] + values["by_relative"]:
        layer_acts = acts[LAYERS.index(hit["layer"]), :, hit["neuron"]]
        assert hit["max"] == pytest.approx(peak[hit["layer"], hit["neuron"]], abs=1e-5)
        assert hit["position"] == 1 + int(np.argmax(layer_acts[1:]))
        assert hit["dataset_max"] == pytest.approx(dataset_max[hit["layer"]][hit["neuron"]])
        assert f'href="?model=test%2Ftiny&amp;layer={hit["layer"]}&amp;neuron={hit["neuron"]}"' in html
    assert notice == ""


def brute_force_separation(
    positive: list[np.ndarray], negative: list[np.ndarray]
) -> dict[tuple[int, int], tuple[float, float]]:
    """(AUROC, Cohen's d) per (layer, neuron) from per-sample [layers, d_mlp] maxima, by pairwise comparison."""
    with_values, without_values = np.stack(positive), np.stack(negative)
    result = {}
    for layer_row, layer in enumerate(LAYERS):
        for neuron in range(with_values.shape[2]):
            a, b = (
                with_values[:, layer_row, neuron].astype(np.float64),
                without_values[:, layer_row, neuron].astype(np.float64),
            )
            wins = sum((x > y) + 0.5 * (x == y) for x in a for y in b)
            pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
            result[layer, neuron] = (wins / (len(a) * len(b)), (a.mean() - b.mean()) / pooled)
    return result


def check_finder(values: dict, expected: dict[tuple[int, int], tuple[float, float]], count: int) -> None:
    order = sorted(expected, key=lambda key: (-expected[key][0], -expected[key][1], key))[:count]
    assert [(hit["layer"], hit["neuron"]) for hit in values["top"]] == order
    for hit in values["top"]:
        auroc, effect = expected[hit["layer"], hit["neuron"]]
        assert hit["auroc"] == pytest.approx(auroc, abs=1e-6) and hit["cohens_d"] == pytest.approx(effect, rel=1e-3)


def test_finder_ranking_equals_brute_force_per_text(live):
    positive = [f"{line[:40]}{' lambda'} {line[40:]}" for line in doc_lines(10)]
    negative = doc_lines(12, start=10)
    notice, html, values = live.client.predict(
        MODEL, "\n".join(positive), "\n".join(negative), "higher with the feature", 15, api_name="/find"
    )
    peaks = [forward(live.model, text_ids(live.model, text), LAYERS)[:, 1:].max(axis=1) for text in positive + negative]
    check_finder(values, brute_force_separation(peaks[:10], peaks[10:]), 15)
    assert len(values["samples"]) == 22 and [row["layer"] for row in values["layers"]] == LAYERS
    assert notice == "" and f"L{values['top'][0]['layer']} N{values['top'][0]['neuron']}</a>" in html


def test_finder_with_marked_spans_compares_the_span_with_the_rest(live):
    lines = doc_lines(8, start=30)
    positive = [f"{line[:30]} [[lambda x]] {line[30:]}" for line in lines]
    negative = doc_lines(8, start=50)
    notice, _, values = live.client.predict(
        MODEL, "\n".join(positive), "\n".join(negative), "higher with the feature", 10, api_name="/find"
    )
    with_peaks, without_peaks = [], []
    for line in lines:
        plain = f"{line[:30]} lambda x {line[30:]}"
        span = (len(line[:30]) + 1, len(line[:30]) + 9)
        encoding = live.model.tokenizer(plain, add_special_tokens=False, return_offsets_mapping=True)
        inside = np.array([False] + [start < span[1] and end > span[0] for start, end in encoding["offset_mapping"]])
        acts = forward(live.model, [live.model.bos_id, *encoding["input_ids"]], LAYERS)
        with_peaks.append(acts[:, inside].max(axis=1))
        without_peaks.append(acts[:, ~inside][:, 1:].max(axis=1))
    without_peaks += [forward(live.model, text_ids(live.model, text), LAYERS)[:, 1:].max(axis=1) for text in negative]
    check_finder(values, brute_force_separation(with_peaks, without_peaks), 10)
    descriptions = [row["description"] for row in values["samples"]]
    assert descriptions[:2] == ["with #1 [[span]]", "with #1 outside span"] and len(descriptions) == 24
    assert notice == ""


def test_probe_reads_a_feature_present_by_construction_and_not_shuffled_labels(live):
    """The marked token is in the residual stream by construction (its embedding): the probe must read it."""
    lines = [line[:40] for line in doc_lines(48, start=100)]  # short: 48 texts within the lists' token budget
    positive = [f"{line[:25]} [[lambda]]{line[25:]}" for line in lines[:24]]
    negative = lines[24:]
    notice, plot, values = live.client.predict(MODEL, "\n".join(positive), "\n".join(negative), api_name="/probe")
    assert values["layers"] == LAYERS and (values["n_with"], values["n_without"]) == (24, 48) and values["trusted"]
    assert max(values["accuracy"]) >= 0.95
    assert 0.35 <= np.mean(values["shuffled_mean"]) <= values["chance"] + 0.05
    assert "<svg" in plot and "Best: layer" in notice and "no evidence" not in notice


def raw_call(url: str, endpoint: str, *args) -> list:
    """An API call over plain HTTP with the JSON a browser sends: a lone surrogate travels as a \\ud83d escape
    (gradio_client cannot send one: httpx encodes its JSON as UTF-8)."""
    body = json.dumps({"data": list(args)}).encode()
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(f"{url}gradio_api/call{endpoint}", data=body, headers=headers)
    event_id = json.loads(urllib.request.urlopen(request).read())["event_id"]
    stream = urllib.request.urlopen(f"{url}gradio_api/call{endpoint}/{event_id}").read().decode()
    assert "event: complete" in stream, stream
    return json.loads(stream.split("event: complete\ndata: ", 1)[1].splitlines()[0])


def test_bad_text_gives_a_message(live):
    client = live.client
    notice, html, values = client.predict(MODEL, 0, 3, "", api_name="/activations")
    assert "empty" in notice and html == "" and values == {}
    long_text = " ".join(doc_lines(30, start=200))
    notice, _, values = client.predict(MODEL, 0, 3, long_text, api_name="/activations")
    assert f"exceeded {CAP} tokens and was cut to its first {CAP}" in notice and len(values["token_ids"]) == CAP + 1
    assert values["truncated"] is True
    notice, _, values = client.predict("org/unknown", 0, 3, "hello", api_name="/activations")
    assert "Unknown model" in notice and values["model"] == MODEL
    notice, _, values = raw_call(live.url, "/activations", MODEL, 0, 3, "half a pair: \ud83d here")
    assert "lone surrogate (U+D83D) at character 14" in notice and values == {}
    notice, _, values = raw_call(live.url, "/find", MODEL, "a\nb\ud800\nc", "d\ne\nf", "either way", 5)
    assert "lone surrogate (U+D800)" in notice and values == {}


def test_the_count_follows_the_number_rule(live):
    for count, said, listed in (
        (3.5, "Neurons to list 3.5 is not a whole number; listing 20", 20),
        (0, "Neurons to list: 0 is not in 1..100; listing 1", 1),
        (4.0, "", 4),
    ):
        notice, _, values = live.client.predict(MODEL, "def f(x): return x", count, api_name="/top_neurons")
        assert said in notice and len(values["by_max"]) == listed and (said or notice == "")


def test_a_model_that_cannot_load_turns_live_off_while_browsing_works(live):
    client = live.client
    for endpoint, args in (("/activations", (MISSING, 0, 1, "hello")), ("/top_neurons", (MISSING, "hello", 5))):
        notice, html, values = client.predict(*args, api_name=endpoint)
        assert "which is not on this machine" in notice and values == {}
    notice, _, values = client.predict(SYNTHETIC, "a b\nc d", "e f\ng h", "either way", 5, api_name="/find")
    assert "names no model to load" in notice and values == {}
    model, layer, neuron, _, page = client.predict(MISSING, 1, 2, api_name="/neuron")
    assert (model, layer, neuron) == (MISSING, 1, 2) and "neuron 2" in page


def test_tiny_unbalanced_and_long_lists_get_clear_messages(live):
    client = live.client
    notice, _, values = client.predict(
        MODEL, "one text", "another text\nand more", "higher with the feature", 5, api_name="/find"
    )
    assert "Too few texts for the finder: 1 samples with the feature and 2 without" in notice and values == {}
    notice, _, values = client.predict(MODEL, "\n".join(doc_lines(3)), "\n".join(doc_lines(3, 5)), api_name="/probe")
    assert "Too few texts for the probe" in notice and values == {}
    notice, _, values = client.predict(
        MODEL, "\n".join(doc_lines(2)), "\n".join(doc_lines(9, 5)), "higher with the feature", 5, api_name="/find"
    )
    assert "unbalanced (2 samples with the feature, 9 without)" in notice and "coarse steps" in notice and values["top"]
    short = [line[:20] for line in doc_lines(70)]
    notice, _, values = client.predict(MODEL, "\n".join(short), "\n".join(short[:5]), "either way", 5, api_name="/find")
    assert f"The with-feature list has 70 texts; only the first {MAX_TEXTS_PER_LIST} were used." in notice
    assert len(values["samples"]) == MAX_TEXTS_PER_LIST + 5 and "tokens" not in notice
    notice, _, values = client.predict(MODEL, "no [[", "x\ny", "higher with the feature", 5, api_name="/find")
    assert "Too few texts" in notice


def test_lists_over_the_token_budget_keep_a_share_of_each_and_say_so(live):
    long_lines = [line for line in doc_lines(1500) if len(line) >= 70]
    positive, negative = long_lines[:MAX_TEXTS_PER_LIST], long_lines[MAX_TEXTS_PER_LIST : 2 * MAX_TEXTS_PER_LIST]
    costs = {text: len(text_ids(live.model, text)) for text in positive + negative}
    assert sum(costs.values()) > MAX_LIST_TOKENS, "the lists must hold more than a run takes"
    lists = "\n".join(positive), "\n".join(negative)
    notice, _, values = live.client.predict(MODEL, *lists, "either way", 5, api_name="/find")
    used = {label: [row["text"] for row in values["samples"] if row["label"] is label] for label in (True, False)}
    kept_with, kept_without = len(used[True]), len(used[False])
    assert used[True] == positive[:kept_with] and used[False] == negative[:kept_without], "each list keeps its first"
    total = sum(costs[text] for text in used[True] + used[False])
    assert total <= MAX_LIST_TOKENS
    assert total + costs[positive[kept_with]] > MAX_LIST_TOKENS, "the next with-feature text would not fit"
    assert total + costs[negative[kept_without]] > MAX_LIST_TOKENS, "the next without-feature text would not fit"
    assert abs(kept_with - kept_without) <= 1, "taken in turns, lines of similar length keep similar shares"
    assert (
        f"the first {kept_with} of {MAX_TEXTS_PER_LIST} with-feature and {kept_without} of {MAX_TEXTS_PER_LIST} "
        "without-feature texts were used"
    ) in notice


def test_the_finder_and_the_probe_report_their_progress(live):
    context = LiveContext(open_sources([str(live.dataset)]))
    lines = [line[:40] for line in doc_lines(20, start=600)]
    last_words = {}
    for view, args in ((probe_view, ()), (find_view, ("either way", 5))):
        heard: list[tuple[float | None, str]] = []
        notice, _, values = view(
            context,
            MODEL,
            "\n".join(lines[:10]),
            "\n".join(lines[10:]),
            *args,
            progress=lambda fraction, desc: heard.append((fraction, desc)),  # noqa: B023 - called in this loop
        )
        fractions = [fraction for fraction, _ in heard if fraction is not None]
        assert values and fractions == sorted(fractions) and fractions[-1] == 1.0, (notice, heard)
        assert "Running the model: 20 of 20 texts" in [desc for _, desc in heard]
        last_words[view] = heard[-1][1]
    assert last_words[probe_view] == "Fitting the probes: 3 layers, 20 samples"
    assert last_words[find_view] == "Running the model: 20 of 20 texts"


def test_the_model_loads_once_for_every_request(live):
    assert live.loads.count(str(Path(live.dataset).parent / "model")) == 1


def test_concurrent_first_requests_load_the_model_once(tmp_path):
    dataset, _ = harvested_dataset(tmp_path, "test/concurrent", n_windows=4, n_layers=1, d_mlp=16)
    catalog = open_sources([str(dataset)])
    loads: list[str] = []

    def counting_loader(spec: str, device: str, dtype: str):
        loads.append(spec)
        return load_model(spec, device, dtype)

    models = LiveModels(loader=counting_loader)
    loaded: list[object] = []
    threads = [
        threading.Thread(target=lambda: loaded.append(models.get(catalog.models["test/concurrent"]))) for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1 and len(loaded) == 6 and all(model is loaded[0] for model in loaded)
