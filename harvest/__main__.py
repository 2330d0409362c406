"""`python -m harvest`: find every MLP neuron's max-activating examples and write them as a dataset.

`python -m harvest merge PART_DIR... --out DIR` combines the parts of a `--shard` harvest (harvest.merge).
`python -m harvest explain DATASET ...` explains and scores neurons of a dataset (harvest.explain).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harvest import distributed, merge
from harvest.checkpoint import CheckpointMismatch, checkpoint_path
from harvest.corpus import CORPUS_HELP, PYTHON_DOCS, CorpusError, CorpusSpec
from harvest.models import MODEL_HELP, ModelLoadError
from harvest.run import HarvestConfig, HarvestError, harvest


def _layers(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--layers takes comma-separated integers such as 0,3,5, not {text!r}") from error


def _shard(text: str) -> distributed.Slice:
    try:
        return distributed.parse_shard(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harvest",
        description="Run a language model over a corpus and keep, for every MLP neuron "
        "(TransformerLens hook blocks.{layer}.mlp.hook_post), its top-k windows with every token's activation, "
        "a random sample of windows where it fired, its bottom-k windows (gated MLPs) and statistics; "
        "write them to --out as a Neuroscope dataset (docs/FORMAT.md). Rerunning the same command resumes. "
        "Under torchrun (torchrun --nproc-per-node G -m harvest ...) the ranks share the windows and rank 0 writes "
        "the dataset; --shard I/N runs one slice alone, and `python -m harvest merge PART_DIR... --out DIR` "
        "combines the N parts. Either way the dataset equals a single process's.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument("--corpus", default=PYTHON_DOCS, help=CORPUS_HELP)
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to write (and to resume from)")
    parser.add_argument("--split", default="train", help="dataset split, for a Hugging Face corpus")
    parser.add_argument("--text-column", default="text", help="text column of a .jsonl, .parquet or Hub corpus")
    parser.add_argument("--revision", default=None, help="dataset revision (branch, tag or sha) of a Hub corpus")
    parser.add_argument("--tokens", type=int, default=None, help="token budget (default: the whole corpus)")
    parser.add_argument("--window", type=int, default=128, help="tokens per window, BOS included")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    parser.add_argument("--top-k", type=int, default=20, help="max-activating windows kept per neuron")
    parser.add_argument("--random-k", type=int, default=10, help="random firing windows kept per neuron")
    parser.add_argument(
        "--bottom-k", type=int, default=None, help="min-activating windows per neuron (default: top-k for gated MLPs, else 0)"
    )
    parser.add_argument("--layers", type=_layers, default=None, help="comma-separated layers (default: all)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="model dtype")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random samples")
    parser.add_argument(
        "--checkpoint-every", type=float, default=180.0, help="seconds of work between checkpoints"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--shard",
        type=_shard,
        default=None,
        metavar="I/N",
        help="harvest only slice I of N (counted from 0) into --out as a part; "
        "then `python -m harvest merge PART_DIR... --out DIR` combines all N parts",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["merge"]:
        return merge.main(argv[1:])
    if argv[:1] == ["explain"]:
        from harvest.explain import cli as explain_cli

        return explain_cli.main(argv[1:])
    args = build_parser().parse_args(argv)
    config = HarvestConfig(
        model=args.model,
        corpus=CorpusSpec(args.corpus, split=args.split, text_column=args.text_column, revision=args.revision),
        out=args.out,
        tokens=args.tokens,
        window=args.window,
        batch_size=args.batch_size,
        top_k=args.top_k,
        random_k=args.random_k,
        bottom_k=args.bottom_k,
        layers=args.layers,
        device=args.device,
        dtype=args.dtype,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        progress=not args.no_progress,
        shard=args.shard,
    )
    try:
        out = harvest(config)
    except (ModelLoadError, CorpusError, HarvestError, CheckpointMismatch) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if checkpoint_path(distributed.checkpoint_root(args.out, distributed.current_world())).is_file():
            print(f"\ninterrupted: progress saved in {args.out}; run the same command to resume", file=sys.stderr)
        else:
            print("\ninterrupted before any progress was made", file=sys.stderr)
        return 130
    if args.shard is not None:
        print(f"shard {args.shard} written to {out}; `python -m harvest merge` combines it with the others")
    elif distributed.current_world().rank == 0:
        print(f"dataset written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
