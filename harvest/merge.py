"""`python -m harvest merge PART_DIR... --out DIR`: combine the parts of a `--shard I/N` harvest into the
dataset one process would have written.

A part is one shard's final state (its checkpoint) plus a record naming the run and the shard. Merging
is exact: every selection is "k smallest keys, ties to the lower window" and the statistics add up.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from harvest import checkpoint, distributed
from harvest.models import ModelLoadError, load_model
from harvest.run import Harvester, HarvestConfig, check_out_dir


class MergeError(ValueError):
    """The folders are not the finished shards of one run, each given once."""


@dataclass(frozen=True)
class Part:
    folder: Path
    record: dict
    shard: distributed.Slice


def read_part(folder: Path) -> Part:
    if not folder.is_dir():
        raise MergeError(f"{folder} is not a folder")
    record = distributed.read_part_record(folder)
    if record is None:
        if checkpoint.checkpoint_path(folder).is_file():
            raise MergeError(
                f"{folder} is an unfinished shard: rerun its `python -m harvest --shard` command to finish it"
            )
        raise MergeError(
            f"{folder} holds no harvest part ({distributed.PART_FILE} is missing): "
            "pass the --out folders of `python -m harvest --shard I/N` runs"
        )
    return Part(folder, record, distributed.parse_shard(record["shard"]))


def check_parts(parts: list[Part]) -> None:
    """Same run, same number of shards, each shard exactly once."""
    first = parts[0]
    for part in parts[1:]:
        if part.record["run_id"] != first.record["run_id"]:
            ours, theirs = first.record["settings"], part.record["settings"]
            differ = sorted(key for key in ours.keys() | theirs.keys() if ours.get(key) != theirs.get(key))
            raise MergeError(
                f"{part.folder} is a part of another run than {first.folder}: "
                f"their settings differ in {', '.join(differ) or 'code version'}"
            )
    counts = sorted({part.shard.count for part in parts})
    if len(counts) > 1:
        raise MergeError(f"the parts cut the run into different numbers of shards ({', '.join(map(str, counts))})")
    seen: dict[int, Path] = {}
    for part in parts:
        if part.shard.index in seen:
            raise MergeError(f"shard {part.shard} is given twice: {seen[part.shard.index]} and {part.folder}")
        seen[part.shard.index] = part.folder
    missing = [f"{index}/{counts[0]}" for index in range(counts[0]) if index not in seen]
    if missing:
        raise MergeError(f"shard {', '.join(missing)} missing: a merge needs all {counts[0]} parts")


def merge(folders: list[Path], out: Path, device: str = "auto", model_path: str | None = None) -> Path:
    """Write the dataset of the run whose shards are in `folders` to `out` (nothing to do if it is there)."""
    parts = sorted((read_part(folder) for folder in folders), key=lambda part: part.shard.index)
    check_parts(parts)
    if any(out.resolve() == part.folder.resolve() for part in parts):
        raise MergeError(f"--out {out} is one of the parts; write the dataset to a new folder")
    settings, run_id = parts[0].record["settings"], parts[0].record["run_id"]
    if check_out_dir(out, run_id):
        return out
    config = HarvestConfig.from_settings(settings, out, device)
    model = load_model(model_path or config.model, device, config.dtype)
    layers, bottom_k = settings["layers"], settings["bottom_k"]
    if checkpoint.fingerprint(config.run_settings(model, layers, bottom_k)) != run_id:
        raise MergeError(
            f"model {model.spec} with this code does not reproduce the parts' settings (d_mlp {settings['d_mlp']}, "
            f"format {settings['format_version']}); merge with the model and code version that harvested them"
        )
    harvester = Harvester(config, model, layers, bottom_k, run_id)
    harvester.progress["started"] = min(part.record["started"] for part in parts)
    for part in parts:
        payload = checkpoint.load(part.folder, run_id)
        if payload is None:
            raise MergeError(f"{part.folder} lost its state file {checkpoint.checkpoint_path(part.folder)}")
        harvester.absorb(payload)
    harvester.write(harvester.manifest())
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harvest merge",
        description="Combine the N parts written by `python -m harvest --shard I/N ... --out PART_DIR` "
        "into the dataset a single `python -m harvest` run would write. The model is loaded again "
        "(for token strings and logit effects) from where the shards loaded it, or from --model.",
    )
    parser.add_argument("parts", nargs="+", type=Path, metavar="PART_DIR", help="the --out folder of each shard")
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    parser.add_argument("--model", default=None, help="where the same model is on this machine (default: as recorded)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = merge(args.parts, args.out, args.device, args.model)
    except (MergeError, ModelLoadError, checkpoint.CheckpointMismatch) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"dataset written to {out}")
    return 0
