"""The messages sent to the explainer and the scorer model, and the parsing of their answers.

The explainer's prompt follows OpenAI's automated-interpretability format: each shown excerpt as text with its
strongest tokens marked <<like this>>, then its tokens that fired with activations scaled to 0-10 (10 = the
highest activation shown). The scorer's prompts carry the explanation and held-out text only, never activations.
Changing any text here changes what the stored explanations mean: bump PROMPT_VERSION.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from harvest.explain.backends import TokenLogprob
from harvest.explain.examples import Excerpt

PROMPT_VERSION = "neuroscope-1"
Messages = list[dict[str, str]]
MARK_FROM = 5  # tokens scaled to at least this are marked <<like this>> in the text

EXPLAINER_SYSTEM = (
    "We are studying neurons in a neural network. Each neuron looks for one particular thing in a short text. "
    "Look at the texts and the tokens the neuron fires on, then say in one short phrase what it looks for. "
    "Reply with the phrase only."
)
DETECTION_SYSTEM = (
    "A neuron of a language model fires on: {explanation}. You will read a text. If the neuron would fire on "
    "some part of it, reply yes; otherwise reply no. Reply with one word: yes or no."
)
SIMULATION_SYSTEM = (
    "A neuron of a language model fires on: {explanation}. For every token of the text below, in order, predict "
    "the neuron's activation on a scale from 0 (not at all) to 10 (strongest). Reply with one number per line "
    "and nothing else."
)


def scaled(activations: Sequence[float], max_activation: float) -> list[int]:
    """OpenAI's discretisation: 10 * a / max, rounded, clipped to 0..10 (negative activations count as 0)."""
    if max_activation <= 0:
        return [0 for _ in activations]
    return [min(10, max(0, round(10 * value / max_activation))) for value in activations]


def _show_excerpt(number: int, item: Excerpt, max_activation: float) -> str:
    levels = scaled(item.activations, max_activation)
    marked = "".join(
        f"<<{token}>>" if level >= MARK_FROM else token for token, level in zip(item.tokens, levels, strict=True)
    )
    fired = "\n".join(f"{token!r}\t{level}" for token, level in zip(item.tokens, levels, strict=True) if level > 0)
    return f"Text {number}: {marked}\nTokens it fires on (0-10):\n{fired}"


EXPLAINER_QUESTION = "In one short phrase, what does this neuron fire on?"
# One worked example before the real question (OpenAI's explainer is few-shot too): it fixes the answer's form.
EXAMPLE_SHOWN = [
    Excerpt("top", 0, 0, ["I", " like", " apples", " and", " pears"], [0.0, 0.0, 1.0, 0.0, 0.0]),
    Excerpt("top", 2, 1, [" a", " basket", " of", " apples"], [0.0, 0.0, 0.1, 0.8]),
]
EXAMPLE_ANSWER = 'the word "apples"'
EXAMPLE_WORDS = ("apple", "pear", "basket")  # an explanation naming these echoes the worked example


def _explainer_question(shown: Sequence[Excerpt], max_activation: float) -> str:
    texts = "\n\n".join(_show_excerpt(number, item, max_activation) for number, item in enumerate(shown, 1))
    return f"{texts}\n\n{EXPLAINER_QUESTION}"


def explainer_messages(shown: Sequence[Excerpt], max_activation: float) -> Messages:
    return [
        {"role": "system", "content": EXPLAINER_SYSTEM},
        {"role": "user", "content": _explainer_question(EXAMPLE_SHOWN, 1.0)},
        {"role": "assistant", "content": EXAMPLE_ANSWER},
        {"role": "user", "content": _explainer_question(shown, max_activation)},
    ]


def detection_messages(explanation: str, item: Excerpt) -> Messages:
    return [
        {"role": "system", "content": DETECTION_SYSTEM.format(explanation=explanation)},
        {"role": "user", "content": f"Text: {item.text}\nDoes the neuron fire on this text? Answer yes or no."},
    ]


def _token_list(tokens: Sequence[str]) -> str:
    listed = "\n".join(f"{number}. {token!r}" for number, token in enumerate(tokens, 1))
    return f"Tokens:\n{listed}"


def simulation_messages(explanation: str, item: Excerpt) -> Messages:
    """With one worked example of the reply's form (the apples of the explainer's example)."""
    example = EXAMPLE_SHOWN[0]
    return [
        {"role": "system", "content": SIMULATION_SYSTEM.format(explanation=explanation)},
        {"role": "user", "content": _token_list(example.tokens)},
        {"role": "assistant", "content": "\n".join(str(level) for level in scaled(example.activations, 1.0))},
        {"role": "user", "content": _token_list(item.tokens)},
    ]


def prompt_text(messages: Messages) -> str:
    return "\n".join(message["content"] for message in messages)


def parse_detection(answer: str) -> bool | None:
    """yes -> True, no -> False, anything else -> None (never counted as correct)."""
    match = re.match(r"\W*(yes|no)\b", answer.strip().lower())
    return None if match is None else match.group(1) == "yes"


def _digit_value(text: str) -> int | None:
    stripped = text.strip()
    return int(stripped) if stripped.isdigit() and int(stripped) <= 10 else None


def expected_value(position: TokenLogprob) -> float:
    """OpenAI's simulation: sum of p(v) * v over the alternatives that are numbers 0-10, renormalised.

    With tokenizers that split "10" into "1" "0" the first digit stands for the number (10 reads as 1).
    """
    weighted = [(value, logprob) for token, logprob in position.top if (value := _digit_value(token)) is not None]
    if not weighted:
        return float(_digit_value(position.token) or 0)
    probabilities = [math.exp(logprob) for _, logprob in weighted]
    return sum(value * p for (value, _), p in zip(weighted, probabilities, strict=True)) / sum(probabilities)


def simulated_activations(positions: Sequence[TokenLogprob], n_tokens: int) -> list[float]:
    """One expected value per line of the reply (its last number, after any "3." label), padded with 0 to n_tokens."""
    values: list[float] = []
    line_value: float | None = None
    previous_was_digit = False
    for position in positions:
        is_digit = _digit_value(position.token) is not None
        if is_digit and not previous_was_digit:
            line_value = expected_value(position)
        previous_was_digit = is_digit
        if "\n" in position.token:
            if line_value is not None:
                values.append(line_value)
            line_value, previous_was_digit = None, False
    if line_value is not None:
        values.append(line_value)
    return (values + [0.0] * n_tokens)[:n_tokens]
