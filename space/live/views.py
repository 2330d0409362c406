"""What each live view computes, independent of Gradio: activations on a text, the neurons that fire most on it,
the neurons that separate two lists of texts, and a residual-stream probe over them.

Each view returns (notice HTML, body HTML, values): bad input, a model that cannot load and lists too
small to trust give a notice and empty values, never an exception.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from harvest.models import LoadedModel
from hub_sync.format import MLP_HOOK, RESIDUAL_HOOK
from hub_sync.reader import DatasetError, NeuronDataset
from space.links import NeuronRef, Neurons, optional_int, resolve, resolve_among
from space.live.forward import ActivationCache, Progress, pooled_activations
from space.live.model import LiveModels, LiveUnavailable
from space.live.probe import MIN_PER_CLASS, TRUSTED_SAMPLES, ProbeDataError, probe
from space.live.render import finder_html, live_tokens_html, probe_plot_svg, top_neurons_html
from space.live.stats import (
    DIRECTIONS,
    descending_order,
    layer_summary,
    relative_to_dataset,
    separation,
    separation_order,
    text_peaks,
)
from space.live.texts import TextError, encode_lists, encode_text, token_cap, truncation_notices
from space.render import ColourScale, message_html
from space.sources import Catalog

DEFAULT_COUNT = 20
MAX_COUNT = 100
FINDER_MIN_PER_SIDE = 2
FINDER_COARSE_PER_SIDE = 5
UNBALANCED_RATIO = 3
FINDER_COLUMNS = 10
View = tuple[str, str, dict]
NOT_READY = "The model of the dataset being built is not ready yet (it is being prepared): try again in a minute."
SCALED_TO_TEXT = (
    "The dataset is still being built: colours are scaled to this text's own largest values, not to the neuron's "
    "range over the dataset."
)
RANKED_ON_TEXT = (
    "The dataset is still being built: neurons are ranked by their activation on this text; the ranking relative "
    "to each neuron's dataset max comes when it is ready."
)


@dataclass
class LiveContext:
    """What the live views share: the served datasets, their models (loaded once), recent texts' activations."""

    catalog: Catalog
    models: LiveModels = field(default_factory=LiveModels)
    cache: ActivationCache = field(default_factory=ActivationCache)


def _failed(messages: list[str]) -> View:
    return message_html(messages), "", {}


def guarded(view: Callable[..., View]) -> Callable[..., View]:
    """Turn the expected failures of a live view into a notice: the app keeps serving."""

    def run(*args, **kwargs) -> View:
        try:
            return view(*args, **kwargs)
        except (TextError, LiveUnavailable, ProbeDataError) as error:
            return _failed([str(error)])
        except DatasetError as error:
            return _failed([f"The dataset cannot be read: {error}"])

    run.__name__, run.__doc__ = view.__name__, view.__doc__
    return run


def bounded_count(value: object, label: str, default: int, maximum: int, doing: str, messages: list[str]) -> int:
    """A count from a form: a whole number in 1..maximum, else the nearest one (the default when blank or not a
    whole number), saying so."""
    number = optional_int(value, label, f"{doing} {default}", messages)
    if number is None:
        return default
    count = max(1, min(maximum, number))
    if count != number:
        messages.append(f"{label}: {number} is not in 1..{maximum}; {doing} {count}.")
    return count


def _count(value: object, messages: list[str]) -> int:
    """How many neurons to list."""
    return bounded_count(value, "Neurons to list", DEFAULT_COUNT, MAX_COUNT, "listing", messages)


@dataclass(frozen=True)
class LiveTarget:
    """Where every live view starts: the neuron (or model) asked for, its dataset (None while the model runs alone,
    before its dataset is built), its model loaded, and the messages saying how the request was resolved (an
    unknown model, layer or neuron falls back like a link does)."""

    ref: NeuronRef
    dataset: NeuronDataset | None
    model: LoadedModel
    messages: list[str]

    @property
    def neurons(self) -> Neurons:
        """What the view may name: the dataset's harvested layers, or every layer of the model alone."""
        return self.dataset or self.model


def open_target(context: LiveContext, model: object, layer: object = None, neuron: object = None) -> LiveTarget:
    if not context.catalog.models:
        return _model_alone(context, model, layer, neuron)
    ref, messages = resolve(context.catalog, model, layer, neuron)
    dataset = context.catalog.models[ref.model]
    return LiveTarget(ref, dataset, context.models.get(dataset), messages)


def _model_alone(context: LiveContext, model: object, layer: object, neuron: object) -> LiveTarget:
    """No dataset is served yet: the model of the one being built (the embedded default on first launch), once its
    build has it ready."""
    ready = context.catalog.models_being_built()
    if not ready:
        raise LiveUnavailable(NOT_READY if context.catalog.still_building else "No dataset is available.")
    loaded = context.models.load(*ready[0])
    ref, messages = resolve_among({loaded.name: loaded}, model, layer, neuron)
    return LiveTarget(ref, None, loaded, messages)


@guarded
def activations_view(context: LiveContext, model: object, layer: object, neuron: object, text: str | None) -> View:
    """The neuron's activation at every token of the text, coloured on its dataset scale."""
    target = open_target(context, model, layer, neuron)
    ref, dataset, loaded, messages = target.ref, target.dataset, target.model, target.messages
    encoded = encode_text(loaded, text or "")
    messages += truncation_notices([encoded], "Text", token_cap(loaded))
    layers = target.neurons.layers
    per_layer = context.cache.activations(loaded, encoded.token_ids, layers)
    values = per_layer[layers.index(ref.layer), :, ref.neuron].numpy()
    if dataset is None:
        scale, scale_of = ColourScale.of_values(values[1:]), "this text's"  # BOS left out, as in a dataset's scale
        messages.append(SCALED_TO_TEXT)
    else:
        examples = dataset.neuron_examples(ref.layer, ref.neuron)
        scale, scale_of = ColourScale.of_examples(examples), "this neuron's dataset"
    result = {
        "model": ref.model,
        "layer": ref.layer,
        "neuron": ref.neuron,
        "token_ids": encoded.token_ids,
        "tokens": encoded.tokens,
        "activations": [float(value) for value in values],
        "scale": {"positive": scale.positive, "negative": scale.negative},
        "truncated": encoded.truncated,
    }
    return message_html(messages), live_tokens_html(ref, encoded.tokens, values, scale, scale_of), result


def dataset_maxima(dataset: NeuronDataset) -> np.ndarray:
    """[layers, d_mlp] each neuron's max over the dataset's corpus."""
    return np.stack([dataset.neurons(layer).column("max").to_numpy() for layer in dataset.layers])


@guarded
def top_neurons_view(context: LiveContext, model: object, text: str | None, count: object = DEFAULT_COUNT) -> View:
    """The neurons of every harvested layer that fire most on the text: by max, and by max over the dataset max."""
    target = open_target(context, model)
    ref, dataset, loaded, messages = target.ref, target.dataset, target.model, target.messages
    encoded = encode_text(loaded, text or "")
    messages += truncation_notices([encoded], "Text", token_cap(loaded))
    if len(encoded.token_ids) < 2:
        raise TextError("The text gives no tokens.")
    layers = target.neurons.layers
    peaks = text_peaks(context.cache.activations(loaded, encoded.token_ids, layers))
    maxima, positions = peaks.values.numpy(), peaks.positions.numpy()
    dataset_max = dataset_maxima(dataset) if dataset else None
    relative = relative_to_dataset(maxima, dataset_max) if dataset else None

    def hits(order: list[tuple[int, int]]) -> list[dict]:
        return [
            {
                "layer": layers[row],
                "neuron": neuron,
                "max": float(maxima[row, neuron]),
                "position": int(positions[row, neuron]),
                "token": encoded.tokens[positions[row, neuron]],
                "dataset_max": None if dataset_max is None else float(dataset_max[row, neuron]),
                "relative": None if relative is None else float(relative[row, neuron]),
            }
            for row, neuron in order
        ]

    wanted = _count(count, messages)
    if dataset is None:
        messages.append(RANKED_ON_TEXT)
    result = {
        "model": ref.model,
        "token_ids": encoded.token_ids,
        "by_max": hits(descending_order(maxima, wanted)),
        "by_relative": [] if relative is None else hits(descending_order(relative, wanted)),
    }
    by_relative = None if dataset is None else result["by_relative"]
    return message_html(messages), top_neurons_html(ref.model, result["by_max"], by_relative), result


def _balance_notices(labels: np.ndarray, minimum: int, kind: str) -> list[str]:
    """Refuse lists below `minimum` samples a side; say when the sides are lopsided."""
    n_with, n_without = int(labels.sum()), int((~labels).sum())
    if min(n_with, n_without) < minimum:
        raise TextError(
            f"Too few texts for the {kind}: {n_with} samples with the feature and {n_without} without; "
            f"give at least {minimum} on each side (one text per line)."
        )
    if max(n_with, n_without) > UNBALANCED_RATIO * min(n_with, n_without):
        return [
            f"The lists are unbalanced ({n_with} samples with the feature, {n_without} without): "
            f"add texts to the shorter list for a fairer comparison."
        ]
    return []


def json_safe(rows: list[dict]) -> list[dict]:
    """Rows with infinite effect sizes as None: JSON has no infinity."""
    return [
        {key: None if isinstance(value, float) and not np.isfinite(value) else value for key, value in row.items()}
        for row in rows
    ]


@guarded
def find_view(
    context: LiveContext,
    model: object,
    with_feature: str | None,
    without_feature: str | None,
    direction: str = DIRECTIONS[0],
    count: object = DEFAULT_COUNT,
    progress: Progress | None = None,
) -> View:
    """Neurons ranked by how well their max activation separates samples with the feature from samples without."""
    target = open_target(context, model)
    ref, loaded, messages, layers = target.ref, target.model, target.messages, target.neurons.layers
    if direction not in DIRECTIONS:
        messages.append(f"Unknown direction {direction!r}; using {DIRECTIONS[0]!r}.")
        direction = DIRECTIONS[0]
    texts, samples = encode_lists(loaded, with_feature, without_feature, messages)
    labels = np.array([sample.label for sample in samples], dtype=bool)
    messages += _balance_notices(labels, FINDER_MIN_PER_SIDE, "finder")
    if min(labels.sum(), (~labels).sum()) < FINDER_COARSE_PER_SIDE:
        messages.append(
            f"With fewer than {FINDER_COARSE_PER_SIDE} samples on a side, "
            "AUROC moves in coarse steps: add texts to trust the ranking."
        )
    hooks = [MLP_HOOK.format(layer=layer) for layer in layers]
    values = pooled_activations(loaded, texts, samples, hooks, "max", progress)
    stats = separation(values, labels)
    top = [
        {
            "layer": layers[row],
            "neuron": neuron,
            "auroc": float(stats.auroc[row, neuron]),
            "cohens_d": float(stats.cohens_d[row, neuron]),
            "mean_with": float(stats.mean_with[row, neuron]),
            "mean_without": float(stats.mean_without[row, neuron]),
            "values": values[row, :, neuron].tolist(),
        }
        for row, neuron in separation_order(stats, direction, _count(count, messages))
    ]
    layers = [
        {
            "layer": layers[row["row"]],
            "neuron": row["best_neuron"],
            "auroc": float(stats.auroc[row["row"], row["best_neuron"]]),
            "cohens_d": float(stats.cohens_d[row["row"], row["best_neuron"]]),
            "strong": row["strong"],
        }
        for row in layer_summary(stats, direction)
    ]
    sample_rows = [
        {"description": sample.description, "label": sample.label, "text": texts[sample.text_index].text}
        for sample in samples
    ]
    result = {
        "model": ref.model,
        "direction": direction,
        "samples": sample_rows,
        "top": json_safe(top),
        "layers": json_safe(layers),
    }
    return message_html(messages), finder_html(ref.model, layers, top[:FINDER_COLUMNS], sample_rows), result


@guarded
def probe_view(
    context: LiveContext,
    model: object,
    with_feature: str | None,
    without_feature: str | None,
    progress: Progress | None = None,
) -> View:
    """Cross-validated accuracy, layer by layer, of a logistic-regression probe on the mean residual stream."""
    target = open_target(context, model)
    ref, loaded, messages = target.ref, target.model, target.messages
    texts, samples = encode_lists(loaded, with_feature, without_feature, messages)
    labels = np.array([sample.label for sample in samples], dtype=bool)
    messages += _balance_notices(labels, MIN_PER_CLASS, "probe")
    layers = list(range(loaded.n_layers))
    hooks = [RESIDUAL_HOOK.format(layer=layer) for layer in layers]
    features = pooled_activations(loaded, texts, samples, hooks, "mean", progress)
    if progress is not None:
        progress(None, desc=f"Fitting the probes: {len(layers)} layers, {len(samples)} samples")
    outcome = probe(features, labels)
    if outcome.n_samples < TRUSTED_SAMPLES:
        messages.append(
            f"Only {outcome.n_samples} samples: each accuracy is uncertain by about ±{2 * outcome.standard_error:.2f} "
            f"(two standard errors). Add texts (at least {TRUSTED_SAMPLES // 2} per list) "
            "before trusting differences between layers."
        )
    best = int(np.argmax(outcome.accuracy))
    margin = outcome.accuracy[best] - outcome.shuffled_max[best]
    verdict = (
        f"Best: layer {layers[best]} at {outcome.accuracy[best]:.3f} held-out accuracy "
        f"({outcome.folds}-fold cross-validation; shuffled labels reach "
        f"{outcome.shuffled_mean[best]:.3f} on average there, "
        f"chance is {outcome.chance:.3f})."
    )
    if margin <= 2 * outcome.standard_error:
        verdict += " That is within noise of the shuffled-label baseline: no evidence the feature is linearly readable."
    messages.append(verdict)
    result = {
        "model": ref.model,
        "layers": layers,
        "accuracy": outcome.accuracy.tolist(),
        "shuffled_mean": outcome.shuffled_mean.tolist(),
        "shuffled_max": outcome.shuffled_max.tolist(),
        "chance": outcome.chance,
        "folds": outcome.folds,
        "n_samples": outcome.n_samples,
        "n_with": int(labels.sum()),
        "n_without": int((~labels).sum()),
        "trusted": outcome.n_samples >= TRUSTED_SAMPLES,
    }
    return (
        message_html(messages),
        probe_plot_svg(layers, result["accuracy"], result["shuffled_mean"], result["shuffled_max"], outcome.chance),
        result,
    )
