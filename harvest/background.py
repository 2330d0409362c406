"""The embedded default's first build in a child process, so the app serves its page meanwhile.

A child rather than a thread: the harvest holds the GIL for much of each batch, and the page must stay quick.
The child (`python -m harvest.default`) reports each step as a JSON line; this side keeps the latest,
turns it into one line with tokens/s and the time left, for the page and the terminal, and hands the
finished folder (or the reason it failed) to a callback. Once the child has the model ready, `model_spec` names
it, so the app can run it live before the dataset exists. Stopping closes the child's stdin: it stops
as Ctrl-C stops a harvest, after the current batch, checkpoint saved, so the next launch resumes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from harvest.progress import DONE, FAILED, HARVESTING, LOADING, MODEL, WRITING, Step

TITLE = "the embedded default dataset (SmolLM2-135M)"
PRINT_EVERY = 5.0  # seconds between the terminal's lines while harvesting
STOP_TIMEOUT = 120.0  # a batch, then the checkpoint; longer on a loaded machine
KEPT_ERROR_LINES = 15


def duration_text(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


@dataclass(frozen=True)
class Speed:
    """Tokens a second over this launch's part of the phase (a resumed build's earlier tokens do not count)."""

    since: float
    from_done: int

    def rate(self, now: float, done: int) -> float | None:
        elapsed = now - self.since
        return (done - self.from_done) / elapsed if done > self.from_done and elapsed > 0 else None


def progress_text(step: Step, speed: Speed | None, now: float) -> str:
    """What the build is doing, for a person: the phase, how far, and while harvesting the speed and time left."""
    if step.phase == HARVESTING and step.total:
        text = f"harvesting: {step.done:,} of {step.total:,} tokens ({step.done / step.total:.0%})"
        rate = speed.rate(now, step.done) if speed else None
        if rate:
            text += f", {rate:,.0f} tokens/s, about {duration_text((step.total - step.done) / rate)} left"
            text += ", then about a minute of writing"
        return text
    if step.phase == WRITING and step.total:
        return f"writing the dataset: {step.detail} (step {min(step.done + 1, step.total)} of {step.total})"
    return f"{step.phase}: {step.detail}" if step.detail else step.phase


class BackgroundBuild:
    """The default's build in a child process: its latest progress, its model once ready, its outcome, and a clean
    stop."""

    def __init__(
        self, command: list[str], model_dtype: str, echo: TextIO = sys.stderr,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.command = command
        self.model_dtype = model_dtype  # the dtype the build loads its model in, and so the app's live tabs
        self.echo = echo
        self.clock = clock
        self.step = Step(LOADING, detail="starting")
        self.model_spec: str | None = None  # the MODEL spec the build runs, once the child reports it ready
        self.failure: str | None = None
        self.folder: Path | None = None
        self._speed: Speed | None = None
        self._printed_at = float("-inf")
        self._errors: deque[str] = deque(maxlen=KEPT_ERROR_LINES)
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()

    @classmethod
    def of_default(cls, echo: TextIO = sys.stderr) -> BackgroundBuild:
        from harvest.default import MODEL_DTYPE

        return cls([sys.executable, "-m", "harvest.default"], MODEL_DTYPE, echo)

    @property
    def running(self) -> bool:
        return self.folder is None and self.failure is None

    def line(self) -> str:
        """One line for the page: what runs now, or how it ended."""
        with self._lock:
            if self.failure is not None:
                return f"{TITLE[0].upper()}{TITLE[1:]} could not be built: {self.failure}"
            if self.folder is not None:
                return f"{TITLE[0].upper()}{TITLE[1:]} is ready."
            return f"Building {TITLE}, once: {progress_text(self.step, self._speed, self.clock())}"

    def start(self, on_done: Callable[[Path], None], on_failure: Callable[[str], None]) -> None:
        """Start the child; `on_done(folder)` or `on_failure(reason)` is called once, from a reader thread."""
        self._process = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            bufsize=1, start_new_session=True,  # the terminal's Ctrl-C reaches the app, which stops the child once
        )
        threading.Thread(target=self._forward_stderr, name="default-build-log", daemon=True).start()
        threading.Thread(
            target=self._follow, args=(on_done, on_failure), name="default-build", daemon=True
        ).start()

    def _forward_stderr(self) -> None:
        for line in self._process.stderr:
            self._errors.append(line.rstrip())
            print(line, end="", file=self.echo, flush=True)

    def _follow(self, on_done: Callable[[Path], None], on_failure: Callable[[str], None]) -> None:
        for line in self._process.stdout:
            try:
                step = Step(**json.loads(line))
            except (ValueError, TypeError):  # not a report: a library printed to stdout
                print(line, end="", file=self.echo, flush=True)
                continue
            if step.phase == MODEL:
                self.model_spec = step.detail
                print("default dataset: its model is exported; the live tabs run it while the dataset builds",
                      file=self.echo, flush=True)
                continue
            if step.phase == DONE:  # the catalog holds the dataset before anyone hears it is ready
                on_done(Path(step.detail))
            elif step.phase == FAILED:
                on_failure(step.detail)
            self._record(step)
            if step.phase in (DONE, FAILED):
                return
        code = self._process.wait()
        if code != 130:  # 130: stopped by us, resumable; anything else died without saying why
            reason = f"the build process exited with status {code}: " + " | ".join(list(self._errors)[-3:])
            on_failure(reason)
            self._record(Step(FAILED, detail=reason))

    def _record(self, step: Step) -> None:
        now = self.clock()
        with self._lock:
            if step.phase != self.step.phase:
                self._speed = Speed(now, step.done) if step.phase == HARVESTING else None
            changed = step.phase != self.step.phase or step.phase == WRITING
            self.step = step
            if step.phase == DONE:
                self.folder = Path(step.detail)
            elif step.phase == FAILED:
                self.failure = step.detail
        if changed or now - self._printed_at >= PRINT_EVERY or step.done == step.total:
            self._printed_at = now
            print(f"default dataset: {self.line()}", file=self.echo, flush=True)

    def stop(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Stop a running child after its current batch, checkpoint saved; True if one was stopped."""
        process = self._process
        if process is None or process.poll() is not None:
            return False
        process.stdin.close()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return True
