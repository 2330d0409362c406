"""The real server through gradio_client and plain HTTP: each endpoint returns what the dataset holds."""

from __future__ import annotations

import http.client
import io
import re
import urllib.error
import urllib.request
from html import escape
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from gradio_client import Client
from PIL import Image

from hub_sync import format as fmt
from hub_sync.synthetic import HOSTILE_TOKENS, write_synthetic_dataset
from space.server import build_app, running, uvicorn_config
from space.shortlinks import SPACE_HOST_ENV
from space.sources import open_sources
from space.text import visible_token


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("space_api")
    hostile = write_synthetic_dataset(
        root / "hostile", n_layers=2, d_mlp=32, bottom_k=2, d_vocab=10, hostile=True, name="org/hostile"
    )
    plain = write_synthetic_dataset(root / "plain", n_layers=3, d_mlp=16, name="org/plain", seed=2)
    catalog = open_sources([str(hostile), str(root / "missing"), str(plain)])
    with running(build_app(catalog)) as url:
        yield url, Client(url, verbose=False), {"org/hostile": hostile, "org/plain": plain}


def neuron_rows(folder: Path, layer: int, neuron: int) -> tuple[dict, list[dict]]:
    stats = pq.read_table(folder / fmt.neurons_path(layer)).to_pylist()[neuron]
    examples = [row for row in pq.read_table(folder / fmt.examples_path(layer)).to_pylist() if row["neuron"] == neuron]
    return stats, examples


def test_neuron_endpoint_returns_the_stored_neuron(served):
    _, client, folders = served
    model, layer, neuron, notice, page = client.predict("org/plain", 2, 9, api_name="/neuron")
    assert (model, int(layer), int(neuron), notice) == ("org/plain", 2, 9, "")
    stats, examples = neuron_rows(folders["org/plain"], 2, 9)
    assert f"<b>{stats['max']:.4g}</b>" in page and f"<b>{100 * stats['density']:.3g}%</b>" in page
    scores = re.findall(r'<span class="ns-score"[^>]*>([^<]*)</span>', page)
    assert scores == [f"{row['score']:.3g}" for row in examples]
    full_windows = re.findall(r'<div class="ns-text ns-full">(.*?)</div>', page)
    assert len(full_windows) == len(examples)
    for window, row in zip(full_windows, examples, strict=True):
        shown = re.findall(r'<span class="t [^"]*" title="[^"]*">([^<]*)</span>', window)
        assert shown == [escape(visible_token(token)) for token in row["tokens"]]
    for token in stats["logit_top_tokens"] + stats["peak_tokens"]:
        assert escape(visible_token(token)) in page


def test_next_previous_random_move_to_valid_neurons(served):
    _, client, _ = served
    assert client.predict("org/plain", 0, 15, api_name="/next")[:3] == ("org/plain", 1, 0)
    assert client.predict("org/plain", 0, 0, api_name="/previous")[:3] == ("org/plain", 2, 15)
    model, layer, neuron, _, page = client.predict("org/hostile", api_name="/random")
    assert model == "org/hostile" and layer in (0, 1) and 0 <= neuron < 32
    assert f"layer {layer} · neuron {neuron}" in page


def test_unknown_model_layer_neuron_give_a_message_and_a_valid_neuron(served):
    _, client, _ = served
    model, layer, neuron, notice, page = client.predict("org/nope", 40, 999, api_name="/neuron")
    assert (model, layer, neuron) == ("org/hostile", 0, 0)
    assert "Unknown model &#x27;org/nope&#x27;" in notice and "Layer 40" in notice and "Neuron 999" in notice
    assert "org/hostile · layer 0 · neuron 0" in page


def test_search_endpoint_matches_the_neuron_tables(served):
    _, client, folders = served
    keyword = HOSTILE_TOKENS[2]
    notice, results = client.predict(keyword.upper(), ["org/hostile"], 0, 1, "max", api_name="/search")
    expected = []
    for layer in (0, 1):
        for row in pq.read_table(folders["org/hostile"] / fmt.neurons_path(layer)).to_pylist():
            if keyword in row["peak_tokens"]:
                expected.append(
                    (row["max"], layer, row["neuron"], row["peak_token_counts"][row["peak_tokens"].index(keyword)])
                )
    expected.sort(key=lambda hit: -hit[0])
    assert expected, "the hostile dataset should peak on its hostile tokens"
    got = [(row[1], row[2], row[4]) for row in results["data"]]
    assert got == [(layer, neuron, count) for _, layer, neuron, count in expected]
    assert all(row[3] == f"{keyword!r} ×{row[4]}" for row in results["data"])
    assert f"{len(expected)} neurons" in notice and "<b>" not in notice


def test_hostile_strings_come_back_escaped(served):
    _, client, _ = served
    pages = [
        client.predict("org/hostile", layer, neuron, api_name="/neuron")[4]
        for layer in (0, 1)
        for neuron in range(0, 32, 4)
    ]
    html = "".join(pages)
    assert escape(HOSTILE_TOKENS[0]) in html and escape(HOSTILE_TOKENS[1]) in html
    assert "<script" not in html and "<img" not in html and "<b>bold" not in html


def test_a_failing_source_is_shown_unavailable_while_others_work(served):
    _, client, _ = served
    banner = next(c for c in client.config["components"] if c.get("props", {}).get("elem_id") == "ns-unavailable")
    assert "missing" in banner["props"]["value"] and "is unavailable" in banner["props"]["value"]
    assert client.predict("org/plain", 1, 1, api_name="/neuron")[:3] == ("org/plain", 1, 1)


def test_short_link_has_open_graph_tags_and_a_png_preview(served):
    url, _, _ = served
    html = urllib.request.urlopen(f"{url}n/org/plain/1/3").read().decode()
    tags = dict(re.findall(r'<meta property="(og:[a-z:]+)" content="([^"]*)"', html))
    assert tags["og:title"] == "org/plain · layer 1 · neuron 3"
    assert tags["og:image"] == f"{url}n/org/plain/1/3.png"
    assert tags["og:url"] == f"{url}?model=org%2Fplain&amp;layer=1&amp;neuron=3"
    assert "max " in tags["og:description"]
    assert 'http-equiv="refresh"' in html
    image = Image.open(io.BytesIO(urllib.request.urlopen(tags["og:image"]).read()))
    assert image.format == "PNG" and image.size == (1200, 630)


def test_short_link_with_a_bad_neuron_falls_back_with_a_note(served):
    url, _, _ = served
    html = urllib.request.urlopen(f"{url}n/org/plain/9/x").read().decode()
    assert "org/plain · layer 0 · neuron 0" in html and "Layer &#x27;9&#x27;" in html


def card_tags(url: str, path: str, headers: dict[str, str]) -> tuple[dict[str, str], str]:
    html = urllib.request.urlopen(urllib.request.Request(url + path, headers=headers)).read().decode()
    return dict(re.findall(r'<meta property="(og:[a-z:]+)" content="([^"]*)"', html)), html


def test_forged_forwarded_headers_reach_neither_the_redirect_nor_the_card(served, monkeypatch):
    url, _, _ = served
    query = "?model=org%2Fplain&amp;layer=1&amp;neuron=3"
    forged = {"X-Forwarded-Proto": "javascript", "X-Forwarded-Host": "x/%0Awindow.__pwned=1//"}
    tags, html = card_tags(url, "n/org/plain/1/3", forged)
    assert tags["og:url"] == f"{url}{query}" and tags["og:image"] == f"{url}n/org/plain/1/3.png"
    assert f'http-equiv="refresh" content="0; url=/{query}"' in html and "javascript" not in html
    tags, _ = card_tags(url, "n/org/plain/1/3", {"Host": 'evil.example/"><b>'})
    assert tags["og:url"] == f"{url}{query}", "a malformed Host gives way to the server's own address"
    monkeypatch.setenv(SPACE_HOST_ENV, "owner-neuroscope.hf.space")
    tags, _ = card_tags(url, "n/org/plain/1/3", {"Host": "evil.example", "X-Forwarded-Host": "evil.example"})
    assert tags["og:url"] == f"https://owner-neuroscope.hf.space/{query}"
    assert tags["og:image"] == "https://owner-neuroscope.hf.space/n/org/plain/1/3.png"


def test_forwarded_headers_are_trusted_from_loopback_unless_configured(monkeypatch):
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    assert uvicorn_config(None, "127.0.0.1", 0).forwarded_allow_ips == "127.0.0.1,::1"
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.7")
    assert uvicorn_config(None, "127.0.0.1", 0).forwarded_allow_ips == "10.0.0.7"


DAMAGES = {
    "cut-examples": lambda folder: truncate(folder / fmt.examples_path(1)),
    "noise-examples": lambda folder: (folder / fmt.examples_path(1)).write_bytes(np.random.default_rng(0).bytes(4096)),
    "no-examples": lambda folder: (folder / fmt.examples_path(1)).unlink(),
    "no-neurons": lambda folder: (folder / fmt.neurons_path(1)).unlink(),
    "cut-neurons": lambda folder: truncate(folder / fmt.neurons_path(1)),
}


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """One copy per damage, each with layer 0 whole and layer 1's file cut, replaced by noise or deleted."""
    root = tmp_path_factory.mktemp("space_damaged")
    folders = []
    for damage, apply in DAMAGES.items():
        folder = write_synthetic_dataset(root / damage, n_layers=2, d_mlp=8, name=f"org/{damage}", seed=4)
        apply(folder)
        folders.append(str(folder))
    with running(build_app(open_sources(folders))) as url:
        yield url


def get(connection: http.client.HTTPConnection, path: str) -> tuple[int, str, bytes]:
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, response.getheader("content-type"), response.read()


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_short_links_to_unreadable_files_give_a_notice_and_a_placeholder_on_a_living_connection(damaged, damage):
    host, port = damaged.removeprefix("http://").rstrip("/").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.connect()
    socket = connection.sock
    status, kind, body = get(connection, f"/n/org/{damage}/1/2")
    page = body.decode()
    assert status == 200 and kind.startswith("text/html"), page
    if "neurons" in damage:  # the card's text comes from the neuron table (a refused source falls back instead)
        assert "This neuron cannot be shown" in page or "Unknown model" in page
    status, kind, body = get(connection, f"/n/org/{damage}/1/2.png")
    assert status == 200 and kind == "image/png"
    assert Image.open(io.BytesIO(body)).size == (1200, 630)
    status, kind, body = get(connection, "/n/org/cut-examples/0/2.png")
    assert status == 200 and kind == "image/png"
    assert connection.sock is socket, "the keep-alive connection must survive"
    connection.close()


def test_the_api_and_short_links_take_whole_numbers_only_and_say_so(served):
    url, client, _ = served
    assert client.predict("org/plain", 1.0, 2.0, api_name="/neuron")[:4] == ("org/plain", 1, 2, "")
    for layer in (1.5, "³", "9" * 5000):
        model, shown_layer, neuron, notice, _ = client.predict("org/plain", layer, 2, api_name="/neuron")
        assert (model, shown_layer, neuron) == ("org/plain", 0, 2) and "is not a whole number" in notice
    links = {
        "n/org/plain/%C2%B3/2": "layer 0 · neuron 2",
        "n/org/plain/1/" + "9" * 5000: "layer 1 · neuron 0",
        "n/org/plain/1.5/2": "layer 0 · neuron 2",
    }
    for path, title in links.items():
        html = urllib.request.urlopen(url + path).read().decode()
        assert "is not a whole number" in html and f"<title>org/plain · {title}</title>" in html
        assert urllib.request.urlopen(url + path + ".png").headers["content-type"] == "image/png"


def test_a_100_kb_query_string_gets_414_and_the_server_keeps_serving(served):
    url, client, _ = served
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url + "?q=" + "a" * 100_000)
    assert refused.value.code == 414 and b"query string is longer" in refused.value.read()
    assert urllib.request.urlopen(url + "?q=" + "a" * 1000).status == 200
    assert client.predict("org/plain", 1, 1, api_name="/neuron")[:3] == ("org/plain", 1, 1)
