"""Data-parallel harvest under torchrun: this process's place among the ranks, their process group, and merging
every rank's state onto rank 0.

Ranks are started by torchrun (env RANK, WORLD_SIZE, LOCAL_RANK); each runs the batches of its slice
(harvest.batches) and talks over torch.distributed: gloo on CPU, NCCL on CUDA, where every tensor sent stays
on the device. The merge sends a rank's `Snapshot` (what a checkpoint holds), one layer in flight at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from harvest.batches import Slice
from harvest.models import resolve_device
from harvest.state import HarvestState, Progress


@dataclass(frozen=True)
class World:
    """This process's place among torchrun's processes (rank 0 of 1 when not started by torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def slice(self) -> Slice:
        return Slice(self.rank, self.size)


SINGLE_PROCESS = World()


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


def barrier(world: World) -> None:
    """Wait for every rank (nothing to wait for in a single process)."""
    if world.size > 1:
        dist.barrier()


def reduce_to_main(state: HarvestState, world: World) -> None:
    """Merge every rank's final state into rank 0's along a binary tree: log2(size) rounds."""
    step = 1
    while step < world.size:
        if world.rank % (2 * step) == step:
            _send(state, world.rank - step)
        elif world.rank % (2 * step) == 0 and world.rank + step < world.size:
            _receive(state, world.rank + step)
        step *= 2


def _send(state: HarvestState, to_rank: int) -> None:
    """This rank's snapshot: each layer's tensors in order, then the kept windows' tokens and the counts."""
    snapshot = state.snapshot()
    for layer in sorted(snapshot.layers):
        for name in sorted(snapshot.layers[layer]):
            dist.send(snapshot.layers[layer][name].contiguous(), to_rank)
    indices, tokens = snapshot.tokens["indices"], snapshot.tokens["tokens"]
    header = [len(indices), snapshot.progress.windows, snapshot.progress.docs]
    dist.send(torch.tensor(header, device=state.device), to_rank)
    if len(indices):
        dist.send(torch.from_numpy(indices).to(state.device), to_rank)
        dist.send(torch.from_numpy(tokens).to(state.device), to_rank)


def _receive(state: HarvestState, from_rank: int) -> None:
    """Another rank's snapshot, absorbed layer by layer as it arrives (tensors shaped like this rank's own)."""
    own = state.snapshot()
    for layer in sorted(own.layers):
        tensors = {name: torch.empty_like(own.layers[layer][name]) for name in sorted(own.layers[layer])}
        for tensor in tensors.values():
            dist.recv(tensor, from_rank)
        state.absorb_layer(layer, tensors)
    header = torch.zeros(3, dtype=torch.int64, device=state.device)
    dist.recv(header, from_rank)
    n_windows, windows, docs = header.tolist()
    indices = torch.zeros(n_windows, dtype=torch.int64, device=state.device)
    tokens = torch.zeros((n_windows, state.tokens.window), dtype=torch.int64, device=state.device)
    if n_windows:
        dist.recv(indices, from_rank)
        dist.recv(tokens, from_rank)
    # Only the counts travel: absorbing reads nothing else of the sender's progress.
    progress = Progress(run_id=state.progress.run_id, slice=state.progress.slice, windows=windows, docs=docs)
    state.absorb_windows({"indices": indices.cpu().numpy(), "tokens": tokens.cpu().numpy()}, progress)
