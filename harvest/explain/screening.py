"""Refuse an explanation that cannot be trusted as one, and say why (the reason is stored in the dataset)."""

from __future__ import annotations

import re

MAX_EXPLANATION_CHARS = 300
LEAK_RUN_CHARS = 40  # a verbatim run this long from the prompt is a copy, not an explanation
REASONING_MARKERS = ("<think>", "</think>", "<reasoning>", "let's think", "step by step", "step 1:")
PROMPT_MARKERS = ("<<", ">>", "tokens it fires on", "text 1:")
_LABEL = re.compile(r"^\s*(explanation|answer|phrase)\s*:\s*", re.IGNORECASE)


def clean_explanation(completion: str) -> str:
    """The reply without a leading "Explanation:" label, a final period or quotes around all of it; spaces collapsed."""
    text = " ".join(_LABEL.sub("", completion.strip()).split()).rstrip(".").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return text


def _normalised(text: str) -> str:
    return " ".join(text.lower().split())


def refusal_reason(
    explanation: str, prompt: str, example_words: tuple[str, ...] = (), own_text: str = ""
) -> str | None:
    """Why this (cleaned) explanation is refused, or None: empty, absurdly long, or leaking prompt or reasoning.

    A small model may answer with the prompt's worked example: `example_words` (from it) that the neuron's own
    excerpts (`own_text`) do not contain mark such an echo.
    """
    if not explanation:
        return "empty explanation"
    if len(explanation) > MAX_EXPLANATION_CHARS:
        return f"absurdly long: {len(explanation):,} characters (at most {MAX_EXPLANATION_CHARS})"
    lowered = explanation.lower()
    reasoning = next((marker for marker in REASONING_MARKERS if marker in lowered), None)
    if reasoning:
        return f"leaks its reasoning ({reasoning!r})"
    marker = next((marker for marker in PROMPT_MARKERS if marker in lowered), None)
    if marker:
        return f"leaks the prompt ({marker!r})"
    echoed = next((word for word in example_words if word in lowered and word not in own_text.lower()), None)
    if echoed:
        return f"repeats the prompt's worked example ({echoed!r})"
    text, source = _normalised(explanation), _normalised(prompt)
    for start in range(max(0, len(text) - LEAK_RUN_CHARS) + 1):
        run = text[start : start + LEAK_RUN_CHARS]
        if len(run) == LEAK_RUN_CHARS and run in source:
            return f"leaks the prompt (copies {run!r})"
    return None
