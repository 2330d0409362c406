"""The harvest loop: stream a slice's batches through the model, update the state in forward hooks, checkpoint,
and write the dataset (or leave a shard part for `python -m harvest merge`)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from harvest import distributed
from harvest.batches import owned_batches, prefetched, slice_windows
from harvest.config import HarvestConfig, HarvestError
from harvest.corpus import CorpusError, WindowStream, iter_documents
from harvest.models import LoadedModel, load_model
from harvest.plan import RunPlan, code_version
from harvest.progress import HARVESTING, Report, Step, ignore
from harvest.results import write_dataset
from harvest.run_folder import RunFolder, Status
from harvest.state import HarvestState


@torch.inference_mode()
def process_batch(state: HarvestState, batch: np.ndarray, first_window: int, docs: int) -> None:
    """Run one batch of consecutive windows, the first being stream window `first_window`, through the hooks.

    On CUDA the tokens go through pinned memory and every step is queued without waiting for the device.
    """
    windows = torch.arange(first_window, first_window + len(batch), device=state.device)
    host = torch.from_numpy(batch)
    if state.device.type == "cuda":
        host = host.pin_memory()
    tokens = host.to(state.device, non_blocking=True)
    state.plan.model.bridge.run_with_hooks(
        tokens, fwd_hooks=state.hooks(windows), stop_at_layer=max(state.plan.layers) + 1, return_type=None
    )
    state.add_windows(first_window, batch, docs)


def _open_windows(config: HarvestConfig, model: LoadedModel) -> WindowStream:
    """A window stream, after checking the corpus yields at least one whole window."""
    probe = WindowStream(iter_documents(config.corpus), model.tokenizer, config.window, model.bos_id, model.eos_id)
    if next(probe.windows(), None) is None:
        raise CorpusError(f"corpus {config.corpus.name!r} holds fewer tokens than one window of {config.window}")
    return WindowStream(iter_documents(config.corpus), model.tokenizer, config.window, model.bos_id, model.eos_id)


@contextmanager
def _interrupt_after_batch() -> Iterator[None]:
    """Ctrl-C during a batch takes effect once the batch is done: a half-applied batch must never be saved."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _run_batches(
    state: HarvestState, folder: RunFolder, stream: WindowStream, show_progress: bool, report: Report
) -> None:
    """Stream the slice's remaining batches through the model; checkpoint every `checkpoint_every` s."""
    config = state.plan.config
    total = slice_windows(folder.part, config.max_windows, config.batch_size) if config.max_windows else None
    total_tokens = total * config.window if total else None
    bar = tqdm(
        total=total_tokens,
        initial=state.progress.windows * config.window,
        unit="tok",
        unit_scale=True,
        desc=f"harvest {state.plan.model.name}",
        disable=not show_progress,
    )
    owned = owned_batches(stream, folder.part, config.batch_size, state.progress.next_window, config.max_windows)
    batches = prefetched(owned)
    last_save = time.monotonic()
    report(Step(HARVESTING, state.progress.windows * config.window, total_tokens, "tokens"))
    try:
        for batch in batches:
            with _interrupt_after_batch():
                process_batch(state, batch.tokens, batch.first_window, batch.docs)
            bar.update(batch.tokens.size)
            report(Step(HARVESTING, state.progress.windows * config.window, total_tokens, "tokens"))
            if time.monotonic() - last_save >= config.checkpoint_every:
                folder.save(state.snapshot(), state.plan.settings)
                last_save = time.monotonic()
    finally:
        batches.close()
        bar.close()


def harvest(config: HarvestConfig, model: LoadedModel | None = None, report: Report = ignore) -> Path:
    """Run (or resume, or recognise as done) a harvest into config.out; returns the folder. `report` hears the
    streaming and writing phases' progress (rank 0's), whether or not the terminal shows bars.

    Under torchrun every rank runs its slice and rank 0 writes the merged dataset; with `config.shard`
    this process runs one slice and leaves a part for `python -m harvest merge`.
    """
    config.check()
    world = distributed.current_world()
    if world.size > 1 and config.shard is not None:
        raise HarvestError("--shard is for independent processes; under torchrun the ranks already share the windows")
    device = str(next(model.bridge.parameters()).device) if model else distributed.rank_device(world, config.device)
    with distributed.process_group(world, device):
        plan = RunPlan.for_model(config, model or load_model(config.model, device, config.dtype))
        folder = RunFolder(config.out, world, config.shard)
        status = folder.status(plan.run_id)
        if not distributed.main_decides(status is Status.DONE, world, device):
            _harvest_slice(plan, folder, status, report if world.rank == 0 else ignore)
    return config.out


def _write_with_progress(state: HarvestState, out: Path, show_progress: bool, report: Report) -> None:
    """write_dataset with a bar of its steps (each layer's logit effects, then its Parquet files) and the report."""
    with tqdm(total=2 * len(state.layers), unit="step", desc="writing", disable=not show_progress) as bar:

        def step(progress: Step) -> None:
            bar.set_postfix_str(progress.detail, refresh=False)
            bar.update(progress.done - bar.n)
            report(progress)

        write_dataset(state, out, step)


def _harvest_slice(plan: RunPlan, folder: RunFolder, status: Status, report: Report) -> None:
    state = HarvestState(plan, folder.part)
    if status is Status.RESUME:
        state.restore(folder.load(plan.run_id))
    stream = _open_windows(plan.config, plan.model)
    show_progress = plan.config.progress and folder.world.rank == 0
    try:
        _run_batches(state, folder, stream, show_progress, report)
    except KeyboardInterrupt:
        folder.save(state.snapshot(), plan.settings)  # wherever in the loop Ctrl-C lands, only whole batches count
        raise
    folder.save(state.snapshot(), plan.settings)
    if folder.shard is not None:
        folder.finish_part(state.progress, plan.settings, code_version())
        return
    distributed.reduce_to_main(state, folder.world)
    if folder.world.rank == 0:
        _write_with_progress(state, plan.config.out, show_progress, report)
    folder.clean_up()
