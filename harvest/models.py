"""Load any model TransformerLens 4 can run, with what the dataset needs to know about it.

MODEL may be a local Hugging Face folder, a local native TransformerLens folder (config JSON +
weights + tokenizer), a legacy TransformerLens name (solu-1l, gelu-2l...) or a Hugging Face id.
A local folder may carry `neuroscope_model.json` ({"name": ..., "notes": [...]}) to say what the
weights really are (for example a dequantised GGUF export of a Hub model); without it the model is named
after its folder, and the folder's path is recorded as its source.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from hub_sync import format as fmt
from hub_sync.manifest import ModelInfo

NATIVE_CONFIG_FILE = "transformer_lens_config.json"
NATIVE_WEIGHTS_FILE = "model.safetensors"
PROVENANCE_FILE = "neuroscope_model.json"

MODEL_HELP = (
    "MODEL must be one of: a Hugging Face model id (e.g. gpt2, EleutherAI/pythia-70m; needs the Hub or its cache), "
    "a local Hugging Face folder (config.json + weights + tokenizer, as written by save_pretrained), "
    f"a local native TransformerLens folder ({NATIVE_CONFIG_FILE} + {NATIVE_WEIGHTS_FILE} + tokenizer), "
    "or a legacy TransformerLens name (solu-1l, gelu-2l, attn-only-1l...)."
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says what MODEL accepts."""


@dataclass
class LoadedModel:
    bridge: object
    tokenizer: object
    spec: str
    loader: str
    name: str
    n_layers: int
    d_model: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    act_fn: str
    gated: bool
    dtype: str
    notes: list[str] = field(default_factory=list)

    @property
    def layers(self) -> list[int]:
        """Every layer: what a view of the model alone (no dataset yet) may name."""
        return list(range(self.n_layers))

    @property
    def bos_id(self) -> int:
        """The tokenizer's BOS, or its EOS where it has none (TransformerLens's convention)."""
        bos = self.tokenizer.bos_token_id
        return int(bos if bos is not None else self.eos_id)

    @property
    def eos_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise ModelLoadError(f"the tokenizer of {self.spec} has no EOS token to join documents with")
        return int(eos)

    def token_strings(self) -> np.ndarray:
        """Every token id decoded alone, so datasets render without the tokenizer."""
        size = max(self.d_vocab, len(self.tokenizer))
        strings = self.tokenizer.batch_decode([[i] for i in range(size)], clean_up_tokenization_spaces=False)
        return np.array(strings, dtype=object)

    def manifest_entry(self) -> ModelInfo:
        """What the dataset says about this model: its name, shape and how it was loaded (`spec` is its source)."""
        return ModelInfo(
            name=self.name,
            n_layers=self.n_layers,
            d_mlp=self.d_mlp,
            loader=self.loader,
            source=self.spec,
            d_model=self.d_model,
            d_vocab=self.d_vocab,
            n_ctx=self.n_ctx,
            act_fn=self.act_fn,
            gated=self.gated,
            hook=fmt.MLP_HOOK,
            dtype=self.dtype,
            transformer_lens_version=version("transformer-lens"),
            notes=self.notes,
        )


def _load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def _boot_native(spec: str, device: str, dtype: torch.dtype):
    from safetensors.torch import load_file
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    folder = Path(spec)
    config = json.loads((folder / NATIVE_CONFIG_FILE).read_text())
    tokenizer = _load_tokenizer(folder)
    bridge = TransformerBridge.boot_native(TransformerBridgeConfig(**config), tokenizer=tokenizer, device=device)
    bridge.load_state_dict(load_file(str(folder / NATIVE_WEIGHTS_FILE)))
    return bridge.to(dtype), tokenizer, "transformer_lens.boot_native"


def _boot_hf(spec: str, device: str, dtype: torch.dtype):
    from transformer_lens.model_bridge import TransformerBridge

    tokenizer = _load_tokenizer(Path(spec)) if Path(spec).is_dir() else None
    bridge = TransformerBridge.boot_transformers(spec, device=device, dtype=dtype, tokenizer=tokenizer)
    return bridge, bridge.tokenizer, "transformer_lens.boot_transformers"


def _boot_legacy(spec: str, device: str, dtype: torch.dtype):
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_tl_legacy(spec, device=device, dtype=dtype)
    return bridge, bridge.tokenizer, "transformer_lens.boot_tl_legacy"


def _official_name(spec: str) -> str:
    """TransformerLens's short aliases (solu-1l, gpt2-small...) to the Hub repo they name."""
    from importlib.resources import files

    table = files("transformer_lens.tools.model_registry") / "data" / "model_aliases.json"
    aliases = json.loads(table.read_text())["aliases"]
    for official, names in aliases.items():
        if spec in names:
            return official
    return spec


def _booter(spec: str):
    folder = Path(spec)
    if folder.is_dir():
        if (folder / NATIVE_CONFIG_FILE).is_file():
            return _boot_native, spec
        if (folder / "config.json").is_file():
            return _boot_hf, spec
        raise ModelLoadError(f"{spec} is a folder but holds neither config.json nor {NATIVE_CONFIG_FILE}. {MODEL_HELP}")
    if os.path.exists(spec):
        raise ModelLoadError(f"{spec} is a file, not a model folder. {MODEL_HELP}")
    from transformer_lens.model_bridge.sources.tl_legacy import TL_LEGACY_PREFIXES

    official = _official_name(spec)
    return (_boot_legacy if official.startswith(TL_LEGACY_PREFIXES) else _boot_hf), official


def _provenance(spec: str) -> dict:
    path = Path(spec) / PROVENANCE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _own_name(spec: str, target: str, provenance: dict) -> str:
    """The model's name, never a path: the provenance file's name, else a local folder's own name, else the Hub
    id or legacy name it was loaded as (TransformerLens aliases resolved)."""
    if "name" in provenance:
        return str(provenance["name"])
    return Path(os.path.abspath(spec)).name if Path(spec).is_dir() else target


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device} was asked for but no CUDA device is available")
    return device


def load_model(spec: str, device: str = "cpu", dtype: str = "float32") -> LoadedModel:
    """Boot MODEL with TransformerLens; every failure becomes a ModelLoadError that names what MODEL accepts."""
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    boot, target = _booter(spec)
    try:
        bridge, tokenizer, loader = boot(target, resolve_device(device), DTYPES[dtype])
    except ModelLoadError:
        raise
    except Exception as error:  # loaders raise anything from OSError to KeyError
        raise ModelLoadError(f"could not load model {spec!r}: {type(error).__name__}: {error}. {MODEL_HELP}") from error
    bridge.eval()
    cfg = bridge.cfg
    provenance = _provenance(spec)
    return LoadedModel(
        bridge=bridge,
        tokenizer=tokenizer,
        spec=spec,
        loader=loader,
        name=_own_name(spec, target, provenance),
        n_layers=int(cfg.n_layers),
        d_model=int(cfg.d_model),
        d_mlp=int(cfg.d_mlp),
        d_vocab=int(cfg.d_vocab),
        n_ctx=int(cfg.n_ctx),
        act_fn=str(cfg.act_fn),
        gated=bool(getattr(cfg, "gated_mlp", False)),
        dtype=dtype,
        notes=list(provenance.get("notes", [])),
    )
