"""The dataset card (README.md): YAML `configs` for `datasets`, provenance, how to load."""

from __future__ import annotations

import json

from hub_sync import format as fmt
from hub_sync.manifest import Manifest

SPACE_URL = "https://huggingface.co/spaces/neuroscope-hub/neuroscope"


def _configs_yaml(layers: list[int], explained: bool) -> str:
    lines = [
        "configs:",
        "- config_name: neurons",
        "  data_files:",
        "  - split: train",
        f"    path: {fmt.NEURONS_DIR}/*.parquet",
    ]
    for layer in layers:
        lines += [
            f"- config_name: {fmt.layer_config_name(layer)}",
            "  data_files:",
            "  - split: train",
            f"    path: {fmt.examples_path(layer)}",
        ]
    if explained:
        lines += [
            f"- config_name: {fmt.EXPLANATIONS_CONFIG}",
            "  data_files:",
            "  - split: train",
            f"    path: {fmt.EXPLANATIONS_DIR}/*.parquet",
        ]
    return "\n".join(lines)


def _count(number: int | None) -> str:
    return "an unknown number of" if number is None else f"{number:,}"


def _explanations_section(manifest: Manifest, name: str) -> str:
    """How to load the explanations, and which runs made them; nothing for a dataset without any."""
    layers = manifest.explanation_layers
    if not layers:
        return ""
    made_by = "".join(
        f"\n- `{run.explainer}` (prompt {run.prompt_version}, scores: {', '.join(run.scorers) or 'none'}), "
        f"{run.finished}"
        for run in manifest.explanations.runs
    )
    return f"""
## Explanations

Natural-language explanations of neurons of layers {", ".join(str(layer) for layer in layers)}, each scored on
held-out examples the explainer never saw (detection: balanced accuracy; embedding: AUROC; simulation:
correlation), every score with its n:

```python
explanations = load_dataset("{name}", "{fmt.EXPLANATIONS_CONFIG}", split="train")
```

Made by:{made_by}
"""


def render_card(manifest: Manifest, repo_id: str | None = None) -> str:
    model, corpus, harvest = manifest.model, manifest.corpus, manifest.harvest
    layers = harvest.layers
    name = repo_id or "path/to/this/dataset"
    notes = "".join(f"\n- {note}" for note in model.notes)
    browse = f"{SPACE_URL}?model={repo_id}" if repo_id else SPACE_URL
    provenance = manifest.to_json()["harvest"] | {"histogram_edges": "see neuroscope.json"}
    bottom = ", its most negative windows" if harvest.bottom_k else ""
    gated = " (gated MLP: neurons also fire negative)" if model.gated else ""
    return f"""---
{_configs_yaml(layers, bool(manifest.explanation_layers))}
tags:
- interpretability
- neuroscope
---
# Neuroscope: MLP neurons of `{model.display_name}`

For every MLP neuron of `{model.display_name}` ({model.n_layers} layers x {model.d_mlp} neurons,
TransformerLens hook `{model.hook}`), this dataset holds its max-activating windows of text with every
token's activation, a uniform random sample of windows where it fired{bottom},
per-neuron statistics and logit effects. Made by [Neuroscope Hub]({SPACE_URL}); browse it [in the Space]({browse}).

## What it is

- Model: `{model.display_name}` loaded with `{model.loader}` (TransformerLens {model.transformer_lens_version}),
  dtype {model.dtype}, activation `{model.act_fn}`{gated}.{notes}
- Corpus: `{corpus.name}` (split `{corpus.split}`, revision `{corpus.revision}`): {_count(corpus.docs)} documents,
  {_count(corpus.tokens)} tokens in {corpus.windows:,} windows of {harvest.window} tokens (each starting with BOS).
- Kept per neuron: top {harvest.top_k} windows by max activation (BOS excluded), {harvest.random_k} random
  firing windows, bottom {harvest.bottom_k} windows by min activation; seed {harvest.seed}.
- Layers: {", ".join(str(layer) for layer in layers)}.
- Format version {manifest.format_version}: see `neuroscope.json` and the format documentation of Neuroscope Hub.

## How to load

```python
from datasets import load_dataset

neurons = load_dataset("{name}", "neurons", split="train")      # stats of every neuron, all layers
examples = load_dataset("{name}", "{fmt.layer_config_name(layers[0])}", split="train")  # one layer's examples only
```
{_explanations_section(manifest, name)}
## Provenance

```json
{json.dumps(provenance, indent=2, sort_keys=True)}
```
"""
