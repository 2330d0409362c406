"""Benchmark the finder and the probe at their caps on SmolLM2-135M: time and peak memory of one run, against a bare
forward pass over the same tokens in the same process.

Two inputs fill the caps (space/live/texts.py: MAX_TEXTS_PER_LIST texts a list, MAX_LIST_TOKENS over both lists):
- most samples: MAX_TEXTS_PER_LIST texts a list, each as long as the token budget allows, the first list's marked
  with `[[...]]`, so the probe fits 3 x MAX_TEXTS_PER_LIST samples (a marked text gives two) - the fit's worst case;
- longest texts: the fewest texts the probe takes (MIN_PER_CLASS a list), as long as the caps allow - the forward
  pass's best case.
Bare forward = `bridge(tokens)` over the same texts in the same batches (right-padded, to logits). Runs of the view
and of the bare pass alternate, `--repeats` times; the table gives medians and the ratio's median.
The measurements run in a fresh process that loads only the model, so its RSS is the model's plus the run's:
"peak RSS" is the highest resident set during the view's runs (VmHWM, reset before them).

On a CPU shared with other work, torch's default of one thread per core stalls (its threads wait for each other
while a neighbour holds a core): `--threads 1` shows how much. The load average is printed before and after.

Usage: python bench/probe.py [--store DIR] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from space.live.probe import MIN_PER_CLASS  # noqa: E402
from space.live.texts import MAX_LIST_TOKENS, MAX_TEXTS_PER_LIST, MAX_TOKENS_PER_TEXT, encode_lists  # noqa: E402

TARGET_SECONDS = 10.0


def bench_live():
    """bench/live.py, for its model export, small harvest, texts and machine line."""
    spec = importlib.util.spec_from_file_location("bench_live", ROOT / "bench" / "live.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def status_kilobytes(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE).group(1))


class PeakResident:
    """The highest resident set while the block runs: Linux's VmHWM, reset at entry (clear_refs 5). No sampling
    thread: a third thread on two cores stalls torch's own two."""

    def __enter__(self) -> PeakResident:
        Path("/proc/self/clear_refs").write_text("5")
        self.before = status_kilobytes("VmRSS") * 1024
        return self

    def __exit__(self, *_) -> None:
        self.peak = status_kilobytes("VmHWM") * 1024


def inputs(tokenizer) -> dict[str, tuple[str, str]]:
    """(with-feature list, without-feature list) for each shape that fills the caps."""
    live = bench_live()
    per_text = MAX_LIST_TOKENS // (2 * MAX_TEXTS_PER_LIST) - 1  # BOS counts toward the budget
    short = live.texts(tokenizer, 2 * MAX_TEXTS_PER_LIST, per_text - 4)  # room for the marks' effect on tokens
    marked = [f"{' '.join(text.split()[:3])} [[{' '.join(text.split()[3:5])}]] {' '.join(text.split()[5:])}"
              for text in short[:MAX_TEXTS_PER_LIST]]
    long_count = MIN_PER_CLASS  # the fewest texts a list may hold for the probe
    long = live.texts(tokenizer, 2 * long_count, min(MAX_TOKENS_PER_TEXT, MAX_LIST_TOKENS // (2 * long_count) - 1))
    return {
        "most samples": ("\n".join(marked), "\n".join(short[MAX_TEXTS_PER_LIST:])),
        "longest texts": ("\n".join(long[:long_count]), "\n".join(long[long_count:])),
    }


@torch.inference_mode()
def bare_forward(model, texts, batch: int = 16) -> None:
    """The model on the same texts, sorted by length and right-padded in batches, as the live views run them."""
    device = next(model.bridge.parameters()).device
    ordered = sorted(texts, key=lambda text: len(text.token_ids))
    for start in range(0, len(ordered), batch):
        group = ordered[start : start + batch]
        tokens = torch.full((len(group), len(group[-1].token_ids)), model.bos_id, dtype=torch.long)
        for row, text in enumerate(group):
            tokens[row, : len(text.token_ids)] = torch.tensor(text.token_ids)
        model.bridge(tokens.to(device))


def measure(dataset: Path, lists: dict[str, list[str]], repeats: int, threads: int | None) -> dict:
    """Run in the measuring process: load the model, then time each view against the bare pass, alternating."""
    from space.live.model import LiveModels
    from space.live.views import LiveContext, find_view, probe_view
    from space.sources import open_sources

    catalog = open_sources([str(dataset)])
    context = LiveContext(catalog, LiveModels(device="cpu"))
    name = catalog.model_names[0]
    model = context.models.get(catalog.models[name])
    if threads:
        torch.set_num_threads(threads)
    results: dict[str, dict] = {"loaded_rss": status_kilobytes("VmRSS") * 1024, "threads": torch.get_num_threads()}
    views = {"probe": lambda with_feature, without_feature: probe_view(context, name, with_feature, without_feature),
             "finder": lambda with_feature, without_feature: find_view(context, name, with_feature, without_feature)}
    for shape, (with_feature, without_feature) in lists.items():
        notices: list[str] = []
        texts, samples = encode_lists(model, with_feature, without_feature, notices)
        bare_forward(model, texts[:2])  # warm-up
        for view_name, view in views.items():
            view_seconds, bare_seconds, ratios, peaks, before = [], [], [], [], []
            for _ in range(repeats):
                with PeakResident() as peak:
                    started = time.perf_counter()
                    notice, _, values = view(with_feature, without_feature)
                    view_seconds.append(time.perf_counter() - started)
                peaks.append(peak.peak)
                before.append(peak.before)
                assert values, notice
                started = time.perf_counter()
                bare_forward(model, texts)
                bare_seconds.append(time.perf_counter() - started)
                ratios.append(view_seconds[-1] / bare_seconds[-1])
            results[f"{view_name}, {shape}"] = {
                "texts": len(texts), "tokens": sum(len(text.token_ids) for text in texts), "samples": len(samples),
                "view_s": statistics.median(view_seconds), "bare_s": statistics.median(bare_seconds),
                "ratio": statistics.median(ratios), "peak_rss": max(peaks), "rss_before": min(before),
                "notices": notices,
            }
    return results


def prepare(store: Path) -> tuple[Path, Path]:
    """SmolLM2 exported and harvested (every layer, a few windows) once into the store, and the lists to run
    written beside it (so the measuring process loads nothing but the model)."""
    from transformers import AutoTokenizer

    live = bench_live()
    folder = live.export_smollm2(store / "smollm2")
    dataset = store / "datasets" / "smollm2"
    if not (dataset / "neuroscope.json").exists():
        live.dataset_for(folder, dataset, "cpu")
    lists = store / "lists.json"
    lists.write_text(json.dumps(inputs(AutoTokenizer.from_pretrained(folder))))
    return dataset, lists


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("/tmp/neuroscope-bench-probe"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads in the measuring process (default: torch's)")
    parser.add_argument("--measure", type=Path, nargs=2, help=argparse.SUPPRESS)  # the measuring process's inputs
    args = parser.parse_args()
    if args.measure:
        dataset, lists = args.measure
        print(json.dumps(measure(dataset, json.loads(lists.read_text()), args.repeats, args.threads)))
        return 0
    dataset, lists = prepare(args.store)
    command = [sys.executable, __file__, "--measure", str(dataset), str(lists), "--repeats", str(args.repeats)]
    command += ["--threads", str(args.threads)] if args.threads else []
    load_before = os.getloadavg()[0]
    results = json.loads(subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout.splitlines()[-1])
    print(f"Machine: {bench_live().machine()}; torch {torch.__version__}, {results.pop('threads')} threads; "
          f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"Caps: {MAX_TEXTS_PER_LIST} texts a list, {MAX_TOKENS_PER_TEXT} tokens a text, {MAX_LIST_TOKENS} tokens a "
          f"run; {args.repeats} runs each, view and bare pass alternated")
    print(f"RSS with the model loaded: {results.pop('loaded_rss') / 2**20:,.0f} MB")
    print("| run | texts | tokens | samples | view (median s) | bare forward, same tokens (s) | ratio "
          "| RSS before / peak (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    slowest = 0.0
    for label, row in results.items():
        memory = f"{row['rss_before'] / 2**20:,.0f} / {row['peak_rss'] / 2**20:,.0f}"
        print(f"| {label} | {row['texts']} | {row['tokens']} | {row['samples']} | {row['view_s']:.2f} "
              f"| {row['bare_s']:.2f} | {row['ratio']:.2f} | {memory} |")
        slowest = max(slowest, row["view_s"])
        for notice in row["notices"]:
            print(f"  notice: {notice}")
    verdict = "meets" if slowest < TARGET_SECONDS else "MISSES"
    print(f"Slowest run at the caps: {slowest:.2f} s ({verdict} the < {TARGET_SECONDS:.0f} s target)")
    return 0 if slowest < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
