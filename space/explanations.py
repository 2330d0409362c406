"""A neuron's stored explanations as the Space shows them: typed, ranked best-scored first, with what each score means.

One ranking serves the neuron page (its order), the search (each neuron's headline explanation, and which of
several matching ones a result shows) and the short-link card: the mean of the explanation's scores, each rescaled
so that chance is 0 and perfect is 1; explanations without scores come after scored ones, refusals last.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hub_sync import format as fmt

SCORE_MEANINGS = {
    "detection": "balanced accuracy of telling held-out top excerpts from random ones given only the explanation "
    "(0.5 = chance, 1 = perfect); n = excerpts",
    "embedding": "AUROC of the explanation's sentence-embedding similarity to held-out top versus random excerpts "
    "(0.5 = chance, 1 = perfect); n = excerpts",
    "simulation": "correlation of the activations predicted from the explanation with the true ones, token by token "
    "(0 = chance, 1 = perfect); n = tokens",
}
UNSCORED_RANK = -2.0  # below every rescaled mean (those lie in -1..1)
REFUSED_RANK = -3.0


@dataclass(frozen=True)
class ScoreValue:
    value: float | None  # None: not computed, or undefined
    n: int


@dataclass(frozen=True)
class Explanation:
    """One stored (or live) explanation of a neuron: its text or the reason it was refused, who wrote it, its scores."""

    explanation: str | None
    explainer: str
    prompt_version: str
    scores: dict[str, ScoreValue]
    refusal: str | None
    created: str  # the date, YYYY-MM-DD

    @classmethod
    def from_row(cls, row: Mapping) -> Explanation:
        """A row of data/explanations (the reader's dicts) or a live record (`created` as ISO 8601 text)."""
        created = row["created"]
        if isinstance(created, str):
            created = dt.datetime.fromisoformat(created)
        return cls(
            explanation=row["explanation"],
            explainer=row["explainer"],
            prompt_version=row["prompt_version"],
            scores={name: ScoreValue(row[name], row[f"{name}_n"]) for name in fmt.EXPLANATION_SCORES},
            refusal=row["refusal"],
            created=created.date().isoformat(),
        )


def rank_keys(scores: Mapping[str, np.ndarray], refused: np.ndarray) -> np.ndarray:
    """Higher is better: the mean rescaled score (NaN scores left out), UNSCORED_RANK without any, REFUSED_RANK."""
    rescaled = []
    for name, values in scores.items():
        low, high = fmt.SCORE_RANGES[name]
        chance = (low + high) / 2
        rescaled.append((np.asarray(values, dtype=np.float64) - chance) / (high - chance))
    stacked = np.vstack(rescaled) if rescaled else np.full((1, len(refused)), np.nan)
    counted = (~np.isnan(stacked)).sum(axis=0)
    mean = np.nansum(stacked, axis=0) / np.maximum(counted, 1)
    keys = np.where(counted > 0, mean, UNSCORED_RANK)
    return np.where(np.asarray(refused, dtype=bool), REFUSED_RANK, keys)


def best_first(explanations: Sequence[Explanation]) -> list[Explanation]:
    """Best-scored first (rank_keys); ties keep the stored order (by explainer, then prompt version)."""
    scores = {
        name: np.array([np.nan if e.scores[name].value is None else e.scores[name].value for e in explanations])
        for name in fmt.EXPLANATION_SCORES
    }
    keys = rank_keys(scores, np.array([e.refusal is not None for e in explanations], dtype=bool))
    return [explanations[i] for i in np.argsort(-keys, kind="stable")]
