"""Which neuron a link or a request names: parsing, validation with a fallback, and moving between neurons.

Links are user input: an unknown model, layer or neuron, or a malformed number, gives a message and
the nearest valid neuron instead of an error.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote, urlencode

from space.sources import Catalog

LINK_KEYS = ("model", "layer", "neuron", "q")
MAX_DIGITS = 18
WHOLE_NUMBER_TEXT = re.compile(rf"[+-]?[0-9]{{1,{MAX_DIGITS}}}(?:\.0*)?")  # [0-9], not \d: ASCII digits only
SHOWN_CHARACTERS = 40
BEING_BUILT = (
    "No dataset is served yet: it is being built (the banner says how far). Its neurons appear here when it is "
    "done; meanwhile the Live, Effect and Finder & probe tabs run its model on your text."
)


@dataclass(frozen=True)
class NeuronRef:
    """One neuron of one served model."""

    model: str
    layer: int
    neuron: int

    def query(self) -> str:
        """The query string of a deep link to this neuron."""
        return urlencode({"model": self.model, "layer": self.layer, "neuron": self.neuron})

    def short_path(self) -> str:
        """The short-link path `/n/<model>/<layer>/<neuron>` (model names keep their slash)."""
        return f"/n/{quote(self.model, safe='/')}/{self.layer}/{self.neuron}"


def parse_int(value: object) -> int | None:
    """The one number rule of links, query parameters, short links and the API: a whole number, given as an int,
    a float with no fraction (3.0) or ASCII decimal text of at most MAX_DIGITS digits ("3", "-2", "3.0");
    None for anything else (3.5, "³", "①", "1e3", a 5,000-digit string), so the caller says so: never rounded."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and WHOLE_NUMBER_TEXT.fullmatch(value.strip()):
        return int(value.strip().split(".")[0])
    return None


def shown(value: object) -> str:
    """A user's value quoted for a message, cut short: a 100 KB value must not become a 100 KB notice."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARACTERS else text[:SHOWN_CHARACTERS] + "…"


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def optional_int(value: object, label: str, consequence: str, messages: list[str]) -> int | None:
    """parse_int for a field that may be left empty: None when blank, None and a message when not a whole number."""
    number = parse_int(value)
    if number is None and not _blank(value):
        messages.append(f"{label} {shown(value)} is not a whole number; {consequence}.")
    return number


def _refusal(label: str, value: object, number: int | None, valid: str) -> str:
    reason = "is not a whole number" if number is None else f"is not in {valid}"
    return f"{label} {shown(value)} {reason}"


class Neurons(Protocol):
    """What a link can name neurons of: a dataset, or a model alone (before its dataset is built)."""

    @property
    def name(self) -> str: ...

    @property
    def layers(self) -> list[int]: ...

    @property
    def d_mlp(self) -> int: ...


def resolve(catalog: Catalog, model: object, layer: object, neuron: object) -> tuple[NeuronRef | None, list[str]]:
    """The neuron named, or a valid one with messages saying what was wrong; None if no model is served."""
    ref, messages = resolve_among(catalog.models, model, layer, neuron)
    if ref is None and catalog.still_building:
        return None, [BEING_BUILT]
    return ref, messages


def resolve_among(
    models: Mapping[str, Neurons], model: object, layer: object, neuron: object
) -> tuple[NeuronRef | None, list[str]]:
    """`resolve` over any named models' neurons."""
    names = list(models)
    if not names:
        return None, ["No dataset is available."]
    messages = []
    model_name = model if isinstance(model, str) and model in models else names[0]
    if not _blank(model) and model_name != model:
        messages.append(f"Unknown model {shown(model)}; showing {model_name!r}.")
    dataset = models[model_name]
    layer_number = parse_int(layer)
    if layer_number not in dataset.layers:
        if not _blank(layer):
            refusal = _refusal("Layer", layer, layer_number, f"{model_name!r} (layers {dataset.layers})")
            messages.append(f"{refusal}; showing layer {dataset.layers[0]}.")
        layer_number = dataset.layers[0]
    neuron_number = parse_int(neuron)
    if neuron_number is None or not 0 <= neuron_number < dataset.d_mlp:
        if not _blank(neuron):
            refusal = _refusal("Neuron", neuron, neuron_number, f"0..{dataset.d_mlp - 1}")
            messages.append(f"{refusal}; showing neuron 0.")
        neuron_number = 0
    return NeuronRef(model_name, layer_number, neuron_number), messages


def resolve_query(catalog: Catalog, params: Mapping[str, str]) -> tuple[NeuronRef | None, list[str]]:
    """The neuron a deep link's query parameters name."""
    return resolve(catalog, params.get("model"), params.get("layer"), params.get("neuron"))


def step(catalog: Catalog, ref: NeuronRef, delta: int) -> NeuronRef:
    """The neuron `delta` places away in (layer, neuron) order, crossing layers and wrapping around the model."""
    dataset = catalog.models[ref.model]
    position = dataset.layers.index(ref.layer) * dataset.d_mlp + ref.neuron + delta
    position %= len(dataset.layers) * dataset.d_mlp
    layer_index, neuron = divmod(position, dataset.d_mlp)
    return NeuronRef(ref.model, dataset.layers[layer_index], neuron)


def random_neuron(catalog: Catalog, model: str, rng: random.Random) -> NeuronRef:
    """A uniformly random neuron of the model."""
    dataset = catalog.models[model]
    return NeuronRef(model, rng.choice(dataset.layers), rng.randrange(dataset.d_mlp))
