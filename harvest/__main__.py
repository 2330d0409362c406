"""`python -m harvest`: find every MLP neuron's max-activating examples and write them as a dataset.

`python -m harvest merge PART_DIR... --out DIR` combines the parts of a `--shard` harvest (harvest.merge).
`python -m harvest explain DATASET ...` explains and scores neurons of a dataset (harvest.explain).
Every option's default is HarvestConfig's (harvest.config).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harvest import merge
from harvest.batches import Slice, parse_shard
from harvest.config import HarvestConfig, HarvestError, corpus_default, default
from harvest.corpus import CORPUS_HELP, CorpusError, CorpusSpec
from harvest.distributed import current_world
from harvest.models import DTYPES, MODEL_HELP, ModelLoadError
from harvest.run import harvest
from harvest.run_folder import CheckpointMismatch, RunFolder
from hub_sync.format import MLP_HOOK


def _layers(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        message = f"--layers takes comma-separated integers such as 0,3,5, not {text!r}"
        raise argparse.ArgumentTypeError(message) from error


def _shard(text: str) -> Slice:
    try:
        return parse_shard(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harvest",
        description="Run a language model over a corpus and keep, for every MLP neuron "
        f"(TransformerLens hook {MLP_HOOK}), its top-k windows with every token's activation, "
        "a random sample of windows where it fired, its bottom-k windows (gated MLPs) and statistics; "
        "write them to --out as a Neuroscope dataset (docs/FORMAT.md). Rerunning the same command resumes. "
        "Under torchrun (torchrun --nproc-per-node G -m harvest ...) the ranks share the windows and rank 0 writes "
        "the dataset; --shard I/N runs one slice alone, and `python -m harvest merge PART_DIR... --out DIR` "
        "combines the N parts. Either way the dataset equals a single process's.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument("--corpus", default=default("corpus").name, help=CORPUS_HELP)
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to write (and to resume from)")
    parser.add_argument("--split", default=corpus_default("split"), help="dataset split, for a Hugging Face corpus")
    parser.add_argument("--text-column", default=corpus_default("text_column"),
                        help="text column of a .jsonl, .parquet or Hub corpus")
    parser.add_argument("--revision", default=corpus_default("revision"),
                        help="dataset revision (branch, tag or sha) of a Hub corpus")
    parser.add_argument("--tokens", type=int, default=default("tokens"),
                        help="token budget (default: the whole corpus)")
    parser.add_argument("--window", type=int, default=default("window"), help="tokens per window, BOS included")
    parser.add_argument("--batch-size", type=int, default=default("batch_size"), help="windows per forward pass")
    parser.add_argument("--top-k", type=int, default=default("top_k"), help="max-activating windows kept per neuron")
    parser.add_argument("--random-k", type=int, default=default("random_k"),
                        help="random firing windows kept per neuron")
    parser.add_argument("--bottom-k", type=int, default=default("bottom_k"),
                        help="min-activating windows per neuron (default: top-k for gated MLPs, else 0)")
    parser.add_argument("--layers", type=_layers, default=default("layers"),
                        help="comma-separated layers (default: all)")
    parser.add_argument("--device", default=default("device"), help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default=default("dtype"), choices=list(DTYPES), help="model dtype")
    parser.add_argument("--seed", type=int, default=default("seed"), help="seed of the random samples")
    parser.add_argument("--checkpoint-every", type=float, default=default("checkpoint_every"),
                        help="seconds of work between checkpoints")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=default("progress"),
                        help="no progress bar")
    parser.add_argument(
        "--shard",
        type=_shard,
        default=default("shard"),
        metavar="I/N",
        help="harvest only slice I of N (counted from 0) into --out as a part; "
        "then `python -m harvest merge PART_DIR... --out DIR` combines all N parts",
    )
    return parser


CORPUS_OPTIONS = ("corpus", "split", "text_column", "revision")


def config_from(args: argparse.Namespace) -> HarvestConfig:
    options = {key: value for key, value in vars(args).items() if key not in CORPUS_OPTIONS}
    corpus = CorpusSpec(args.corpus, split=args.split, text_column=args.text_column, revision=args.revision)
    return HarvestConfig(corpus=corpus, **options)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["merge"]:
        return merge.main(argv[1:])
    if argv[:1] == ["explain"]:
        from harvest.explain import cli as explain_cli

        return explain_cli.main(argv[1:])
    args = build_parser().parse_args(argv)
    config = config_from(args)
    try:
        out = harvest(config)
    except (ModelLoadError, CorpusError, HarvestError, CheckpointMismatch) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if RunFolder(config.out, current_world()).has_checkpoint():
            print(f"\ninterrupted: progress saved in {config.out}; run the same command to resume", file=sys.stderr)
        else:
            print("\ninterrupted before any progress was made", file=sys.stderr)
        return 130
    if config.shard is not None:
        print(f"shard {config.shard} written to {out}; `python -m harvest merge` combines it with the others")
    elif current_world().rank == 0:
        print(f"dataset written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
