"""The live model behind a dataset: loaded from its manifest once per process, shared by every request (and, while
the embedded default builds, the build's model before its dataset exists).

The manifest's `model.source` is the MODEL spec the harvest loaded; the same loader (harvest.models)
boots it here, in the harvest's dtype, so live values are the harvest's values. A model that cannot
be loaded is remembered with its reason: the live tabs say why, browsing keeps working.

ZeroGPU, as the `spaces` package expects it: models are loaded in the serving process, outside every
`spaces.GPU` function, and before the server starts (`LiveModels.preload`); a GPU call runs in a worker
forked from that process, which inherits them (and `spaces` moves their weights to the GPU there). So
a GPU function gets a model's key, never the model (its arguments are pickled to the worker), and
finds the model in RESIDENT.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from harvest.models import LoadedModel, ModelLoadError, load_model
from hub_sync.reader import NeuronDataset

PATH_PREFIXES = ("/", "./", "../", "~")
RESIDENT: dict[str, LoadedModel] = {}  # every model this process loaded, by model_key: what a GPU worker inherits


class LiveUnavailable(RuntimeError):
    """This dataset's model cannot run here; the message says why, for the user."""


def gpu(duration: int) -> Callable:
    """`spaces.GPU(duration=...)` where the `spaces` package is importable (a no-op off ZeroGPU Spaces)."""
    try:
        import spaces
    except ImportError:
        return lambda function: function
    return spaces.GPU(duration=duration)


def on_zero_gpu() -> bool:
    """Whether this process runs on ZeroGPU hardware (the `spaces` package reads SPACES_ZERO_GPU)."""
    try:
        from spaces.config import Config
    except ImportError:
        return False
    return bool(Config.zero_gpu)


def zero_gpu_startup() -> None:
    """Run `spaces`' ZeroGPU start-up: pack the weights loaded so far for the workers, and report the GPU functions
    to the scheduler. `spaces` hooks it into `gr.Blocks.launch`, which an app mounted on FastAPI never calls."""
    import spaces.zero

    spaces.zero.startup()


def prepare_zero_gpu(models: LiveModels, datasets: Iterable[NeuronDataset]) -> None:
    """On ZeroGPU, as `spaces` expects: every model loaded before the server starts, then its start-up. Elsewhere
    nothing: models load on first use."""
    if on_zero_gpu():
        models.preload(datasets)
        zero_gpu_startup()


def spec_key(spec: str, dtype: str) -> str:
    """How a GPU function names a model, and LiveModels its load: MODEL spec and dtype."""
    return f"{spec}|{dtype}"


def model_key(model: LoadedModel) -> str:
    return spec_key(model.spec, model.dtype)


def keep_resident(model: LoadedModel) -> LoadedModel:
    """Register a loaded model for the GPU functions (before any GPU worker forks, on ZeroGPU)."""
    RESIDENT[model_key(model)] = model
    return model


def resident(key: str) -> LoadedModel:
    """The model a GPU function runs: loaded in the serving process before this worker was forked."""
    try:
        return RESIDENT[key]
    except KeyError:
        raise LiveUnavailable(
            f"the model {key.split('|')[0]!r} was loaded after the GPU worker started: on ZeroGPU every model is "
            "loaded before the server starts"
        ) from None


def model_spec(dataset: NeuronDataset) -> str:
    """The MODEL spec the harvest used, or LiveUnavailable when the manifest names none that could load here."""
    source = dataset.manifest.model.source
    if not source or not source.strip():
        raise LiveUnavailable(
            f"the dataset of {dataset.name!r} names no model to load (its manifest has no model.source)"
        )
    if source.startswith(PATH_PREFIXES) and not Path(source).expanduser().exists():
        raise LiveUnavailable(
            f"the model of {dataset.name!r} was harvested from the local folder {source!r}, "
            "which is not on this machine"
        )
    return source


def check_fit(dataset: NeuronDataset, model: LoadedModel) -> None:
    """Refuse a model whose shape is not the one the dataset was harvested from."""
    expected = dataset.manifest.model
    if (model.n_layers, model.d_mlp) != (expected.n_layers, expected.d_mlp):
        raise LiveUnavailable(
            f"the model loaded from {model.spec!r} has {model.n_layers} layers of {model.d_mlp} neurons, "
            f"but the dataset of {dataset.name!r} was harvested from {expected.n_layers} layers of {expected.d_mlp}"
        )


@dataclass
class _Slot:
    """One model's load: a lock so concurrent first requests load it once, then the model or why it failed."""

    lock: threading.Lock
    model: LoadedModel | None = None
    failure: str | None = None


class LiveModels:
    """Loaded models by MODEL spec and dtype, each loaded at most once per process (failures included): datasets of
    one model share it, and a build's live tabs hand it on to the dataset they wait for."""

    def __init__(self, device: str = "auto", loader: Callable[[str, str, str], LoadedModel] = load_model):
        self.device = device
        self.loader = loader
        self._slots: dict[str, _Slot] = {}
        self._slots_lock = threading.Lock()

    def _loaded(self, spec: str, dtype: str) -> _Slot:
        """The slot of this model, loaded on first use."""
        with self._slots_lock:
            slot = self._slots.setdefault(spec_key(spec, dtype), _Slot(threading.Lock()))
        with slot.lock:
            if slot.model is None and slot.failure is None:
                try:
                    slot.model = keep_resident(self.loader(spec, self.device, dtype))
                except ModelLoadError as error:
                    slot.failure = str(error)
        return slot

    def load(self, spec: str, dtype: str) -> LoadedModel:
        """The model itself, with no dataset (a build's, before its dataset exists); LiveUnavailable when it cannot
        be loaded."""
        slot = self._loaded(spec, dtype)
        if slot.failure is not None:
            raise LiveUnavailable(f"the model cannot be loaded: {slot.failure}")
        return slot.model

    def get(self, dataset: NeuronDataset) -> LoadedModel:
        """The dataset's model, loading it on first use; LiveUnavailable with the reason when it cannot run."""
        slot = self._loaded(model_spec(dataset), dataset.manifest.model.dtype)
        if slot.failure is not None:
            raise LiveUnavailable(f"the model of {dataset.name!r} cannot be loaded: {slot.failure}")
        check_fit(dataset, slot.model)
        return slot.model

    def preload(self, datasets: Iterable[NeuronDataset]) -> None:
        """Load every dataset's model now (a failure is remembered, as on first use): on ZeroGPU, before the server
        starts, so that every GPU worker inherits them."""
        for dataset in datasets:
            try:
                self.get(dataset)
            except LiveUnavailable:
                continue

    def known_failure(self, dataset: NeuronDataset) -> str | None:
        """Why the live tabs are off for this dataset, from the manifest or an earlier load; None if not known to
        fail."""
        try:
            slot = self._slots.get(spec_key(model_spec(dataset), dataset.manifest.model.dtype))
            if slot and slot.model is not None:
                check_fit(dataset, slot.model)
        except LiveUnavailable as error:
            return str(error)
        return f"the model of {dataset.name!r} cannot be loaded: {slot.failure}" if slot and slot.failure else None
