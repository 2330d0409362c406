"""A neuron's stored examples, split into those the explainer is shown and those held out for scoring.

The explainer sees the even-ranked top examples (ranks 0, 2, 4, ...); the odd-ranked top examples and every
random example are held out, so each score is measured on windows the explainer never saw. Every example is cut
to an excerpt around its peak: what a person reads on the neuron page, and short enough for a small model.
"""

from __future__ import annotations

from dataclasses import dataclass

from hub_sync.records import Example

EXCERPT_BEFORE = 12  # tokens kept before the peak
EXCERPT_AFTER = 3  # and after it


@dataclass(frozen=True)
class Excerpt:
    """Part of one stored window: its tokens (BOS dropped) and this neuron's activation on each."""

    kind: str  # "top" or "random"
    rank: int
    window_index: int
    tokens: list[str]
    activations: list[float]

    @property
    def text(self) -> str:
        return "".join(self.tokens)


@dataclass(frozen=True)
class NeuronExamples:
    layer: int
    neuron: int
    shown: list[Excerpt]  # the explainer's
    held_out_top: list[Excerpt]  # the scorers' positives
    held_out_random: list[Excerpt]  # the scorers' baseline

    @property
    def max_activation(self) -> float:
        """The scale of the explainer's 0-10 values: the highest activation it is shown."""
        return max((max(excerpt.activations, default=0.0) for excerpt in self.shown), default=0.0)

    @property
    def held_out(self) -> list[Excerpt]:
        return self.held_out_top + self.held_out_random


def excerpt(example: Example) -> Excerpt:
    """The window's tokens from EXCERPT_BEFORE before its peak to EXCERPT_AFTER after it, BOS excluded."""
    positions = example.around_peak(EXCERPT_BEFORE, EXCERPT_AFTER)
    return Excerpt(
        kind=example.kind,
        rank=example.rank,
        window_index=example.window_index,
        tokens=[example.tokens[p] for p in positions],
        activations=[float(example.activations[p]) for p in positions],
    )


def split_examples(layer: int, neuron: int, examples: list[Example]) -> NeuronExamples:
    """Shown: even-ranked top examples; held out: odd-ranked top examples and the random ones (bottom unused).

    A random example that is also a top window is dropped: it would show the scorers a window the explainer saw.
    """
    top = [excerpt(example) for example in examples if example.kind == "top"]
    top_windows = {item.window_index for item in top}
    return NeuronExamples(
        layer=layer,
        neuron=neuron,
        shown=[item for item in top if item.rank % 2 == 0],
        held_out_top=[item for item in top if item.rank % 2 == 1],
        held_out_random=[
            excerpt(example)
            for example in examples
            if example.kind == "random" and example.window_index not in top_windows
        ],
    )
