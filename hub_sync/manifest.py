"""The manifest (`neuroscope.json`) as typed records: what a dataset says about its model, corpus and harvest.

Every module that writes or reads a manifest goes through `Manifest`: `from_json` checks a parsed file (types,
format version, consistency) and `to_json` writes one. docs/FORMAT.md documents every key, and a test holds its key
list to these fields. Keys a newer minor version adds are kept in `extra`, untouched, so nothing is lost.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from hub_sync import format as fmt

SECTIONS = ("model", "corpus", "harvest")
_NOT_KEYS = ("extra",)


class ManifestError(ValueError):
    """A manifest that cannot be used; `problems` lists every reason, each naming its key."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def _looks_like_a_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or PureWindowsPath(name).drive != ""


@dataclass(frozen=True)
class ModelInfo:
    """The model whose neurons these are, and how it was loaded."""

    name: str
    n_layers: int
    d_mlp: int
    loader: str | None = None
    source: str | None = None
    d_model: int | None = None
    d_vocab: int | None = None
    n_ctx: int | None = None
    act_fn: str | None = None
    gated: bool = False
    hook: str = fmt.MLP_HOOK
    dtype: str = "float32"
    transformer_lens_version: str | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def display_name(self) -> str:
        """The name to show: datasets written before names were fixed carry a local folder's path as the name."""
        if not _looks_like_a_path(self.name):
            return self.name
        return PurePosixPath(self.name.replace("\\", "/")).name or self.name


@dataclass(frozen=True)
class CorpusInfo:
    """The text the model read: which corpus and how much of it."""

    windows: int
    name: str | None = None
    split: str | None = None
    revision: str | None = None
    text_column: str | None = None
    docs: int | None = None
    tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HarvestInfo:
    """How the examples were chosen, and the run that chose them."""

    window: int
    top_k: int
    random_k: int
    bottom_k: int
    layers: list[int]
    histogram_edges: list[float]
    seed: int | None = None
    batch_size: int | None = None
    device: str | None = None
    code_version: str | None = None
    run_id: str | None = None
    started: str | None = None
    finished: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def k_of(self, kind: str) -> int:
        """How many examples of `kind` (one of fmt.EXAMPLE_KINDS) each neuron keeps at most."""
        return {"top": self.top_k, "random": self.random_k, "bottom": self.bottom_k}[kind]


_SECTION_TYPES = {"model": ModelInfo, "corpus": CorpusInfo, "harvest": HarvestInfo}


def keys(record: type) -> list[str]:
    """The JSON keys of one section's record, in declaration order."""
    return [f.name for f in dataclasses.fields(record) if f.name not in _NOT_KEYS]


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def key_table() -> dict[str, bool]:
    """Every key a manifest may hold, as `section.key` (and `format_version`), and whether it is required:
    what docs/FORMAT.md must list."""
    return {"format_version": True} | {
        f"{section}.{f.name}": _required(f)
        for section, record in _SECTION_TYPES.items()
        for f in dataclasses.fields(record)
        if f.name not in _NOT_KEYS
    }


def _parse_version(version: Any) -> tuple[int, int] | None:
    match = re.fullmatch(r"(\d+)\.(\d+)", version) if isinstance(version, str) else None
    return (int(match.group(1)), int(match.group(2))) if match else None


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"a list of {_describe(typing.get_args(hint)[0]).split(' ', 1)[1]}s"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}[hint]


def _conforms(value: Any, hint: Any) -> bool:
    """Whether a parsed JSON value has the annotated type (bools are not integers; integers are numbers)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_conforms(value, arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return isinstance(value, list) and all(_conforms(item, typing.get_args(hint)[0]) for item in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _parse_section(name: str, record: type, data: Any, problems: list[str]) -> Any:
    """One section's record, or None after adding to `problems` every key that is missing or of the wrong type."""
    if not isinstance(data, dict):
        problems.append(f"section {name!r} is missing or not an object")
        return None
    hints = typing.get_type_hints(record)
    values: dict[str, Any] = {}
    found = len(problems)
    for f in dataclasses.fields(record):
        if f.name in _NOT_KEYS:
            continue
        if f.name not in data:
            if _required(f):
                problems.append(f"{name}.{f.name} is missing")
            continue
        value = data[f.name]
        if not _conforms(value, hints[f.name]):
            problems.append(f"{name}.{f.name} is {value!r}, expected {_describe(hints[f.name])}")
            continue
        values[f.name] = [float(item) for item in value] if hints[f.name] == list[float] else value
    if len(problems) > found:
        return None
    known = keys(record)
    return record(**values, extra={key: value for key, value in data.items() if key not in known})


@dataclass(frozen=True)
class Manifest:
    """A whole manifest. Build it in code, or from a parsed file with `from_json` (which refuses a bad one)."""

    model: ModelInfo
    corpus: CorpusInfo
    harvest: HarvestInfo
    format_version: str = fmt.FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """The manifest a parsed `neuroscope.json` holds; ManifestError listing every problem otherwise."""
        if not isinstance(data, dict):
            raise ManifestError(["is not a JSON object"])
        version = data.get("format_version")
        parsed = _parse_version(version)
        if parsed is None:
            raise ManifestError([f"format_version {version!r} is not a MAJOR.MINOR string"])
        if parsed[0] != fmt.FORMAT_MAJOR:
            raise ManifestError([
                f"format_version {version} has major version {parsed[0]}; this reader knows major version "
                f"{fmt.FORMAT_MAJOR} only (upgrade neuroscope-hub to read it)"
            ])
        problems: list[str] = []
        sections = {
            name: _parse_section(name, record, data.get(name), problems) for name, record in _SECTION_TYPES.items()
        }
        if problems:
            raise ManifestError(problems)
        extra = {key: value for key, value in data.items() if key not in SECTIONS and key != "format_version"}
        manifest = cls(**sections, format_version=version, extra=extra)
        problems = manifest.problems()
        if problems:
            raise ManifestError(problems)
        return manifest

    def to_json(self) -> dict[str, Any]:
        """The JSON object to write: every key, plus the extra keys it was read with."""
        def section(record: Any) -> dict[str, Any]:
            return {key: getattr(record, key) for key in keys(type(record))} | record.extra

        return {"format_version": self.format_version, **{name: section(getattr(self, name)) for name in SECTIONS}} | (
            self.extra
        )

    def problems(self) -> list[str]:
        """What makes a well-typed manifest unusable: layers, sizes and edges that cannot describe real files."""
        model, harvest = self.model, self.harvest
        problems = []
        if not harvest.layers:
            problems.append("harvest.layers is empty: a dataset holds at least one layer")
        if not all(0 <= layer < model.n_layers for layer in harvest.layers):
            problems.append(f"harvest.layers {harvest.layers} must be layer numbers in 0..model.n_layers-1")
        if len(set(harvest.layers)) != len(harvest.layers):
            problems.append(f"harvest.layers {harvest.layers} repeats a layer")
        if model.d_mlp <= 0:
            problems.append(f"model.d_mlp {model.d_mlp} must be positive")
        if harvest.window < 2:
            problems.append(f"harvest.window {harvest.window} must be at least 2 (BOS and one token)")
        negative = [f"harvest.{kind}_k" for kind in fmt.EXAMPLE_KINDS if harvest.k_of(kind) < 0]
        if negative:
            problems.append(f"{', '.join(negative)} must not be negative")
        if harvest.histogram_edges != sorted(harvest.histogram_edges):
            problems.append("harvest.histogram_edges must be in increasing order")
        return problems

    @property
    def adds_to_format(self) -> bool:
        """A newer minor version of the known major only adds: extra columns are expected, not errors."""
        return _parse_version(self.format_version) > _parse_version(fmt.FORMAT_VERSION)
