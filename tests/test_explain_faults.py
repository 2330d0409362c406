"""Bad input and misbehaving servers: InferenceClient over HTTP against the suite's loopback OpenAI-compatible
server with scripted replies (no model needed: only the transport and the run's bookkeeping are under test)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from huggingface_hub.errors import HfHubHTTPError

from harvest.explain.backends import InferenceBackend
from harvest.explain.retry import RetryPolicy
from harvest.explain.run import ExplainConfig, ExplainError, explain_dataset
from harvest.explain.workfile import WORK_DIR
from hub_sync import format as fmt
from hub_sync.reader import open_dataset
from hub_sync.verify import verify_dataset
from testkit.openai_server import Fault
from testkit.planted import DOG_NEURON, SILENT_NEURON, write_planted_dataset
from testkit.support import REPO

FAST = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2)
ANSWER = Fault("reply", text="the word dog")


@pytest.fixture
def dataset(tmp_path) -> Path:
    return write_planted_dataset(tmp_path / "ds", d_mlp=6, top_k=4, random_k=4)


def backend_for(server, **options) -> InferenceBackend:
    return InferenceBackend(server.base_url, "scripted", api_key="none", policy=options.pop("policy", FAST), **options)


def run(dataset: Path, backend, neurons=(0, 1, 3), concurrency: int = 2, scorers=("embedding",)):
    config = ExplainConfig(
        dataset,
        neurons=list(neurons),
        scorers=None if scorers is None else list(scorers),
        concurrency=concurrency,
        progress=False,
    )
    return explain_dataset(config, backend)


def rows(dataset: Path, layer: int = 0) -> list[dict]:
    return pq.read_table(dataset / fmt.explanations_path(layer)).to_pylist()


def test_retry_after_is_honoured_and_5xx_retried(llm_server):
    llm_server.script(Fault.http(429, retry_after=0.6), Fault.http(500), Fault.http(503), ANSWER)
    backend = backend_for(llm_server, policy=RetryPolicy(attempts=4, base_delay=0.05))
    assert backend.complete([{"role": "user", "content": "hi"}], 5).text == "the word dog"
    arrivals = [request.at for request in llm_server.requests()]
    assert len(arrivals) == 4
    assert arrivals[1] - arrivals[0] >= 0.6  # waited as the 429 asked
    assert arrivals[2] - arrivals[1] < 0.5  # then exponential backoff from 0.05 s


def test_a_client_error_is_not_retried(llm_server):
    llm_server.script(Fault.http(400))
    with pytest.raises(HfHubHTTPError, match="400"):
        backend_for(llm_server).complete([{"role": "user", "content": "hi"}], 5)
    assert len(llm_server.requests()) == 1


@pytest.mark.parametrize("fault", [Fault("malformed"), Fault("drop"), Fault("hang", seconds=1.5)])
def test_broken_replies_are_retried(llm_server, fault):
    llm_server.script(fault)
    llm_server.always(ANSWER)
    backend = backend_for(llm_server, timeout=0.5)
    assert backend.complete([{"role": "user", "content": "hi"}], 5).text == "the word dog"


def test_empty_and_huge_completions_are_refused_and_recorded(llm_server, dataset):
    llm_server.script(Fault("empty"), Fault("long", size=100_000))
    llm_server.always(ANSWER)
    summary = run(dataset, backend_for(llm_server), neurons=(0, 1, 3), concurrency=1)
    assert (summary.explained, summary.refused) == (1, 2)
    by_neuron = {row["neuron"]: row for row in rows(dataset)}
    assert by_neuron[0]["refusal"] == "empty explanation" and by_neuron[0]["explanation"] is None
    assert by_neuron[1]["refusal"].startswith("absurdly long: 100,000 characters")
    assert (
        by_neuron[3]["explanation"] == "the word dog" and by_neuron[3]["embedding_n"] == 6
    )  # 2 held-out top + 4 random
    assert verify_dataset(str(dataset)) == []


def test_a_neuron_that_never_fired_costs_no_request(llm_server, dataset):
    summary = run(dataset, backend_for(llm_server), neurons=(SILENT_NEURON,))
    assert llm_server.requests() == [] and summary.refused == 1
    assert rows(dataset)[0]["refusal"].startswith("never fired")


def test_a_run_of_429s_stops_cleanly_keeps_what_finished_and_resumes(llm_server, dataset):
    llm_server.script(ANSWER, ANSWER)
    llm_server.always(Fault.http(429, retry_after=0.05))
    with pytest.raises(ExplainError, match=r"429.*3 neuron\(s\) finished and are kept in .*run the same command again"):
        run(dataset, backend_for(llm_server), neurons=range(6), concurrency=1)
    assert not (dataset / fmt.EXPLANATIONS_DIR).exists()  # nothing folded yet: the manifest still says 1.0
    assert verify_dataset(str(dataset)) == []
    assert len(list((dataset / WORK_DIR).glob("*.jsonl"))) == 1
    llm_server.always(ANSWER)
    llm_server.clear_log()
    summary = run(dataset, backend_for(llm_server), neurons=range(6), concurrency=1)
    assert len(llm_server.requests()) == 3  # 6 neurons: 2 answered and 1 never fired (kept), 3 asked now
    assert summary.explained + summary.refused == 6
    assert [row["neuron"] for row in rows(dataset)] == list(range(6))
    assert not (dataset / WORK_DIR).exists() and verify_dataset(str(dataset)) == []


def test_a_second_run_skips_what_this_explainer_did_and_redo_replaces_it(llm_server, dataset):
    llm_server.always(ANSWER)
    run(dataset, backend_for(llm_server), neurons=(0,))
    first = rows(dataset)
    assert run(dataset, backend_for(llm_server), neurons=(0, 1)).already_done == 1
    assert len(llm_server.requests()) == 2
    llm_server.always(Fault("reply", text="colour words"))
    config = ExplainConfig(dataset, neurons=[0], scorers=["embedding"], redo=True, progress=False)
    explain_dataset(config, backend_for(llm_server))
    again = {row["neuron"]: row for row in rows(dataset)}
    assert again[0]["explanation"] == "colour words" and first[0]["explanation"] == "the word dog"
    manifest = open_dataset(dataset).manifest
    assert manifest.format_version == "1.1"
    assert [run.neurons for run in manifest.explanations.runs] == [1, 1, 1]


def test_another_explainer_adds_rows_beside(llm_server, dataset):
    llm_server.always(ANSWER)
    run(dataset, backend_for(llm_server), neurons=(DOG_NEURON,))
    other = InferenceBackend(llm_server.base_url, "another-model", api_key="none", policy=FAST)
    run(dataset, other, neurons=(DOG_NEURON,))
    assert [(row["neuron"], row["explainer"]) for row in rows(dataset)] == [(0, "another-model"), (0, "scripted")]
    assert len(open_dataset(dataset).neuron_explanations(0, DOG_NEURON)) == 2


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_endpoint_stops_with_a_clear_message(dataset, llm_server):
    backend = InferenceBackend(f"http://127.0.0.1:{_closed_port()}/v1", "m", api_key="none", policy=FAST)
    with pytest.raises(ExplainError, match=r"stopped: ConnectError.*0 neuron\(s\) finished"):
        run(dataset, backend)
    assert verify_dataset(str(dataset)) == [] and not (dataset / fmt.EXPLANATIONS_DIR).exists()


def test_simulation_is_refused_for_a_server_without_logprobs(dataset, llm_server):
    llm_server.always(ANSWER)
    with pytest.raises(ExplainError, match="simulation scorer needs logprobs, and scripted returns none"):
        run(dataset, backend_for(llm_server), scorers=("simulation",))
    llm_server.clear_log()
    run(dataset, backend_for(llm_server), neurons=(0,), scorers=None)  # the default leaves simulation out
    stored = rows(dataset)[0]
    assert stored["simulation"] is None and stored["simulation_n"] == 0 and stored["embedding_n"] == 6


def cli(*args: str, env_offline: str = "0") -> subprocess.CompletedProcess:
    env = os.environ | {"HF_HUB_OFFLINE": env_offline}
    return subprocess.run(
        [sys.executable, "-m", "harvest", "explain", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_explains_through_a_server_and_reports_bad_input(llm_server, dataset, tmp_path):
    llm_server.always(ANSWER)
    done = cli(
        str(dataset),
        "--explainer-url",
        llm_server.base_url,
        "--explainer-model",
        "scripted",
        "--neurons",
        "0-1",
        "--scorers",
        "embedding",
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    assert "2 neuron(s) explained, 0 refused" in done.stdout
    missing = cli(str(tmp_path / "absent"), "--explainer-url", llm_server.base_url)
    assert missing.returncode == 1 and "is not a local dataset folder" in missing.stderr
    layers = cli(str(dataset), "--explainer-url", llm_server.base_url, "--layers", "5")
    assert layers.returncode == 1 and "--layers [5] are not in" in layers.stderr
    offline = cli(
        str(dataset),
        "--explainer-url",
        llm_server.base_url,
        "--neurons",
        "3",
        "--scorers",
        "embedding",
        env_offline="1",
    )
    assert offline.returncode == 1 and "offline mode is enabled" in offline.stderr and "kept" in offline.stderr


def test_a_server_that_refuses_the_first_request_stops_the_run_before_it_starts(llm_server, dataset):
    llm_server.always(Fault.http(401))
    with pytest.raises(ExplainError, match="cannot ask scripted for logprobs: HfHubHTTPError: .*401 Unauthorized"):
        run(dataset, backend_for(llm_server), scorers=None)
    assert not (dataset / WORK_DIR).exists() and verify_dataset(str(dataset)) == []
