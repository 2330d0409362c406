"""Score an explanation on a neuron's held-out examples; every score comes with its n.

- detection (delphi): the scorer model reads each held-out excerpt with only the explanation and says whether
  the neuron fires on it; balanced accuracy of "top" = fires vs "random" = does not. n: excerpts asked about.
- embedding: AUROC of the cosine similarity between the explanation and the held-out excerpts, top above
  random. n: excerpts embedded.
- simulation (OpenAI): the scorer model predicts each held-out token's activation 0-10 from the explanation; its
  expected value under the top logprobs is correlated with the true activations over all those tokens. n: tokens.

Random examples are a uniform sample of the windows where the neuron fired at all, so they stand in for ordinary
text: one that happens to fire as strongly as a top example counts against the explanation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from harvest.explain import metrics, prompts
from harvest.explain.backends import ChatBackend
from harvest.explain.embedding import SentenceEmbedder
from harvest.explain.examples import NeuronExamples

SCORER_NAMES = ("detection", "embedding", "simulation")
NEEDS_LOGPROBS = frozenset({"simulation"})
DETECTION_MAX_TOKENS = 2
TOP_LOGPROBS = 10


@dataclass(frozen=True)
class Score:
    value: float | None  # None when undefined (no held-out example of one class, constant predictions)
    n: int


class Scorer(Protocol):
    name: str

    def score(self, explanation: str, examples: NeuronExamples) -> Score: ...


class DetectionScorer:
    name = "detection"

    def __init__(self, backend: ChatBackend):
        self.backend = backend

    def score(self, explanation: str, examples: NeuronExamples) -> Score:
        items = examples.held_out
        answers = [
            self.backend.complete(prompts.detection_messages(explanation, item), DETECTION_MAX_TOKENS).text
            for item in items
        ]
        labels = [item.kind == "top" for item in items]
        return Score(
            metrics.balanced_accuracy(labels, [prompts.parse_detection(answer) for answer in answers]), len(items)
        )


class EmbeddingScorer:
    name = "embedding"

    def __init__(self, embedder: SentenceEmbedder):
        self.embedder = embedder

    def score(self, explanation: str, examples: NeuronExamples) -> Score:
        items = examples.held_out
        if not items:
            return Score(None, 0)
        vectors = self.embedder.embed([explanation] + [item.text for item in items])
        similarity = vectors[1:] @ vectors[0]
        is_top = np.array([item.kind == "top" for item in items])
        return Score(metrics.auroc(similarity[is_top], similarity[~is_top]), len(items))


class SimulationScorer:
    name = "simulation"

    def __init__(self, backend: ChatBackend):
        self.backend = backend

    def score(self, explanation: str, examples: NeuronExamples) -> Score:
        predicted: list[float] = []
        actual: list[float] = []
        for item in examples.held_out:
            reply = self.backend.complete(
                prompts.simulation_messages(explanation, item), 4 * len(item.tokens) + 8, top_logprobs=TOP_LOGPROBS
            )
            predicted += prompts.simulated_activations(reply.logprobs or (), len(item.tokens))
            actual += item.activations
        return Score(metrics.correlation(predicted, actual), len(actual))


def build_scorers(names: list[str], backend: ChatBackend, embedder: SentenceEmbedder | None) -> list[Scorer]:
    makers = {
        "detection": lambda: DetectionScorer(backend),
        "embedding": lambda: EmbeddingScorer(embedder or SentenceEmbedder()),
        "simulation": lambda: SimulationScorer(backend),
    }
    return [makers[name]() for name in names]
