"""The live views' independent reference: texts to run, their token ids the harvest's way (BOS first), their
activations by one plain `run_with_cache`, and rankings written the obvious way."""

from __future__ import annotations

import pydoc_data.topics

import numpy as np
import torch


def doc_lines(count: int, start: int = 0) -> list[str]:
    """Distinct prose lines of the language reference, 20 to 120 characters long."""
    text = "\n".join(pydoc_data.topics.topics[key] for key in sorted(pydoc_data.topics.topics))
    lines = sorted({line.strip() for line in text.splitlines() if 20 <= len(line.strip()) <= 120 and "[[" not in line})
    return lines[start : start + count]


def text_ids(model, text: str) -> list[int]:
    return [model.bos_id, *model.tokenizer(text, add_special_tokens=False)["input_ids"]]


@torch.inference_mode()
def forward(model, token_ids: list[int], layers: list[int]) -> np.ndarray:
    """[layers, positions, d_mlp] from one plain run_with_cache."""
    names = [f"blocks.{layer}.mlp.hook_post" for layer in layers]
    _, cache = model.bridge.run_with_cache(torch.tensor([token_ids]), names_filter=lambda name: name in names)
    return np.stack([cache[name][0].float().numpy() for name in names])


def brute_force_ranking(scores: dict[tuple[int, int], float], count: int) -> list[tuple[int, int]]:
    finite = [(key, value) for key, value in scores.items() if np.isfinite(value)]
    return [key for key, _ in sorted(finite, key=lambda item: (-item[1], item[0]))][:count]
