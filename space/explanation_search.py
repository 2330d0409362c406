"""The explanation half of the search: every stored explanation of every served neuron, indexed by word.

A word is a run of letters, digits and marks, lower-cased: one rule (WORD_SPLIT, in Arrow's RE2) cuts explanations
and keywords alike. A keyword of several words matches an explanation that holds all of them; a trailing `*` makes
its last word a prefix (`colo*` takes colour and colors), as `pri*` does for peak tokens. Each neuron also has a
headline explanation, its best-scored one (space.explanations.rank_keys): what a result shows, unless another of
its explanations matched the words. Built from the small explanations files only, with Arrow and NumPy: no loop
over explanations in Python.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hub_sync import format as fmt
from space.explanations import rank_keys
from space.text import Keyword

WORD_SPLIT = r"[^\p{L}\p{N}\p{M}]+"
NO_EXPLANATION = -1


def words_of(texts: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """Every word of every text (nulls have none), and the index of the text each came from."""
    lists = pc.split_pattern_regex(pc.utf8_lower(texts), WORD_SPLIT)
    words = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists)
    kept = pc.not_equal(words, "")
    return words.filter(kept).combine_chunks(), parents.filter(kept).to_numpy()


def keyword_words(key: str) -> list[str]:
    return words_of(pa.chunked_array([[key]]))[0].to_pylist()


@dataclass(frozen=True)
class ExplainedLayer:
    """One layer's explanations table, and the search row of the neuron each of its rows explains."""

    table: pa.Table
    rows: np.ndarray  # int32


class ExplanationIndex:
    """Explanation ids (their order here) by word, in CSR layout, and each search row's headline explanation."""

    def __init__(self, layers: list[ExplainedLayer], n_rows: int):
        # The columns stay the reader's (cached) chunks: concat_tables copies nothing.
        table = pa.concat_tables([layer.table for layer in layers]) if layers else fmt.EXPLANATION_SCHEMA.empty_table()
        self._parents = np.concatenate([np.zeros(0, dtype=np.int32)] + [layer.rows for layer in layers])
        self._texts = table.column("explanation")
        self._refusals = table.column("refusal")
        self._scores = {name: table.column(name).to_numpy() for name in fmt.EXPLANATION_SCORES}  # float32, NaN: null
        self._ranks = rank_keys(self._scores, pc.is_valid(self._refusals).to_numpy())
        self.headline = np.full(n_rows, NO_EXPLANATION, dtype=np.int32)
        rows, best = self._best_per_row(np.arange(table.num_rows))
        self.headline[rows] = best
        self._index_words()

    @property
    def size(self) -> int:
        return len(self._parents)

    def _index_words(self) -> None:
        words, explanation_ids = words_of(self._texts)
        encoded = pc.dictionary_encode(words)
        vocabulary = encoded.dictionary.to_pylist()
        word_ids = encoded.indices.to_numpy()
        order = np.argsort(word_ids, kind="stable")  # by word, then explanation (words_of keeps the texts' order)
        word_ids, explanation_ids = word_ids[order], explanation_ids[order]
        first = np.ones(len(order), dtype=bool)  # each explanation once per word, though it says the word twice
        first[1:] = (word_ids[1:] != word_ids[:-1]) | (explanation_ids[1:] != explanation_ids[:-1])
        word_ids, self._postings = word_ids[first], explanation_ids[first].astype(np.int32)
        self._word_ids = {word: index for index, word in enumerate(vocabulary)}
        self._sorted_words = sorted(vocabulary)
        self._starts = np.concatenate([[0], np.cumsum(np.bincount(word_ids, minlength=len(vocabulary)))])

    def _best_per_row(self, explanation_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The search rows these explanations explain (sorted) and, for each, the best-ranked one of them."""
        parents = self._parents[explanation_ids]
        order = np.lexsort((explanation_ids, -self._ranks[explanation_ids], parents))
        rows, first = np.unique(parents[order], return_index=True)
        return rows, explanation_ids[order[first]]

    def _with_word(self, word: str, prefix: bool) -> np.ndarray:
        if prefix:
            first = bisect.bisect_left(self._sorted_words, word)
            last = bisect.bisect_left(self._sorted_words, word + chr(0x10FFFF))
            ids = [self._word_ids[key] for key in self._sorted_words[first:last]]
        else:
            ids = [self._word_ids[word]] if word in self._word_ids else []
        spans = [self._postings[self._starts[i] : self._starts[i + 1]] for i in ids]
        return np.unique(np.concatenate(spans)) if spans else np.zeros(0, dtype=np.int32)

    def matching(self, keyword: Keyword) -> tuple[np.ndarray, np.ndarray]:
        """Search rows with an explanation holding every word of the keyword, and the best such explanation of each."""
        words = keyword_words(keyword.key)
        if not words:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int32)
        found = self._with_word(words[0], keyword.prefix and len(words) == 1)
        for position, word in enumerate(words[1:], start=2):
            found = np.intersect1d(found, self._with_word(word, keyword.prefix and position == len(words)))
        return self._best_per_row(found)

    def score(self, name: str, explanation_ids: np.ndarray) -> np.ndarray:
        """That score of each explanation; NaN where it is null or where there is no explanation."""
        values = self._scores[name][np.maximum(explanation_ids, 0)] if self.size else np.zeros(len(explanation_ids))
        return np.where(explanation_ids == NO_EXPLANATION, np.nan, values)

    def scores_of(self, explanation_id: int) -> dict[str, float | None]:
        """One explanation's scores, None where null (all None for NO_EXPLANATION)."""
        values = {name: float(self.score(name, np.array([explanation_id]))[0]) for name in self._scores}
        return {name: None if np.isnan(value) else value for name, value in values.items()}

    def shown_text(self, explanation_id: int) -> str:
        """What a result's explanation column says: the text, or that it was refused and why."""
        if explanation_id == NO_EXPLANATION:
            return ""
        text = self._texts[explanation_id].as_py()
        return text if text is not None else f"(refused: {self._refusals[explanation_id].as_py()})"
