"""Models side by side on the same statistics: how many neurons never fire or fire very rarely or very often, the
distributions of density and peak concentration on shared bins and one height scale, and the blind ratings.

This is the SoLU paper's question (are SoLU neurons more interpretable than GELU ones?) asked of the served datasets.
Differences between models only mean something for trained models: datasets of untrained (random) models, like the
test fixtures, exercise the machinery and say nothing about the science.
"""

from __future__ import annotations

from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict
from html import escape

from space.overview import ModelOverview, Overviews
from space.plots import bars_svg
from space.rating import RatingStore
from space.rating_view import summary_rows, summary_table_html
from space.render import message_html
from space.sources import Catalog

COMPARED = ("density", "peak concentration")
CAVEAT = (
    "Differences between models mean something only for trained models: datasets harvested from untrained (random) "
    "models exercise this comparison and say nothing about which activation function is more interpretable."
)
COMPARE_CSS = """
.ns-compare td { vertical-align: top; text-align: left; }
.ns-compare td:first-child { font-weight: 600; }
"""


def _share(count: int, total: int) -> str:
    return f"{count:,} ({count / total:.1%})" if total else "0"


def compare_html(overviews: list[ModelOverview], store: RatingStore, catalog: Catalog) -> str:
    """A table with a column per model; each distribution row on shared bins and one height scale."""
    names = [overview.model for overview in overviews]
    head = "".join(f"<th>{escape(name, quote=True)}</th>" for name in names)
    counts = [overview.counts() for overview in overviews]
    rows = [
        ("neurons", [f"{c.neurons:,} in {len(o.layers)} layers" for c, o in zip(counts, overviews, strict=True)]),
        ("never fired", [_share(c.never_fired, c.neurons) for c in counts]),
        ("very sparse", [_share(c.very_sparse, c.neurons) for c in counts]),
        ("very dense", [_share(c.very_dense, c.neurons) for c in counts]),
    ]
    for name in COMPARED:
        distributions = [next(d for d in overview.distributions() if d.name == name) for overview in overviews]
        top = max((max(d.counts) / sum(d.counts) for d in distributions if sum(d.counts)), default=0.0)
        rows.append((name, [bars_svg(d.counts, d.edges, top, name) for d in distributions]))
    rows.append(("blind ratings", [summary_table_html(summary_rows(store, catalog, [name])) for name in names]))
    body = "".join(
        f"<tr><td>{escape(title)}</td>{''.join(f'<td>{cell}</td>' for cell in cells)}</tr>" for title, cells in rows
    )
    return (
        f'<div class="ns-page"><p class="ns-muted">{escape(CAVEAT)} Distributions are over the neurons that fired; '
        f"bar heights are shares of each model's fired neurons, on one scale per row.</p>"
        f'<table class="ns-table ns-compare"><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    )


def compare_view(
    overviews: Overviews, store: RatingStore, catalog: Catalog, models: list[str] | None, wait_s: float | None
) -> tuple[str, str, dict]:
    """(notice, body, values) for two or more served models (every model when none is named)."""
    messages = []
    unknown = [name for name in models or [] if name not in catalog.models]
    if unknown:
        messages.append(f"Unknown models ignored: {', '.join(map(repr, unknown))}.")
    names = list(dict.fromkeys(name for name in models or [] if name in catalog.models)) or catalog.model_names
    if len(names) < 2:
        messages.append(
            "Compare needs two or more models; "
            + (
                f"this server serves {len(catalog.model_names)}."
                if len(catalog.model_names) < 2
                else "pick at least two."
            )
        )
        return message_html(messages), "", {}
    try:
        computed = [overviews.future(name).result(timeout=wait_s) for name in names]
    except FutureTimeout:
        return message_html([*messages, "The models' overviews are still being computed; try again shortly."]), "", {}
    values = {
        "models": names,
        "counts": {o.model: asdict(o.counts()) for o in computed},
        "distributions": {o.model: [asdict(d) for d in o.distributions() if d.name in COMPARED] for o in computed},
        "ratings": {
            name: [asdict(row) | {"n": row.n} for row in summary_rows(store, catalog, [name])] for name in names
        },
    }
    problems = [problem for overview in computed for problem in overview.problems]
    return message_html([*messages, *problems]), compare_html(computed, store, catalog), values
