"""Turn finished layer states into the dataset writer's arrays: examples, statistics, logit effects."""

from __future__ import annotations

import numpy as np
import torch

from harvest.selection import LayerState
from hub_sync.writer import LayerExamples, LayerNeurons

N_LOGIT_TOKENS = 10


class WindowTokens:
    """Token ids of the windows that kept examples point to; windows nobody points to are dropped."""

    def __init__(self, window: int):
        self.window = window
        self.tokens: dict[int, np.ndarray] = {}
        self._size_after_prune = 0

    def add(self, first_index: int, batch: np.ndarray) -> None:
        for offset, row in enumerate(batch):
            self.tokens[first_index + offset] = row

    def prune(self, referenced: np.ndarray) -> None:
        keep = set(np.unique(referenced).tolist())
        self.tokens = {index: ids for index, ids in self.tokens.items() if index in keep}
        self._size_after_prune = len(self.tokens)

    def needs_prune(self, referenced_upper_bound: int) -> bool:
        """Prune when the store has doubled since the last prune: amortised O(1) per window."""
        return len(self.tokens) > 2 * max(self._size_after_prune, referenced_upper_bound // 8, 1024)

    def lookup(self, windows: np.ndarray) -> np.ndarray:
        if len(windows) == 0:
            return np.zeros((0, self.window), dtype=np.int64)
        return np.stack([self.tokens[int(index)] for index in windows])

    def state_dict(self) -> dict[str, np.ndarray]:
        indices = np.array(sorted(self.tokens), dtype=np.int64)
        return {"indices": indices, "tokens": self.lookup(indices)}

    def load_state_dict(self, saved: dict[str, np.ndarray]) -> None:
        self.tokens = {int(index): row for index, row in zip(saved["indices"], saved["tokens"])}
        self._size_after_prune = len(self.tokens)


def layer_examples(state: LayerState, tokens: WindowTokens) -> LayerExamples:
    parts: dict[str, list[np.ndarray]] = {name: [] for name in ("neuron", "kind", "rank", "score", "position", "window", "acts")}
    for kind, unranked in state.kept.items():
        kept = unranked.ranked()
        filled = kept.filled().cpu().numpy()
        neuron, rank = np.nonzero(filled)
        parts["neuron"].append(neuron)
        parts["rank"].append(rank)
        parts["kind"].append(np.full(len(neuron), kind, dtype=object))
        parts["score"].append(kept.scores.cpu().numpy()[filled])
        parts["position"].append(kept.positions.cpu().numpy()[filled])
        parts["window"].append(kept.windows.cpu().numpy()[filled])
        parts["acts"].append(kept.activations.cpu().numpy()[filled])
    window_index = np.concatenate(parts["window"])
    return LayerExamples(
        neuron=np.concatenate(parts["neuron"]),
        kind=np.concatenate(parts["kind"]),
        rank=np.concatenate(parts["rank"]),
        score=np.concatenate(parts["score"]),
        max_position=np.concatenate(parts["position"]),
        window_index=window_index,
        token_ids=tokens.lookup(window_index),
        activations=np.concatenate(parts["acts"]),
    )


@torch.inference_mode()
def logit_effects(w_out: torch.Tensor, w_unembed: torch.Tensor, chunk: int = 256) -> tuple[np.ndarray, ...]:
    """Top and bottom tokens of W_out[n] @ W_U for every neuron of one layer, chunked to bound memory."""
    top_ids, top_values, bottom_ids, bottom_values = [], [], [], []
    count = min(N_LOGIT_TOKENS, w_unembed.shape[1])
    for start in range(0, w_out.shape[0], chunk):
        effects = w_out[start : start + chunk].float() @ w_unembed.float()
        top = effects.topk(count, dim=1)
        bottom = effects.topk(count, dim=1, largest=False)
        top_ids.append(top.indices.cpu().numpy())
        top_values.append(top.values.cpu().numpy())
        bottom_ids.append(bottom.indices.cpu().numpy())
        bottom_values.append(bottom.values.cpu().numpy())
    return tuple(np.concatenate(part) for part in (top_ids, top_values, bottom_ids, bottom_values))


def layer_neurons(state: LayerState, w_out: torch.Tensor, w_unembed: torch.Tensor) -> LayerNeurons:
    stats = state.stats
    n_tokens = int(stats.n_tokens)
    top_ids, top_values, bottom_ids, bottom_values = logit_effects(w_out, w_unembed)
    return LayerNeurons(
        max=stats.max.cpu().numpy(),
        min=stats.min.cpu().numpy(),
        mean=(stats.sum / max(n_tokens, 1)).cpu().numpy(),
        density=(stats.positive().double() / max(n_tokens, 1)).cpu().numpy(),
        n_tokens=np.full(len(stats.max), n_tokens, dtype=np.int64),
        histogram=stats.histogram.cpu().numpy(),
        logit_top_ids=top_ids,
        logit_top_values=top_values,
        logit_bottom_ids=bottom_ids,
        logit_bottom_values=bottom_values,
    )
