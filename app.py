"""Neuroscope Hub's Space entry point: `python app.py [--source S ...] [--host H] [--port P]`.

Sources come from --source, else NEUROSCOPE_SOURCES (comma-separated), else the embedded default; where that
cannot be built (a Space installs requirements.txt, which cannot hold its model), the page says what to set.
This file only wires space/ to its sources.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import Future

# glibc malloc returns freed Parquet buffers to the system; Arrow's default pool keeps them (RSS +25%).
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

from space.explainer import LiveExplainer
from space.live.ui import live_tabs
from space.rating import open_ratings
from space.research_tabs import research_tabs
from space.server import build_app, serve
from space.sources import Unavailable, open_sources, sources_from_env

EMBEDDED_DEFAULT = "the embedded default (SmolLM2-135M)"
SET_SOURCES = (
    "{reason}. A Space cannot install it from requirements.txt (its own dependencies need a C++ build). To serve "
    "datasets, set the Space variable NEUROSCOPE_SOURCES to their Hub ids, comma-separated (for example "
    "your-name/gpt2-neurons), add the secret HF_TOKEN if any of them is private, and restart the Space; locally, "
    "pass --source FOLDER_OR_HUB_ID."
)


def embedded_default_sources() -> tuple[list[str], list[Unavailable]]:
    """The embedded SmolLM2 dataset, built by harvest on first launch and reused afterwards; where its model is not
    installed, no source and a note that says what to set instead (the app still serves, so the Space shows it)."""
    from harvest.default import default_source
    from harvest.smollm2 import SmolLM2Unavailable

    try:
        return [str(default_source())], []
    except SmolLM2Unavailable as missing:
        return [], [Unavailable(EMBEDDED_DEFAULT, SET_SOURCES.format(reason=missing))]


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
    sources, notes = args.source or sources_from_env(), []
    try:
        if not sources:
            sources, notes = embedded_default_sources()
    except KeyboardInterrupt:
        print("\ninterrupted: the next launch resumes the default dataset's build", file=sys.stderr)
        return 130
    except (OSError, RuntimeError, ValueError) as error:
        print(f"error: the embedded default dataset could not be built: {error}", file=sys.stderr)
        print("its build resumes on the next launch; or pass --source FOLDER_OR_HUB_ID", file=sys.stderr)
        return 1
    catalog = open_sources(sources, token=os.environ.get("HF_TOKEN"))
    catalog.unavailable.extend(notes)
    for message in catalog.source_messages():
        print(message, file=sys.stderr)
    catalog.index_build.add_done_callback(report_index_problems)
    print(f"Serving {len(catalog.models)} model(s) on http://{args.host}:{args.port}", flush=True)
    extra_tabs = [*live_tabs(), *research_tabs(open_ratings())]
    serve(build_app(catalog, extra_tabs, LiveExplainer.from_env()), args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
