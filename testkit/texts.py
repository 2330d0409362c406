"""Texts the live tests run on, and their token ids the harvest's way (BOS first)."""

from __future__ import annotations

import pydoc_data.topics


def doc_lines(count: int, start: int = 0) -> list[str]:
    """Distinct prose lines of the language reference, 20 to 120 characters long."""
    text = "\n".join(pydoc_data.topics.topics[key] for key in sorted(pydoc_data.topics.topics))
    lines = sorted({line.strip() for line in text.splitlines() if 20 <= len(line.strip()) <= 120 and "[[" not in line})
    return lines[start : start + count]


def text_ids(model, text: str) -> list[int]:
    return [model.bos_id, *model.tokenizer(text, add_special_tokens=False)["input_ids"]]
