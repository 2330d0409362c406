"""What the Effect tab does to which neurons: neuron references (`L12N313, L5N7`) and an intervention
(`zero`, `mean`, `clamp 5.0`, `clamp 2x max`), parsed strictly and resolved to one value per neuron.

Both are user input: anything that does not parse, or names a layer the dataset did not harvest or a
neuron past its width, is refused with a message that says what to write instead (TextError), never guessed.
Layer and neuron numbers follow the project's one number rule (space.links.parse_int).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from hub_sync.reader import NeuronDataset
from space.links import NeuronRef, Neurons, parse_int, shown
from space.live.texts import TextError

MAX_NEURONS = 64
MAX_CLAMP = 10_000.0  # larger values overflow half-precision models' residual streams
MAX_MULTIPLE = 100.0
DEFAULT_INTERVENTION = "zero"
REF = re.compile(r"L(?P<layer>[^N]+)N(?P<neuron>.+)", re.IGNORECASE)
SEPARATORS = re.compile(r"[\s,;]+")
NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[+-]?[0-9]{1,3})?"  # [0-9]: ASCII digits only
CLAMP = re.compile(rf"clamp\s+(?P<value>{NUMBER})(?:\s*(?P<times>[x×*])\s*max)?", re.IGNORECASE)
INTERVENTION_HELP = (
    "zero, mean (the neuron's dataset mean), clamp VALUE (e.g. clamp 5.0) or clamp Kx max (e.g. clamp 2x max)"
)


@dataclass(frozen=True)
class Intervention:
    """What each neuron's activation is set to: `zero`, its dataset `mean`, or `clamp` to `value` (times its
    dataset max when `of_max`)."""

    kind: str
    value: float = 0.0
    of_max: bool = False

    def __str__(self) -> str:
        if self.kind != "clamp":
            return self.kind
        return f"clamp {self.value:g}x max" if self.of_max else f"clamp {self.value:g}"


@dataclass(frozen=True)
class Clamp:
    """One neuron's activation set to `value` at every position after BOS."""

    layer: int
    neuron: int
    value: float

    @property
    def ref(self) -> str:
        return f"L{self.layer}N{self.neuron}"


def _ref_problem(item: str, dataset: Neurons) -> str | tuple[int, int]:
    """(layer, neuron) of one reference, or what is wrong with it."""
    match = REF.fullmatch(item)
    if match is None:
        return f"{shown(item)} is not a neuron reference of the form L<layer>N<neuron> (e.g. L3N42)"
    layer, neuron = parse_int(match["layer"]), parse_int(match["neuron"])
    if layer is None or neuron is None:
        part = "layer" if layer is None else "neuron"
        return f"{shown(item)}: its {part} {shown(match[part])} is not a whole number"
    if layer not in dataset.layers:
        return f"{shown(item)}: layer {layer} is not a harvested layer of {dataset.name!r} (layers {dataset.layers})"
    if not 0 <= neuron < dataset.d_mlp:
        return f"{shown(item)}: neuron {neuron} is not in 0..{dataset.d_mlp - 1}"
    return layer, neuron


def parse_neurons(text: str | None, dataset: Neurons, current: NeuronRef) -> list[tuple[int, int]]:
    """The (layer, neuron) pairs a reference list names, in order, each once; the current neuron when blank."""
    items = [item for item in SEPARATORS.split(text or "") if item]
    if not items:
        return [(current.layer, current.neuron)]
    if len(items) > MAX_NEURONS:
        raise TextError(f"{len(items)} neuron references: at most {MAX_NEURONS} per run.")
    parsed = [_ref_problem(item, dataset) for item in items]
    problems = [problem for problem in parsed if isinstance(problem, str)]
    if problems:
        raise TextError("Neurons: " + "; ".join(problems) + ".")
    return list(dict.fromkeys(parsed))


def _finite(text: str, limit: float, what: str) -> float:
    value = float(text)
    if not math.isfinite(value) or abs(value) > limit:
        raise TextError(f"Intervention: {what} {shown(text)} is out of range (at most ±{limit:g}).")
    return value


def parse_intervention(text: str | None) -> Intervention:
    """`zero` (also when blank), `mean`, `clamp VALUE` or `clamp Kx max`; case and spacing do not matter."""
    plain = " ".join((text or "").split()).lower() or DEFAULT_INTERVENTION
    if plain in ("zero", "mean"):
        return Intervention(plain)
    match = CLAMP.fullmatch(plain)
    if match is None:
        raise TextError(f"Intervention {shown(text)} is not one of: {INTERVENTION_HELP}.")
    if match["times"]:
        return Intervention("clamp", _finite(match["value"], MAX_MULTIPLE, "multiple"), of_max=True)
    return Intervention("clamp", _finite(match["value"], MAX_CLAMP, "value"))


def clamps_for(
    dataset: NeuronDataset | None, neurons: list[tuple[int, int]], intervention: Intervention
) -> list[Clamp]:
    """Each neuron's value under the intervention; `mean` and `x max` read the neuron's dataset stats, so they wait
    for a dataset (None: the model runs alone while its dataset is built)."""
    if dataset is None and (intervention.kind == "mean" or intervention.of_max):
        raise TextError(
            f"{intervention} reads each neuron's dataset statistics: it works once the dataset is built; "
            "zero and clamp VALUE work now."
        )
    clamps = []
    for layer, neuron in neurons:
        if intervention.kind == "zero":
            value = 0.0
        elif intervention.kind == "mean":
            value = dataset.neuron_stats(layer, neuron).mean
        elif intervention.of_max:
            value = intervention.value * dataset.neuron_stats(layer, neuron).max
        else:
            value = intervention.value
        clamps.append(Clamp(layer, neuron, float(value)))
    return clamps
