"""Benchmark the Overview and the search snippets (issue 14) on a synthetic store shaped like the embedded SmolLM2
dataset (30 layers x 1,536 neurons = 46,080 neurons, window 64, 20 top / 10 random / 20 bottom examples).

Measures, against baselines run in the same process:
- the overview's computation (from the neuron tables the search index has already read) against the search index's
  build over the same tables: both happen once per model in the background at start;
- the Overview view (every layer's row, the notable lists, HTML) per request, and its HTML size;
- a search's latency with the top-example snippets against the same search without them (each snippet is one
  ranged read of its neuron's row group).

Usage: python bench/overview.py [--store DIR] [--repeats 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub_sync import format as fmt  # noqa: E402
from hub_sync.synthetic import write_synthetic_dataset  # noqa: E402
from space.overview import Overviews, compute_overview  # noqa: E402
from space.overview_view import ALL_LAYERS, overview_view  # noqa: E402
from space.search import SearchIndex  # noqa: E402
from space.sources import open_sources  # noqa: E402
from space.views import cached_snippet, results_frame, search_view  # noqa: E402

N_LAYERS, D_MLP, WINDOW, TOP_K, RANDOM_K, BOTTOM_K = 30, 1536, 64, 20, 10, 20


def machine() -> str:
    """The machine line bench/space.py prints."""
    spec = importlib.util.spec_from_file_location("bench_space", ROOT / "bench" / "space.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.machine()


def ensure_store(store: Path) -> Path:
    if not (store / fmt.MANIFEST_FILE).exists():
        write_synthetic_dataset(
            store, n_layers=N_LAYERS, d_mlp=D_MLP, window=WINDOW, top_k=TOP_K, random_k=RANDOM_K, bottom_k=BOTTOM_K,
            name="synthetic/smollm2-sized", share_layer_content=True,
        )
    return store


def timed(run, repeats: int) -> float:
    """Median wall time of `repeats` runs, in seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path(tempfile.gettempdir()) / "neuroscope-bench-overview")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    catalog = open_sources([str(ensure_store(args.store))])
    catalog.index_build.result()
    name = catalog.model_names[0]
    dataset = catalog.models[name]
    index_s = timed(lambda: SearchIndex(catalog.models), args.repeats)
    overview_s = timed(lambda: compute_overview(name, dataset), args.repeats)
    overviews = Overviews(catalog)
    overviews.start()
    overviews.future(name).result()
    page = overview_view(overviews, catalog, name, ALL_LAYERS, None)[1]
    view_s = timed(lambda: overview_view(overviews, catalog, name, ALL_LAYERS, None), args.repeats)
    plain_s = timed(lambda: results_frame(catalog.index.search("", None, None, None, "max", 100)), args.repeats)
    def cold_search() -> None:
        cached_snippet.cache_clear()
        search_view(catalog, "", None, None, None, "max")

    snippet_s = timed(cold_search, args.repeats)
    warm_s = timed(lambda: search_view(catalog, "", None, None, None, "max"), args.repeats)
    print(f"Machine: {machine()}; store: {N_LAYERS} layers x {D_MLP} neurons, medians of {args.repeats} runs")
    print("| measure | value | baseline | ratio |")
    print("|---|---|---|---|")
    print(f"| overview computed once per model | {1000 * overview_s:.0f} ms | search index build "
          f"{1000 * index_s:.0f} ms | {overview_s / index_s:.2f} |")
    print(f"| Overview view (all layers), per request | {1000 * view_s:.0f} ms, {len(page) / 1024:.0f} KB HTML | | |")
    print(f"| search, 100 rows, with 25 snippets read | {1000 * snippet_s:.0f} ms | without snippets "
          f"{1000 * plain_s:.0f} ms | {snippet_s / plain_s:.1f} |")
    print(f"| the same search again (snippets kept) | {1000 * warm_s:.0f} ms | without snippets "
          f"{1000 * plain_s:.0f} ms | {warm_s / plain_s:.1f} |")


if __name__ == "__main__":
    main()
