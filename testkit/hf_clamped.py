"""The independent reference for clamped neurons: transformers' own model with a forward pre-hook on each MLP's
down projection (`c_proj` for GPT-2, `down_proj` for Llama) that sets the neurons' inputs after BOS."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import torch


class Setting(Protocol):
    """One neuron set to a value (the Effect tab's `Clamp` has this shape)."""

    layer: int
    neuron: int
    value: float


def down_projection(hf, layer: int) -> torch.nn.Module:
    if hasattr(hf, "transformer"):
        return hf.transformer.h[layer].mlp.c_proj
    return hf.model.layers[layer].mlp.down_proj


@contextmanager
def hf_clamped(hf, clamps: Sequence[Setting]) -> Iterator[None]:
    """Pre-hooks on the down projections that set each neuron's input after BOS (a cached generation step sees
    one new position, never BOS: all of it)."""

    def setter(clamp: Setting):
        def hook(module, args):
            inputs = args[0].clone()
            inputs[:, 1 if inputs.shape[1] > 1 else 0 :, clamp.neuron] = clamp.value
            return (inputs, *args[1:])

        return hook

    handles = [down_projection(hf, clamp.layer).register_forward_pre_hook(setter(clamp)) for clamp in clamps]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.inference_mode()
def hf_log_probs(hf, token_ids: list[int], clamps: Sequence[Setting]) -> torch.Tensor:
    with hf_clamped(hf, clamps):
        return torch.log_softmax(hf(torch.tensor([token_ids])).logits[0].float(), dim=-1)


def hf_greedy(hf, token_ids: list[int], clamps: Sequence[Setting], new_tokens: int, eos: int) -> list[int]:
    with hf_clamped(hf, clamps), torch.inference_mode():
        output = hf.generate(torch.tensor([token_ids]), attention_mask=torch.ones(1, len(token_ids), dtype=torch.long),
                             max_new_tokens=new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    return output[0, len(token_ids) :].tolist()


@torch.inference_mode()
def hf_sampled(hf, token_ids: list[int], clamps: Sequence[Setting], new_tokens: int, seed: int) -> list[int]:
    """The documented rule, written again on transformers: one uniform draw per step from a CPU generator seeded
    with `seed`; the token is where the draw falls in the cumulative distribution."""
    generator, ids = torch.Generator().manual_seed(seed), list(token_ids)
    with hf_clamped(hf, clamps):
        for _ in range(new_tokens):
            draw = torch.rand((), generator=generator).item()
            cumulative = torch.softmax(hf(torch.tensor([ids])).logits[0, -1].float(), dim=-1).cumsum(dim=0)
            ids.append(int(torch.searchsorted(cumulative, draw * cumulative[-1])))
    return ids[len(token_ids) :]
