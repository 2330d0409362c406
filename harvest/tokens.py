"""The token ids of the windows that kept examples point to; windows nobody points to are dropped."""

from __future__ import annotations

import numpy as np


class WindowTokens:
    """Window index -> its token ids, for the windows some kept example may still point to."""

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
        self.tokens = {int(index): row for index, row in zip(saved["indices"], saved["tokens"], strict=True)}
        self._size_after_prune = len(self.tokens)


def token_store_bytes(
    n_layers: int, d_mlp: int, window: int, top_k: int, random_k: int, bottom_k: int, windows: int
) -> int:
    """Upper bound of the host bytes of the kept windows' token ids (WindowTokens, int64, after pruning).

    No more windows than the corpus has, nor than there are kept slots; the checkpoint adds this to
    selection.state_bytes.
    """
    return min(windows, n_layers * d_mlp * (top_k + random_k + bottom_k)) * window * 8
