"""Run the live views with every GPU call in a forked worker (tests/fork_gpu.py), as on ZeroGPU; print their values.

Usage: python tests/zero_gpu_run.py DATASET [LATE_DATASET] (run by tests/test_zero_gpu.py, in its own process so
the stand-in is in place before space.live is imported). Models load as app.py loads them on ZeroGPU: all before
the first GPU call (`LiveModels.preload`). LATE_DATASET's model loads only after the workers forked.
"""

from __future__ import annotations

import json
import sys

import fork_gpu

fork_gpu.install()

from space.live.forward import ActivationCache  # noqa: E402
from space.live.model import LiveModels  # noqa: E402
from space.live.views import LiveContext, activations_view, find_view, probe_view, top_neurons_view  # noqa: E402
from space.sources import open_sources  # noqa: E402
from zero_gpu_inputs import MODEL, TEXT, WITH_FEATURE, WITHOUT_FEATURE  # noqa: E402


def main() -> None:
    catalog = open_sources([sys.argv[1]])
    models = LiveModels(device="cpu")
    models.preload(catalog.models.values())
    context = LiveContext(catalog, models, ActivationCache())
    values = {
        "activations": activations_view(context, MODEL, 1, 3, TEXT),
        "top_neurons": top_neurons_view(context, MODEL, TEXT, 10),
        "find": find_view(context, MODEL, WITH_FEATURE, WITHOUT_FEATURE, "either way", 5),
        "probe": probe_view(context, MODEL, WITH_FEATURE, WITHOUT_FEATURE),
    }
    if len(sys.argv) > 2:
        late = open_sources([sys.argv[2]])
        late_context = LiveContext(late, models, ActivationCache())
        values["late"] = activations_view(late_context, late.model_names[0], 0, 0, TEXT)
    print(json.dumps({"views": values, "sent_bytes": fork_gpu.SENT_BYTES}))


if __name__ == "__main__":
    main()
