"""Which batches of the window stream a process runs, and making them ahead of the model.

Work is split by batch: the stream is cut into batches of `batch_size` windows exactly as a single process cuts
it, and batch number g goes to slice g mod count. Every slice therefore runs the very batches a single process
would run (same shapes, same kernels, bit-identical activations), and since selection is "k smallest keys, ties to
the lower window" the slices' merged states equal a single process's. A torchrun rank and a `--shard` are slices.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from harvest.corpus import WindowStream


@dataclass(frozen=True)
class Slice:
    """Slice `index` of `count`: the batches whose number is `index` modulo `count`."""

    index: int
    count: int

    def owns(self, batch_number: int) -> bool:
        return batch_number % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


WHOLE = Slice(0, 1)


def parse_shard(text: str) -> Slice:
    """`I/N` with 0 <= I < N, as given to --shard."""
    index, _, count = text.partition("/")
    try:
        shard = Slice(int(index), int(count))
    except ValueError:
        raise ValueError(f"--shard takes I/N such as 0/4 (slice I of N, counted from 0), not {text!r}") from None
    if not 0 <= shard.index < shard.count:
        raise ValueError(f"--shard {text}: I must be in 0..N-1")
    return shard


def slice_windows(part: Slice, total_windows: int, batch_size: int) -> int:
    """How many of a stream's first `total_windows` windows the slice processes."""
    n_batches = -(-total_windows // batch_size)
    return sum(min(batch_size, total_windows - g * batch_size) for g in range(part.index, n_batches, part.count))


@dataclass(frozen=True)
class SliceBatch:
    first_window: int  # index of its first window in the stream
    tokens: np.ndarray  # [batch, window] int64
    docs: int  # documents the stream had consumed when this batch was cut


def owned_batches(
    stream: WindowStream, part: Slice, batch_size: int, next_window: int, max_windows: int | None
) -> Iterator[SliceBatch]:
    """The slice's batches from window `next_window` on (a batch boundary), cut as a single process cuts them."""
    first = next_window
    for batch in stream.batches(batch_size, skip_windows=next_window, max_windows=max_windows):
        if part.owns(first // batch_size):
            yield SliceBatch(first, batch, stream.docs_consumed)
        first += len(batch)


_END = object()


def prefetched(batches: Iterator[SliceBatch], depth: int = 4) -> Iterator[SliceBatch]:
    """`batches` made up to `depth` ahead on a background thread, so tokenizing overlaps the forward pass."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fill() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(_END)
        except Exception as error:  # noqa: BLE001 - handed to the consuming thread, which raises it
            put(error)

    thread = threading.Thread(target=fill, name="harvest-batches", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not _END:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)  # a thread stuck on a slow corpus read is a daemon: it cannot keep the process up
