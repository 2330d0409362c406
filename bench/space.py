"""Benchmark the Space on a GPT-2-XL-sized synthetic store (48 layers x 6400 neurons = 307,200 neurons).

Measures, against baselines run in the same process:
- neuron page latency (server side: ranged read + HTML, explanations included) vs. reading the neuron from the whole
  layer file;
- search latency (prebuilt index) vs. a vectorised scan of every neuron table;
- explanations (synthetic, format 1.1: two explainers, 80% and 40% of the neurons): the index build with and without
  its explanation half, search by explanation words and sorting by score vs. a vectorised regex scan of every
  explanations table;
- cold start of `python app.py` to the first page served through gradio_client, and the server's RSS;
- concurrent gradio_client users for a bounded time: requests, errors, p50/p95.

Usage: python bench/space.py [--store DIR] [--users 50] [--duration 60]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # as app.py does, before pyarrow loads

import numpy as np
import psutil
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub_sync import format as fmt  # noqa: E402
from hub_sync.synthetic import write_synthetic_dataset, write_synthetic_explanations  # noqa: E402
from space.explanation_search import WORD_SPLIT, ExplainedLayer, ExplanationIndex  # noqa: E402
from space.search import SearchIndex  # noqa: E402
from space.sources import open_sources  # noqa: E402
from space.views import neuron_view, search_view  # noqa: E402

N_LAYERS, D_MLP, WINDOW, TOP_K, RANDOM_K, D_VOCAB = 48, 6400, 64, 20, 10, 50257
TARGETS = {
    "page p50 ms": 30, "search p50 ms": 100, "explanation search p50 ms": 100, "cold start s": 10, "RSS MB": 1024,
}
EXTRA_WORDS = 5000  # the explanations' vocabulary beyond the real words: w0..w4999 (some are also peak tokens)


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def ensure_store(store: Path) -> Path:
    """Write the store once; later runs reuse it (its manifest is written last)."""
    if (store / fmt.MANIFEST_FILE).exists():
        return store
    started = time.perf_counter()
    write_synthetic_dataset(
        store,
        n_layers=N_LAYERS,
        d_mlp=D_MLP,
        window=WINDOW,
        top_k=TOP_K,
        random_k=RANDOM_K,
        d_vocab=D_VOCAB,
        name="synthetic/gpt2-xl-sized",
        share_layer_content=True,
    )
    print(f"wrote store in {time.perf_counter() - started:.0f} s")
    return store


def ensure_explanations(store: Path) -> Path:
    """Add the synthetic explanations once (the manifest then declares format 1.1)."""
    if (store / fmt.explanations_path(0)).exists():
        return store
    started = time.perf_counter()
    write_synthetic_explanations(store, extra_words=EXTRA_WORDS)
    print(f"wrote explanations in {time.perf_counter() - started:.0f} s")
    return store


def percentiles(samples_s: list[float]) -> tuple[float, float]:
    ordered = sorted(samples_s)
    return 1000 * statistics.median(ordered), 1000 * ordered[int(0.95 * (len(ordered) - 1))]


def timed(fn, calls: list[tuple]) -> list[float]:
    samples = []
    for args in calls:
        started = time.perf_counter()
        fn(*args)
        samples.append(time.perf_counter() - started)
    return samples


def naive_neuron_read(store: Path, layer: int, neuron: int) -> None:
    """Baseline: what a reader without row-group seeking does: read the whole layer, filter."""
    table = pq.read_table(store / fmt.examples_path(layer))
    table.filter(pc.equal(table.column("neuron"), neuron))


def naive_search(catalog, keyword: str) -> None:
    """Baseline: scan every neuron table's peak tokens for the keyword (vectorised, no index)."""
    key = keyword.strip().lower()
    for dataset in catalog.models.values():
        for layer in dataset.layers:
            peaks = dataset.neurons(layer).column("peak_tokens").combine_chunks()
            flat = pc.utf8_lower(pc.utf8_trim_whitespace(pc.list_flatten(peaks)))
            parents = pc.list_parent_indices(peaks)
            pc.unique(pc.filter(parents, pc.equal(flat, key)))


def naive_explanation_search(catalog, word: str) -> None:
    """Baseline: scan every explanations table for the word (vectorised regex over lower-cased text, no index)."""
    pattern = f"(^|{WORD_SPLIT}){re.escape(word)}($|{WORD_SPLIT})"
    for dataset in catalog.models.values():
        for layer in dataset.explanation_layers:
            table = dataset.explanations(layer)
            found = pc.match_substring_regex(pc.utf8_lower(table.column("explanation")), pattern)
            pc.unique(table.column("neuron").filter(pc.fill_null(found, False)))


def explanations(catalog, rng: random.Random) -> dict[str, float]:
    """The index build with and without explanations (tables already in memory), and searches that use them."""
    started = time.perf_counter()
    index = SearchIndex(catalog.models)
    whole_s = time.perf_counter() - started
    dataset = next(iter(catalog.models.values()))
    tables = {layer: dataset.explanations(layer) for layer in dataset.explanation_layers}
    # one model whose layers 0..47 hold D_MLP rows each: a neuron's search row is layer * D_MLP + neuron
    rows = {layer: table.column("neuron").to_numpy() + np.int32(layer * D_MLP) for layer, table in tables.items()}
    layers = [ExplainedLayer(table, rows[layer]) for layer, table in tables.items()]
    started = time.perf_counter()
    ExplanationIndex(layers, index.size)
    half_s = time.perf_counter() - started
    print(
        f"search index over {index.size:,} neurons and {index.explanations.size:,} explanations: {whole_s:.2f} s, "
        f"of which the explanation half {half_s:.2f} s (peak tokens alone: {whole_s - half_s:.2f} s, "
        f"x{whole_s / max(whole_s - half_s, 1e-9):.2f} with explanations)"
    )
    words = [(f"w{rng.randrange(EXTRA_WORDS)}",) for _ in range(60)]
    words += [("dog",), ("colour*",), ("closing brackets",)] * 10
    search = timed(lambda keyword: search_view(catalog, keyword, None, None, None, "max"), words)
    naive = timed(lambda keyword: naive_explanation_search(catalog, keyword.rstrip("*")), words[:10])
    keywords = ("", "dog", f"w{rng.randrange(EXTRA_WORDS)}")
    sorts = [(sort, keyword) for sort in fmt.EXPLANATION_SCORES for keyword in keywords]
    by_score = timed(lambda sort, keyword: search_view(catalog, keyword, None, None, None, sort), sorts * 4)
    search_p50, search_p95 = percentiles(search)
    sort_p50, sort_p95 = percentiles(by_score)
    print(
        f"search by explanation words: p50 {search_p50:.1f} ms, p95 {search_p95:.1f} ms over {len(search)} keywords "
        f"(baseline regex scan p50 {percentiles(naive)[0]:.0f} ms: x{percentiles(naive)[0] / search_p50:.1f} faster)"
    )
    print(f"sorted by a score (no keyword, a word, a synthetic word): p50 {sort_p50:.1f} ms, p95 {sort_p95:.1f} ms")
    return {"explanation search p50 ms": search_p50}


def in_process(store: Path, rng: random.Random) -> dict[str, float]:
    started = time.perf_counter()
    catalog = open_sources([str(store)])
    open_s = time.perf_counter() - started
    index_size = catalog.index.size
    index_s = time.perf_counter() - started - open_s
    model = catalog.model_names[0]
    neurons = [(rng.randrange(N_LAYERS), rng.randrange(D_MLP)) for _ in range(300)]
    page = timed(lambda layer, neuron: neuron_view(catalog, model, layer, neuron), neurons)
    naive_page = timed(lambda layer, neuron: naive_neuron_read(store, layer, neuron), neurons[:10])
    keywords = [(f" w{rng.randrange(1, D_VOCAB)}",) for _ in range(100)] + [("",)] * 10
    search = timed(lambda keyword: search_view(catalog, keyword, None, None, None, "max"), keywords)
    naive = timed(lambda keyword: naive_search(catalog, keyword), keywords[:10])
    page_p50, page_p95 = percentiles(page)
    search_p50, search_p95 = percentiles(search)
    print(
        f"open (manifests): {open_s:.2f} s; then in the background, 48 neuron tables + search index over "
        f"{index_size:,} neurons: {index_s:.2f} s"
    )
    print(
        f"neuron page: p50 {page_p50:.1f} ms, p95 {page_p95:.1f} ms over {len(page)} random neurons "
        f"(baseline whole-layer read p50 {percentiles(naive_page)[0]:.0f} ms: "
        f"x{percentiles(naive_page)[0] / page_p50:.0f} faster)"
    )
    print(
        f"search: p50 {search_p50:.1f} ms, p95 {search_p95:.1f} ms over {len(search)} keywords "
        f"(baseline scan p50 {percentiles(naive)[0]:.0f} ms: x{percentiles(naive)[0] / search_p50:.1f} faster)"
    )
    return {"page p50 ms": page_p50, "search p50 ms": search_p50, **explanations(catalog, rng)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(store: Path) -> tuple[subprocess.Popen, str, float]:
    """`python app.py` on the store; returns when a first page came back through gradio_client."""
    from gradio_client import Client

    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--source", str(store), "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"},
    )
    url = f"http://127.0.0.1:{port}/"
    while True:
        if process.poll() is not None:
            raise SystemExit(f"app.py exited with {process.returncode}")
        try:
            Client(url, verbose=False).predict("synthetic/gpt2-xl-sized", 47, 6399, api_name="/neuron")
            return process, url, time.perf_counter() - started
        except Exception:  # noqa: BLE001 - the server is not up yet: connection refused, or config not served
            time.sleep(0.1)


def load_test(url: str, users: int, duration: float, rng: random.Random) -> dict[str, float]:
    """`users` gradio_client clients in threads, each calling /neuron (9 in 10) or /search until time is up."""
    from gradio_client import Client

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + duration

    def user(seed: int) -> None:
        local = random.Random(seed)
        try:
            client = Client(url, verbose=False)
        except Exception as error:  # noqa: BLE001 - counted: a user that could not connect is an error
            with lock:
                errors.append(f"connect: {error}")
            return
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                if local.random() < 0.9:
                    client.predict(
                        "synthetic/gpt2-xl-sized", local.randrange(N_LAYERS), local.randrange(D_MLP), api_name="/neuron"
                    )
                else:
                    client.predict(f" w{local.randrange(1, D_VOCAB)}", [], 0, N_LAYERS - 1, "max", api_name="/search")
            except Exception as error:  # noqa: BLE001 - counted and reported, the load test goes on
                with lock:
                    errors.append(str(error)[:200])
                continue
            with lock:
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=user, args=(rng.randrange(1 << 30),)) for _ in range(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    p50, p95 = percentiles(latencies) if latencies else (float("nan"), float("nan"))
    print(
        f"{users} concurrent gradio_client users for {duration:.0f} s: {len(latencies)} requests "
        f"({len(latencies) / duration:.1f}/s), {len(errors)} errors, p50 {p50:.0f} ms, p95 {p95:.0f} ms"
    )
    for error in sorted(set(errors))[:5]:
        print(f"  error: {error}")
    return {"errors": len(errors)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=ROOT / "cache" / "bench-gpt2-xl-sized")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    store = ensure_explanations(ensure_store(args.store))
    rng = random.Random(0)
    results = in_process(store, rng)
    process, url, cold_s = start_app(store)
    try:
        results["cold start s"] = cold_s
        rss_first = psutil.Process(process.pid).memory_info().rss / 2**20
        print(f"cold start (python app.py -> first /neuron answered): {cold_s:.1f} s; server RSS {rss_first:.0f} MB")
        results.update(load_test(url, args.users, args.duration, rng))
        results["RSS MB"] = psutil.Process(process.pid).memory_info().rss / 2**20
        print(f"server RSS after the load test: {results['RSS MB']:.0f} MB")
    finally:
        process.terminate()
        process.wait(timeout=30)
    print(
        "targets:",
        ", ".join(
            f"{name} {results[name]:.1f} (<= {limit}: {'ok' if results[name] <= limit else 'MISSED'})"
            for name, limit in TARGETS.items()
        ),
    )


if __name__ == "__main__":
    main()
