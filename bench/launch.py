"""`bash dev.sh app` as a new user meets it: a fresh clone's first launch (install, default build, page) and a relaunch.

For each revision (the branch's HEAD, and --baseline REV measured in the same run): clone it into a temporary
folder, launch `bash dev.sh app` with empty pip and uv caches (a new machine's) and an empty NEUROSCOPE_CACHE with a
small default (--tokens), and time the phases up to HTTP 200 on the page; stop it, launch again, time it again. Then
`python -X importtime -c "import app"` in that clone says where the relaunch's import goes.

Phases: install (until dev.sh writes its stamp), then "to Serving" (the default's build, the app's import and build:
until app.py prints "Serving"), then page (until HTTP 200). A relaunch starts with check instead: dev.sh's test that
nothing needs installing, until it becomes `python app.py` (an install, if it reruns one, shows up as well). A first
launch goes on to "live": the Live tab's first answer with values (POST /gradio_api/call/activations, as the page
does, until one comes back with activations), and "built": the default's build done.

Runs with any Python 3.10+ and the standard library only: it builds its own venvs.
Usage: python3 bench/launch.py [--revision HEAD] [--baseline REV] [--tokens 384]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAMP = ".venv/.neuroscope-installed"
LIVE_TEXT = "def add(a, b):\n    return a + b"


@dataclass
class Launch:
    """Seconds from `bash dev.sh app` to each phase's end, as they were reached."""

    marks: dict[str, float] = field(default_factory=dict)

    def phases(self) -> dict[str, float]:
        """Each phase's own length, in the order reached."""
        ends = list(self.marks.items())
        return {name: end - (ends[i - 1][1] if i else 0.0) for i, (name, end) in enumerate(ends)}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    return f"{cpu}, {os.cpu_count()} cores, {memory_kb / 2**20:.0f} GiB, Python {platform.python_version()}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def live_values(url: str) -> bool:
    """Whether the Live tab's /activations gives values now (the model runs), through Gradio's HTTP API."""
    request = urllib.request.Request(f"{url}gradio_api/call/activations", method="POST",
                                     data=json.dumps({"data": [None, 5, 100, LIVE_TEXT]}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            event_id = json.load(response)["event_id"]
        with urllib.request.urlopen(f"{url}gradio_api/call/activations/{event_id}", timeout=300) as stream:
            results = [json.loads(line[len(b"data: "):]) for line in stream if line.startswith(b"data: ")]
    except (OSError, ValueError, KeyError):
        return False
    return any(isinstance(result, list) and len(result) == 3 and result[2] for result in results)


def is_app(pid: int) -> bool:
    """Whether dev.sh has exec'd into `python app.py` (its setup is over)."""
    try:
        return b"app.py" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def wait_for_builds(clone: Path, timeout: float = 300) -> None:
    """Wait until no default build of this clone runs: the app builds it in a child of its own session, which its
    process group's SIGTERM does not reach; the child stops itself after its batch once the app is gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = []
        for proc in Path("/proc").iterdir():
            try:
                if b"harvest.default" in (proc / "cmdline").read_bytes() and (proc / "cwd").resolve() == clone:
                    running.append(proc.name)
            except OSError:
                continue
        if not running:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the default's build in {clone} did not stop within {timeout} s")


def launch(clone: Path, environment: dict[str, str], log: Path, timeout: float, first: bool) -> Launch:
    """One `bash dev.sh app` until its page answers (a first launch: until the live tab answers and the build is
    done), then stopped; the marks say when each phase ended."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    stamp_before = (clone / STAMP).stat().st_mtime if (clone / STAMP).exists() else None
    started = time.monotonic()
    with log.open("w") as output:
        app = subprocess.Popen(["bash", "dev.sh", "app"], cwd=clone, stdout=output, stderr=subprocess.STDOUT,
                               env={**environment, "GRADIO_SERVER_PORT": str(port)}, start_new_session=True)
    result = Launch()
    try:
        while "page" not in result.marks:
            elapsed = time.monotonic() - started
            if app.poll() is not None or elapsed > timeout:
                raise RuntimeError(f"dev.sh app stopped or took over {timeout} s; see {log}")
            stamp = clone / STAMP
            if "install" not in result.marks and stamp.exists() and stamp.stat().st_mtime != stamp_before:
                result.marks["install"] = elapsed
            if "check" not in result.marks and stamp_before is not None and is_app(app.pid):
                result.marks["check"] = elapsed
            if "to Serving" not in result.marks and "Serving " in log.read_text():
                result.marks["to Serving"] = elapsed
            if "to Serving" in result.marks and answers(url):
                result.marks["page"] = time.monotonic() - started
            time.sleep(0.05)
        while first and not {"live", "built"} <= result.marks.keys():
            if app.poll() is not None or time.monotonic() - started > timeout:
                raise RuntimeError(f"dev.sh app stopped or took over {timeout} s; see {log}")
            if "live" not in result.marks and live_values(url):
                result.marks["live"] = time.monotonic() - started
            if "built" not in result.marks and re.search(r"default dataset: .* is ready\.", log.read_text()):
                result.marks["built"] = time.monotonic() - started
            time.sleep(0.5)
    finally:
        os.killpg(app.pid, signal.SIGTERM)
        app.wait(timeout=60)
        wait_for_builds(clone.resolve())
    return result


def heaviest_imports(clone: Path, count: int = 6) -> tuple[float, list[str]]:
    """Seconds of `import app` in the clone's venv, and its heaviest top-level imports (cumulative)."""
    python = clone / ".venv" / "bin" / "python"
    started = time.monotonic()
    report = subprocess.run([python, "-X", "importtime", "-c", "import app"], cwd=clone, capture_output=True,
                            text=True, check=True).stderr
    seconds = time.monotonic() - started
    rows = []
    for line in report.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)", line)
        if match and 2 <= len(match.group(2)) <= 4:  # app's own imports and theirs
            rows.append((int(match.group(1)) / 1e6, match.group(3)))
    rows.sort(reverse=True)
    return seconds, [f"{name} {cumulative:.1f} s" for cumulative, name in rows[:count]]


def measure(revision: str, workspace: Path, tokens: int, timeout: float) -> dict[str, Launch]:
    """A fresh clone of `revision`: its first launch and a relaunch, printed as they finish."""
    commit = subprocess.run(["git", "rev-parse", revision], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    clone = workspace / commit
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "checkout", "--quiet", commit], cwd=clone, check=True)
    environment = {**os.environ, "PIP_CACHE_DIR": str(clone / "pip-cache"), "UV_CACHE_DIR": str(clone / "uv-cache"),
                   "NEUROSCOPE_CACHE": str(clone / "neuroscope-cache"), "NEUROSCOPE_DEFAULT_TOKENS": str(tokens),
                   "GRADIO_SERVER_NAME": "127.0.0.1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    environment.pop("NEUROSCOPE_SOURCES", None)
    label = subprocess.run(["git", "log", "-1", "--format=%h %s"], cwd=clone, capture_output=True, text=True,
                           check=True).stdout.strip()[:90]
    print(f"\n{label}")
    results = {}
    for name in ("first launch", "relaunch"):
        log = clone / f"{name.replace(' ', '-')}.log"
        results[name] = launch(clone, environment, log, timeout, first=name == "first launch")
        phases = ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in results[name].phases().items())
        print(f"  {name}: HTTP 200 after {results[name].marks['page']:.1f} s ({phases})", flush=True)
    seconds, imports = heaviest_imports(clone)
    print(f"  import app: {seconds:.1f} s; heaviest: {', '.join(imports)}")
    return results


def print_ratios(baseline: dict[str, Launch], measured: dict[str, Launch]) -> None:
    print("\nmeasured / baseline:")
    pairs = [("first install", "first launch", "install"), ("first launch to HTTP 200", "first launch", "page"),
             ("first launch to the Live tab's first values", "first launch", "live"),
             ("first launch to the default built", "first launch", "built"),
             ("relaunch to HTTP 200", "relaunch", "page")]
    for label, launch_name, mark in pairs:
        before, after = baseline[launch_name].marks[mark], measured[launch_name].marks[mark]
        print(f"  {label}: {after:.1f} s / {before:.1f} s = {after / before:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revision", default="HEAD", help="the revision measured (default: HEAD)")
    parser.add_argument("--baseline", help="a revision measured the same way first, for the ratio")
    parser.add_argument("--tokens", type=int, default=384, help="the embedded default's token budget (small)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds one launch may take")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    workspace = Path(tempfile.mkdtemp(prefix="neuroscope-launch-"))  # kept if a launch fails: its logs are there
    baseline = measure(args.baseline, workspace, args.tokens, args.timeout) if args.baseline else None
    measured = measure(args.revision, workspace, args.tokens, args.timeout)
    shutil.rmtree(workspace)
    if baseline:
        print_ratios(baseline, measured)


if __name__ == "__main__":
    main()
