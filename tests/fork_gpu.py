"""A stand-in for `spaces.GPU` that keeps ZeroGPU's process boundary, for tests off ZeroGPU.

As spaces 0.51 runs a decorated function (spaces/zero/wrappers.py): in a worker process forked from the
serving process at the function's first call and reused after, its arguments and its result pickled across.
What the function finds in the worker is what the serving process held when the worker was forked.
Install it (`install()`) before space.live is imported: `space.live.model.gpu` decorates at import.
"""

from __future__ import annotations

import functools
import multiprocessing
import pickle
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection

SENT_BYTES: list[int] = []  # the pickled arguments of every call


class ForkedWorker:
    """One decorated function's worker: forked on first use, then fed pickled calls over a pipe."""

    def __init__(self, task: Callable):
        self.task = task
        self.connection: Connection | None = None

    def call(self, args: tuple, kwargs: dict) -> object:
        payload = pickle.dumps((args, kwargs))
        SENT_BYTES.append(len(payload))
        if self.connection is None:
            self.connection, theirs = multiprocessing.get_context("fork").Pipe()
            multiprocessing.get_context("fork").Process(target=self.serve, args=(theirs,), daemon=True).start()
        self.connection.send_bytes(payload)
        succeeded, value = pickle.loads(self.connection.recv_bytes())
        if not succeeded:
            raise value
        return value

    def serve(self, connection: Connection) -> None:
        import torch

        torch.set_num_threads(1)  # the parent's OpenMP threads do not survive the fork
        while True:
            args, kwargs = pickle.loads(connection.recv_bytes())
            try:
                outcome = (True, self.task(*args, **kwargs))
            except Exception as error:  # noqa: BLE001 - sent back and raised in the caller, as spaces does
                outcome = (False, error)
            connection.send_bytes(pickle.dumps(outcome))


def GPU(task: Callable | None = None, *, duration: int | None = None, size: str | None = None) -> Callable:
    """`spaces.GPU`'s signature; the function runs in its forked worker."""

    def decorate(function: Callable) -> Callable:
        worker = ForkedWorker(function)

        @functools.wraps(function)
        def call(*args, **kwargs):
            return worker.call(args, kwargs)

        return call

    return decorate if task is None else decorate(task)


def install() -> None:
    """Make `import spaces` give this GPU, before anything imports space.live."""
    assert "space.live.forward" not in sys.modules, "install before space.live is imported"
    import spaces

    spaces.GPU = GPU
