"""The datasets the Space serves: several sources opened at start, each either a model or a reason it is missing.

A source that fails to open is recorded with its error and shown as unavailable; the other sources
keep working. Opening reads manifests only; the neuron tables are read and the search index built in
a background thread, so the first page does not wait for them. A source still being built (the
embedded default on first launch) is shown with its progress and added when it is done; meanwhile the
live tabs run its model (`Catalog.models_being_built`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from hub_sync.reader import DatasetError, NeuronDataset, open_dataset
from space.search import SearchIndex

SOURCES_ENV = "NEUROSCOPE_SOURCES"
LIVE_MEANWHILE = "; meanwhile the Live, Effect and Finder & probe tabs run its model on your text."


@dataclass(frozen=True)
class Unavailable:
    """A source the Space could not open, and why."""

    source: str
    error: str


class Building(Protocol):
    """A source still being made while the app serves (the embedded default's first build). Once its model is ready
    (`model_spec`, loaded in `model_dtype`), the live tabs run that model alone until the dataset is done."""

    model_spec: str | None
    model_dtype: str

    @property
    def running(self) -> bool: ...

    def line(self) -> str:
        """What it is doing now, for the page."""
        ...


@dataclass
class Catalog:
    """Every opened model by display name, the sources that failed, the ones still being built, and one search
    index over all the opened ones."""

    models: dict[str, NeuronDataset]
    unavailable: list[Unavailable]
    index_build: Future = field(repr=False)
    building: list[Building] = field(default_factory=list)

    @property
    def model_names(self) -> list[str]:
        return list(self.models)

    @property
    def index(self) -> SearchIndex:
        """The search index, waiting for the background build if it is still running."""
        return self.index_build.result()

    def add(self, source: str, *, endpoint: str | None = None, token: str | None = None) -> None:
        """Open one more source while serving (a build that finished). The models and the index are replaced whole,
        never changed in place: a request in flight reads the catalog before or after, never half of it."""
        models = dict(self.models)
        _open_into(models, self.unavailable, source, endpoint, token)
        if len(models) > len(self.models):
            self.models = models
            self.index_build = _build_index_in_background(models)

    def source_messages(self) -> list[str]:
        """The sources that failed to open, and why."""
        return [f"Source {item.source!r} is unavailable: {item.error}" for item in self.unavailable]

    @property
    def still_building(self) -> bool:
        return any(source.running for source in self.building)

    def models_being_built(self) -> list[tuple[str, str]]:
        """(MODEL spec, dtype) of each running build whose model is ready: what the live tabs run before any dataset
        is served."""
        return [
            (source.model_spec, source.model_dtype)
            for source in self.building
            if source.running and source.model_spec
        ]

    def unavailable_messages(self) -> list[str]:
        """Sources being built (with their progress), failed sources, and once the index is built, neuron tables it
        could not read."""
        messages = [
            source.line() + (LIVE_MEANWHILE if source.model_spec else "") for source in self.building if source.running
        ]
        messages += self.source_messages()
        if self.index_build.done() and self.index_build.exception() is None:
            messages += self.index_build.result().problems
        return messages


def sources_from_env(environ: os._Environ | dict[str, str] = os.environ) -> list[str]:
    """The comma-separated NEUROSCOPE_SOURCES, blanks dropped."""
    return [part.strip() for part in environ.get(SOURCES_ENV, "").split(",") if part.strip()]


def _build_index_in_background(models: dict[str, NeuronDataset]) -> Future:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neuroscope-index")
    build = executor.submit(SearchIndex, models)
    executor.shutdown(wait=False)
    return build


def _display_name(dataset: NeuronDataset, taken: Iterable[str]) -> str:
    """The model name, made unique when two sources hold the same model: with the Hub id, or a local folder's
    own name (never its path on this server), then a number if that is taken too."""
    taken = set(taken)
    if dataset.name not in taken:
        return dataset.name
    local = Path(dataset.source).expanduser()
    label = local.resolve().name if local.exists() else dataset.source
    name = base = f"{dataset.name} ({label})"
    number = 1
    while name in taken:
        number += 1
        name = f"{base} #{number}"
    return name


def _open_into(
    models: dict[str, NeuronDataset], unavailable: list[Unavailable], source: str, endpoint: str | None,
    token: str | None,
) -> None:
    """Open a source's manifest into `models`; a failure becomes an `Unavailable` entry with the reader's message."""
    try:
        dataset = open_dataset(source, endpoint=endpoint, token=token)
    except DatasetError as error:
        unavailable.append(Unavailable(source, str(error)))
        return
    except OSError as error:
        unavailable.append(Unavailable(source, f"cannot be read: {error}"))
        return
    models[_display_name(dataset, models)] = dataset


def open_sources(sources: Iterable[str], *, endpoint: str | None = None, token: str | None = None) -> Catalog:
    """Open each source's manifest; failures become `Unavailable` entries with the reader's message."""
    models: dict[str, NeuronDataset] = {}
    unavailable: list[Unavailable] = []
    for source in sources:
        _open_into(models, unavailable, source, endpoint, token)
    return Catalog(models=models, unavailable=unavailable, index_build=_build_index_in_background(models))
