"""A build the test drives, in place of the embedded default's child process: its progress line changes on demand,
its model becomes ready when the test says, and `finish` adds the built dataset to the catalog as the real one does.
It has the shape space.sources.Building asks for."""

from __future__ import annotations

from pathlib import Path


class ScriptedBuild:
    def __init__(self, catalog, model_dtype: str = "float32"):
        self.catalog = catalog
        self.progress = "harvesting: 1,024 of 4,096 tokens (25%)"
        self.model_spec: str | None = None
        self.model_dtype = model_dtype
        self.done = False

    @property
    def running(self) -> bool:
        return not self.done

    def line(self) -> str:
        return f"Building the test dataset, once: {self.progress}"

    def finish(self, folder: Path) -> None:
        self.catalog.add(str(folder))
        self.done = True
