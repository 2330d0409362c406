"""The harvest equals a brute-force reference for every neuron of every layer, and datasets reads it back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from harvest.config import HarvestConfig
from harvest.corpus import CorpusSpec
from harvest.models import load_model
from harvest.run import harvest
from hub_sync import format as fmt
from testkit.harvest_oracle import all_activations, reference_neuron, reference_windows
from testkit.tiny_models import native_model

WINDOW = 24
N_WINDOWS = 45
K = (4, 3, 2)
SEED = 7


@pytest.fixture(scope="module", params=["gelu", "relu"])
def harvested(request, tmp_path_factory) -> tuple[Path, object]:
    """A harvest with batch size 4 (so selections cross many batches) and its model."""
    root = tmp_path_factory.mktemp(f"oracle-{request.param}")
    model = load_model(str(native_model(root / "model", n_layers=2, d_mlp=48, act_fn=request.param)), "cpu")
    config = HarvestConfig(
        model=model.spec, corpus=CorpusSpec("python-docs"), out=root / "dataset", tokens=N_WINDOWS * WINDOW,
        window=WINDOW, batch_size=4, top_k=K[0], random_k=K[1], bottom_k=K[2], seed=SEED, progress=False,
    )
    return harvest(config, model), model


def _rows(examples, neuron: int, kind: str) -> dict[str, np.ndarray]:
    mask = (examples["neuron"] == neuron) & (examples["kind"] == kind)
    ordered = np.argsort(examples["rank"][mask])
    return {name: np.asarray(column)[mask][ordered] for name, column in examples.items()}


def test_every_neuron_matches_brute_force(harvested):
    out, model = harvested
    windows = reference_windows(model.tokenizer, "python-docs", WINDOW, N_WINDOWS)
    acts = all_activations(model.bridge, windows, [0, 1])
    for layer in (0, 1):
        table = pq.read_table(out / fmt.examples_path(layer)).to_pydict()
        examples = {name: np.array(values, dtype=object if name in ("token_ids", "tokens", "activations") else None)
                    for name, values in table.items()}
        neurons = pq.read_table(out / fmt.neurons_path(layer)).to_pydict()
        for neuron in range(model.d_mlp):
            reference = reference_neuron(acts[layer], neuron, layer, K, SEED)
            for kind in ("top", "random", "bottom"):
                rows = _rows(examples, neuron, kind)
                expected = getattr(reference, kind)
                assert list(rows["window_index"]) == list(expected), (layer, neuron, kind)
                for row_index, window_index in enumerate(expected):
                    stored = np.array(rows["activations"][row_index], dtype=np.float32)
                    np.testing.assert_allclose(stored, acts[layer][window_index, :, neuron], atol=2e-3, rtol=2e-3)
                    assert list(rows["token_ids"][row_index]) == list(windows[window_index])
                    body = acts[layer][window_index, 1:, neuron]
                    best = body.argmin() if kind == "bottom" else body.argmax()
                    assert rows["max_position"][row_index] == best + 1
                    assert rows["score"][row_index] == pytest.approx(body[best], abs=1e-5)
            if len(reference.random):
                assert all(acts[layer][w, 1:, neuron].max() > 0 for w in reference.random)
            assert neurons["max"][neuron] == pytest.approx(reference.max, abs=1e-5)
            assert neurons["min"][neuron] == pytest.approx(reference.min, abs=1e-5)
            assert neurons["mean"][neuron] == pytest.approx(reference.mean, abs=1e-5)
            assert neurons["density"][neuron] == pytest.approx(reference.density, abs=1e-6)
            assert neurons["n_tokens"][neuron] == N_WINDOWS * (WINDOW - 1)
            assert neurons["histogram"][neuron] == list(reference.histogram)


def test_logit_effects_are_w_out_times_w_u(harvested):
    out, model = harvested
    neurons = pq.read_table(out / fmt.neurons_path(1)).to_pydict()
    effects = (model.bridge.W_out[1] @ model.bridge.W_U).detach().numpy()
    vocab = model.token_strings()
    for neuron in (0, 17, model.d_mlp - 1):
        order = np.argsort(-effects[neuron])
        np.testing.assert_allclose(neurons["logit_top_values"][neuron], effects[neuron][order[:10]], rtol=1e-5)
        assert neurons["logit_top_tokens"][neuron] == [vocab[i] for i in order[:10]]
        np.testing.assert_allclose(neurons["logit_bottom_values"][neuron], effects[neuron][order[::-1][:10]], rtol=1e-5)


def test_load_dataset_returns_exactly_what_was_harvested(harvested, tmp_path):
    from datasets import load_dataset

    out, model = harvested
    layer_1 = load_dataset(str(out), "layer_1", split="train", cache_dir=str(tmp_path))
    stored = pq.read_table(out / fmt.examples_path(1))
    assert layer_1.num_rows == stored.num_rows
    assert layer_1["window_index"] == stored.column("window_index").to_pylist()
    assert layer_1["tokens"] == stored.column("tokens").to_pylist()
    np.testing.assert_array_equal(
        np.array(layer_1["activations"], dtype=np.float32),
        np.array(stored.column("activations").to_pylist(), dtype=np.float32),
    )
    neurons = load_dataset(str(out), "neurons", split="train", cache_dir=str(tmp_path))
    assert neurons.num_rows == 2 * model.d_mlp
    assert sorted(set(neurons["layer"])) == [0, 1]


def test_both_histogram_paths_bin_like_a_search_over_the_edges():
    """The compiled CPU kernel and the tensor version GPUs run count the same bins as a search over the edges,
    on the edges themselves, their float32 neighbours, zeros of both signs and the extremes; BOS is not counted."""
    import torch

    from harvest.selection import Stats, histogram_bins_of_prefixes
    from hub_sync.format import HISTOGRAM_EDGES

    edges = np.array(HISTOGRAM_EDGES, dtype=np.float32)
    neighbours = [np.nextafter(edges, np.float32(np.inf)), np.nextafter(edges, np.float32(-np.inf))]
    extremes = [0.0, -0.0, 1e-45, -1e-45, 1e-30, -1e-30, 3e38, -3e38, np.inf, -np.inf]
    tricky = np.concatenate([edges, *neighbours, extremes]).astype(np.float32)
    rng = np.random.default_rng(0)
    d_mlp, window = 16, 9
    values = np.concatenate([tricky, rng.standard_normal(2000).astype(np.float32) * 10 ** rng.uniform(-4, 3, 2000)])
    body = rng.choice(values, size=(40, window - 1, d_mlp)).astype(np.float32)
    acts = np.concatenate([np.full((40, 1, d_mlp), 5.0, dtype=np.float32), body], axis=1)  # BOS: never counted

    flat = body.transpose(2, 0, 1).reshape(d_mlp, -1).astype(np.float64)
    search = np.where(flat > 0, np.searchsorted(edges, flat, side="right"), np.searchsorted(edges, flat, side="left"))
    expected = np.stack([np.bincount(row, minlength=len(edges) + 1) for row in search])

    table = histogram_bins_of_prefixes("cpu")
    on_cpu = Stats.empty(d_mlp, "cpu")
    on_cpu.add(torch.from_numpy(acts), table)
    as_tensors = Stats.empty(d_mlp, "cpu")._histogram_counts(torch.from_numpy(acts), table)
    np.testing.assert_array_equal(on_cpu.histogram.numpy(), expected)
    np.testing.assert_array_equal(as_tensors.numpy(), expected)
