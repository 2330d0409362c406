"""Short links `/n/<model>/<layer>/<neuron>`: an Open Graph card for forums, then the app at that neuron.

A crawler reads the card's tags and fetches the PNG preview; a browser is sent on to the deep link.
Headers are client input: the redirect is a relative URL, and the absolute URLs the tags need are built from
a validated scheme and host only.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from hub_sync.reader import DatasetError
from space.explanations import best_first
from space.links import NeuronRef, resolve
from space.preview import neuron_card_png
from space.sources import Catalog
from space.text import visible_token
from space.views import stored_explanations, unreadable_notice

SPACE_HOST_ENV = "SPACE_HOST"  # set by Hugging Face Spaces: the Space's public host, e.g. owner-name.hf.space
SCHEMES = ("http", "https")
UNREADABLE_CARD = "This neuron cannot be shown: its dataset files are unreadable."
HOST = re.compile(r"(?:(?:[A-Za-z0-9-]{1,63}\.)*[A-Za-z0-9-]{1,63}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")


def valid_host(host: str) -> bool:
    """A hostname, IPv4 or [IPv6] address with an optional port, and nothing else."""
    return HOST.fullmatch(host) is not None


def public_origin(request: Request, environ: Mapping[str, str] = os.environ) -> str:
    """scheme://host for the card's absolute URLs. On a Space: https and its SPACE_HOST. Elsewhere: the request's
    scheme (uvicorn takes X-Forwarded-Proto only from FORWARDED_ALLOW_IPS) and its Host header, each validated;
    X-Forwarded-Host is never read. A host that fails validation gives way to the server's own address."""
    space_host = environ.get(SPACE_HOST_ENV, "")
    if valid_host(space_host):
        return f"https://{space_host}"
    scheme = request.url.scheme if request.url.scheme in SCHEMES else "http"
    host = request.headers.get("host", "")
    if not valid_host(host):
        server_host, server_port = request.scope.get("server") or ("localhost", None)
        host = f"[{server_host}]" if ":" in server_host else server_host
        host += f":{server_port}" if server_port else ""
    return f"{scheme}://{host}"


def card_title(ref: NeuronRef) -> str:
    return f"{ref.model} · layer {ref.layer} · neuron {ref.neuron}"


def card_text(catalog: Catalog, ref: NeuronRef) -> tuple[str, str]:
    """The card's title and one-line description: stats and the tokens the neuron peaks on."""
    stats = catalog.models[ref.model].neuron_stats(ref.layer, ref.neuron)
    peaks = ", ".join(f"{visible_token(token)!r}×{count}" for token, count in stats.peaks[:5])
    title = card_title(ref)
    description = f"max {stats.max:.3g} · density {100 * stats.density:.3g}% · peaks on {peaks or 'nothing'}"
    return title, description


def card_explanation(catalog: Catalog, ref: NeuronRef) -> str:
    """The neuron's best-scored explanation, quoted, for the card's description; "" when it has none."""
    explanations, _ = stored_explanations(catalog.models[ref.model], ref.layer, ref.neuron)
    texts = [item.explanation for item in best_first(explanations or []) if item.explanation]
    return f"“{texts[0]}” · " if texts else ""


def card_html(title: str, description: str, image_url: str, app_url: str, redirect: str, notes: list[str]) -> str:
    """The short link's page: Open Graph and Twitter tags, then a redirect (a relative URL, so no header can make
    it a `javascript:` one) by meta refresh and by script.

    `html.escape` quotes by default, so every attribute value below is safe."""
    script_url = json.dumps(redirect).replace("<", "\\u003c")
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
<meta http-equiv="refresh" content="0; url={escape(redirect)}">
</head><body>{note}<p>Opening <a href="{escape(redirect)}">{escape(title)}</a>…</p>
<script>window.location.replace({script_url});</script></body></html>"""


def short_link_router(catalog: Catalog) -> APIRouter:
    """Routes for the card page and its PNG; invalid parts fall back to a valid neuron like deep links do, and a
    neuron whose files cannot be read gets a card that says so and a placeholder image, never an error."""
    router = APIRouter()

    @lru_cache(maxsize=256)
    def card_png(ref: NeuronRef) -> bytes:
        title, description = card_text(catalog, ref)
        return neuron_card_png(title, description, catalog.models[ref.model].neuron_examples(ref.layer, ref.neuron))

    @router.get("/n/{model:path}/{layer}/{neuron}.png", include_in_schema=False)
    def neuron_card_image(model: str, layer: str, neuron: str) -> Response:
        ref, _ = resolve(catalog, model, layer, neuron)
        if ref is None:
            return Response("No dataset is available.", status_code=404, media_type="text/plain")
        try:
            return Response(card_png(ref), media_type="image/png", headers={"Cache-Control": "public, max-age=3600"})
        except DatasetError:
            placeholder = neuron_card_png(card_title(ref), UNREADABLE_CARD, [])
            return Response(placeholder, media_type="image/png", headers={"Cache-Control": "no-cache"})

    @router.get("/n/{model:path}/{layer}/{neuron}", include_in_schema=False)
    def neuron_card_page(request: Request, model: str, layer: str, neuron: str) -> HTMLResponse:
        ref, messages = resolve(catalog, model, layer, neuron)
        origin = public_origin(request)
        if ref is None:
            page = card_html("Neuroscope Hub", "No dataset is available.", "", f"{origin}/", "/", messages)
            return HTMLResponse(page, status_code=404)
        try:
            title, description = card_text(catalog, ref)
            description = card_explanation(catalog, ref) + description
        except DatasetError as error:
            title, description = card_title(ref), unreadable_notice(error)
            messages = [*messages, description]
        redirect = f"/?{ref.query()}"
        image_url = f"{origin}{ref.short_path()}.png"
        return HTMLResponse(card_html(title, description, image_url, origin + redirect, redirect, messages))

    return router
