"""Benchmark `harvest explain`: neurons explained per minute and tokens spent per neuron, with the real SmolLM2-135M.

Backends: the suite's loopback OpenAI-compatible server (testkit/openai_server.py, reached by InferenceClient over
HTTP) at concurrency 1 (the baseline) and 4, and the in-process transformers backend. Each run explains the
same neurons of a fresh copy of a planted dataset (testkit/planted.py: real words, one feature per neuron), first
with the embedding scorer only (what the explainer call itself costs), then with every scorer (detection asks
once per held-out excerpt, simulation generates one number per held-out token).

Usage: python bench/explain.py [--store DIR] [--neurons 6] [--window 12]
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from huggingface_hub import constants  # noqa: E402

from harvest.explain.backends import InferenceBackend, TransformersBackend  # noqa: E402
from harvest.explain.embedding import SentenceEmbedder  # noqa: E402
from harvest.explain.run import ExplainConfig, explain_dataset  # noqa: E402
from harvest.smollm2 import MODEL_NAME, export_smollm2  # noqa: E402
from testkit.openai_server import OpenAIServer  # noqa: E402
from testkit.planted import write_planted_dataset  # noqa: E402


def machine() -> str:
    """The machine line bench/space.py prints."""
    spec = importlib.util.spec_from_file_location("bench_space", ROOT / "bench" / "space.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.machine()


def measure(
    label: str,
    backend,
    source: Path,
    work: Path,
    neurons: int,
    scorers: list[str],
    concurrency: int,
    embedder: SentenceEmbedder,
) -> float:
    """One row of the table; returns neurons per minute."""
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(source, work)
    before = (backend.usage.requests, backend.usage.prompt_tokens, backend.usage.completion_tokens)
    config = ExplainConfig(
        work, neurons=list(range(neurons)), scorers=scorers, concurrency=concurrency, max_tokens=24, progress=False
    )
    started = time.perf_counter()
    summary = explain_dataset(config, backend, embedder)
    seconds = time.perf_counter() - started
    requests, prompt, completion = (
        now - then
        for now, then in zip(
            (backend.usage.requests, backend.usage.prompt_tokens, backend.usage.completion_tokens), before, strict=True
        )
    )
    per_minute = 60 * neurons / seconds
    print(
        f"| {label} | {','.join(scorers)} | {concurrency} | {neurons} ({summary.refused} refused) | {seconds:.1f} | "
        f"**{per_minute:.1f}** | {prompt / neurons:.0f} | {completion / neurons:.0f} | {requests / neurons:.1f} |"
    )
    return per_minute


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("/tmp/neuroscope-bench-explain"))
    parser.add_argument("--neurons", type=int, default=6)
    parser.add_argument("--window", type=int, default=12)
    args = parser.parse_args()
    constants.HF_HUB_OFFLINE = False  # huggingface_hub refuses even loopback HTTP in offline mode
    model = export_smollm2(args.store / "smollm2")
    source = args.store / "planted"
    shutil.rmtree(source, ignore_errors=True)
    write_planted_dataset(source, d_mlp=args.neurons, window=args.window, top_k=6, random_k=4)
    embedder = SentenceEmbedder()
    embedder.embed(["warm up"])
    print(f"Machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"Model: {MODEL_NAME} (greedy); planted dataset: window {args.window}, top 6 (3 shown) + random 4 per "
        "neuron, one neuron in six never fires (no request)"
    )
    print(
        "\n| backend | scorers | concurrency | neurons | seconds | neurons/min | prompt tokens/neuron | "
        "completion tokens/neuron | requests/neuron |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    work = args.store / "work"
    with OpenAIServer(model, MODEL_NAME) as server:
        served = InferenceBackend(server.base_url, MODEL_NAME, api_key="none")
        served.complete([{"role": "user", "content": "warm up"}], 2)
        baseline = measure("loopback server", served, source, work, args.neurons, ["embedding"], 1, embedder)
        pooled = measure("loopback server", served, source, work, args.neurons, ["embedding"], 4, embedder)
        local = TransformersBackend(model, name=MODEL_NAME)
        in_process = measure("in-process", local, source, work, args.neurons, ["embedding"], 1, embedder)
        measure(
            "loopback server", served, source, work, args.neurons, ["detection", "embedding", "simulation"], 1, embedder
        )
    print(
        f"\nconcurrency 4 / 1 through the server: x{pooled / baseline:.2f}; in-process / server (concurrency 1): "
        f"x{in_process / baseline:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
