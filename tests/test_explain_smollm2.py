"""Explanations with the real SmolLM2-135M: through the loopback OpenAI-compatible server (InferenceClient over
HTTP, plain and streamed) and in process; a run killed with SIGKILL resumes to the uninterrupted result."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from harvest.explain import prompts
from harvest.explain.backends import InferenceBackend, TransformersBackend
from harvest.explain.examples import split_examples
from harvest.explain.run import ExplainConfig, explain_dataset
from harvest.explain.scorers import DetectionScorer, SimulationScorer
from harvest.explain.workfile import WORK_DIR
from hub_sync import format as fmt
from hub_sync.reader import open_dataset
from hub_sync.verify import verify_dataset
from testkit.planted import COLOUR_NEURON, DOG_NEURON, SILENT_NEURON, write_planted_dataset
from testkit.support import REPO

pytestmark = pytest.mark.slow


@pytest.fixture
def dataset(tmp_path) -> Path:
    return write_planted_dataset(tmp_path / "ds", d_mlp=5, window=8, top_k=4, random_k=2)


def test_the_server_over_http_and_the_in_process_backend_agree(smollm2_llm, smollm2_folder, dataset):
    examples = split_examples(0, DOG_NEURON, open_dataset(dataset).neuron_examples(0, DOG_NEURON))
    messages = prompts.explainer_messages(examples.shown, examples.max_activation)
    local = TransformersBackend(smollm2_folder).complete(messages, 12, top_logprobs=5)
    for stream in (False, True):
        remote = InferenceBackend(smollm2_llm.base_url, "smollm2", api_key="none", stream=stream)
        served = remote.complete(messages, 12, top_logprobs=5)
        assert served.text == local.text and served.text.strip()
        assert (served.prompt_tokens, served.completion_tokens) == (local.prompt_tokens, local.completion_tokens)
        assert [position.token for position in served.logprobs] == [position.token for position in local.logprobs]
        for mine, theirs in zip(served.logprobs, local.logprobs, strict=True):
            assert [token for token, _ in mine.top] == [token for token, _ in theirs.top]
            np.testing.assert_allclose([lp for _, lp in mine.top], [lp for _, lp in theirs.top], atol=1e-3)
    assert [request.stream for request in smollm2_llm.requests()] == [False, True]
    assert remote.supports_logprobs()


def test_explain_and_score_planted_neurons_through_the_server(smollm2_llm, dataset):
    backend = InferenceBackend(smollm2_llm.base_url, "HuggingFaceTB/SmolLM2-135M-Instruct", api_key="none")
    config = ExplainConfig(
        dataset, neurons=[DOG_NEURON, COLOUR_NEURON, SILENT_NEURON], concurrency=2, max_tokens=16, progress=False
    )
    summary = explain_dataset(config, backend)
    rows = {row["neuron"]: row for row in pq.read_table(dataset / fmt.explanations_path(0)).to_pylist()}
    for row in rows.values():
        print(
            f"SmolLM2 neuron {row['neuron']}: {row['explanation']!r} refusal={row['refusal']!r} detection="
            f"{row['detection']} embedding={row['embedding']} simulation={row['simulation']}"
        )
    print(f"summary: {summary}")
    assert verify_dataset(str(dataset)) == []
    assert rows[SILENT_NEURON]["refusal"].startswith("never fired")
    for neuron in (DOG_NEURON, COLOUR_NEURON):
        row = rows[neuron]
        assert (row["explanation"] is None) == (row["refusal"] is not None)
        if row["explanation"] is not None:
            assert (row["detection_n"], row["embedding_n"]) == (4, 4)  # 2 held-out top + 2 random
            assert row["simulation_n"] == sum(
                len(item.tokens)
                for item in split_examples(0, neuron, open_dataset(dataset).neuron_examples(0, neuron)).held_out
            )
    manifest = json.loads((dataset / fmt.MANIFEST_FILE).read_text())
    assert manifest["explanations"]["runs"][0]["scorers"] == ["detection", "embedding", "simulation"]
    explainer_asks = [
        r.body for r in smollm2_llm.requests() if r.body["messages"][0]["content"] == prompts.EXPLAINER_SYSTEM
    ]
    assert len(explainer_asks) == 2
    for neuron in (DOG_NEURON, COLOUR_NEURON):  # the explainer saw none of the held-out windows
        held_out = split_examples(0, neuron, open_dataset(dataset).neuron_examples(0, neuron)).held_out
        for ask in explainer_asks:
            assert not any(item.text in json.dumps(ask) for item in held_out)


def test_detection_and_simulation_of_right_and_wrong_explanations(smollm2_llm, dataset):
    """Measured, not assumed: SmolLM2-135M is too weak to tell a right explanation from a wrong one reliably."""
    backend = InferenceBackend(smollm2_llm.base_url, "smollm2", api_key="none")
    examples = split_examples(0, DOG_NEURON, open_dataset(dataset).neuron_examples(0, DOG_NEURON))
    detection, simulation = DetectionScorer(backend), SimulationScorer(backend)
    scores = {
        text: (detection.score(text, examples), simulation.score(text, examples))
        for text in ("the word dog", "colours such as red and blue")
    }
    print(f"SmolLM2 on the dog neuron: {scores}")
    for found, simulated in scores.values():
        assert found.n == 4 and (found.value is None or 0.0 <= found.value <= 1.0)
        assert simulated.n == sum(len(item.tokens) for item in examples.held_out)


def _cli(dataset: Path, model: Path) -> subprocess.Popen:
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "harvest",
        "explain",
        str(dataset),
        "--explainer-model",
        str(model),
        "--neurons",
        "0,1,3,4",
        "--scorers",
        "detection,embedding",
        "--concurrency",
        "2",
        "--max-tokens",
        "16",
        "--no-progress",
    ]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _without_dates(folder: Path) -> list[dict]:
    return [
        {k: v for k, v in row.items() if k != "created"}
        for row in pq.read_table(folder / fmt.explanations_path(0)).to_pylist()
    ]


def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_result(smollm2_folder, dataset, tmp_path):
    interrupted = Path(shutil.copytree(dataset, tmp_path / "interrupted"))
    uninterrupted = _cli(dataset, smollm2_folder)
    assert uninterrupted.wait(timeout=600) == 0, uninterrupted.stderr.read()
    victim = _cli(interrupted, smollm2_folder)
    deadline = time.monotonic() + 600
    work = interrupted / WORK_DIR
    while time.monotonic() < deadline and not any(len(p.read_text().splitlines()) >= 2 for p in work.glob("*.jsonl")):
        assert victim.poll() is None, victim.stderr.read()
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    kept = len(next(work.glob("*.jsonl")).read_text().splitlines()) - 1
    assert 1 <= kept < 4 and not (interrupted / fmt.EXPLANATIONS_DIR).exists()
    resumed = _cli(interrupted, smollm2_folder)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    explained, refused = map(
        int, re.search(r"(\d+) neuron\(s\) explained, (\d+) refused", resumed.stdout.read()).groups()
    )
    assert explained + refused == 4  # the kept neurons and the rest, folded together
    assert _without_dates(interrupted) == _without_dates(dataset)
    assert verify_dataset(str(interrupted)) == [] and not work.exists()
