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

from harvest.batches import WHOLE
from harvest.config import default
from harvest.models import ModelLoadError
from harvest.plan import RunPlan
from harvest.results import write_dataset
from harvest.run_folder import PART_FILE, CheckpointMismatch, PartRecord, RunFolder, Status
from harvest.state import HarvestState


class MergeError(ValueError):
    """The folders are not the finished shards of one run, each given once."""


@dataclass(frozen=True)
class Part:
    folder: RunFolder
    record: PartRecord

    @property
    def path(self) -> Path:
        return self.folder.out


def read_part(path: Path) -> Part:
    if not path.is_dir():
        raise MergeError(f"{path} is not a folder")
    folder = RunFolder(path)
    record = folder.part_record()
    if record is None:
        if folder.has_checkpoint():
            raise MergeError(
                f"{path} is an unfinished shard: rerun its `python -m harvest --shard` command to finish it"
            )
        raise MergeError(
            f"{path} holds no harvest part ({PART_FILE} is missing): "
            "pass the --out folders of `python -m harvest --shard I/N` runs"
        )
    return Part(RunFolder(path, shard=record.shard), record)


def check_parts(parts: list[Part]) -> None:
    """Same run, same number of shards, each shard exactly once."""
    first = parts[0]
    for part in parts[1:]:
        if part.record.run_id != first.record.run_id:
            ours, theirs = first.record.settings, part.record.settings
            differ = sorted(key for key in ours.keys() | theirs.keys() if ours.get(key) != theirs.get(key))
            raise MergeError(
                f"{part.path} is a part of another run than {first.path}: "
                f"their settings differ in {', '.join(differ) or 'code version'}"
            )
    counts = sorted({part.record.shard.count for part in parts})
    if len(counts) > 1:
        raise MergeError(f"the parts cut the run into different numbers of shards ({', '.join(map(str, counts))})")
    seen: dict[int, Path] = {}
    for part in parts:
        if part.record.shard.index in seen:
            raise MergeError(
                f"shard {part.record.shard} is given twice: {seen[part.record.shard.index]} and {part.path}"
            )
        seen[part.record.shard.index] = part.path
    missing = [f"{index}/{counts[0]}" for index in range(counts[0]) if index not in seen]
    if missing:
        raise MergeError(f"shard {', '.join(missing)} missing: a merge needs all {counts[0]} parts")


def merge(folders: list[Path], out: Path, device: str = default("device"), model_path: str | None = None) -> Path:
    """Write the dataset of the run whose shards are in `folders` to `out` (nothing to do if it is there)."""
    parts = sorted((read_part(folder) for folder in folders), key=lambda part: part.record.shard.index)
    check_parts(parts)
    if any(out.resolve() == part.path.resolve() for part in parts):
        raise MergeError(f"--out {out} is one of the parts; write the dataset to a new folder")
    recorded = parts[0].record
    if RunFolder(out).status(recorded.run_id) is Status.DONE:
        return out
    plan = RunPlan.recorded(recorded.settings, out, device, model_path)
    if plan.run_id != recorded.run_id:
        raise MergeError(
            f"model {plan.model.spec} with this code does not reproduce the parts' settings (d_mlp "
            f"{recorded.settings['d_mlp']}, format {recorded.settings['format_version']}); merge with the model "
            "and code version that harvested them"
        )
    state = HarvestState(plan, WHOLE)
    state.progress.started = min(part.record.started for part in parts)
    for part in parts:
        saved = part.folder.load(recorded.run_id)
        if saved is None:
            raise MergeError(f"{part.path} lost its state file {part.folder.checkpoint}")
        state.absorb(saved)
    write_dataset(state, out)
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
    parser.add_argument("--device", default=default("device"), help="auto, cpu, cuda or cuda:N")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = merge(args.parts, args.out, args.device, args.model)
    except (MergeError, ModelLoadError, CheckpointMismatch) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"dataset written to {out}")
    return 0
