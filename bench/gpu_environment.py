"""Can this Python run bench/gpu.py? Names every missing module at once, before anything heavy is imported.

    python3 bench/gpu_environment.py        # exit 0: all there; exit 3: what is missing, and how to bring it

Only the standard library, and modules are looked up, not imported: a missing package must be named, not crash
the check, and the check must cost nothing. The list is what the harvest and TransformerLens 4 import on the
way (measured with `python -X importtime`). Versions that do not fit together show up as bench/gpu.py's first
import error, right after.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys

# module -> the pip distribution that provides it
REQUIRED = {
    "torch": "torch",
    "numpy": "numpy",
    "transformer_lens": "transformer-lens",
    "transformers": "transformers",
    "tokenizers": "tokenizers",
    "safetensors": "safetensors",
    "datasets": "datasets",
    "dill": "dill",
    "multiprocess": "multiprocess",
    "xxhash": "xxhash",
    "pandas": "pandas",
    "pyarrow": "pyarrow",
    "fsspec": "fsspec",
    "huggingface_hub": "huggingface-hub",
    "accelerate": "accelerate",
    "einops": "einops",
    "jaxtyping": "jaxtyping",
    "sentencepiece": "sentencepiece",
    "rich": "rich",
    "numba": "numba",
    "tqdm": "tqdm",
    "yaml": "pyyaml",
    "regex": "regex",
    "packaging": "packaging",
    "pydoc_data": "(the Python standard library's pydoc_data: the python-docs corpus)",
}
REMEDY = (
    "On a machine with PyPI, in the repository: `bash bench/gpu.sh --prepare` (downloads the wheels the GPU image "
    "lacks into .whl/ and SmolLM2's config and tokenizer into .gpu-bench/); then run `bash bench/gpu.sh` there with "
    "`.whl` and `.gpu-bench` carried. Add a missing distribution to WHEELS in bench/gpu.sh if it is not there."
)


def missing_modules(required: dict[str, str]) -> list[str]:
    """Each required module that cannot be found, with the distribution to install."""
    return [f"{module} (pip: {dist})" for module, dist in required.items() if importlib.util.find_spec(module) is None]


def versions(required: dict[str, str]) -> dict[str, str]:
    found = {}
    for dist in dict.fromkeys(required.values()):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def main() -> int:
    print(f"python {sys.version.split()[0]} at {sys.executable}")
    print("found: " + ", ".join(f"{dist} {version}" for dist, version in versions(REQUIRED).items()))
    missing = missing_modules(REQUIRED)
    if missing:
        print("MISSING: " + "; ".join(missing), file=sys.stderr)
        print(REMEDY, file=sys.stderr)
        return 3
    print("environment: every module bench/gpu.py needs is there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
