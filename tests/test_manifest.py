"""The typed manifest: the JSON already published reads back unchanged, bad manifests are refused with every
reason, and docs/FORMAT.md documents exactly the keys the code knows."""

from __future__ import annotations

import copy
import json
import re

import pytest

from hub_sync import format as fmt
from hub_sync.manifest import CorpusInfo, HarvestInfo, Manifest, ManifestError, ModelInfo, key_table
from testkit.support import REPO

# A manifest as format 1.0 harvests wrote it (commit 82150e8), from a model in a local folder: the name is its path.
PUBLISHED = json.loads((REPO / "tests" / "data" / "manifest-1.0.json").read_text())


def documented_keys() -> dict[str, bool]:
    """The key table of FORMAT.md's manifest section: each key and whether it is marked required."""
    text = (REPO / "docs" / "FORMAT.md").read_text()
    section = text.split("## `neuroscope.json`", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([\w.\[\]]+)` \| ([^|]+) \|", section, re.M)
    assert rows, "FORMAT.md's manifest section has no key table"
    return {key: "required" in kind for key, kind in rows}


def test_format_md_documents_every_key_the_code_knows():
    assert documented_keys() == key_table()


def test_a_published_manifest_reads_back_unchanged():
    manifest = Manifest.from_json(copy.deepcopy(PUBLISHED))
    assert manifest.to_json() == PUBLISHED
    assert (manifest.model.d_mlp, manifest.harvest.layers) == (128, [0, 1, 2, 3])
    assert manifest.harvest.run_id == "22edc2a0593fb193"
    assert manifest.harvest.histogram_edges == fmt.HISTOGRAM_EDGES


def test_keys_of_a_newer_minor_version_are_kept():
    newer = copy.deepcopy(PUBLISHED) | {"format_version": "1.3", "ratings": {"model": "x"}}
    newer["model"]["quantisation"] = "q4"
    manifest = Manifest.from_json(newer)
    assert manifest.adds_to_format and manifest.to_json() == newer
    assert manifest.model.extra == {"quantisation": "q4"}


def test_a_local_folder_path_stored_as_the_name_is_shown_as_the_folder_name():
    assert Manifest.from_json(PUBLISHED).model.display_name == "tiny-gelu"
    for name, shown in [("gpt2", "gpt2"), ("EleutherAI/pythia-70m", "EleutherAI/pythia-70m"), ("./models/x/", "x"),
                        ("~/m/llama", "llama"), ("C:\\models\\gemma", "gemma")]:
        assert ModelInfo(name=name, n_layers=1, d_mlp=1).display_name == shown


def test_a_minimal_manifest_has_its_defaults():
    harvest = {"window": 8, "top_k": 2, "random_k": 1, "bottom_k": 0, "layers": [1], "histogram_edges": [0]}
    minimal = {"format_version": "1.0", "model": {"name": "m", "n_layers": 2, "d_mlp": 8}, "corpus": {"windows": 4},
               "harvest": harvest}
    manifest = Manifest.from_json(minimal)
    assert manifest.model.hook == fmt.MLP_HOOK and manifest.corpus.docs is None
    assert manifest.harvest.histogram_edges == [0.0] and isinstance(manifest.harvest.histogram_edges[0], float)


def with_change(section: str, **changes) -> dict:
    changed = copy.deepcopy(PUBLISHED)
    changed[section].update(changes)
    return changed


@pytest.mark.parametrize(
    ("data", "problems"),
    [
        ([], ["is not a JSON object"]),
        (PUBLISHED | {"format_version": "2.0"}, ["format_version 2.0 has major version 2; this reader knows major "
                                                 "version 1 only (upgrade neuroscope-hub to read it)"]),
        (PUBLISHED | {"format_version": 1.0}, ["format_version 1.0 is not a MAJOR.MINOR string"]),
        ({"format_version": "1.0"}, ["section 'model' is missing or not an object", "section 'corpus' is missing or "
                                     "not an object", "section 'harvest' is missing or not an object"]),
        (with_change("model", d_mlp=True, gated="yes", notes=[1]),
         ["model.d_mlp is True, expected an integer", "model.gated is 'yes', expected true or false",
          "model.notes is [1], expected a list of strings"]),
        (with_change("harvest", layers=[]), ["harvest.layers is empty: a dataset holds at least one layer"]),
        (with_change("harvest", layers=[0, 4, 4]),
         ["harvest.layers [0, 4, 4] must be layer numbers in 0..model.n_layers-1",
          "harvest.layers [0, 4, 4] repeats a layer"]),
        (with_change("harvest", window=1, bottom_k=-1), ["harvest.window 1 must be at least 2 (BOS and one token)",
                                                        "harvest.bottom_k must not be negative"]),
        (with_change("harvest", histogram_edges=[1.0, 0.0]), ["harvest.histogram_edges must be in increasing order"]),
        (with_change("model", d_mlp=0), ["model.d_mlp 0 must be positive"]),
    ],
    ids=["not-an-object", "major-2", "version-not-a-string", "no-sections", "wrong-types", "no-layers",
         "bad-layers", "bad-sizes", "unsorted-edges", "no-neurons"],
)
def test_a_bad_manifest_is_refused_with_every_reason(data, problems):
    with pytest.raises(ManifestError) as raised:
        Manifest.from_json(data)
    assert raised.value.problems == problems


def test_a_manifest_built_in_code_is_checked_before_it_is_written(tmp_path):
    from hub_sync.writer import finish_dataset

    manifest = Manifest(
        model=ModelInfo(name="m", n_layers=2, d_mlp=8),
        corpus=CorpusInfo(windows=1),
        harvest=HarvestInfo(window=8, top_k=1, random_k=0, bottom_k=0, layers=[], histogram_edges=fmt.HISTOGRAM_EDGES),
    )
    with pytest.raises(ManifestError, match="harvest.layers is empty"):
        finish_dataset(tmp_path, manifest)
    assert not any(tmp_path.iterdir())


def test_explanation_runs_round_trip_as_records():
    explained = copy.deepcopy(PUBLISHED) | {"format_version": "1.1"}
    run = {"explainer": "m", "prompt_version": "p1", "scorers": ["embedding"], "layers": [1], "neurons": 2,
           "refused": 0, "started": "2026-05-01T11:00:00+00:00", "finished": "2026-05-01T12:00:00+00:00",
           "max_tokens": 60}
    explained["explanations"] = {"layers": [1], "runs": [run]}
    manifest = Manifest.from_json(copy.deepcopy(explained))
    assert manifest.explanation_layers == [1] and manifest.explanations.runs[0].scorers == ["embedding"]
    assert manifest.to_json() == explained
    broken = copy.deepcopy(explained)
    broken["explanations"]["runs"][0]["neurons"] = "two"
    with pytest.raises(ManifestError, match=r"explanations.runs\[0\].neurons is 'two', expected an integer"):
        Manifest.from_json(broken)
