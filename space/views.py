"""What each view computes, independent of Gradio: a neuron page and a search, as the UI and API return them."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import pandas as pd

from hub_sync.format import EXPLANATION_SCORES
from hub_sync.reader import DatasetError, NeuronDataset
from hub_sync.records import Example
from space.explanations import Explanation
from space.links import NeuronRef, optional_int, random_neuron, resolve, step
from space.render import message_html, neuron_page_html
from space.search import SORT_KEYS, Hit, SearchResult
from space.sources import Catalog
from space.text import visible_token

RESULT_COLUMNS = [
    "model", "layer", "neuron", "peak tokens", "matches", "max", "density", "peak concentration", "top example",
    "explanation", "matched", *EXPLANATION_SCORES,
]
RESULT_TYPES = ["str", "number", "number", "str", "number", "number", "number", "number", "str", "str", "str"] + [
    "number" for _ in EXPLANATION_SCORES
]
RESULT_LIMIT = 100
SNIPPET_LIMIT = 25  # the first rows get their top example: one ranged read each (a Hub GET), so not all 100
SNIPPET_BEFORE, SNIPPET_AFTER = 8, 3
SNIPPET_READERS = 8
SNIPPETS_KEPT = 4096
PEAK_MARKS = ("⟦", "⟧")


@dataclass(frozen=True)
class NeuronView:
    """A resolved neuron and its page; `ref` is None only when no dataset is served."""

    ref: NeuronRef | None
    notice: str
    page: str


def unreadable_notice(error: DatasetError) -> str:
    return f"This neuron cannot be shown: {error}"


def page_for(catalog: Catalog, ref: NeuronRef | None, messages: list[str]) -> NeuronView:
    """Render the neuron page, with any messages about how the request was resolved."""
    if ref is None:
        return NeuronView(None, message_html(messages), "")
    dataset = catalog.models[ref.model]
    try:
        record = dataset.neuron(ref.layer, ref.neuron)
    except DatasetError as error:
        return NeuronView(ref, message_html([*messages, unreadable_notice(error)]), "")
    explanations, problem = stored_explanations(dataset, ref.layer, ref.neuron)
    messages = messages + ([problem] if problem else [])
    page = neuron_page_html(ref.model, record, dataset.histogram_edges, explanations)
    return NeuronView(ref, message_html(messages), page)


def stored_explanations(dataset: NeuronDataset, layer: int, neuron: int) -> tuple[list[Explanation] | None, str]:
    """The neuron's explanations, None for a dataset without any (format 1.0); an unreadable explanations file is
    a message, and the rest of the page is still shown."""
    if not dataset.explanation_layers:
        return None, ""
    try:
        return [Explanation.from_row(row) for row in dataset.neuron_explanations(layer, neuron)], ""
    except DatasetError as error:
        return None, f"The explanations of this layer cannot be shown: {error}"


def neuron_view(catalog: Catalog, model: object, layer: object, neuron: object) -> NeuronView:
    """The page of the named neuron, or of a valid fallback with a message."""
    ref, messages = resolve(catalog, model, layer, neuron)
    return page_for(catalog, ref, messages)


def stepped_view(catalog: Catalog, model: object, layer: object, neuron: object, delta: int) -> NeuronView:
    """The page `delta` neurons away from the named one (from the fallback if the name is invalid)."""
    ref, messages = resolve(catalog, model, layer, neuron)
    return page_for(catalog, ref and step(catalog, ref, delta), messages)


def random_view(catalog: Catalog, model: object, rng: random.Random) -> NeuronView:
    """A random neuron of the named model."""
    ref, messages = resolve(catalog, model, None, None)
    return page_for(catalog, ref and random_neuron(catalog, ref.model, rng), messages)


def _tokens_text(tokens: list[tuple[str, int]]) -> str:
    return ", ".join(f"{visible_token(token)!r} ×{count}" for token, count in tokens)


def peak_snippet(example: Example) -> str:
    """A few tokens around the example's peak as plain text, the peak token between ⟦ ⟧ (the table shows text)."""
    marked = [
        f"{PEAK_MARKS[0]}{visible_token(example.tokens[p])}{PEAK_MARKS[1]}" if p == example.max_position
        else visible_token(example.tokens[p])
        for p in example.around_peak(SNIPPET_BEFORE, SNIPPET_AFTER)
    ]
    return "".join(marked)


@lru_cache(maxsize=SNIPPETS_KEPT)
def cached_snippet(dataset: NeuronDataset, layer: int, neuron: int) -> str:
    """A neuron's snippet, kept: the same neurons come back search after search (a failed read is not kept)."""
    top = next((example for example in dataset.neuron_examples(layer, neuron) if example.kind == "top"), None)
    return peak_snippet(top) if top else ""


def top_snippet(catalog: Catalog, hit: Hit) -> str:
    """The snippet of the hit's first top example; a note when its examples cannot be read."""
    try:
        return cached_snippet(catalog.models[hit.model], hit.layer, hit.neuron)
    except DatasetError:
        return "(examples unreadable)"


def snippets(catalog: Catalog, hits: list[Hit]) -> list[str]:
    """Snippets of the first SNIPPET_LIMIT hits, read concurrently; "" for the rest."""
    with ThreadPoolExecutor(max_workers=SNIPPET_READERS) as pool:
        shown = list(pool.map(lambda hit: top_snippet(catalog, hit), hits[:SNIPPET_LIMIT]))
    return shown + [""] * (len(hits) - len(shown))


def results_frame(result: SearchResult, top_examples: list[str] | None = None) -> pd.DataFrame:
    """Search hits as the results table shows them (plain text cells: the table does not render HTML)."""
    top_examples = top_examples or [""] * len(result.hits)
    rows = [
        [
            hit.model,
            hit.layer,
            hit.neuron,
            _tokens_text(hit.tokens),
            hit.matches,
            round(hit.max, 4),
            round(hit.density, 4),
            round(hit.peak_concentration, 4),
            snippet,
            hit.explanation,
            hit.matched,
            *(None if hit.scores[name] is None else round(hit.scores[name], 4) for name in EXPLANATION_SCORES),
        ]
        for hit, snippet in zip(result.hits, top_examples, strict=True)
    ]
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def search_view(
    catalog: Catalog, keyword: str, models: list[str] | None, layer_min: object, layer_max: object, sort: str
) -> tuple[str, pd.DataFrame]:
    """A search's summary line and its results table; bad filters give a message, not an error."""
    messages = []
    if sort not in SORT_KEYS:
        messages.append(f"Unknown sort {sort!r}; sorting by max.")
        sort = "max"
    unknown = [name for name in models or [] if name not in catalog.models]
    if unknown:
        messages.append(f"Unknown models ignored: {', '.join(map(repr, unknown))}.")
    wanted = [name for name in models or [] if name in catalog.models] or None
    lowest = optional_int(layer_min, "From layer", "searching from the first layer", messages)
    highest = optional_int(layer_max, "To layer", "searching to the last layer", messages)
    if lowest is not None and highest is not None and lowest > highest:
        messages.append(f"From layer {lowest} is above to layer {highest}: no layer is in that range; swap them.")
    result = catalog.index.search(keyword or "", wanted, lowest, highest, sort, limit=RESULT_LIMIT)
    described = f"for {keyword.strip()!r}" if (keyword or "").strip() else "(no keyword: all neurons)"
    shown = f"; showing the first {len(result.hits)}" if result.total > len(result.hits) else ""
    hint = " Click a row to open its neuron." if result.hits else ""
    hint += f" Neurons with no {sort} score come last." if sort in EXPLANATION_SCORES and result.hits else ""
    cut = len(result.hits) > SNIPPET_LIMIT
    snippet_note = f" Top examples (peak ⟦marked⟧) for the first {SNIPPET_LIMIT}." if cut else ""
    messages.append(f"{result.total:,} neurons {described}{shown}.{hint}{snippet_note}")
    return message_html(messages), results_frame(result, snippets(catalog, result.hits))
