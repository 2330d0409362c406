"""What a harvest reports as it goes, for whoever shows it: a terminal bar, or a page (the embedded default's build).

A report names the phase, how far it is (in the phase's own unit) and, where known, how far it goes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

LOADING = "loading"
HARVESTING = "harvesting"
WRITING = "writing"
MODEL = "model"  # a build's model is ready to load: `detail` is its MODEL spec (the app runs it live meanwhile)
DONE = "done"  # a build's last report: `detail` is the dataset's folder
FAILED = "failed"  # a build's last report: `detail` says why


@dataclass(frozen=True)
class Step:
    """One progress report: `done` of `total` (None: not known) in `unit`, and a line saying what runs now."""

    phase: str
    done: int = 0
    total: int | None = None
    unit: str = ""
    detail: str = ""


Report = Callable[[Step], None]


def ignore(step: Step) -> None:
    """The report of a run nobody watches."""
