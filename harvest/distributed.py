"""Data-parallel harvest: which windows a torchrun rank or a `--shard` takes, its checkpoints and part
record, merging the ranks' states on rank 0, and the memory a harvest state needs.

Work is split by batch: the window stream is cut into batches of `batch_size` windows exactly as a single
process cuts it, and batch number g goes to slice g mod count. Every slice therefore runs the very batches
a single process would run (same shapes, same kernels, bit-identical activations), and since selection is
"k smallest keys, ties to the lower window" the merged states equal a single process's.

Ranks are started by torchrun (env RANK, WORLD_SIZE, LOCAL_RANK) and talk over torch.distributed: gloo on
CPU, NCCL on CUDA, where every tensor sent stays on the device.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist

from harvest import checkpoint
from harvest.corpus import WindowStream
from harvest.models import resolve_device
from hub_sync import format as fmt
from hub_sync.format import HISTOGRAM_EDGES

HISTOGRAM_PREFIXES = 1 << 16

if TYPE_CHECKING:
    from harvest.run import Harvester

PART_FILE = "neuroscope-part.json"
RANK_DIR = "rank-{rank}-of-{size}"


@dataclass(frozen=True)
class Slice:
    """Slice `index` of `count`: the batches whose number is `index` modulo `count`."""

    index: int
    count: int

    def owns(self, batch_number: int) -> bool:
        return batch_number % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


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


@dataclass(frozen=True)
class World:
    """This process's place among torchrun's processes (rank 0 of 1 when not started by torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def slice(self) -> Slice:
        return Slice(self.rank, self.size)


def current_world() -> World:
    return World(
        rank=int(os.environ.get("RANK", 0)),
        size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def rank_device(world: World, device: str) -> str:
    """--device for this rank: under torchrun, `auto` and `cuda` mean this node's GPU number LOCAL_RANK."""
    resolved = resolve_device(device)
    return f"cuda:{world.local_rank}" if resolved == "cuda" and world.size > 1 else resolved


@contextmanager
def process_group(world: World, device: str) -> Iterator[None]:
    """Join torchrun's process group for the duration (nothing to join for a single process)."""
    if world.size == 1:
        yield
        return
    on_cuda = torch.device(device).type == "cuda"
    if on_cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if on_cuda else "gloo", device_id=torch.device(device) if on_cuda else None)
    try:
        yield
    finally:
        dist.destroy_process_group()


def main_decides(flag: bool, world: World, device: str) -> bool:
    """Rank 0's answer, given to every rank (so no rank waits for a collective the others skip)."""
    if world.size == 1:
        return flag
    answer = torch.tensor([int(flag)], device=device)
    dist.broadcast(answer, src=0)
    return bool(answer.item())


def checkpoint_root(out: Path, world: World) -> Path:
    """Where this process checkpoints: --out itself, or one folder per rank inside --out's checkpoint folder."""
    if world.size == 1:
        return out
    return out / checkpoint.CHECKPOINT_DIR / RANK_DIR.format(rank=world.rank, size=world.size)


def check_checkpoints(out: Path, world: World) -> None:
    """Refuse to resume checkpoints written by a different number of processes: their slices differ."""
    sizes = {int(path.name.rsplit("-", 1)[1]) for path in (out / checkpoint.CHECKPOINT_DIR).glob("rank-*-of-*")}
    if world.size == 1 and sizes:
        raise checkpoint.CheckpointMismatch(
            f"{out} holds the checkpoints of a harvest over {min(sizes)} torchrun processes; resume it with "
            f"torchrun and {min(sizes)} processes in all, or choose another --out"
        )
    if world.size > 1 and checkpoint.checkpoint_path(out).is_file():
        raise checkpoint.CheckpointMismatch(
            f"{out} holds the checkpoint of a single-process harvest; "
            "resume it without torchrun, or choose another --out"
        )
    if world.size > 1 and sizes - {world.size}:
        raise checkpoint.CheckpointMismatch(
            f"{out} holds the checkpoints of a harvest over {min(sizes - {world.size})} processes, not {world.size}; "
            "restart torchrun with that many processes in all, or choose another --out"
        )


def remove_checkpoints(out: Path, world: World) -> None:
    """After rank 0 wrote the dataset: every rank drops its checkpoint, then rank 0 the folder holding them."""
    if world.size == 1:
        checkpoint.remove(out)
        return
    dist.barrier()
    root = checkpoint_root(out, world)
    checkpoint.remove(root)
    if root.is_dir():
        root.rmdir()
    dist.barrier()
    if world.rank == 0:
        checkpoint.remove(out)


def reduce_to_main(harvester: "Harvester", world: World) -> None:
    """Merge every rank's final state into rank 0's along a binary tree: log2(size) rounds, one layer in flight."""
    step = 1
    while step < world.size:
        if world.rank % (2 * step) == step:
            _send_state(harvester, world.rank - step)
        elif world.rank % (2 * step) == 0 and world.rank + step < world.size:
            _receive_state(harvester, world.rank + step)
        step *= 2


def _send_state(harvester: "Harvester", to_rank: int) -> None:
    for state in harvester.states.values():
        for tensor in state.state_dict().values():
            dist.send(tensor.contiguous(), to_rank)
    saved = harvester.tokens.state_dict()
    header = [len(saved["indices"]), harvester.progress["windows"], harvester.progress["docs"]]
    dist.send(torch.tensor(header, device=harvester.device), to_rank)
    if len(saved["indices"]):
        dist.send(torch.from_numpy(saved["indices"]).to(harvester.device), to_rank)
        dist.send(torch.from_numpy(saved["tokens"]).to(harvester.device), to_rank)


def _receive_state(harvester: "Harvester", from_rank: int) -> None:
    for layer, state in harvester.states.items():
        tensors = {name: torch.empty_like(tensor) for name, tensor in state.state_dict().items()}
        for tensor in tensors.values():
            dist.recv(tensor, from_rank)
        harvester.absorb_layer(layer, tensors)
    header = torch.zeros(3, dtype=torch.int64, device=harvester.device)
    dist.recv(header, from_rank)
    n_windows, windows, docs = header.tolist()
    indices = torch.zeros(n_windows, dtype=torch.int64, device=harvester.device)
    tokens = torch.zeros((n_windows, harvester.config.window), dtype=torch.int64, device=harvester.device)
    if n_windows:
        dist.recv(indices, from_rank)
        dist.recv(tokens, from_rank)
    saved = {"indices": indices.cpu().numpy(), "tokens": tokens.cpu().numpy()}
    harvester.absorb_windows(saved, {"windows": windows, "docs": docs})


def write_part_record(out: Path, shard: Slice, settings: dict, progress: dict, code_version: str) -> None:
    """Mark a finished shard: its state stays in the checkpoint file; this record says it is complete."""
    record = {
        "kind": "neuroscope-harvest-part",
        "run_id": progress["run_id"],
        "shard": str(shard),
        "windows": progress["windows"],
        "docs": progress["docs"],
        "state": checkpoint.checkpoint_path(Path(".")).as_posix(),
        "code_version": code_version,
        "started": progress["started"],
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
    }
    tmp = out / (PART_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, out / PART_FILE)


def read_part_record(part_dir: Path) -> dict | None:
    path = part_dir / PART_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def part_finished(out: Path, run_id: str, shard: Slice) -> bool:
    """True when `out` holds this shard of this run, finished; refuses a folder holding anything else."""
    record = read_part_record(out)
    if record is None:
        if (out / fmt.MANIFEST_FILE).is_file():
            raise checkpoint.CheckpointMismatch(f"{out} holds a finished dataset, not a shard; choose another --out")
        return False
    if record["run_id"] != run_id or record["shard"] != str(shard):
        raise checkpoint.CheckpointMismatch(
            f"{out} already holds shard {record['shard']} of run {record['run_id']}; choose another --out"
        )
    return True


def state_bytes(
    n_layers: int, d_mlp: int, window: int, top_k: int, random_k: int, bottom_k: int, activation_bytes: int
) -> int:
    """Bytes of the harvest state every rank holds on its device (selection.LayerState, all layers).

    Per kept slot: key float64, window int64, score float32, position int64 and `window` activations
    (float16 on CUDA, float32 on CPU: selection.activation_dtype); per neuron: max, min float32, sum
    float64 and the histogram's int64 bins; per layer: the token count; once: the uint8 table binning float
    prefixes (selection.histogram_bins_of_prefixes).
    """
    slots = top_k + random_k + bottom_k
    per_neuron = slots * (8 + 8 + 4 + 8 + window * activation_bytes) + 4 + 4 + 8 + 8 * (len(HISTOGRAM_EDGES) + 1)
    return n_layers * (d_mlp * per_neuron + 8) + HISTOGRAM_PREFIXES


def token_store_bytes(
    n_layers: int, d_mlp: int, window: int, top_k: int, random_k: int, bottom_k: int, windows: int
) -> int:
    """Upper bound of the host bytes of the kept windows' token ids (results.WindowTokens, int64, after pruning).

    No more windows than the corpus has, nor than there are kept slots; the checkpoint adds this to state_bytes.
    """
    return min(windows, n_layers * d_mlp * (top_k + random_k + bottom_k)) * window * 8
