"""Short links `/n/<model>/<layer>/<neuron>`: an Open Graph card for forums, then the app at that neuron.

A crawler reads the card's tags and fetches the PNG preview; a browser is sent on to the deep link.
"""

from __future__ import annotations

import json
from functools import lru_cache
from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from space.links import NeuronRef, resolve
from space.preview import neuron_card_png
from space.render import examples_from_table
from space.sources import Catalog
from space.text import visible_token
from space.views import neuron_row


def public_origin(request: Request) -> str:
    """scheme://host as the visitor sees it (behind the Spaces proxy: the forwarded scheme and host)."""
    scheme = request.headers.get("x-forwarded-proto", request.url.scheme).split(",")[0].strip()
    host = request.headers.get("x-forwarded-host") or request.headers.get("host") or request.url.netloc
    return f"{scheme}://{host}"


def card_text(catalog: Catalog, ref: NeuronRef) -> tuple[str, str]:
    """The card's title and one-line description: stats and the tokens the neuron peaks on."""
    row = neuron_row(catalog, ref)
    peaks = ", ".join(f"{visible_token(token)!r}×{count}" for token, count in list(zip(row["peak_tokens"], row["peak_token_counts"]))[:5])
    title = f"{ref.model} · layer {ref.layer} · neuron {ref.neuron}"
    description = f"max {row['max']:.3g} · density {100 * row['density']:.3g}% · peaks on {peaks or 'nothing'}"
    return title, description


def card_html(title: str, description: str, image_url: str, app_url: str, notes: list[str]) -> str:
    """The short link's page: Open Graph and Twitter tags, then a redirect by meta refresh and by script.

    `html.escape` quotes by default, so every attribute value below is safe."""
    script_url = json.dumps(app_url).replace("<", "\\u003c")
    note = "".join(f"<p>{escape(text)}</p>" for text in notes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{escape(title)}</title>
<meta property="og:type" content="website">
<meta property="og:site_name" content="Neuroscope Hub">
<meta property="og:title" content="{escape(title)}">
<meta property="og:description" content="{escape(description)}">
<meta property="og:image" content="{escape(image_url)}">
<meta property="og:image:width" content="1200">
<meta property="og:image:height" content="630">
<meta property="og:url" content="{escape(app_url)}">
<meta name="twitter:card" content="summary_large_image">
<meta name="twitter:title" content="{escape(title)}">
<meta name="twitter:description" content="{escape(description)}">
<meta name="twitter:image" content="{escape(image_url)}">
<meta http-equiv="refresh" content="0; url={escape(app_url)}">
</head><body>{note}<p>Opening <a href="{escape(app_url)}">{escape(title)}</a>…</p>
<script>window.location.replace({script_url});</script></body></html>"""


def short_link_router(catalog: Catalog) -> APIRouter:
    """Routes for the card page and its PNG; invalid parts fall back to a valid neuron like deep links do."""
    router = APIRouter()

    @lru_cache(maxsize=256)
    def card_png(ref: NeuronRef) -> bytes:
        title, description = card_text(catalog, ref)
        examples = examples_from_table(catalog.models[ref.model].examples(ref.layer, ref.neuron))
        return neuron_card_png(title, description, examples)

    @router.get("/n/{model:path}/{layer}/{neuron}.png", include_in_schema=False)
    def neuron_card_image(model: str, layer: str, neuron: str) -> Response:
        ref, _ = resolve(catalog, model, layer, neuron)
        if ref is None:
            return Response("No dataset is available.", status_code=404, media_type="text/plain")
        return Response(card_png(ref), media_type="image/png", headers={"Cache-Control": "public, max-age=3600"})

    @router.get("/n/{model:path}/{layer}/{neuron}", include_in_schema=False)
    def neuron_card_page(request: Request, model: str, layer: str, neuron: str) -> HTMLResponse:
        ref, messages = resolve(catalog, model, layer, neuron)
        origin = public_origin(request)
        if ref is None:
            return HTMLResponse(card_html("Neuroscope Hub", "No dataset is available.", "", f"{origin}/", messages), status_code=404)
        title, description = card_text(catalog, ref)
        app_url = f"{origin}/?{ref.query()}"
        return HTMLResponse(card_html(title, description, f"{origin}{ref.short_path()}.png", app_url, messages))

    return router
