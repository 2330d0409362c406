"""What a run accumulates: each layer's kept examples and statistics, the kept windows' tokens, and how far it got.

A state is saved, restored, merged and sent between ranks as one `Snapshot`, so a checkpoint, a shard part and a
rank's contribution to the merge are the same thing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from harvest.batches import Slice
from harvest.plan import RunPlan, utc_now
from harvest.selection import LayerState
from harvest.tokens import WindowTokens
from hub_sync.format import MLP_HOOK


@dataclass
class Progress:
    """How far a run (or one slice of it) got."""

    run_id: str
    slice: str  # the Slice it runs, as "I/N"
    windows: int = 0  # windows processed
    next_window: int = 0  # the stream window to resume from (a batch boundary)
    docs: int = 0  # documents the stream had consumed
    started: str = field(default_factory=utc_now)


@dataclass
class Snapshot:
    """A state's whole content: its progress, each layer's tensors, the kept windows' token ids."""

    progress: Progress
    layers: dict[int, dict[str, torch.Tensor]]
    tokens: dict[str, np.ndarray]  # WindowTokens.state_dict()


class HarvestState:
    """The state of one run or slice, on the model's device, updated batch by batch through forward hooks."""

    def __init__(self, plan: RunPlan, part: Slice):
        self.plan = plan
        self.device = next(plan.model.bridge.parameters()).device
        self.layers = {layer: self._empty_layer(layer) for layer in plan.layers}
        self.tokens = WindowTokens(plan.config.window)
        self.progress = Progress(plan.run_id, str(part))

    def _empty_layer(self, layer: int) -> LayerState:
        c = self.plan.config
        return LayerState(layer, self.plan.model.d_mlp, c.window, c.top_k, c.random_k, self.plan.bottom_k, c.seed,
                          self.device)

    def hooks(self, windows: torch.Tensor) -> list[tuple[str, Callable]]:
        """Forward hooks that update every layer's state with a batch of these stream windows."""
        def hook_for(state: LayerState):
            def hook(acts: torch.Tensor, hook) -> None:
                state.update(acts, windows)

            return hook

        return [(MLP_HOOK.format(layer=layer), hook_for(state)) for layer, state in self.layers.items()]

    def add_windows(self, first_window: int, batch: np.ndarray, docs: int) -> None:
        """Record a batch the hooks have seen: its windows' tokens, and the progress it makes."""
        self.tokens.add(first_window, batch)
        self.progress.windows += len(batch)
        self.progress.next_window = first_window + len(batch)
        self.progress.docs = docs
        c = self.plan.config
        if self.tokens.needs_prune(len(self.layers) * self.plan.model.d_mlp * (c.top_k + c.random_k)):
            self._prune_tokens()

    def _prune_tokens(self) -> None:
        referenced = torch.cat([state.referenced_windows() for state in self.layers.values()])
        self.tokens.prune(referenced.cpu().numpy())

    def snapshot(self) -> Snapshot:
        """The state's content (its tensors themselves, not copies), with tokens no example points to dropped."""
        self._prune_tokens()
        return Snapshot(
            progress=self.progress,
            layers={layer: state.state_dict() for layer, state in self.layers.items()},
            tokens=self.tokens.state_dict(),
        )

    def restore(self, saved: Snapshot) -> None:
        """Continue from a checkpoint of this very slice."""
        for layer, tensors in saved.layers.items():
            self.layers[layer].load_state_dict(tensors)
        self.tokens.load_state_dict(saved.tokens)
        self.progress = saved.progress

    def absorb(self, other: Snapshot) -> None:
        """Merge another slice's final state into this one: same run, other windows."""
        for layer, tensors in other.layers.items():
            self.absorb_layer(layer, tensors)
        self.absorb_windows(other.tokens, other.progress)

    def absorb_layer(self, layer: int, tensors: dict[str, torch.Tensor]) -> None:
        """One layer of another slice's snapshot (a rank's state arrives layer by layer)."""
        other = self._empty_layer(layer)
        other.load_state_dict(tensors)
        self.layers[layer].absorb(other)

    def absorb_windows(self, tokens: dict[str, np.ndarray], progress: Progress) -> None:
        """The rest of another slice's snapshot: its kept windows' tokens, and its window and document counts."""
        for index, row in zip(tokens["indices"], tokens["tokens"], strict=True):
            self.tokens.add(int(index), row[None])
        self.progress.windows += progress.windows
        self.progress.docs = max(self.progress.docs, progress.docs)
