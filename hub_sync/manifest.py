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
EXPLANATIONS = "explanations"  # format 1.1's optional section: which layers hold explanations, and the runs
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


@dataclass(frozen=True)
class ExplanationRun:
    """One `python -m harvest explain` run: who explained, with which prompt and scorers, how many neurons."""

    explainer: str
    prompt_version: str
    scorers: list[str]
    layers: list[int]
    neurons: int
    refused: int
    started: str
    finished: str
    max_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExplanationsInfo:
    """Format 1.1: the layers with a `data/explanations/` file, and every run that wrote to them."""

    layers: list[int]
    runs: list[ExplanationRun]
    extra: dict[str, Any] = field(default_factory=dict)


_SECTION_TYPES = {"model": ModelInfo, "corpus": CorpusInfo, "harvest": HarvestInfo}


def keys(record: type) -> list[str]:
    """The JSON keys of one section's record, in declaration order."""
    return [f.name for f in dataclasses.fields(record) if f.name not in _NOT_KEYS]


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def key_table() -> dict[str, bool]:
    """Every key a manifest may hold, as `section.key` (and `format_version`), and whether it is required:
    what docs/FORMAT.md must list. The optional `explanations` section's keys are required within it."""
    records = {**_SECTION_TYPES, EXPLANATIONS: ExplanationsInfo, f"{EXPLANATIONS}.runs[]": ExplanationRun}
    return {"format_version": True, EXPLANATIONS: False} | {
        f"{section}.{f.name}": _required(f)
        for section, record in records.items()
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
    if dataclasses.is_dataclass(hint):
        return "an object"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}[hint]


def _conforms(value: Any, hint: Any) -> bool:
    """Whether a parsed JSON value has the annotated type (bools are not integers; integers are numbers)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_conforms(value, arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return isinstance(value, list) and all(_conforms(item, typing.get_args(hint)[0]) for item in value)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict)
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
        values[f.name] = _typed(f"{name}.{f.name}", value, hints[f.name], problems)
    if len(problems) > found:
        return None
    known = keys(record)
    return record(**values, extra={key: value for key, value in data.items() if key not in known})


def _typed(name: str, value: Any, hint: Any, problems: list[str]) -> Any:
    """A conforming JSON value as its field holds it: floats as floats, nested records parsed (runs of explanations)."""
    if hint == list[float]:
        return [float(item) for item in value]
    item_hint = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
    if dataclasses.is_dataclass(item_hint):
        return [_parse_section(f"{name}[{i}]", item_hint, item, problems) for i, item in enumerate(value)]
    return value


@dataclass(frozen=True)
class Manifest:
    """A whole manifest. Build it in code, or from a parsed file with `from_json` (which refuses a bad one)."""

    model: ModelInfo
    corpus: CorpusInfo
    harvest: HarvestInfo
    format_version: str = fmt.FORMAT_VERSION
    explanations: ExplanationsInfo | None = None
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
        explanations = None
        if data.get(EXPLANATIONS) is not None:
            explanations = _parse_section(EXPLANATIONS, ExplanationsInfo, data[EXPLANATIONS], problems)
        if problems:
            raise ManifestError(problems)
        known = {*SECTIONS, EXPLANATIONS, "format_version"}
        extra = {key: value for key, value in data.items() if key not in known}
        manifest = cls(**sections, format_version=version, explanations=explanations, extra=extra)
        problems = manifest.problems()
        if problems:
            raise ManifestError(problems)
        return manifest

    def to_json(self) -> dict[str, Any]:
        """The JSON object to write: every key, plus the extra keys it was read with."""
        sections = {name: _record_json(getattr(self, name)) for name in SECTIONS}
        written = {"format_version": self.format_version, **sections}
        if self.explanations is not None:
            written[EXPLANATIONS] = _record_json(self.explanations)
        return written | self.extra

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
        return problems + self._explanation_problems()

    def _explanation_problems(self) -> list[str]:
        if self.explanations is None:
            return []
        if _parse_version(self.format_version) < _parse_version(fmt.EXPLANATIONS_FORMAT_VERSION):
            return [f"section {EXPLANATIONS!r} needs format_version {fmt.EXPLANATIONS_FORMAT_VERSION} or later"]
        stray = [layer for layer in self.explanations.layers if layer not in self.harvest.layers]
        return [f"{EXPLANATIONS}.layers {stray} are not layers of harvest.layers"] if stray else []

    @property
    def explanation_layers(self) -> list[int]:
        """Layers with an explanations file (format 1.1); [] for a dataset without any."""
        return sorted(self.explanations.layers) if self.explanations else []

    def with_explanation_run(self, layers: list[int], run: ExplanationRun) -> Manifest:
        """This manifest declaring format 1.1, listing `layers` as explained too and recording one more run."""
        before = self.explanations or ExplanationsInfo(layers=[], runs=[])
        version = max(self.format_version, fmt.EXPLANATIONS_FORMAT_VERSION, key=_parse_version)
        explanations = dataclasses.replace(
            before, layers=sorted(set(before.layers) | set(layers)), runs=[*before.runs, run]
        )
        return dataclasses.replace(self, format_version=version, explanations=explanations)

    @property
    def adds_to_format(self) -> bool:
        """A newer minor version of the known major only adds: extra columns are expected, not errors."""
        return _parse_version(self.format_version) > _parse_version(fmt.NEWEST_FORMAT_VERSION)


def _record_json(record: Any) -> dict[str, Any]:
    """One record as JSON: its keys (nested records too), then the extra keys it was read with."""
    def value(item: Any) -> Any:
        if isinstance(item, list):
            return [value(element) for element in item]
        return _record_json(item) if dataclasses.is_dataclass(item) else item

    return {key: value(getattr(record, key)) for key in keys(type(record))} | record.extra
