"""bench/gpu.sh as the suite can run it (`--device cpu`, tiny sizes), and the GPU = CPU rule of bench/gpu_check.py
on planted differences: near-ties it must allow, real differences it must refuse."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from harvest.selection import LayerState, sample_keys
from testkit.support import REPO

sys.path.append(str(REPO / "bench"))  # after the repository root: bench/harvest.py must not shadow harvest/

import gpu
from gpu_check import Comparison, compare_states
from gpu_environment import REQUIRED, missing_modules

from testkit.tiny_models import save_tokenizer

SMOKE_SIZES = ["--layers", "2", "--d-model", "32", "--window", "8", "--batch-size", "4", "--batches", "3",
               "--rounds", "1", "--top-k", "4", "--random-k", "2", "--sync-batches", "2", "--check-windows", "24",
               "--check-window", "8", "--check-batch-size", "8"]


@pytest.fixture(scope="module")
def small_smollm2(tmp_path_factory) -> Path:
    """A folder as `gpu.sh --prepare` writes it (a Llama config and a tokenizer, no weights), only much smaller."""
    from transformers import AutoTokenizer, LlamaConfig

    folder = tmp_path_factory.mktemp("smollm2-config")
    save_tokenizer(folder)
    config = LlamaConfig(vocab_size=len(AutoTokenizer.from_pretrained(folder)), hidden_size=32, intermediate_size=48,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)
    config.save_pretrained(folder)
    return folder


def test_the_cpu_smoke_run_reports_every_figure(small_smollm2, tmp_path):
    results = tmp_path / "gpu.json"
    command = ["bash", str(REPO / "bench" / "gpu.sh"), "--device", "cpu", *SMOKE_SIZES,
               "--smollm2", str(small_smollm2), "--json", str(results)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(results.read_text())
    assert report["errors"] == []
    assert report["machine"]["torch"] == torch.__version__
    expected_kinds = {gpu.GPT2_SIZED: 2 * 128 * 2, gpu.SMOLLM2: 2 * 48 * 3}  # layers x d_mlp x kinds kept
    for name, figures in report["models"].items():
        throughput = figures["throughput"]
        assert throughput["tokens_per_round"] == 3 * 4 * 8
        speeds = throughput["harvest_tokens_per_s"] / throughput["bare_tokens_per_s"]
        assert throughput["ratio"] == pytest.approx(speeds)
        assert figures["memory"]["state_bytes_predicted"] > 0
        assert "no CUDA device" in figures["host_syncs"]["note"]
        check = figures["gpu_equals_cpu"]
        assert check["windows"] == 24
        for same_device in (check["gpu_vs_cpu"], check["same_activations"]):  # CPU against CPU: to the bit
            assert same_device["neuron_kinds"] == expected_kinds[name]
            assert same_device["exact"] and same_device["max_activation_error"] == 0
        assert check["cpu_vs_float32"]["passed"] and not check["cpu_vs_float32"]["exact"]
    assert set(report["models"]) == {gpu.GPT2_SIZED, gpu.SMOLLM2}
    assert "weights did not travel" in report["models"][gpu.SMOLLM2]["weights_note"]
    rows = [line for line in run.stdout.splitlines() if line.startswith(f"| {gpu.GPT2_SIZED} |")
            or line.startswith(f"| {gpu.SMOLLM2} |")]
    assert len(rows) == 2 and all("| pass: " in row for row in rows)
    assert (tmp_path / "gpu_bench.log").read_text().count("| pass: ") == 2


def test_what_stops_the_run_is_said_before_it_starts(tmp_path, small_smollm2, capsys):
    assert gpu.main(["--device", "cpu", "--smollm2", str(tmp_path / "absent"), "--json", str(tmp_path / "r")]) == 3
    assert "holds no SmolLM2 config.json and tokenizer" in capsys.readouterr().err
    assert gpu.main(["--device", "cpu", "--smollm2", str(small_smollm2), "--models", "gpt3"]) == 3
    assert "--models: unknown gpt3" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_failing_step_is_recorded_and_the_other_figures_are_kept(tmp_path, small_smollm2, capsys):
    results = tmp_path / "gpu.json"
    too_long = ["--check-window", "128"]  # the small SmolLM2 has a context of 64
    code = gpu.main(["--device", "cpu", *SMOKE_SIZES, *too_long, "--smollm2", str(small_smollm2),
                     "--models", gpu.SMOLLM2, "--json", str(results)])
    assert code == 1
    figures = json.loads(results.read_text())["models"][gpu.SMOLLM2]
    assert "longer than the model's context of 64 tokens" in figures["gpu_equals_cpu"]["error"]
    assert figures["throughput"]["tokens_per_round"] == 3 * 4 * 8
    assert "longer than the model's context" in capsys.readouterr().out  # in the table's row


def test_a_spent_time_budget_skips_the_steps_and_says_so(tmp_path, small_smollm2, capsys):
    results = tmp_path / "gpu.json"
    spent = ["--budget-s", "0"]
    assert gpu.main(["--device", "cpu", "--smollm2", str(small_smollm2), *spent, "--json", str(results)]) == 1
    for figures in json.loads(results.read_text())["models"].values():
        assert figures["build"] == {"skipped": "time budget spent (--budget-s)"}
    assert f"| {gpu.SMOLLM2} | - |" in capsys.readouterr().out


@pytest.mark.slow
def test_the_time_limit_s_sigterm_still_prints_and_saves_what_was_measured(small_smollm2, tmp_path):
    results = tmp_path / "gpu.json"
    command = [sys.executable, str(REPO / "bench" / "gpu.py"), "--device", "cpu", *SMOKE_SIZES,
               "--smollm2", str(small_smollm2), "--json", str(results)]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and run.poll() is None:
        if results.is_file() and gpu.SMOLLM2 in json.loads(results.read_text()).get("models", {}):
            break  # the first model is done
        time.sleep(0.05)
    run.send_signal(signal.SIGTERM)
    stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == 1 and "stopped by signal 15" in stderr
    report = json.loads(results.read_text())
    assert "wall_seconds" in report and "throughput" in report["models"][gpu.GPT2_SIZED]
    assert f"| {gpu.GPT2_SIZED} | random (seed 0) |" in stdout


def test_the_environment_check_names_what_is_missing():
    assert missing_modules(REQUIRED) == []
    assert missing_modules({"no_such_module_for_neuroscope": "neuroscope-nothing"}) == [
        "no_such_module_for_neuroscope (pip: neuroscope-nothing)"
    ]


# ---- the rule, on planted activations [window, position, neuron]: position 0 is BOS, never scored -----------

# Window scores 3.0, 2.0, 2.0, 1.0: the top 2 are windows 0 and 1, the tie between 1 and 2 going to the lower.
BASE = torch.tensor([[0.0, 0.5, 3.0, 0.1], [0.0, 2.0, 0.2, 0.1], [0.0, 0.3, 2.0, 0.1], [0.0, 1.0, 0.2, 0.1]])
BASE = BASE[:, :, None]


def harvested(acts: torch.Tensor, top_k: int = 2, random_k: int = 0) -> LayerState:
    """The real per-layer state of the harvest, fed these activations as windows 0, 1, ..."""
    state = LayerState(0, acts.shape[2], acts.shape[1], top_k, random_k, 0, seed=0, device="cpu")
    state.update(acts, torch.arange(acts.shape[0]))
    return state


def compare(reference: LayerState, candidate: LayerState) -> Comparison:
    return compare_states(SimpleNamespace(layers={0: reference}), SimpleNamespace(layers={0: candidate}), 2**-4)


def top_windows(state: LayerState) -> set[int]:
    return set(state.kept["top"].windows[0].tolist())


def test_identical_states_are_exact_and_rounding_is_within_tolerance():
    assert compare(harvested(BASE), harvested(BASE)).exact
    shifted = compare(harvested(BASE), harvested(BASE + 0.004))  # the neuron's max |activation| is 3.0
    assert shifted.passed and not shifted.exact and shifted.max_activation_error == pytest.approx(0.004 / 3, 1e-4)


def test_a_near_tie_at_the_boundary_may_keep_another_window():
    candidate = BASE.clone()
    candidate[2, 2, 0] = 2.01  # window 2 now edges out window 1: within tol (2^-4 x 3.0)
    reference, moved = harvested(BASE), harvested(candidate)
    assert top_windows(reference) == {0, 1} and top_windows(moved) == {0, 2}
    result = compare(reference, moved)
    assert result.passed and result.near_ties == 1 and result.same_windows == 0


def test_a_window_that_enters_by_more_than_a_near_tie_is_refused():
    candidate = BASE.clone()
    candidate[3, 1, 0] = 2.6  # window 3 enters with 2.6 where the boundary is 2.0
    result = compare(harvested(BASE), harvested(candidate))
    assert not result.passed
    assert any("no near-tie" in line for line in result.violations)


def test_a_kept_window_whose_activations_differ_is_refused():
    candidate = BASE.clone()
    candidate[1, 3, 0] = 0.6  # same windows kept, one activation off by 0.5
    result = compare(harvested(BASE), harvested(candidate))
    assert result.same_windows == result.neuron_kinds and not result.passed
    assert any("an activation differs" in line for line in result.violations)


def firing(first: int, score: float) -> torch.Tensor:
    """Four windows scoring 1.0, but window `first` scoring `score`."""
    acts = torch.full((4, 4, 1), -0.1)
    acts[:, 1, 0] = 1.0
    acts[first, :, 0] = -0.5
    acts[first, 1, 0] = score
    return acts


def test_the_random_sample_may_differ_only_through_a_window_firing_near_zero():
    keys = sample_keys(0, 0, torch.arange(4), 1)[:, 0]
    first = int(keys.argmin())  # the window the random sample takes whenever it fires
    reference = harvested(firing(first, 0.001), top_k=1, random_k=1)
    assert reference.kept["random"].windows[0].tolist() == [first]
    unsure = compare(reference, harvested(firing(first, -0.001), top_k=1, random_k=1))
    assert unsure.passed and unsure.near_ties == 1
    firm = compare(harvested(firing(first, -0.5), top_k=1, random_k=1),
                   harvested(firing(first, 1.0), top_k=1, random_k=1))
    assert not firm.passed
    assert all(line.startswith("layer 0 neuron 0: random") for line in firm.violations)
