"""The Effect tab's views, independent of Gradio: what clamping neurons does to the model's predictions on a text
(/ablate), and to what it writes after it (/steer).

Like the other live views each returns (notice HTML, body HTML, values), and bad input gives a notice.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harvest.models import LoadedModel
from space.links import optional_int
from space.live.effect_render import effect_html, steer_html
from space.live.effects import Effect, compare, paired_generation, paired_log_probs, until_eos
from space.live.interventions import Clamp, Intervention, clamps_for, parse_intervention, parse_neurons
from space.live.texts import EncodedText, TextError, decode_each, encode_text, token_cap, truncation_notices
from space.live.views import LiveContext, LiveTarget, View, bounded_count, guarded, open_target
from space.render import message_html

TOP_CHANGES = 10
DIRECT_SHOWN = 3  # neurons whose direct logit effects the page shows
DEFAULT_NEW_TOKENS = 32
MAX_NEW_TOKENS = 64
OVERFLOW = "The intervention made the model's outputs overflow (not finite): use a smaller value."


@dataclass(frozen=True)
class EffectRequest:
    """What both views start from: the target model, the text encoded and capped, the clamps to apply."""

    target: LiveTarget
    encoded: EncodedText
    intervention: Intervention
    clamps: list[Clamp]

    def described(self) -> dict:
        """The values both views return first: which model, neurons and intervention, on which tokens."""
        return {
            "model": self.target.ref.model, "neurons": _clamp_rows(self.clamps), "intervention": str(self.intervention),
            "token_ids": self.encoded.token_ids, "tokens": self.encoded.tokens, "truncated": self.encoded.truncated,
        }


def open_request(context: LiveContext, model: object, neurons: str | None, text: str | None, intervention: str | None,
                 layer: object, neuron: object) -> EffectRequest:
    """Parse and check every input; blank neurons mean the current one (model, layer, neuron), resolved like a link."""
    how = parse_intervention(intervention)
    target = open_target(context, model, layer, neuron)
    pairs = parse_neurons(neurons, target.neurons, target.ref)
    encoded = encode_text(target.model, text or "")
    target.messages.extend(truncation_notices([encoded], "Text", token_cap(target.model)))
    return EffectRequest(target, encoded, how, clamps_for(target.dataset, pairs, how))


def _clamp_rows(clamps: list[Clamp]) -> list[dict]:
    return [{"layer": clamp.layer, "neuron": clamp.neuron, "value": clamp.value} for clamp in clamps]


def _losses(values: torch.Tensor) -> list[float | None]:
    """Per-position losses, with None at the last position (nothing follows it)."""
    return [*(float(value) for value in values), None]


def top_changes(effect: Effect, model: LoadedModel) -> dict[str, list[dict]]:
    """The vocabulary tokens whose mean log-probability rose most and fell most, with before and after."""
    change = effect.mean_intervened - effect.mean_clean

    def rows(order: torch.Tensor, keep: torch.Tensor) -> list[dict]:
        ids = [int(index) for index in order if keep[index]]
        tokens = decode_each(model, ids)
        return [{"token_id": index, "token": token, "before": float(effect.mean_clean[index]),
                 "after": float(effect.mean_intervened[index]), "change": float(change[index])}
                for index, token in zip(ids, tokens, strict=True)]

    count = min(TOP_CHANGES, len(change))
    raised, lowered = change.topk(count).indices, (-change).topk(count).indices
    return {"raised": rows(raised, change > 0), "lowered": rows(lowered, change < 0)}


@guarded
def ablate_view(context: LiveContext, model: object, neurons: str | None, text: str | None, intervention: str | None,
                layer: object = None, neuron: object = None) -> View:
    """The text run clean and with the neurons set: each token's loss change and KL, and the predictions that moved
    most, beside the neurons' direct logit effects."""
    request = open_request(context, model, neurons, text, intervention, layer, neuron)
    target, encoded = request.target, request.encoded
    log_probs = paired_log_probs(target.model, encoded.token_ids, request.clamps)
    if not torch.isfinite(log_probs).all():
        raise TextError(OVERFLOW)
    effect = compare(encoded.token_ids, log_probs)
    after_bos = effect.kl[1:]
    result = {
        **request.described(), "loss": _losses(effect.loss), "intervened_loss": _losses(effect.intervened_loss),
        "kl": [float(value) for value in effect.kl], "mean_loss": float(effect.loss.mean()),
        "mean_intervened_loss": float(effect.intervened_loss.mean()), "mean_kl": float(after_bos.mean()),
        "max_kl": float(after_bos.max()), "top_changes": top_changes(effect, target.model),
    }
    direct = None
    if target.dataset:
        direct = [target.dataset.neuron_stats(clamp.layer, clamp.neuron) for clamp in request.clamps[:DIRECT_SHOWN]]
    html = effect_html(target.ref.model, request.clamps, result, direct)
    return message_html(target.messages), html, result


def _continuation(request: EffectRequest, ids: list[int]) -> dict:
    model = request.target.model
    kept = until_eos(ids, model.eos_id)
    return {"token_ids": kept, "tokens": decode_each(model, kept), "text": model.tokenizer.decode(kept)}


@guarded
def steer_view(context: LiveContext, model: object, neurons: str | None, text: str | None, intervention: str | None,
               new_tokens: object = DEFAULT_NEW_TOKENS, seed: object = None, layer: object = None,
               neuron: object = None) -> View:
    """What the model writes after the text with the neurons set, beside what it writes without: greedy, or sampled
    with a seed (one shared draw per step, so the two differ only through the intervention)."""
    request = open_request(context, model, neurons, text, intervention, layer, neuron)
    target, encoded, messages = request.target, request.encoded, request.target.messages
    count = bounded_count(new_tokens, "New tokens", DEFAULT_NEW_TOKENS, MAX_NEW_TOKENS, "generating", messages)
    room = target.model.n_ctx - len(encoded.token_ids)
    if room < 1:
        raise TextError(f"The text fills the model's context ({target.model.n_ctx} tokens): shorten it to leave room.")
    if count > room:
        messages.append(f"The model's context ({target.model.n_ctx} tokens) leaves room for {room} new tokens.")
        count = room
    seed_number = optional_int(seed, "Seed", "generating greedily", messages)
    generated = paired_generation(target.model, encoded.token_ids, request.clamps, count, seed_number).tolist()
    result = {
        **request.described(), "seed": seed_number, "new_tokens": count,
        "clean": _continuation(request, generated[0]), "steered": _continuation(request, generated[1]),
    }
    return message_html(messages), steer_html(target.ref.model, request.clamps, result), result
