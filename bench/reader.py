"""Benchmark the lazy reader on a synthetic store the size of GPT-2 XL, locally and through the loopback Hub.

48 layers x 6400 neurons, 20 top + 10 random examples of 64 tokens per neuron (the 48 example files share
one synthetic layer's content). Measures open time (the manifest and every layer file's footer, checked against
it), neuron page (`examples`) latency p50/p95, requests and bytes per page, and RSS, against a baseline measured in
the same run: reading the whole layer file with pyarrow and filtering it to the neuron. Targets: p50 <= 30 ms
local, one GET per page, RSS <= 1 GB.

    python bench/reader.py [--store cache/bench-gpt2-xl] [--pages 400] [--hub-pages 200]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ["HF_HUB_DISABLE_XET"] = "1"

from hub_sync import format as fmt  # noqa: E402
from hub_sync.reader import open_dataset  # noqa: E402
from hub_sync.synthetic import write_synthetic_dataset  # noqa: E402
from testkit.hub_server import HubServer  # noqa: E402

N_LAYERS, D_MLP, WINDOW, TOP_K, RANDOM_K = 48, 6400, 64, 20, 10
REPO_ID = "bench/gpt2-xl-synthetic"
TARGET_P50_MS, TARGET_RSS_MB = 30.0, 1024.0


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _write_store(store: Path) -> None:
    write_synthetic_dataset(
        store,
        n_layers=N_LAYERS,
        d_mlp=D_MLP,
        window=WINDOW,
        top_k=TOP_K,
        random_k=RANDOM_K,
        bottom_k=0,
        d_vocab=50257,
        name="synthetic/gpt2-xl-sized",
        share_layer_content=True,
    )


def ensure_store(store: Path) -> None:
    """Generate the store once (in a child process, so its memory does not count toward this one's RSS)."""
    if (store / fmt.MANIFEST_FILE).exists():
        return
    print(f"generating the synthetic store in {store} (once) ...", flush=True)
    started = time.perf_counter()
    child = multiprocessing.get_context("spawn").Process(target=_write_store, args=(store,))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"generating the store failed (exit code {child.exitcode})")
    print(f"generated in {time.perf_counter() - started:.0f} s", flush=True)


def percentiles_ms(seconds: list[float]) -> tuple[float, float]:
    p50, p95 = np.percentile(np.array(seconds) * 1000, [50, 95])
    return float(p50), float(p95)


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def timed_pages(ds, pages: list[tuple[int, int]]) -> list[float]:
    times = []
    for layer, neuron in pages:
        started = time.perf_counter()
        ds.examples(layer, neuron)
        times.append(time.perf_counter() - started)
    return times


def random_pages(count: int, seed: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    return list(zip(rng.integers(0, N_LAYERS, count).tolist(), rng.integers(0, D_MLP, count).tolist(), strict=True))


def bench_local(store: Path, n_pages: int) -> dict:
    started = time.perf_counter()
    ds = open_dataset(store)
    open_s = time.perf_counter() - started
    first = timed_pages(ds, [(layer, 0) for layer in ds.layers])  # each layer's first page opens its file
    pages = timed_pages(ds, random_pages(n_pages, seed=0))
    return {"open_s": open_s, "first_ms": percentiles_ms(first), "page_ms": percentiles_ms(pages)}


def bench_hub(store: Path, n_pages: int, storage: Path) -> dict:
    with HubServer(storage) as hub:
        hub.add_folder(REPO_ID, store)
        hub.clear_log()
        started = time.perf_counter()
        ds = open_dataset(REPO_ID, endpoint=hub.url)
        open_s = time.perf_counter() - started
        open_log = hub.requests()
        hub.clear_log()
        first = timed_pages(ds, [(layer, 0) for layer in ds.layers])
        first_log = hub.requests()
        hub.clear_log()
        times, requests, sent = [], [], []
        for page in random_pages(n_pages, seed=1):
            times += timed_pages(ds, [page])
            log = hub.requests()
            hub.clear_log()
            requests.append(len(log))
            sent.append(sum(entry.bytes_sent for entry in log))
    return {
        "open_s": open_s,
        "open_requests": len(open_log),
        "open_bytes": sum(entry.bytes_sent for entry in open_log),
        "first_ms": percentiles_ms(first),
        "first_requests": len(first_log) / N_LAYERS,
        "first_bytes": sum(entry.bytes_sent for entry in first_log) / N_LAYERS,
        "page_ms": percentiles_ms(times),
        "requests": (min(requests), max(requests)),
        "page_bytes": (float(np.median(sent)), max(sent)),
    }


def bench_baseline(store: Path, n_pages: int) -> dict:
    """Without the reader: read a whole layer file with pyarrow, then keep one neuron's rows."""
    times = []
    for layer, neuron in random_pages(n_pages, seed=2):
        started = time.perf_counter()
        table = pq.read_table(store / fmt.examples_path(layer))
        table.filter(pc.equal(table.column("neuron"), neuron))
        times.append(time.perf_counter() - started)
    return {"page_ms": percentiles_ms(times), "file_bytes": (store / fmt.examples_path(0)).stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=REPO_ROOT / "cache" / "bench-gpt2-xl")
    parser.add_argument("--pages", type=int, default=400, help="local pages to time")
    parser.add_argument("--hub-pages", type=int, default=200, help="pages to time through the loopback Hub")
    parser.add_argument("--baseline-pages", type=int, default=10, help="whole-layer reads to time")
    args = parser.parse_args()
    ensure_store(args.store)
    groups = pq.ParquetFile(args.store / fmt.examples_path(0)).metadata
    group_bytes = np.median(
        [
            sum(groups.row_group(g).column(c).total_compressed_size for c in range(groups.num_columns))
            for g in range(groups.num_row_groups)
        ]
    )

    local = bench_local(args.store, args.pages)
    with tempfile.TemporaryDirectory(prefix="bench-hub-") as storage:
        hub = bench_hub(args.store, args.hub_pages, Path(storage))
    reader_rss = rss_mb()
    baseline = bench_baseline(args.store, args.baseline_pages)

    print(f"\n## Reader benchmark: synthetic GPT-2 XL-sized store ({N_LAYERS} layers x {D_MLP} neurons, "
          f"{TOP_K} top + {RANDOM_K} random examples of {WINDOW} tokens)\n")
    print(f"Machine: {machine()}. Examples file: {baseline['file_bytes'] / 2**20:.1f} MB per layer, "
          f"{groups.num_row_groups} row groups of ~{group_bytes / 2**10:.0f} KB compressed.\n")
    print("| measure | local folder | loopback Hub (HTTP) |")
    print("|---|---|---|")
    print(f"| open_dataset (manifest, {2 * N_LAYERS} footers checked) | {local['open_s'] * 1000:.1f} ms "
          f"| {hub['open_s'] * 1000:.1f} ms ({hub['open_requests']} requests, {hub['open_bytes'] / 2**10:.0f} KB) |")
    print(f"| first page of a layer p50 / p95 | {local['first_ms'][0]:.1f} / {local['first_ms'][1]:.1f} ms "
          f"| {hub['first_ms'][0]:.1f} / {hub['first_ms'][1]:.1f} ms ({hub['first_requests']:.1f} requests, "
          f"{hub['first_bytes'] / 2**10:.0f} KB) |")
    print(f"| neuron page p50 / p95 | {local['page_ms'][0]:.2f} / {local['page_ms'][1]:.2f} ms "
          f"| {hub['page_ms'][0]:.2f} / {hub['page_ms'][1]:.2f} ms |")
    print(f"| requests per page (min / max) | - | {hub['requests'][0]} / {hub['requests'][1]} |")
    print(f"| bytes per page (median / max) | - "
          f"| {hub['page_bytes'][0] / 2**10:.0f} / {hub['page_bytes'][1] / 2**10:.0f} KB |")
    print(f"| baseline: whole layer file read + filter, p50 | {baseline['page_ms'][0]:.0f} ms "
          f"| {baseline['file_bytes'] / 2**10:.0f} KB per page |")
    print(f"| ratio baseline / reader (p50 time; bytes) | {baseline['page_ms'][0] / local['page_ms'][0]:.0f}x faster "
          f"| {baseline['file_bytes'] / hub['page_bytes'][0]:.0f}x fewer bytes |")
    print(f"\nRSS after {args.pages + args.hub_pages} pages over all {N_LAYERS} layers, local and Hub "
          f"(loopback server in the same process): {reader_rss:.0f} MB.")
    verdicts = {
        f"p50 local <= {TARGET_P50_MS:.0f} ms": local["page_ms"][0] <= TARGET_P50_MS,
        "one GET per page": hub["requests"] == (1, 1),
        f"RSS <= {TARGET_RSS_MB:.0f} MB": reader_rss <= TARGET_RSS_MB,
    }
    print("Targets: " + ", ".join(f"{name}: {'met' if met else 'MISSED'}" for name, met in verdicts.items()))


if __name__ == "__main__":
    main()
