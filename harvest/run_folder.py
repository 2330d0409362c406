"""The run folder (`--out`): whether it is fresh, holds a run to resume, a finished dataset or a finished shard part,
and its checkpoints from the first save to the clean-up.

Layout, besides the dataset itself:
    .neuroscope-checkpoint/state.pt                                   one process's checkpoint (or a shard's state)
    .neuroscope-checkpoint/rank-R-of-N/.neuroscope-checkpoint/state.pt  torchrun rank R's checkpoint
    neuroscope-part.json                                              a finished shard's record
A checkpoint belongs to the run whose fingerprint (`run_id`) it carries; a folder holding anything of another run,
or written by another number of processes, is refused with a message that says what to do.
"""

from __future__ import annotations

import enum
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from harvest.batches import Slice, parse_shard
from harvest.distributed import SINGLE_PROCESS, World, barrier
from harvest.plan import utc_now
from harvest.state import Progress, Snapshot
from hub_sync import format as fmt
from hub_sync.manifest import Manifest, ManifestError

CHECKPOINT_DIR = ".neuroscope-checkpoint"
CHECKPOINT_FILE = "state.pt"
PART_FILE = "neuroscope-part.json"
RANK_DIR = "rank-{rank}-of-{size}"
PART_KIND = "neuroscope-harvest-part"


class CheckpointMismatch(RuntimeError):
    """--out holds the checkpoint or dataset of a different run, or of another split of the work."""


class Status(enum.Enum):
    FRESH = "nothing of this run yet"
    RESUME = "a checkpoint of this run"
    DONE = "this run's finished dataset, or this shard's finished part"


def checkpoint_file(root: Path) -> Path:
    return root / CHECKPOINT_DIR / CHECKPOINT_FILE


@dataclass(frozen=True)
class PartRecord:
    """What a finished shard says about itself; its state stays in its checkpoint file."""

    run_id: str
    shard: Slice
    windows: int
    docs: int
    code_version: str
    started: str
    finished: str
    settings: dict

    def to_json(self) -> dict:
        return {"kind": PART_KIND, **asdict(self), "shard": str(self.shard),
                "state": checkpoint_file(Path(".")).as_posix()}

    @classmethod
    def from_json(cls, data: dict) -> PartRecord:
        return cls(
            run_id=data["run_id"], shard=parse_shard(data["shard"]), windows=data["windows"], docs=data["docs"],
            code_version=data["code_version"], started=data["started"], finished=data["finished"],
            settings=data["settings"],
        )


class RunFolder:
    """One process's view of a run folder: a single process, a torchrun rank, or a `--shard` part."""

    def __init__(self, out: Path, world: World = SINGLE_PROCESS, shard: Slice | None = None):
        self.out = out
        self.world = world
        self.shard = shard
        self.part = shard or world.slice
        if world.size == 1:
            self.root = out
        else:
            self.root = out / CHECKPOINT_DIR / RANK_DIR.format(rank=world.rank, size=world.size)

    @property
    def checkpoint(self) -> Path:
        return checkpoint_file(self.root)

    def has_checkpoint(self) -> bool:
        return self.checkpoint.is_file()

    def status(self, run_id: str) -> Status:
        """Where this run stands in the folder; CheckpointMismatch when the folder holds anything else."""
        self._refuse_another_world()
        checkpoints = (self.out / CHECKPOINT_DIR).exists()
        manifest = self.out / fmt.MANIFEST_FILE
        if self.shard is not None:
            record = self.part_record()
            if record is not None:
                if (record.run_id, record.shard) != (run_id, self.shard):
                    raise CheckpointMismatch(
                        f"{self.out} already holds shard {record.shard} of run {record.run_id}; choose another --out"
                    )
                return Status.DONE
            if manifest.is_file():
                raise CheckpointMismatch(f"{self.out} holds a finished dataset, not a shard; choose another --out")
        elif manifest.is_file() and not checkpoints:
            finished_run = _run_of(manifest)
            if finished_run == run_id:
                return Status.DONE
            raise CheckpointMismatch(
                f"{self.out} already holds a different dataset (run {finished_run}); choose another --out or delete it"
            )
        if not checkpoints and self.out.exists() and any(self.out.iterdir()):
            raise CheckpointMismatch(f"{self.out} is not empty and holds no harvest of this run; choose another --out")
        return Status.RESUME if self.has_checkpoint() else Status.FRESH

    def _refuse_another_world(self) -> None:
        """Checkpoints written by a different number of processes cut other slices: they cannot be resumed."""
        sizes = {int(path.name.rsplit("-", 1)[1]) for path in (self.out / CHECKPOINT_DIR).glob("rank-*-of-*")}
        size = self.world.size
        if size == 1 and sizes:
            raise CheckpointMismatch(
                f"{self.out} holds the checkpoints of a harvest over {min(sizes)} torchrun processes; resume it with "
                f"torchrun and {min(sizes)} processes in all, or choose another --out"
            )
        if size > 1 and checkpoint_file(self.out).is_file():
            raise CheckpointMismatch(
                f"{self.out} holds the checkpoint of a single-process harvest; "
                "resume it without torchrun, or choose another --out"
            )
        if size > 1 and sizes - {size}:
            raise CheckpointMismatch(
                f"{self.out} holds the checkpoints of a harvest over {min(sizes - {size})} processes, not {size}; "
                "restart torchrun with that many processes in all, or choose another --out"
            )

    def save(self, snapshot: Snapshot, settings: dict) -> None:
        """Write to a temporary file, fsync, then rename: a kill at any moment leaves the old or the new file."""
        path = self.checkpoint
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        saved = {"run_id": snapshot.progress.run_id, "settings": settings, "progress": asdict(snapshot.progress),
                 "layers": snapshot.layers, "tokens": snapshot.tokens}
        with open(tmp, "wb") as handle:
            torch.save(saved, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def load(self, run_id: str) -> Snapshot | None:
        """This process's checkpoint of run `run_id`, or None; CheckpointMismatch for anyone else's."""
        path = self.checkpoint
        if not path.is_file():
            return None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:  # a torn or foreign file: say so, never guess
            raise CheckpointMismatch(
                f"{path} is not a readable checkpoint ({type(error).__name__}); delete {path.parent} to start over"
            ) from error
        if saved.get("run_id") != run_id:
            raise CheckpointMismatch(
                f"{self.root} holds the checkpoint of a different run (settings {saved.get('settings')}); "
                f"rerun with that run's exact options to resume it, or choose another --out"
            )
        progress = Progress(**saved["progress"])
        if progress.slice != str(self.part):
            raise CheckpointMismatch(
                f"{self.root} holds shard {progress.slice} of this run, not {self.part}; choose another --out"
            )
        return Snapshot(progress=progress, layers=saved["layers"], tokens=saved["tokens"])

    def finish_part(self, progress: Progress, settings: dict, code_version: str) -> None:
        """Mark a finished shard: its state stays in the checkpoint file; the record says it is complete."""
        record = PartRecord(run_id=progress.run_id, shard=self.part, windows=progress.windows, docs=progress.docs,
                            code_version=code_version, started=progress.started, finished=utc_now(), settings=settings)
        tmp = self.out / (PART_FILE + ".tmp")
        tmp.write_text(json.dumps(record.to_json(), indent=2))
        os.replace(tmp, self.out / PART_FILE)

    def part_record(self) -> PartRecord | None:
        """The finished shard's record; None when the folder holds none."""
        path = self.out / PART_FILE
        if not path.is_file():
            return None
        try:
            return PartRecord.from_json(json.loads(path.read_text()))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise CheckpointMismatch(
                f"{path} is not a readable part record ({type(error).__name__}: {error}); rerun the shard's "
                "`python -m harvest --shard` command into a new --out"
            ) from None

    def clean_up(self) -> None:
        """After rank 0 wrote the dataset: every rank drops its checkpoint, then rank 0 the folder holding them."""
        if self.world.size == 1:
            _remove_checkpoint(self.out)
            return
        barrier(self.world)
        _remove_checkpoint(self.root)
        if self.root.is_dir():
            self.root.rmdir()
        barrier(self.world)
        if self.world.rank == 0:
            _remove_checkpoint(self.out)


def _run_of(manifest: Path) -> str | None:
    """The run that wrote a finished dataset (None if its manifest does not say, or cannot be read)."""
    try:
        return Manifest.from_json(json.loads(manifest.read_text())).harvest.run_id
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ManifestError):
        return None


def _remove_checkpoint(root: Path) -> None:
    path = checkpoint_file(root)
    path.unlink(missing_ok=True)
    path.with_suffix(".tmp").unlink(missing_ok=True)
    if path.parent.is_dir() and not any(path.parent.iterdir()):
        path.parent.rmdir()

