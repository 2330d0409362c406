"""Clamping neurons of the real SmolLM2-135M, offline: log-probabilities, losses, KL and greedy continuations equal
transformers' own model with a forward pre-hook on `down_proj` setting the neurons' inputs after BOS."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from harvest.models import load_model
from space.live.effects import compare, paired_generation, paired_log_probs, until_eos
from space.live.interventions import Clamp
from space.live.model import keep_resident
from testkit.hf_clamped import hf_greedy, hf_log_probs
from testkit.live_reference import text_ids

pytestmark = pytest.mark.slow
TEXT = "The capital of France is Paris, and the capital of Italy is"


def test_smollm2_clamped_neurons_equal_transformers(smollm2_folder):
    model = keep_resident(load_model(str(smollm2_folder), "cpu"))
    hf = AutoModelForCausalLM.from_pretrained(smollm2_folder).eval()
    token_ids = text_ids(model, TEXT)
    clamps = [Clamp(3, 100, 0.0), Clamp(3, 1200, 4.0), Clamp(20, 700, -3.0), Clamp(29, 5, 10.0)]
    ours = paired_log_probs(model, token_ids, clamps)
    clean, intervened = hf_log_probs(hf, token_ids, []), hf_log_probs(hf, token_ids, clamps)
    torch.testing.assert_close(ours[0], clean, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(ours[1], intervened, atol=2e-4, rtol=1e-4)
    effect = compare(token_ids, ours)
    following, positions = torch.tensor(token_ids[1:]), torch.arange(len(token_ids) - 1)
    torch.testing.assert_close(effect.loss, -clean[positions, following], atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(effect.intervened_loss, -intervened[positions, following], atol=2e-4, rtol=1e-4)
    kl = torch.nn.functional.kl_div(intervened, clean, log_target=True, reduction="none").sum(dim=-1)
    torch.testing.assert_close(effect.kl, kl.clamp(min=0), atol=1e-4, rtol=1e-3)
    assert effect.kl[1:].max() > 1e-3, "the clamps must change the predictions for the test to mean anything"
    generated = paired_generation(model, token_ids, clamps, 4, None).tolist()
    assert until_eos(generated[0], model.eos_id) == hf_greedy(hf, token_ids, [], 4, model.eos_id)
    assert until_eos(generated[1], model.eos_id) == hf_greedy(hf, token_ids, clamps, 4, model.eos_id)
