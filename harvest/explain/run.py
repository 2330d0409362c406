"""The explanation run: every chosen neuron explained and scored through a bounded pool, resumably.

Finished neurons are appended to a work file in the dataset's hidden folder as they complete (a crash or a kill
loses at most the neurons in flight); at the end they are folded into data/explanations/layer_NN.parquet, the
manifest records the run and declares format 1.1, and the card gains its `explanations` config. A request that
still fails after its retries stops the run cleanly: what finished is kept, and the same command resumes.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from tqdm import tqdm

from harvest.explain import prompts, screening
from harvest.explain.backends import ChatBackend
from harvest.explain.embedding import EmbeddingUnavailable, SentenceEmbedder, model_folder
from harvest.explain.examples import split_examples
from harvest.explain.scorers import NEEDS_LOGPROBS, SCORER_NAMES, Scorer, build_scorers
from harvest.explain.workfile import WorkFile, work_file_path
from hub_sync import format as fmt
from hub_sync.manifest import ExplanationRun, Manifest
from hub_sync.publish import describe
from hub_sync.reader import DatasetError, NeuronDataset, open_dataset
from hub_sync.writer import finish_dataset, write_explanations

Neuron = tuple[int, int]  # (layer, neuron)


class ExplainError(Exception):
    """A run that cannot start or cannot go on; the message says why and what was kept."""


@dataclass
class ExplainConfig:
    dataset: Path
    layers: list[int] | None = None  # default: every harvested layer
    neurons: list[int] | None = None  # default: every neuron
    scorers: list[str] | None = None  # default: every scorer the backend supports
    concurrency: int = 4
    max_tokens: int = 60  # for the explanation itself
    redo: bool = False  # explain again neurons this explainer and prompt version already explained
    progress: bool = True


@dataclass(frozen=True)
class ExplainSummary:
    explained: int  # neurons with an explanation, in this run (resumed ones included)
    refused: int  # neurons whose explanation was refused (the reason is stored)
    already_done: int  # chosen neurons skipped: explained before by this explainer and prompt version
    requests: int
    tokens: int
    seconds: float


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _open_local(folder: Path) -> NeuronDataset:
    if not folder.is_dir():
        raise ExplainError(f"{folder} is not a local dataset folder (explanations are written into it: pull it first)")
    try:
        return open_dataset(folder)
    except DatasetError as error:
        raise ExplainError(str(error)) from None


def _chosen(config: ExplainConfig, dataset: NeuronDataset) -> list[Neuron]:
    layers = config.layers if config.layers is not None else dataset.layers
    stray = [layer for layer in layers if layer not in dataset.layers]
    if stray:
        raise ExplainError(f"--layers {stray} are not in {config.dataset} (its layers: {dataset.layers})")
    neurons = config.neurons if config.neurons is not None else list(range(dataset.d_mlp))
    outside = [neuron for neuron in neurons if not 0 <= neuron < dataset.d_mlp]
    if outside:
        raise ExplainError(f"--neurons {outside[:8]} are outside 0..{dataset.d_mlp - 1}")
    return [(layer, neuron) for layer in sorted(set(layers)) for neuron in sorted(set(neurons))]


def _supports_logprobs(backend: ChatBackend) -> bool:
    try:
        return backend.supports_logprobs()
    except Exception as error:  # the first request of a run: an unreachable or refusing server shows here
        raise ExplainError(
            f"cannot ask {backend.name} for logprobs: {type(error).__name__}: {describe(error)}"
        ) from error


def resolve_scorers(requested: list[str] | None, backend: ChatBackend) -> list[str]:
    """The scorers asked for, checked; by default every scorer this backend and installation support."""
    unknown = sorted(set(requested or []) - set(SCORER_NAMES))
    if unknown:
        raise ExplainError(f"unknown scorers {unknown}: choose from {', '.join(SCORER_NAMES)}")
    wanted = [name for name in SCORER_NAMES if requested is None or name in requested]
    if any(name in NEEDS_LOGPROBS for name in wanted) and not _supports_logprobs(backend):
        if requested is not None:
            raise ExplainError(f"the simulation scorer needs logprobs, and {backend.name} returns none")
        wanted = [name for name in wanted if name not in NEEDS_LOGPROBS]
    if "embedding" in wanted:
        try:
            model_folder()
        except EmbeddingUnavailable as error:
            if requested is not None:
                raise ExplainError(str(error)) from None
            print(f"note: no embedding score: {error}", file=sys.stderr)
            wanted.remove("embedding")
    return wanted


def _explained_before(folder: Path, layers: Iterable[int], explainer: str) -> set[Neuron]:
    done = set()
    for layer in layers:
        path = folder / fmt.explanations_path(layer)
        if path.is_file():
            rows = pq.read_table(path, columns=["neuron", "explainer", "prompt_version"]).to_pylist()
            done |= {
                (layer, row["neuron"])
                for row in rows
                if (row["explainer"], row["prompt_version"]) == (explainer, prompts.PROMPT_VERSION)
            }
    return done


def _record(
    layer: int, neuron: int, explainer: str, explanation: str | None, refusal: str | None, scores: dict
) -> dict:
    record = {
        "layer": layer,
        "neuron": neuron,
        "explanation": explanation,
        "explainer": explainer,
        "prompt_version": prompts.PROMPT_VERSION,
        "refusal": refusal,
        "created": now_iso(),
    }
    for name in fmt.EXPLANATION_SCORES:
        score = scores.get(name)
        record[name] = None if score is None else score.value
        record[f"{name}_n"] = 0 if score is None else score.n
    return record


def explain_neuron(
    dataset: NeuronDataset, backend: ChatBackend, scorers: list[Scorer], layer: int, neuron: int, max_tokens: int
) -> dict:
    """One neuron's record: its explanation and scores, or the reason it has none."""
    examples = split_examples(layer, neuron, dataset.neuron_examples(layer, neuron))
    if not examples.shown:
        return _record(layer, neuron, backend.name, None, "no top examples are stored for this neuron", {})
    if examples.max_activation <= 0:
        return _record(layer, neuron, backend.name, None, "never fired: no positive activation in its top examples", {})
    messages = prompts.explainer_messages(examples.shown, examples.max_activation)
    explanation = screening.clean_explanation(backend.complete(messages, max_tokens).text)
    own_text = " ".join(item.text for item in examples.shown)
    refusal = screening.refusal_reason(explanation, prompts.prompt_text(messages), prompts.EXAMPLE_WORDS, own_text)
    if refusal:
        return _record(layer, neuron, backend.name, None, refusal, {})
    scores = {scorer.name: scorer.score(explanation, examples) for scorer in scorers}
    return _record(layer, neuron, backend.name, explanation, None, scores)


def run_pool(
    pending: list[Neuron], task: Callable[[int, int], dict], on_done: Callable[[dict], None], concurrency: int
) -> None:
    """Run tasks on `concurrency` threads with at most twice that many queued; stop at the first failure.

    After a failure nothing new starts, queued tasks are cancelled, running ones finish and are kept, and the
    failure is raised.
    """
    queue = iter(pending)
    failure: BaseException | None = None
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="explain") as pool:
        in_flight: dict[Future, Neuron] = {}

        def fill() -> None:
            while failure is None and len(in_flight) < 2 * concurrency:
                item = next(queue, None)
                if item is None:
                    return
                in_flight[pool.submit(task, *item)] = item

        try:
            fill()
            while in_flight:
                finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    in_flight.pop(future)
                    if future.cancelled():
                        continue
                    if future.exception() is not None:
                        failure = failure or future.exception()
                        for queued in in_flight:
                            queued.cancel()
                        continue
                    on_done(future.result())
                fill()
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    if failure is not None:
        raise failure


def fold(folder: Path, records: list[dict], run: ExplanationRun) -> None:
    """Merge the records into each layer's explanations file (same key: replaced), then card and manifest."""
    by_layer: dict[int, list[dict]] = {}
    for record in records:
        row = record | {"created": dt.datetime.fromisoformat(record["created"])}
        by_layer.setdefault(record["layer"], []).append(row)
    for layer, rows in sorted(by_layer.items()):
        path = folder / fmt.explanations_path(layer)
        kept = pq.read_table(path).to_pylist() if path.is_file() else []
        write_explanations(folder, layer, kept + rows)
    manifest = Manifest.from_json(json.loads((folder / fmt.MANIFEST_FILE).read_text(encoding="utf-8")))
    finish_dataset(folder, manifest.with_explanation_run(sorted(by_layer), run))


def explain_dataset(
    config: ExplainConfig, backend: ChatBackend, embedder: SentenceEmbedder | None = None
) -> ExplainSummary:
    """Explain and score the chosen neurons of a local dataset folder; resumes an interrupted run of these settings."""
    if config.concurrency < 1:
        raise ExplainError(f"--concurrency must be at least 1, got {config.concurrency}")
    started = time.monotonic()
    dataset = _open_local(config.dataset)
    chosen = _chosen(config, dataset)
    scorer_names = resolve_scorers(config.scorers, backend)
    scorers = build_scorers(scorer_names, backend, embedder)
    settings = {
        "explainer": backend.name,
        "prompt_version": prompts.PROMPT_VERSION,
        "scorers": scorer_names,
        "max_tokens": config.max_tokens,
    }
    work = WorkFile(work_file_path(config.dataset, settings), settings, now_iso())
    before = set() if config.redo else _explained_before(config.dataset, {layer for layer, _ in chosen}, backend.name)
    done = work.done() | before
    pending = [item for item in chosen if item not in done]
    bar = tqdm(total=len(pending), unit="neuron", desc="explaining", disable=not config.progress, dynamic_ncols=True)

    def on_done(record: dict) -> None:
        work.append(record)
        bar.update(1)
        bar.set_postfix(tokens=f"{backend.usage.tokens:,}", requests=backend.usage.requests, refresh=False)

    try:
        run_pool(
            pending,
            lambda layer, neuron: explain_neuron(dataset, backend, scorers, layer, neuron, config.max_tokens),
            on_done,
            config.concurrency,
        )
    except Exception as error:  # any failure of a request ends the run the same way: kept, resumable
        raise ExplainError(
            f"stopped: {type(error).__name__}: {describe(error)}. {len(work.records)} neuron(s) finished and are "
            f"kept in {work.path}; run the same command again to resume"
        ) from error
    finally:
        bar.close()
    refused = sum(record["refusal"] is not None for record in work.records)
    if work.records:
        run = ExplanationRun(
            **settings,
            layers=sorted({record["layer"] for record in work.records}),
            neurons=len(work.records),
            refused=refused,
            started=work.header["started"],
            finished=now_iso(),
        )
        fold(config.dataset, work.records, run)
    work.remove()
    return ExplainSummary(
        explained=len(work.records) - refused,
        refused=refused,
        already_done=len(set(chosen) & before),
        requests=backend.usage.requests,
        tokens=backend.usage.tokens,
        seconds=time.monotonic() - started,
    )
