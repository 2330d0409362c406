"""Blind rating of neurons, as in the SoLU paper: a rater sees a random neuron's examples without knowing its model,
layer or number, and says whether they share a pattern they could name.

- A sample is an opaque, unguessable token; the server alone maps it to its neuron, so a rating cannot be forged for
  another neuron. A token is rated once, by the rater it was given to.
- Samples are stratified: each rater's samples go round-robin over (model, layer band) strata (bands: the first,
  middle and last third of a model's layers), a uniform random neuron within the stratum, never one this rater has
  been shown before.
- Ratings are appended to a JSONL file in a local folder, one line per rating, under a lock (two raters at once
  never interleave a line) and survive restarts. Each process writes its own `ratings-<run>.jsonl` and reads every
  one it finds. The issued samples are kept beside them (`samples.jsonl`, never published), so a rating can be
  given after a restart too. On a Space the ratings files are appended to a Hub dataset by
  `huggingface_hub.CommitScheduler`, and the ratings already there are read back at start, before a sample is issued.
- The summary gives the fraction judged interpretable per model and layer band with a Wilson 95% interval and its
  n ("unsure" answers are counted but left out of the fraction).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import random
import re
import secrets
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

from space.intervals import wilson_interval
from space.sources import Catalog

RATINGS_DIR_ENV = "NEUROSCOPE_RATINGS_DIR"
RATINGS_REPO_ENV = "NEUROSCOPE_RATINGS_REPO"  # a Hub dataset id: where a Space appends its ratings
RATINGS_EVERY_ENV = "NEUROSCOPE_RATINGS_EVERY"  # minutes between two commits of the ratings (default 5)
RATINGS_PREFIX = "ratings-"
SAMPLES_FILE = "samples.jsonl"
HUB_FOLDER = "data"
HUB_WAIT_S = 20.0  # how long a sample waits for the ratings on the Hub to be read after a (re)start
ANSWERS = ("interpretable", "not", "unsure")
BANDS = ("early", "middle", "late")
MAX_NOTE_CHARACTERS = 1000
MAX_PENDING = 10_000  # unrated samples kept; the oldest expire first (a client cannot grow memory without bound)
RANDOM_TRIES = 64
RATER_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")


class RatingError(ValueError):
    """A request the ratings refuse; the message says why, for the rater."""


@dataclass(frozen=True)
class Sample:
    """One neuron issued to one rater, under an opaque token."""

    token: str
    rater: str
    model: str
    layer: int
    neuron: int
    issued: str


@dataclass(frozen=True)
class Stratum:
    model: str
    band: str
    layers: tuple[int, ...]
    d_mlp: int


@dataclass(frozen=True)
class SummaryRow:
    """The answers for one model and layer band ("all" for the whole model), and the interpretable fraction."""

    model: str
    band: str
    interpretable: int
    not_interpretable: int
    unsure: int
    fraction: float | None  # interpretable / (interpretable + not); None with no such answer
    low: float
    high: float

    @property
    def n(self) -> int:
        return self.interpretable + self.not_interpretable


def default_ratings_folder() -> Path:
    """NEUROSCOPE_RATINGS_DIR, else `ratings` in the cache folder harvest.default uses (NEUROSCOPE_CACHE)."""
    configured = os.environ.get(RATINGS_DIR_ENV)
    if configured:
        return Path(configured)
    cache = os.environ.get("NEUROSCOPE_CACHE")
    return (Path(cache) if cache else Path.home() / ".cache" / "neuroscope") / "ratings"


def layer_band(layer: int, n_layers: int) -> str:
    """early, middle or late: which third of the model's layers the layer is in."""
    return BANDS[min(len(BANDS) - 1, len(BANDS) * layer // max(n_layers, 1))]


def strata_of(catalog: Catalog) -> list[Stratum]:
    """Every (model, band) that holds harvested layers, models in catalog order, bands early to late."""
    strata = []
    for name, dataset in catalog.models.items():
        n_layers = dataset.manifest.model.n_layers
        for band in BANDS:
            layers = tuple(layer for layer in dataset.layers if layer_band(layer, n_layers) == band)
            if layers:
                strata.append(Stratum(name, band, layers, dataset.d_mlp))
    return strata


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def sample_id(token: str) -> str:
    """What a published rating says about its sample: a digest, from which the token cannot be recovered."""
    return hashlib.sha256(token.encode()).hexdigest()[:24]


def read_jsonl(path: Path) -> Iterator[dict]:
    """The records of a JSONL file; a torn last line (a crash mid-write) is skipped, not fatal."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record


def append_jsonl(path: Path, record: dict) -> None:
    """One whole line in one write, under an advisory lock: two writers never interleave their lines."""
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        os.write(descriptor, line)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class RatingStore:
    """The ratings of one folder: what was issued to whom, what was rated, and the file they are appended to."""

    def __init__(self, folder: str | os.PathLike, rng: random.Random | None = None):
        self.folder = Path(folder).expanduser()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ratings_file = self.folder / f"{RATINGS_PREFIX}{uuid.uuid4().hex}.jsonl"
        self._rng = rng or random.SystemRandom()
        self._lock = threading.Lock()
        self._ratings: dict[str, dict] = {}  # by rating id
        self._rated_samples: set[str] = set()  # sample ids already rated
        self._pending: OrderedDict[str, Sample] = OrderedDict()
        self._seen: dict[str, set[tuple[str, int, int]]] = {}
        self._issued: dict[str, int] = {}
        self.hub: HubRatings | None = None
        for path in sorted(self.folder.glob(f"{RATINGS_PREFIX}*.jsonl")):
            self._add_ratings(read_jsonl(path))
        samples = self.folder / SAMPLES_FILE
        for record in read_jsonl(samples) if samples.exists() else ():
            self._add_sample(Sample(**record))

    def _add_ratings(self, records: Iterable[dict]) -> None:
        for record in records:
            if record.get("id") in self._ratings or record.get("answer") not in ANSWERS:
                continue
            self._ratings[record["id"]] = record
            self._rated_samples.add(record.get("sample", ""))
            self._seen.setdefault(record["rater"], set()).add((record["model"], record["layer"], record["neuron"]))

    def _add_sample(self, sample: Sample) -> None:
        self._seen.setdefault(sample.rater, set()).add((sample.model, sample.layer, sample.neuron))
        self._issued[sample.rater] = self._issued.get(sample.rater, 0) + 1
        if sample_id(sample.token) not in self._rated_samples:
            self._pending[sample.token] = sample
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)

    def merge(self, records: Iterable[dict]) -> None:
        """Ratings read from elsewhere (the Hub dataset): counted and excluded from sampling, not written again."""
        with self._lock:
            self._add_ratings(records)

    @staticmethod
    def rater_id(rater: str | None) -> str:
        """The rater's id, a new random one when blank; RatingError for anything but 8-64 letters, digits, - or _."""
        if rater is None or not str(rater).strip():
            return secrets.token_urlsafe(16)
        if not isinstance(rater, str) or not RATER_ID.fullmatch(rater.strip()):
            raise RatingError("A rater id is 8 to 64 letters, digits, '-' or '_'; leave it empty to get a new one.")
        return rater.strip()

    def issue(self, catalog: Catalog, rater: str) -> Sample:
        """A neuron this rater has not been shown, from the next stratum in the rater's round-robin that has one."""
        if self.hub is not None:
            self.hub.wait_read()
        strata = strata_of(catalog)
        if not strata:
            raise RatingError("No dataset is available to rate.")
        with self._lock:
            seen = self._seen.setdefault(rater, set())
            start = self._issued.get(rater, 0)
            for offset in range(len(strata)):
                stratum = strata[(start + offset) % len(strata)]
                pick = self._draw(stratum, seen)
                if pick is not None:
                    break
            else:
                raise RatingError("You have been shown every neuron of every model served here: thank you!")
            sample = Sample(secrets.token_urlsafe(24), rater, stratum.model, pick[0], pick[1], now())
            append_jsonl(self.folder / SAMPLES_FILE, asdict(sample))
            self._add_sample(sample)
            return sample

    def _draw(self, stratum: Stratum, seen: set[tuple[str, int, int]]) -> tuple[int, int] | None:
        """A uniform random unseen neuron of the stratum: random tries first, the full list only when nearly all
        were seen."""
        for _ in range(RANDOM_TRIES):
            pick = (self._rng.choice(stratum.layers), self._rng.randrange(stratum.d_mlp))
            if (stratum.model, *pick) not in seen:
                return pick
        unseen = [
            (layer, neuron)
            for layer in stratum.layers
            for neuron in range(stratum.d_mlp)
            if (stratum.model, layer, neuron) not in seen
        ]
        return self._rng.choice(unseen) if unseen else None

    def rate(self, catalog: Catalog, rater: str, token: str, answer: str, note: str | None) -> dict:
        """Record the answer for the sample; RatingError for an unknown or spent token, another rater's token, an
        unknown answer or an overlong note (nothing is written then, and the sample can still be rated)."""
        if answer not in ANSWERS:
            raise RatingError(f"The answer must be one of {', '.join(ANSWERS)}; got {str(answer)[:40]!r}.")
        note = (note or "").strip()
        if len(note) > MAX_NOTE_CHARACTERS:
            raise RatingError(f"The note has {len(note):,} characters; shorten it to {MAX_NOTE_CHARACTERS:,}.")
        with self._lock:
            if sample_id(token or "") in self._rated_samples:
                raise RatingError("This sample has already been rated; ask for a new neuron.")
            sample = self._pending.get(token or "")
            if sample is None:
                raise RatingError("Unknown or expired sample; ask for a new neuron.")
            if sample.rater != rater:
                raise RatingError("This sample was given to another rater; ask for a new neuron.")
            dataset = catalog.models.get(sample.model)
            n_layers = dataset.manifest.model.n_layers if dataset else sample.layer + 1
            record = {
                "id": uuid.uuid4().hex,
                "sample": sample_id(token),
                "rater": rater,
                "model": sample.model,
                "layer": sample.layer,
                "neuron": sample.neuron,
                "n_layers": n_layers,
                "band": layer_band(sample.layer, n_layers),
                "dataset_revision": dataset.revision if dataset else None,
                "answer": answer,
                "note": note,
                "shown_at": sample.issued,
                "rated_at": now(),
            }
            with self._hub_lock():
                append_jsonl(self.ratings_file, record)
            self._add_ratings([record])
            del self._pending[token]
            return record

    def _hub_lock(self):
        """The scheduler's lock while a line is written, so a commit never uploads half a line."""
        return self.hub.lock() if self.hub else nullcontext()

    def ratings(self) -> list[dict]:
        with self._lock:
            return list(self._ratings.values())

    def rated_by(self, rater: str) -> int:
        with self._lock:
            return sum(1 for record in self._ratings.values() if record["rater"] == rater)


def summarise(ratings: Iterable[dict], models: Iterable[str]) -> list[SummaryRow]:
    """Per model (in the order given, then any other rated model): a row for all its layers, then one per band."""
    tallies: dict[tuple[str, str], dict[str, int]] = {}
    for record in ratings:
        for band in ("all", record["band"]):
            tally = tallies.setdefault((record["model"], band), dict.fromkeys(ANSWERS, 0))
            tally[record["answer"]] += 1
    order = list(dict.fromkeys([*models, *(model for model, _ in tallies)]))
    rows = []
    for model in order:
        for band in ("all", *BANDS):
            tally = tallies.get((model, band))
            if tally is None:
                continue
            k, m = tally["interpretable"], tally["not"]
            low, high = wilson_interval(k, k + m)
            rows.append(
                SummaryRow(model, band, k, m, tally["unsure"], k / (k + m) if k + m else None, float(low), float(high))
            )
    return rows


class HubRatings:
    """The ratings folder appended to a Hub dataset every few minutes by CommitScheduler (a background thread), and
    the ratings already there read back, so a restarted Space keeps its summary and never re-shows a rated neuron."""

    def __init__(self, store: RatingStore, repo_id: str, token: str | None, every_minutes: float):
        self.repo_id = repo_id
        self.store = store
        self._token = token
        self._every = every_minutes
        self.scheduler = None
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neuroscope-ratings")
        self.ready: Future = executor.submit(self._start)
        executor.shutdown(wait=False)

    def _start(self) -> int:
        """Start the scheduler (it creates the repo if needed), then read the ratings already in it."""
        from huggingface_hub import CommitScheduler, snapshot_download

        self.scheduler = CommitScheduler(
            repo_id=self.repo_id,
            repo_type="dataset",
            folder_path=self.store.folder,
            path_in_repo=HUB_FOLDER,
            allow_patterns=[f"{RATINGS_PREFIX}*.jsonl"],
            every=self._every,
            token=self._token,
        )
        folder = Path(
            snapshot_download(
                self.repo_id,
                repo_type="dataset",
                allow_patterns=[f"{HUB_FOLDER}/{RATINGS_PREFIX}*.jsonl"],
                token=self._token,
            )
        )
        records = [
            record
            for path in sorted(folder.glob(f"{HUB_FOLDER}/{RATINGS_PREFIX}*.jsonl"))
            for record in read_jsonl(path)
        ]
        self.store.merge(records)
        return len(records)

    @contextmanager
    def lock(self) -> Iterator[None]:
        if self.scheduler is None:
            yield
            return
        with self.scheduler.lock:
            yield

    def wait_read(self, timeout: float = HUB_WAIT_S) -> None:
        """Return once the ratings on the Hub have been read (or could not be), so a restarted Space never shows a
        rater a neuron they rated before; RatingError if that takes longer than `timeout`."""
        done, _ = wait([self.ready], timeout=timeout)
        if not done:
            raise RatingError("The ratings kept on the Hub are still being read; ask again in a moment.")

    def status(self) -> str:
        """A line for the Rate tab: where the ratings go, or why they stay local."""
        if not self.ready.done():
            return f"Connecting to the Hub dataset {self.repo_id!r} where ratings are appended…"
        if self.ready.exception() is not None:
            return (
                f"Ratings are kept in this server's folder only: the Hub dataset {self.repo_id!r} could not be "
                f"opened ({self.ready.exception()})."
            )
        return f"Ratings are appended to the Hub dataset {self.repo_id!r} every {self._every:g} minutes."

    def push_now(self) -> None:
        """Commit what is not on the Hub yet and wait for it (tests; the scheduler itself commits at exit)."""
        self.ready.result()
        self.scheduler.trigger().result()


def open_ratings(folder: str | os.PathLike | None = None, environ: dict | os._Environ = os.environ) -> RatingStore:
    """The ratings store of the folder (default_ratings_folder when None), appended to the Hub dataset named by
    NEUROSCOPE_RATINGS_REPO when set (with HF_TOKEN)."""
    store = RatingStore(folder if folder is not None else default_ratings_folder())
    repo_id = environ.get(RATINGS_REPO_ENV, "").strip()
    if repo_id:
        try:
            every = float(environ.get(RATINGS_EVERY_ENV) or 5)
        except ValueError:
            raise ValueError(
                f"{RATINGS_EVERY_ENV} must be a number of minutes, got {environ[RATINGS_EVERY_ENV]!r}"
            ) from None
        store.hub = HubRatings(store, repo_id, environ.get("HF_TOKEN"), every)
    return store
