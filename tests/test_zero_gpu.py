"""ZeroGPU as the `spaces` package runs it, emulated off ZeroGPU: every GPU call in a worker forked from the serving
process, its arguments and results pickled across (tests/fork_gpu.py). The live views give the same values
as in one process, a call sends the model's key and token ids, never the model, and a model loaded after
the workers forked gives a notice that says so (hence app.py's preload on ZeroGPU).

What only a real ZeroGPU Space can show is listed in the README (Deploy the Space)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from space.live.forward import ActivationCache
from space.live.model import LiveModels
from space.live.views import LiveContext, activations_view, find_view, probe_view, top_neurons_view
from space.sources import open_sources
from testkit.harvested import harvested_dataset
from testkit.support import assert_same
from zero_gpu_inputs import MODEL, TEXT, WITH_FEATURE, WITHOUT_FEATURE

TESTS = Path(__file__).resolve().parent
MAX_CALL_BYTES = 64 * 1024  # token ids and texts; the model's weights are megabytes


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("zero_gpu")
    dataset, _ = harvested_dataset(root / "a", MODEL, n_windows=8, n_layers=3, d_model=64, d_mlp=96, n_ctx=128)
    late, _ = harvested_dataset(root / "b", "test/loaded-late", n_windows=4, n_layers=2, d_model=32, d_mlp=40, n_ctx=64)
    return dataset, late


def in_one_process(dataset: Path) -> dict:
    context = LiveContext(open_sources([str(dataset)]), LiveModels(device="cpu"), ActivationCache())
    return {
        "activations": activations_view(context, MODEL, 1, 3, TEXT),
        "top_neurons": top_neurons_view(context, MODEL, TEXT, 10),
        "find": find_view(context, MODEL, WITH_FEATURE, WITHOUT_FEATURE, "either way", 5),
        "probe": probe_view(context, MODEL, WITH_FEATURE, WITHOUT_FEATURE),
    }


def test_live_views_with_gpu_calls_in_forked_workers_equal_one_process(datasets):
    dataset, late = datasets
    run = subprocess.run(
        [sys.executable, str(TESTS / "zero_gpu_run.py"), str(dataset), str(late)], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    forked = json.loads(run.stdout.strip().splitlines()[-1])
    expected = json.loads(json.dumps(in_one_process(dataset)))
    for view, (notice, _, values) in expected.items():
        got_notice, got_html, got_values = forked["views"][view]
        assert values and got_html, f"{view} returned no values: {notice}"
        assert got_notice == notice, view
        assert_same(got_values, values, view)  # torch's threads differ across the processes: sums in another order
    assert len(forked["sent_bytes"]) >= 4 and max(forked["sent_bytes"]) < MAX_CALL_BYTES
    late_notice, _, late_values = forked["views"]["late"]
    assert late_values == {} and "loaded after the GPU worker started" in late_notice
