"""Harvest throughput against a bare forward pass, against a naive harvest, and peak memory as tokens grow.

    python bench/harvest.py [--d-model 256] [--layers 4] [--windows 2048] [--rounds 5] [--device cpu]

In one run, on the same model, batches and device:
1. harvest throughput / bare forward throughput (the same forward, `stop_at_layer` included, without hooks);
   also reported against the full forward with logits;
2. speed-up over a naive harvest that caches every activation and then selects per neuron in numpy;
3. peak RSS of a harvest subprocess at 1x and 10x the tokens (the state is O(neurons x k x window)).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from harvest.batches import WHOLE  # noqa: E402
from harvest.config import HarvestConfig  # noqa: E402
from harvest.corpus import CorpusSpec, WindowStream, iter_documents  # noqa: E402
from harvest.models import load_model  # noqa: E402
from harvest.plan import RunPlan  # noqa: E402
from harvest.run import harvest, process_batch  # noqa: E402
from harvest.state import HarvestState  # noqa: E402
from hub_sync.format import MLP_HOOK  # noqa: E402
from testkit.tiny_models import native_model  # noqa: E402

TOP_K, RANDOM_K = 20, 10


def machine() -> str:
    cpu = next((line.split(":")[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {torch.get_num_threads()} torch threads{gpu}, torch {torch.__version__}"


def corpus_batches(model, window: int, n_windows: int, batch_size: int) -> list[np.ndarray]:
    documents = iter_documents(CorpusSpec("python-docs"))
    stream = WindowStream(documents, model.tokenizer, window, model.bos_id, model.eos_id)
    return list(stream.batches(batch_size, max_windows=n_windows))


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.inference_mode()
def bare_forward(model, batches: list[np.ndarray], device: str, stop_at_layer: int | None) -> float:
    start = time.perf_counter()
    for batch in batches:
        tokens = torch.from_numpy(batch).to(device)
        if stop_at_layer is None:
            model.bridge(tokens)
        else:
            model.bridge.run_with_hooks(tokens, fwd_hooks=[], stop_at_layer=stop_at_layer, return_type=None)
    synchronize(device)
    return time.perf_counter() - start


def harvest_config(model, args, out: Path) -> HarvestConfig:
    return HarvestConfig(model=model.spec, corpus=CorpusSpec("python-docs"), out=out, tokens=args.windows * args.window,
                         window=args.window, batch_size=args.batch_size, top_k=TOP_K, random_k=RANDOM_K,
                         device=args.device, progress=False, checkpoint_every=1e9)


def streaming_harvest(model, args, batches: list[np.ndarray], out: Path) -> float:
    """The per-batch work alone (forward with hooks and every state update), without the final write."""
    state = HarvestState(RunPlan.for_model(harvest_config(model, args, out), model), WHOLE)
    start = time.perf_counter()
    first_window = 0
    for batch in batches:
        process_batch(state, batch, first_window, docs=0)
        first_window += len(batch)
    synchronize(args.device)
    return time.perf_counter() - start


def full_harvest(model, args, out: Path) -> float:
    start = time.perf_counter()
    harvest(harvest_config(model, args, out), model)
    synchronize(args.device)
    return time.perf_counter() - start


@torch.inference_mode()
def naive_harvest(model, batches: list[np.ndarray], device: str) -> float:
    """What one writes first: cache every activation, then loop over neurons with numpy."""
    start = time.perf_counter()
    cached: dict[int, list[np.ndarray]] = {layer: [] for layer in range(model.n_layers)}
    names = {MLP_HOOK.format(layer=layer): layer for layer in range(model.n_layers)}
    for batch in batches:
        _, cache = model.bridge.run_with_cache(torch.from_numpy(batch).to(device), names_filter=lambda n: n in names)
        for name, layer in names.items():
            cached[layer].append(cache[name].float().cpu().numpy())
    rng = np.random.default_rng(0)
    for parts in cached.values():
        acts = np.concatenate(parts)[:, 1:, :]
        for neuron in range(acts.shape[2]):
            values = acts[:, :, neuron]
            scores = values.max(axis=1)
            top = np.argsort(-scores, kind="stable")[:TOP_K]
            firing = np.flatnonzero(scores > 0)
            sample = rng.choice(firing, size=min(RANDOM_K, len(firing)), replace=False) if len(firing) else firing
            kept = values[np.concatenate([top, sample])]
            np.histogram(values, bins=76)
            _ = (kept, values.mean(), (values > 0).mean())
    return time.perf_counter() - start


# VmHWM is the peak RSS of this process image; ru_maxrss would carry over the parent's peak through fork + exec.
PEAK_RSS_CHILD = (
    "import sys; from harvest.__main__ import main; code = main(sys.argv[1:]); "
    "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM'))); sys.exit(code)"
)


def peak_rss_child(args, windows: int) -> float:
    """Peak RSS in MB of a harvest in a fresh process, so runs don't share allocations."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-c", PEAK_RSS_CHILD, "--model", args.model_folder, "--out", out + "/d", "--tokens",
                   str(windows * args.window), "--window", str(args.window), "--batch-size", str(args.batch_size),
                   "--top-k", str(TOP_K), "--random-k", str(RANDOM_K), "--device", args.device, "--no-progress"]
        result = subprocess.run(command, check=True, capture_output=True, text=True)
    return int(result.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--windows", type=int, default=2048, help="windows per run (262,144 tokens at window 128)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5, help="alternating bare / harvest rounds")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-harvest-"))
    folder = native_model(work / "model", n_layers=args.layers, d_model=args.d_model, d_mlp=4 * args.d_model,
                          n_ctx=max(args.window, 128), act_fn="gelu")
    args.model_folder = str(folder)
    model = load_model(str(folder), args.device)
    batches = corpus_batches(model, args.window, args.windows, args.batch_size)
    tokens = sum(batch.size for batch in batches)
    bare_forward(model, batches[:2], args.device, model.n_layers)
    streaming_harvest(model, args, batches[:2], work / "warm-up")  # compiles the CPU histogram kernel

    # Bare and harvest runs alternate, so a shared machine's drift hits both; the ratio is the median round's.
    rounds = [(bare_forward(model, batches, args.device, model.n_layers),
               streaming_harvest(model, args, batches, work / f"stream{i}")) for i in range(args.rounds)]
    bare_stop, streamed = sorted(rounds, key=lambda pair: pair[0] / pair[1])[len(rounds) // 2]
    bare_full = min(bare_forward(model, batches, args.device, None) for _ in range(2))
    harvested = full_harvest(model, args, work / "full")
    naive = naive_harvest(model, batches, args.device)

    print(f"machine: {machine()}")
    print(f"model: {args.layers} layers, d_model {args.d_model}, d_mlp {4 * args.d_model}; {tokens} tokens in "
          f"{len(batches)} batches of {args.batch_size} x {args.window}; top {TOP_K}, random {RANDOM_K}")
    print(f"bare forward (same stop_at_layer): {tokens / bare_stop:,.0f} tok/s")
    print(f"bare forward (with logits):        {tokens / bare_full:,.0f} tok/s")
    print(f"harvest, streaming phase:          {tokens / streamed:,.0f} tok/s")
    print(f"harvest, whole run incl. writing:  {tokens / harvested:,.0f} tok/s "
          f"({harvested - streamed:.1f} s fixed cost)")
    print(f"naive harvest (cache all, numpy per neuron): {tokens / naive:,.0f} tok/s")
    print(f"ratio streaming harvest / bare forward (same forward): {bare_stop / streamed:.3f}   (target >= 0.90; "
          f"median of {args.rounds} alternating rounds: {', '.join(f'{b / h:.3f}' for b, h in rounds)})")
    print(f"ratio streaming harvest / bare forward (with logits):  {bare_full / streamed:.3f}")
    print(f"speed-up of the whole harvest over the naive one: {naive / harvested:.1f}x   (target >= 10x; no harvest "
          f"beats a bare forward, so on this device it is at most {naive / bare_stop:.1f}x)")
    if not args.skip_memory:
        small = peak_rss_child(args, args.windows)
        large = peak_rss_child(args, 10 * args.windows)
        print(f"peak RSS: {small:,.0f} MB at {args.windows * args.window} tokens, {large:,.0f} MB at 10x "
              f"({(large / small - 1) * 100:+.1f}%, target within 10%)")


if __name__ == "__main__":
    main()
