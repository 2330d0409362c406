"""50 users on neuron pages at once: a light load generator against `python app.py` in another process.

Each simulated user loops until time is up: wait a think time (uniform in 0..2x --think seconds; 0 = back to back,
a closed loop that measures the most the server can take), then ask for a random neuron of a synthetic store
(hub_sync/synthetic.py) in one of three ways, as browsers and forum previews do:
- the neuron page through Gradio's HTTP API: POST /gradio_api/call/neuron, then GET its event stream to the end
  (8 in 10 requests);
- the short link's card page, GET /n/MODEL/L/N (1 in 10);
- its preview image, GET /n/MODEL/L/N.png (1 in 10).
A request's latency is from its first byte sent to its last byte read; an error is any status other than 200 or
an event stream that ends without `event: complete`. All users share one asyncio loop and one httpx client in this
process, so the generator costs a fraction of a core; its CPU time and the server's are both reported.

Usage: python bench/load.py [--users 50] [--duration 60] [--think 1.0] [--store cache/bench-load] [--app-root DIR]
(--app-root: serve another checkout's app.py, e.g. `git worktree add /tmp/base REV`, for a baseline in the same run)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import resource
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub_sync import format as fmt  # noqa: E402
from hub_sync.synthetic import write_synthetic_dataset  # noqa: E402

MODEL = "synthetic/gpt2-small-sized"
N_LAYERS, D_MLP, WINDOW, TOP_K, RANDOM_K, D_VOCAB = 12, 3072, 64, 20, 10, 50257
KINDS = (("page", 0.8), ("card", 0.1), ("png", 0.1))
TARGET_P95_MS = 500


@dataclass
class Tally:
    """Latencies (seconds) by kind, and errors by kind with a sample of messages."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {kind: [] for kind, _ in KINDS})
    errors: dict[str, int] = field(default_factory=lambda: {kind: 0 for kind, _ in KINDS})
    messages: set[str] = field(default_factory=set)

    def all_latencies(self) -> list[float]:
        return [value for values in self.latencies.values() for value in values]


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def ensure_store(store: Path) -> Path:
    """A GPT-2-small-sized synthetic store, written once (layer 0's examples copied to every layer: fast)."""
    if not (store / fmt.MANIFEST_FILE).exists():
        write_synthetic_dataset(store, n_layers=N_LAYERS, d_mlp=D_MLP, window=WINDOW, top_k=TOP_K,
                                random_k=RANDOM_K, d_vocab=D_VOCAB, name=MODEL, share_layer_content=True)
    return store


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_app(root: Path, store: Path, port: int) -> subprocess.Popen:
    """`python app.py --source STORE` in checkout `root`, returned once its page answers 200."""
    process = subprocess.Popen(
        [sys.executable, "app.py", "--source", str(store), "--host", "127.0.0.1", "--port", str(port)], cwd=root,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"},
    )
    while True:
        if process.poll() is not None:
            raise SystemExit(f"app.py exited with status {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)


async def neuron_page(client: httpx.AsyncClient, session: str, layer: int, neuron: int) -> str | None:
    """One page through the API (POST, then the event stream) in the user's session, as a browser tab keeps one;
    None when it completed, else what went wrong."""
    body = {"data": [MODEL, layer, neuron], "session_hash": session}
    posted = await client.post("/gradio_api/call/neuron", json=body)
    if posted.status_code != 200:
        return f"POST {posted.status_code}"
    event_id = posted.json()["event_id"]
    async with client.stream("GET", f"/gradio_api/call/neuron/{event_id}") as stream:
        if stream.status_code != 200:
            return f"GET {stream.status_code}"
        events = [line[len("event: "):] async for line in stream.aiter_lines() if line.startswith("event: ")]
    if "complete" in events:
        return None
    return "event: error" if "error" in events else "stream ended without a result"


async def short_link(client: httpx.AsyncClient, layer: int, neuron: int, suffix: str) -> str | None:
    response = await client.get(f"/n/{MODEL}/{layer}/{neuron}{suffix}")
    return None if response.status_code == 200 else f"GET {response.status_code}"


async def user(client: httpx.AsyncClient, rng: random.Random, deadline: float, think: float, tally: Tally) -> None:
    kinds, weights = zip(*KINDS, strict=True)
    session = f"{rng.getrandbits(64):016x}"
    while True:
        await asyncio.sleep(rng.uniform(0, 2 * think))
        if time.perf_counter() >= deadline:
            return
        kind = rng.choices(kinds, weights)[0]
        layer, neuron = rng.randrange(N_LAYERS), rng.randrange(D_MLP)
        started = time.perf_counter()
        try:
            if kind == "page":
                problem = await neuron_page(client, session, layer, neuron)
            else:
                problem = await short_link(client, layer, neuron, ".png" if kind == "png" else "")
        except httpx.HTTPError as error:
            problem = f"{type(error).__name__}: {error}"
        if problem is None:
            tally.latencies[kind].append(time.perf_counter() - started)
        else:
            tally.errors[kind] += 1
            tally.messages.add(f"{kind}: {problem}"[:160])


async def load(url: str, users: int, duration: float, think: float, seed: int) -> Tally:
    tally = Tally()
    limits = httpx.Limits(max_connections=users * 2, max_keepalive_connections=users * 2)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        deadline = time.perf_counter() + duration
        await asyncio.gather(*(user(client, random.Random(seed + i), deadline, think, tally) for i in range(users)))
    return tally


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--think", type=float, default=1.0, help="mean seconds between a user's requests (0: none)")
    parser.add_argument("--store", type=Path, default=ROOT / "cache" / "bench-load")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--app-root", type=Path, default=ROOT, help="the checkout whose app.py is served")
    args = parser.parse_args()
    store = ensure_store(args.store)
    port = free_port()
    app = start_app(args.app_root, store, port)
    server = psutil.Process(app.pid)
    try:
        asyncio.run(load(f"http://127.0.0.1:{port}", 4, 5.0, 0.1, args.seed + 10_000))  # warm up: footers, caches
        ours, theirs, started = resource.getrusage(resource.RUSAGE_SELF), cpu_seconds(server), time.perf_counter()
        tally = asyncio.run(load(f"http://127.0.0.1:{port}", args.users, args.duration, args.think, args.seed))
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        generator_cpu = after.ru_utime + after.ru_stime - ours.ru_utime - ours.ru_stime
        server_cpu = cpu_seconds(server) - theirs
    finally:
        app.terminate()
        app.wait(timeout=60)
    latencies = tally.all_latencies()
    errors = sum(tally.errors.values())
    p50, p95 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.95) * 1000
    print(f"app: {args.app_root}; machine: {machine()}; load average now {os.getloadavg()[0]:.1f}")
    print(f"{args.users} users x {wall:.0f} s, think {args.think:g} s mean: {len(latencies) + errors} requests "
          f"({(len(latencies) + errors) / wall:.1f}/s), {errors} errors, p50 {p50:.0f} ms, p95 {p95:.0f} ms "
          f"(target 0 errors, p95 <= {TARGET_P95_MS} ms)")
    for kind, values in tally.latencies.items():
        print(f"  {kind}: {len(values)} ok, {tally.errors[kind]} errors, p50 {percentile(values, 0.5) * 1000:.0f} ms, "
              f"p95 {percentile(values, 0.95) * 1000:.0f} ms")
    print(f"CPU: generator {generator_cpu:.1f} s ({generator_cpu / wall:.0%} of a core, "
          f"{generator_cpu / (generator_cpu + server_cpu):.0%} of generator + server), "
          f"server {server_cpu:.1f} s ({server_cpu / wall:.0%} of a core)")
    for message in sorted(tally.messages)[:5]:
        print(f"  error: {message}")


if __name__ == "__main__":
    main()
