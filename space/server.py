"""The served application: the Gradio Blocks mounted on a FastAPI app that also answers short links."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import gradio as gr
import uvicorn
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from space.explainer import LiveExplainer
from space.render import PAGE_CSS
from space.shortlinks import short_link_router
from space.sources import Catalog
from space.ui import ExtraTab, build_blocks

# Read-only events (pages, steps, searches) run this many at once each: they are thread-safe
# (tests/test_space_concurrency.py), and a page's ranged read releases the GIL while another renders. More threads
# than this only add memory on a few cores. The model and explain events set their own limit of 1.
CONCURRENT_EVENTS = 8
# Gradio recomputes its monitoring summary (a DataFrame of up to 10,000 past events) after every event by default:
# 14% of the server's CPU under 50 users (py-spy, bench/load.py). Every 1,000 events is plenty for a dashboard.
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
# Waiting events, all endpoints together. Gradio's default is no limit, except on ZeroGPU Spaces where it is 1, which
# would turn away the second of two visitors browsing at once.
QUEUE_SIZE = 512
MAX_QUERY_BYTES = 16_384  # a live deep link's text, URL-encoded, fits; Gradio fails (500) on a query near 64 KB


class QueryLimit:
    """Answer 414 to a request whose query string is longer than MAX_QUERY_BYTES, before any route reads it."""

    def __init__(self, app: ASGIApp, limit: int = MAX_QUERY_BYTES):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and len(scope.get("query_string", b"")) > self.limit:
            message = f"The query string is longer than {self.limit:,} bytes; shorten the link."
            await PlainTextResponse(message, status_code=414)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def build_app(
    catalog: Catalog, extra_tabs: Sequence[ExtraTab] = (), explainer: LiveExplainer | None = None
) -> FastAPI:
    """FastAPI app: short-link routes first, then Gradio at the root (Gradio 6 takes css/theme at mount)."""
    blocks = build_blocks(catalog, extra_tabs, explainer)
    blocks.queue(default_concurrency_limit=CONCURRENT_EVENTS, max_size=QUEUE_SIZE)
    app = FastAPI(title="Neuroscope Hub", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(QueryLimit)
    app.include_router(short_link_router(catalog))
    return gr.mount_gradio_app(
        app, blocks, path="", css=PAGE_CSS, theme=gr.themes.Soft(), ssr_mode=False, footer_links=["api"]
    )


def uvicorn_config(app: FastAPI, host: str, port: int) -> uvicorn.Config:
    """Forwarded headers are trusted from FORWARDED_ALLOW_IPS only (uvicorn reads it; loopback when unset): any
    client can send them. On a Space, short links take their public host from SPACE_HOST instead."""
    return uvicorn.Config(app, host=host, port=port, proxy_headers=True, log_level="warning")


def serve(app: FastAPI, host: str, port: int) -> None:
    uvicorn.Server(uvicorn_config(app, host, port)).run()


@contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve in a background thread (tests, benchmarks); yields the base URL, port 0 picks a free one."""
    server = uvicorn.Server(uvicorn_config(app, host, port))
    thread = threading.Thread(target=server.run, name="neuroscope-server", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server stopped while starting (see its log above)")
        time.sleep(0.02)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound_port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
