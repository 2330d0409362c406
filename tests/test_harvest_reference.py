"""Stored activations equal what Hugging Face transformers computes at each MLP's output projection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from harvest.config import HarvestConfig
from harvest.corpus import CorpusSpec
from harvest.run import harvest
from hub_sync import format as fmt
from testkit.tiny_models import hf_gpt2, hf_llama


def _output_projections(model) -> list[torch.nn.Module]:
    """The module whose input is blocks.{l}.mlp.hook_post, per layer, in Hugging Face's own naming."""
    if hasattr(model, "transformer"):
        return [block.mlp.c_proj for block in model.transformer.h]
    return [layer.mlp.down_proj for layer in model.model.layers]


@torch.inference_mode()
def reference_activations(folder: Path, windows: np.ndarray, layers: list[int]) -> dict[int, np.ndarray]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    captured: dict[int, torch.Tensor] = {}
    projections = _output_projections(model)
    handles = [
        projections[layer].register_forward_hook(
            lambda module, inputs, output, layer=layer: captured.__setitem__(layer, inputs[0].detach().clone())
        )
        for layer in layers
    ]
    model(torch.from_numpy(windows))
    for handle in handles:
        handle.remove()
    return {layer: captured[layer].float().numpy() for layer in layers}


def assert_matches_transformers(model_folder: Path, dataset: Path, layers: list[int]) -> int:
    """Every stored activation of every example of `layers` against transformers; returns values checked."""
    checked = 0
    for layer in layers:
        table = pq.read_table(dataset / fmt.examples_path(layer)).to_pydict()
        windows = np.array(table["token_ids"], dtype=np.int64)
        unique, inverse = np.unique(windows, axis=0, return_inverse=True)
        reference = reference_activations(model_folder, unique, [layer])[layer]
        stored = np.array(table["activations"], dtype=np.float32)
        expected = reference[inverse.reshape(-1), :, np.array(table["neuron"])]
        np.testing.assert_allclose(stored, expected, atol=1e-3, rtol=2e-3)
        checked += stored.size
    return checked


@pytest.mark.parametrize("build", [hf_gpt2, hf_llama], ids=["gpt2", "llama-gated"])
def test_tiny_hf_models_match_transformers(build, tmp_path):
    folder = build(tmp_path / "model")
    config = HarvestConfig(
        model=str(folder), corpus=CorpusSpec("python-docs"), out=tmp_path / "dataset", tokens=40 * 32, window=32,
        batch_size=8, top_k=3, random_k=2, progress=False,
    )
    harvest(config)
    manifest = (tmp_path / "dataset" / fmt.MANIFEST_FILE).read_text()
    assert ('"gated": true' in manifest) == (build is hf_llama)
    assert assert_matches_transformers(folder, tmp_path / "dataset", [0, 1]) > 0
    if build is hf_llama:
        bottom = pq.read_table(tmp_path / "dataset" / fmt.examples_path(0), filters=[("kind", "=", "bottom")])
        assert bottom.num_rows == 3 * 48, "gated MLPs keep bottom-k examples by default"
        assert min(bottom.column("score").to_pylist()) < 0


@pytest.mark.slow
def test_smollm2_offline_matches_transformers(smollm2_folder, tmp_path):
    config = HarvestConfig(
        model=str(smollm2_folder), corpus=CorpusSpec("python-docs"), out=tmp_path / "dataset", tokens=6 * 48,
        window=48, batch_size=6, top_k=2, random_k=1, layers=[0, 29], progress=False,
    )
    harvest(config)
    manifest = (tmp_path / "dataset" / fmt.MANIFEST_FILE).read_text()
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in manifest and "dequantised" in manifest
    assert assert_matches_transformers(smollm2_folder, tmp_path / "dataset", [0, 29]) > 1536 * 5 * 48
