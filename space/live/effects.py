"""A neuron's total effect on the model's predictions: the same text run clean and with neurons clamped.

The clamp replaces `blocks.{l}.mlp.hook_post` (the input of the MLP's output matrix, what the harvest
reads) at every position after BOS; BOS keeps its own value, as the dataset's stats leave it out. Clean and
intervened runs go through the model together as one batch of two rows, under the live model lock.

Generation runs the whole sequence again at each step: TransformerLens 4.3's bridge gives other logits with
its KV cache (`past_key_values`) than without it on GPT-2 and Llama models, so the cache is not used.
Sampling draws one uniform number per step from a CPU generator seeded by the user and picks, in both rows,
the first token whose cumulative probability exceeds it: the two continuations then differ only where the
intervention changed the distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from harvest.models import LoadedModel
from hub_sync.format import MLP_HOOK
from space.live.forward import model_device, one_at_a_time
from space.live.interventions import Clamp
from space.live.model import gpu, model_key, resident

CLEAN_ROW, INTERVENED_ROW = 0, 1


def clamp_hooks(clamps: Sequence[Clamp], row: int = INTERVENED_ROW) -> list[tuple[str, object]]:
    """Hooks that set each clamped neuron of `row` to its value at every position after BOS."""
    by_layer: dict[int, list[Clamp]] = {}
    for clamp in clamps:
        by_layer.setdefault(clamp.layer, []).append(clamp)

    def setter(layer_clamps: list[Clamp]):
        neurons = [clamp.neuron for clamp in layer_clamps]
        values = [clamp.value for clamp in layer_clamps]

        def hook(acts: torch.Tensor, hook) -> torch.Tensor:
            acts = acts.clone()
            acts[row, 1:, neurons] = torch.tensor(values, dtype=acts.dtype, device=acts.device)
            return acts

        return hook

    return [(MLP_HOOK.format(layer=layer), setter(layer_clamps)) for layer, layer_clamps in sorted(by_layer.items())]


def paired_log_probs(model: LoadedModel, token_ids: Sequence[int], clamps: Sequence[Clamp]) -> torch.Tensor:
    """[2, positions, vocab] float32 next-token log-probabilities of one BOS-led text: clean, then intervened."""
    return _paired_log_probs(model_key(model), tuple(token_ids), tuple(clamps))


@one_at_a_time
@gpu(duration=60)
@torch.inference_mode()
def _paired_log_probs(key: str, token_ids: tuple[int, ...], clamps: tuple[Clamp, ...]) -> torch.Tensor:
    model = resident(key)
    tokens = torch.tensor([list(token_ids)] * 2, device=model_device(model))
    logits = model.bridge.run_with_hooks(tokens, fwd_hooks=clamp_hooks(clamps))
    return torch.log_softmax(logits.float(), dim=-1).cpu()


@dataclass(frozen=True)
class Effect:
    """Per position t: the NLL of token t+1 clean and intervened (the last position has none), and
    KL(clean ‖ intervened) of the next-token distributions; per vocabulary token, its mean log-probability
    over the positions after BOS, clean and intervened."""

    loss: torch.Tensor
    intervened_loss: torch.Tensor
    kl: torch.Tensor
    mean_clean: torch.Tensor
    mean_intervened: torch.Tensor


def compare(token_ids: Sequence[int], log_probs: torch.Tensor) -> Effect:
    """The clean and intervened rows of `paired_log_probs`, compared."""
    clean, intervened = log_probs[CLEAN_ROW], log_probs[INTERVENED_ROW]
    following = torch.tensor(list(token_ids[1:]))[:, None]
    kl = (clean.exp() * (clean - intervened)).sum(dim=-1).clamp(min=0.0)
    return Effect(
        loss=-clean[:-1].gather(1, following)[:, 0],
        intervened_loss=-intervened[:-1].gather(1, following)[:, 0],
        kl=kl,
        mean_clean=clean[1:].mean(dim=0),
        mean_intervened=intervened[1:].mean(dim=0),
    )


def next_tokens(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """[rows] the argmax of each row, or with a generator the first token whose cumulative probability exceeds one
    uniform draw shared by every row."""
    if generator is None:
        return logits.argmax(dim=-1)
    cumulative = torch.softmax(logits.float(), dim=-1).cumsum(dim=-1)
    draw = torch.rand((), generator=generator).item() * cumulative[:, -1:]
    return (cumulative < draw).sum(dim=-1).clamp(max=logits.shape[-1] - 1)


def paired_generation(
    model: LoadedModel, token_ids: Sequence[int], clamps: Sequence[Clamp], new_tokens: int, seed: int | None
) -> torch.Tensor:
    """[2, new_tokens] tokens generated after the text: clean, then with the clamps; greedy when `seed` is None.
    Stops early once both rows have produced EOS (what follows a row's EOS is not part of its continuation)."""
    return _paired_generation(model_key(model), tuple(token_ids), tuple(clamps), new_tokens, seed)


@one_at_a_time
@gpu(duration=120)
@torch.inference_mode()
def _paired_generation(
    key: str, token_ids: tuple[int, ...], clamps: tuple[Clamp, ...], new_tokens: int, seed: int | None
) -> torch.Tensor:
    model = resident(key)
    tokens = torch.tensor([list(token_ids)] * 2, device=model_device(model))
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    hooks = clamp_hooks(clamps)
    ended = torch.zeros(2, dtype=torch.bool, device=tokens.device)
    for _ in range(new_tokens):
        logits = model.bridge.run_with_hooks(tokens, fwd_hooks=hooks)[:, -1]
        chosen = next_tokens(logits, generator)
        tokens = torch.cat([tokens, chosen[:, None]], dim=1)
        ended |= chosen == model.eos_id
        if ended.all():
            break
    return tokens[:, len(token_ids) :].cpu()


def until_eos(ids: list[int], eos_id: int) -> list[int]:
    """A continuation up to and including its first EOS."""
    return ids[: ids.index(eos_id) + 1] if eos_id in ids else ids
