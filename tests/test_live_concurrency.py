"""Many users at once: live calls sent together through the real server equal the same calls made one at a time.

The live model is shared by every request of a process; a hook added by one request must never fire on
another's forward pass. Texts of equal and unequal lengths, all six live endpoints, one client per thread.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from gradio_client import Client

from space.live.model import LiveModels
from space.live.ui import live_tabs
from space.server import CONCURRENT_EVENTS, build_app, running
from space.sources import open_sources
from space.ui import build_blocks
from testkit.harvested import harvested_dataset
from testkit.live_reference import doc_lines, text_ids
from testkit.support import assert_same

MODEL = "test/concurrent-users"
ROUNDS = 3


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("live_concurrency")
    dataset, model = harvested_dataset(root, MODEL, n_windows=8, n_layers=4, d_model=64, d_mlp=128, n_ctx=128)
    catalog = open_sources([str(dataset)])
    with running(build_app(catalog, live_tabs(LiveModels(device="cpu")))) as url:
        yield url, model


def equal_length_texts(model, count: int) -> list[str]:
    """`count` distinct lines of the docs that tokenize to the same number of tokens."""
    by_length: dict[int, list[str]] = {}
    for line in doc_lines(400, start=300):
        group = by_length.setdefault(len(text_ids(model, line)), [])
        group.append(line)
        if len(group) == count:
            return group
    raise AssertionError("the docs hold too few lines of one length")


def calls(model) -> list[tuple[str, tuple]]:
    """(endpoint, arguments) of every call, each on its own text or lists, so no answer comes from the cache."""
    equal = equal_length_texts(model, 4)
    unequal = [" ".join(doc_lines(count, start=700 + 10 * count)) for count in (1, 2, 3, 4)]
    requests = []
    for index, text in enumerate(equal + unequal):
        requests.append(("/activations", (MODEL, index % 4, 5 + index, text)))
        requests.append(("/top_neurons", (MODEL, text, 10)))
        requests.append(("/ablate", (MODEL, f"L{index % 4}N{index}, L3N{20 + index}", text, "clamp 2x max")))
    for index, text in enumerate(equal):
        requests.append(("/steer", (MODEL, f"L{index}N{30 + index}", text, "clamp 8", 4, index or None)))
    for start, (n_with, n_without) in enumerate(((5, 6), (8, 5))):
        with_feature = "\n".join(doc_lines(n_with, start=1000 + 40 * start))
        without_feature = "\n".join(doc_lines(n_without, start=1020 + 40 * start))
        requests.append(("/find", (MODEL, with_feature, without_feature, "either way", 8)))
        requests.append(("/probe", (MODEL, with_feature, without_feature)))
    return requests


def test_concurrent_live_calls_equal_the_same_calls_made_one_at_a_time(served):
    url, model = served
    requests = calls(model)
    client = Client(url, verbose=False)
    alone = [client.predict(*args, api_name=endpoint) for endpoint, args in requests]
    for (endpoint, _), result in zip(requests, alone, strict=True):
        assert result[2], f"{endpoint} returned no values: {result[0]}"
    clients = threading.local()
    start = threading.Barrier(len(requests))

    def call(request: tuple[str, tuple]):
        if not hasattr(clients, "client"):
            clients.client = Client(url, verbose=False)
        start.wait()
        endpoint, args = request
        return clients.client.predict(*args, api_name=endpoint)

    for round_number in range(ROUNDS):
        with ThreadPoolExecutor(max_workers=len(requests)) as pool:
            together = list(pool.map(call, requests))
        for (endpoint, _), got, expected in zip(requests, together, alone, strict=True):
            assert got[0] == expected[0], f"round {round_number}, {endpoint}: {got[0]}"
            assert_same(got[2], expected[2], f"round {round_number} {endpoint}")


def test_model_events_queue_one_at_a_time_while_browsing_stays_concurrent():
    """A burst of probes must not hold several probes' memory at once; neuron pages must not wait behind them."""
    blocks = build_blocks(open_sources([]), live_tabs())
    blocks.queue(default_concurrency_limit=CONCURRENT_EVENTS)
    by_name = {fn.api_name: fn for fn in blocks.fns.values() if fn.api_name}
    model_events = [by_name[name] for name in ("activations", "top_neurons", "ablate", "steer", "find", "probe")]
    assert len({fn.concurrency_id for fn in model_events}) == 1 and {fn.concurrency_limit for fn in model_events} == {1}
    assert by_name["neuron"].concurrency_id != model_events[0].concurrency_id
    assert by_name["neuron"].concurrency_limit in ("default", CONCURRENT_EVENTS)
