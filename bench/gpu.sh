#!/usr/bin/env bash
# The harvest on one GPU (issue 11 item 5): bench/gpu.py's figures, a Markdown table and a JSON file, in <= 8 min.
#
# 1. Once, on a machine with PyPI (the development machine), from the repository:
#        bash bench/gpu.sh --prepare
#    downloads what the GPU image lacks (WHEELS below, at the versions this machine runs) as Python 3.12 x86-64
#    wheels into .whl/ (~16 MB), and writes SmolLM2's config and tokenizer to .gpu-bench/smollm2 (~3 MB; not its
#    weights: the GGUF is 98 MB and a device call carries 64 MiB, so SmolLM2 runs there with random weights of its
#    exact shape). Both folders are git-ignored.
# 2. On the GPU machine, as one call of the device tool: command `bash bench/gpu.sh`, carry [".whl", ".gpu-bench"],
#    timeout_s 540. It installs .whl/*.whl into /tmp/site with no index and no dependency resolution (nothing can be
#    fetched there), checks the environment (bench/gpu_environment.py names whatever is missing), runs
#    bench/gpu.py (it stops starting steps after 420 s; this script kills it at LIMIT_S) and leaves gpu_bench.json
#    and gpu_bench.log in $OUT (elsewhere in .gpu-bench/).
# 3. The smoke test, anywhere, installing nothing: bash bench/gpu.sh --device cpu [smaller sizes]
#    (tests/test_bench_gpu.py). Every option but --prepare goes to bench/gpu.py (python bench/gpu.py --help).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS="transformer-lens transformers datasets dill multiprocess"
LIMIT_S=470
RESULTS=${OUT:-.gpu-bench}

prepare() {
    local python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
    mkdir -p .whl
    rm -f .whl/*.whl
    for dist in $WHEELS; do
        local pinned
        pinned="$dist==$("$python" -c 'import sys, importlib.metadata as m; print(m.version(sys.argv[1]))' "$dist")"
        "$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
            --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$pinned"
    done
    HF_HUB_OFFLINE=1 "$python" bench/gpu.py --export-smollm2 .gpu-bench/smollm2
    ls -l .whl .gpu-bench/smollm2
}

if [ "${1:-}" = "--prepare" ]; then
    prepare
    exit 0
fi

PYTHON=${PYTHON:-python3}
on_cpu=no
previous=
for arg in "$@"; do
    { [ "$previous" = "--device" ] && [ "$arg" = cpu ]; } || [ "$arg" = "--device=cpu" ] && on_cpu=yes
    previous=$arg
done
if [ "$on_cpu" = no ] && compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
"$PYTHON" bench/gpu_environment.py
mkdir -p "$RESULTS"
timeout -k 10 "$LIMIT_S" "$PYTHON" bench/gpu.py --json "$RESULTS/gpu_bench.json" "$@" 2>&1 \
    | tee "$RESULTS/gpu_bench.log"
