"""Neuroscope Hub's Space entry point: `python app.py [--source S ...] [--host H] [--port P]`.

Sources come from --source, else NEUROSCOPE_SOURCES (comma-separated), else the embedded default; where that
cannot be built (a Space installs requirements.txt, which cannot hold its model), the page says what to set.
On first launch the default is built in a child process while the page is already served; its neurons
appear when it is done. This file only wires space/ to its sources.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

# glibc malloc returns freed Parquet buffers to the system; Arrow's default pool keeps them (RSS +25%).
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

from space.explainer import LiveExplainer
from space.live.model import LiveModels, prepare_zero_gpu
from space.live.ui import live_tabs
from space.rating import open_ratings
from space.research_tabs import research_tabs
from space.server import build_app, serve
from space.sources import Catalog, Unavailable, open_sources, sources_from_env

if TYPE_CHECKING:
    from harvest.background import BackgroundBuild

EMBEDDED_DEFAULT = "the embedded default (SmolLM2-135M)"
SET_SOURCES = (
    "{reason}. A Space cannot install it from requirements.txt (its own dependencies need a C++ build). To serve "
    "datasets, set the Space variable NEUROSCOPE_SOURCES to their Hub ids, comma-separated (for example "
    "your-name/gpt2-neurons), add the secret HF_TOKEN if any of them is private, and restart the Space; locally, "
    "pass --source FOLDER_OR_HUB_ID."
)


def embedded_default_sources() -> tuple[list[str], list[Unavailable], BackgroundBuild | None]:
    """The embedded SmolLM2 dataset when a finished build is cached; else its build, to start once the app serves.
    Where its model is not installed: no source and a note that says what to set instead (the app still serves,
    so the Space shows it)."""
    from harvest.background import BackgroundBuild
    from harvest.default import finished_default
    from harvest.smollm2 import SmolLM2Unavailable, gguf_path

    try:
        gguf_path()
    except SmolLM2Unavailable as missing:
        return [], [Unavailable(EMBEDDED_DEFAULT, SET_SOURCES.format(reason=missing))], None
    folder = finished_default()
    return ([str(folder)], [], None) if folder else ([], [], BackgroundBuild.of_default())


def start_build(build: BackgroundBuild, catalog: Catalog) -> None:
    """Serve the built folder when it is done; show why when it fails (page and terminal), keep serving."""

    def done(folder: Path) -> None:
        catalog.add(str(folder))
        catalog.index_build.add_done_callback(report_index_problems)

    def failed(reason: str) -> None:
        catalog.unavailable.append(Unavailable(EMBEDDED_DEFAULT, f"it could not be built: {reason}"))
        print(f"error: the embedded default dataset could not be built: {reason}", file=sys.stderr, flush=True)
        print("its build resumes on the next launch; or pass --source FOLDER_OR_HUB_ID", file=sys.stderr, flush=True)

    catalog.building.append(build)
    build.start(done, failed)


def report_index_problems(build: Future) -> None:
    """Print what the search index, built in the background, could not read: the banner says it, so must the log."""
    if build.exception() is not None:
        print(f"the search index could not be built: {build.exception()}", file=sys.stderr, flush=True)
        return
    for problem in build.result().problems:
        print(problem, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve Neuroscope datasets in a Gradio app.")
    parser.add_argument("--source", action="append", default=[], help="local folder or Hub dataset id (repeatable)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sources, notes, build = args.source or sources_from_env(), [], None
    if not sources:
        sources, notes, build = embedded_default_sources()
    catalog = open_sources(sources, token=os.environ.get("HF_TOKEN"))
    catalog.unavailable.extend(notes)
    for message in catalog.source_messages():
        print(message, file=sys.stderr)
    catalog.index_build.add_done_callback(report_index_problems)
    if build is not None:
        start_build(build, catalog)
    print(f"Serving {len(catalog.models)} model(s) on http://{args.host}:{args.port}", flush=True)
    live_models = LiveModels()
    prepare_zero_gpu(live_models, catalog.models.values())
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it stopped for
        extra_tabs = [*live_tabs(live_models), *research_tabs(open_ratings())]
        serve(build_app(catalog, extra_tabs, LiveExplainer.from_env()), args.host, args.port)
    # Killed instead (SIGTERM re-raised by uvicorn ends the process), the app leaves the child to stop itself: it sees
    # its stdin close, and stops after its batch with the checkpoint saved.
    if build is not None and build.stop():
        print("\ninterrupted: the next launch resumes the default dataset's build", file=sys.stderr, flush=True)
    return 130  # the server stops only on a signal


if __name__ == "__main__":
    sys.exit(main())
