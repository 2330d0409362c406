"""Browsing is safe to run concurrently: pages, steps, searches and short links sent together through the real
server equal the same requests sent one at a time. This is what lets space/server.py give the read-only
events CONCURRENT_EVENTS at once, where the model events queue one at a time."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from gradio_client import Client

from hub_sync.synthetic import write_synthetic_dataset, write_synthetic_explanations
from space.server import CONCURRENT_EVENTS, build_app, running
from space.sources import open_sources
from space.ui import build_blocks

MODEL = "org/concurrent-pages"
LAYERS, NEURONS = 3, 48
ROUNDS = 2
READ_ONLY = ("neuron", "next", "previous", "search")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("concurrent") / "dataset"
    write_synthetic_dataset(folder, n_layers=LAYERS, d_mlp=NEURONS, name=MODEL, hostile=True, bottom_k=2)
    write_synthetic_explanations(folder, hostile=True)
    catalog = open_sources([str(folder)])
    catalog.index_build.result()
    with running(build_app(catalog)) as url:
        yield url


def requests() -> list[tuple[str, tuple]]:
    """(endpoint or short-link path, arguments): every read-only view, over distinct neurons and keywords."""
    made: list[tuple[str, tuple]] = []
    for index in range(12):
        layer, neuron = index % LAYERS, (7 * index) % NEURONS
        made.append(("/neuron", (MODEL, layer, neuron)))
        made.append(("/next" if index % 2 else "/previous", (MODEL, layer, neuron)))
        made.append((f"/n/{MODEL}/{layer}/{neuron}" + (".png" if index % 3 == 0 else ""), ()))
    for keyword, sort in ((" w1", "max"), ("tok*", "density"), ("w*", "detection"), ("", "embedding")):
        made.append(("/search", (keyword, [], 0, LAYERS - 1, sort)))
    return made


def send(client: Client, web: httpx.Client, request: tuple[str, tuple]) -> object:
    endpoint, args = request
    if endpoint.startswith("/n/"):
        response = web.get(endpoint)
        assert response.status_code == 200, endpoint
        return response.content
    result = client.predict(*args, api_name=endpoint)
    return tuple(frame.to_dict("split") if hasattr(frame, "to_dict") else frame for frame in result)


def test_read_only_requests_sent_together_equal_the_same_requests_one_at_a_time(served):
    made = requests()
    client = Client(served, verbose=False)
    with httpx.Client(base_url=served, timeout=120) as web:
        alone = [send(client, web, request) for request in made]
    assert all(result[4] for result in alone if isinstance(result, tuple) and len(result) == 5), "pages were rendered"
    local = threading.local()
    start = threading.Barrier(len(made), timeout=300)  # a thread that failed to connect breaks it: no hang

    def together(request: tuple[str, tuple]) -> object:
        if not hasattr(local, "client"):
            local.client, local.web = Client(served, verbose=False), httpx.Client(base_url=served, timeout=120)
        start.wait()
        return send(local.client, local.web, request)

    for round_number in range(ROUNDS):
        with ThreadPoolExecutor(max_workers=len(made)) as pool:
            results = list(pool.map(together, made))
        for request, got, expected in zip(made, results, alone, strict=True):
            assert got == expected, f"round {round_number}: {request}"


def test_read_only_events_run_concurrently_and_model_events_one_at_a_time():
    blocks = build_blocks(open_sources([]))
    blocks.queue(default_concurrency_limit=CONCURRENT_EVENTS)
    by_name = {fn.api_name: fn for fn in blocks.fns.values() if fn.api_name}
    assert CONCURRENT_EVENTS > 1
    for name in READ_ONLY:
        assert by_name[name].concurrency_limit in ("default", CONCURRENT_EVENTS), name
    assert by_name["explain"].concurrency_limit == 1
