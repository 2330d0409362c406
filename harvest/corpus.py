"""Corpora as document streams, and the stream of fixed-size BOS-led token windows cut from them.

The windowing is TransformerLens's `tokenize_and_concatenate` convention: documents tokenized without
special tokens, joined by EOS into one stream, cut into consecutive windows of `window - 1` stream
tokens, each led by BOS; a final partial window is dropped.
"""

from __future__ import annotations

import json
import platform
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from hub_sync.manifest import CorpusInfo

PYTHON_DOCS = "python-docs"
LOCAL_SUFFIXES = (".txt", ".jsonl", ".parquet")
CORPUS_HELP = (
    f"CORPUS must be {PYTHON_DOCS!r} (built in: the Python language reference and the standard library's source), "
    "a local .txt, .jsonl or .parquet file or a folder of them, or a Hugging Face dataset id (streamed)."
)


class CorpusError(ValueError):
    """The corpus cannot be read or holds no text."""


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    split: str = "train"
    text_column: str = "text"
    revision: str | None = None

    def manifest_entry(self, docs: int, windows: int, window: int) -> CorpusInfo:
        """What the dataset says about its corpus, after `docs` documents were cut into `windows` windows."""
        counts = {"docs": docs, "windows": windows, "tokens": windows * window}
        if self.name == PYTHON_DOCS:
            return CorpusInfo(name=self.name, revision=platform.python_version(), **counts)
        if Path(self.name).exists():
            return CorpusInfo(name=Path(self.name).name, text_column=self.text_column, **counts)
        return CorpusInfo(
            name=self.name, split=self.split, text_column=self.text_column, revision=self.revision, **counts
        )


def _python_docs() -> Iterator[str]:
    """The language reference's topics, then every standard-library module's source, in a fixed order."""
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    for key in sorted(topics):
        yield topics[key]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        relative = path.relative_to(stdlib).parts
        if relative[0] in {"site-packages", "test", "idlelib", "lib2to3"} or "tests" in relative:
            continue
        try:
            yield path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue


def _local_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in LOCAL_SUFFIXES)


def _read_local_file(path: Path, text_column: str) -> Iterator[str]:
    if path.suffix == ".txt":
        yield path.read_text(encoding="utf-8")
    elif path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    yield record[text_column]
                except (json.JSONDecodeError, KeyError, TypeError) as error:
                    raise CorpusError(f"{path}:{number}: not a JSON object with a {text_column!r} field") from error
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.ParquetFile(path)
        if text_column not in table.schema_arrow.names:
            raise CorpusError(f"{path}: no column {text_column!r} (columns: {', '.join(table.schema_arrow.names)})")
        for batch in table.iter_batches(columns=[text_column]):
            yield from (text for text in batch.column(0).to_pylist() if text)
    else:
        raise CorpusError(f"{path}: unsupported file type (use {', '.join(LOCAL_SUFFIXES)})")


def _local_documents(root: Path, text_column: str) -> Iterator[str]:
    files = _local_files(root)
    if not files:
        raise CorpusError(f"{root} holds no {', '.join(LOCAL_SUFFIXES)} files. {CORPUS_HELP}")
    for path in files:
        try:
            yield from _read_local_file(path, text_column)
        except (OSError, UnicodeDecodeError) as error:
            raise CorpusError(f"cannot read {path}: {error}") from error


def _hub_documents(spec: CorpusSpec) -> Iterator[str]:
    import datasets

    try:
        stream = datasets.load_dataset(spec.name, split=spec.split, revision=spec.revision, streaming=True)
        for row in stream:
            yield row[spec.text_column]
    except KeyError as error:
        raise CorpusError(f"dataset {spec.name} has no column {spec.text_column!r}; pass --text-column") from error
    except Exception as error:  # datasets raises many kinds for a missing or offline dataset
        message = f"cannot stream dataset {spec.name!r}: {type(error).__name__}: {error}. {CORPUS_HELP}"
        raise CorpusError(message) from error


def iter_documents(spec: CorpusSpec) -> Iterator[str]:
    if spec.name == PYTHON_DOCS:
        return _python_docs()
    path = Path(spec.name)
    if path.exists():
        return _local_documents(path, spec.text_column)
    if path.suffix in LOCAL_SUFFIXES or spec.name.startswith((".", "/")):
        raise CorpusError(f"corpus file {spec.name} does not exist. {CORPUS_HELP}")
    return _hub_documents(spec)


class WindowStream:
    """Cuts documents into BOS-led windows; counts the documents it consumed (for the manifest)."""

    def __init__(
        self, documents: Iterable[str], tokenizer, window: int, bos_id: int, eos_id: int, docs_per_call: int = 64
    ):
        self.documents = iter(documents)
        self.tokenizer = tokenizer
        self.body = window - 1
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.docs_per_call = docs_per_call
        self.docs_consumed = 0

    def _token_chunks(self) -> Iterator[list[int]]:
        first = True
        while True:
            docs = list(islice(self.documents, self.docs_per_call))
            if not docs:
                return
            encoded = self.tokenizer(docs, add_special_tokens=False)["input_ids"]
            for ids in encoded:
                self.docs_consumed += 1
                yield ids if first else [self.eos_id, *ids]
                first = False

    def windows(self) -> Iterator[np.ndarray]:
        """Yields int64 arrays of `window` tokens, BOS first, in stream order."""
        pending = np.zeros(0, dtype=np.int64)
        for chunk in self._token_chunks():
            pending = np.concatenate([pending, np.asarray(chunk, dtype=np.int64)])
            whole = len(pending) // self.body
            for start in range(0, whole * self.body, self.body):
                yield np.concatenate([[self.bos_id], pending[start : start + self.body]])
            pending = pending[whole * self.body :]

    def batches(self, batch_size: int, skip_windows: int = 0, max_windows: int | None = None) -> Iterator[np.ndarray]:
        """Batches of windows [batch, window], starting after `skip_windows`, stopping at `max_windows` in all."""
        batch: list[np.ndarray] = []
        for index, window in enumerate(self.windows()):
            if max_windows is not None and index >= max_windows:
                break
            if index < skip_windows:
                continue
            batch.append(window)
            if len(batch) == batch_size:
                yield np.stack(batch)
                batch = []
        if batch:
            yield np.stack(batch)
