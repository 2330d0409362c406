"""Format 1.1: explanations written, verified, read lazily, loaded with `datasets` and published; 1.0 untouched."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hub_sync import format as fmt
from hub_sync.card import render_card
from hub_sync.manifest import ExplanationRun, Manifest
from hub_sync.publish import push
from hub_sync.reader import DatasetError, open_dataset
from hub_sync.synthetic import write_synthetic_dataset
from hub_sync.verify import verify_dataset
from hub_sync.writer import finish_dataset, write_explanations

REPO_ID = "neuroscope-test/explained"
D_MLP = 40
CREATED = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
V10_NEURON_COLUMNS = fmt.NEURON_SCHEMA.names
V10_EXAMPLE_COLUMNS = fmt.EXAMPLE_SCHEMA.names


def explanation_row(layer: int, neuron: int, explainer: str = "m", **changes) -> dict:
    row = {
        "layer": layer,
        "neuron": neuron,
        "explanation": f"neuron {neuron} thing",
        "explainer": explainer,
        "prompt_version": "neuroscope-1",
        "detection": 0.75,
        "detection_n": 12,
        "embedding": 0.9,
        "embedding_n": 12,
        "simulation": None,
        "simulation_n": 0,
        "refusal": None,
        "created": CREATED,
    }
    return row | changes


def explain(folder: Path, layer_rows: dict[int, list[dict]]) -> Path:
    """Write explanations as `harvest explain` does: layer files, then card and manifest (format 1.1)."""
    for layer, rows in layer_rows.items():
        write_explanations(folder, layer, rows)
    manifest = Manifest.from_json(json.loads((folder / fmt.MANIFEST_FILE).read_text()))
    run = ExplanationRun(
        explainer="m",
        prompt_version="neuroscope-1",
        scorers=["detection", "embedding"],
        layers=sorted(layer_rows),
        neurons=3,
        refused=1,
        started="2026-05-01T11:00:00+00:00",
        finished="2026-05-01T12:00:00+00:00",
    )
    finish_dataset(folder, manifest.with_explanation_run(sorted(layer_rows), run))
    return folder


@pytest.fixture
def plain(tmp_path) -> Path:
    return write_synthetic_dataset(tmp_path / "plain", n_layers=2, d_mlp=D_MLP)


@pytest.fixture
def explained(tmp_path) -> Path:
    folder = write_synthetic_dataset(tmp_path / "explained", n_layers=2, d_mlp=D_MLP)
    refused = explanation_row(
        1,
        7,
        explanation=None,
        refusal="empty explanation",
        detection=None,
        detection_n=0,
        embedding=None,
        embedding_n=0,
    )
    return explain(folder, {1: [explanation_row(1, 3), refused, explanation_row(1, 3, explainer="a")]})


def test_a_10_dataset_is_untouched_verifies_and_reads_with_no_explanations(plain):
    manifest = json.loads((plain / fmt.MANIFEST_FILE).read_text())
    assert manifest["format_version"] == "1.0" and "explanations" not in manifest
    assert "explanations" not in render_card(Manifest.from_json(manifest))
    assert verify_dataset(str(plain)) == []
    dataset = open_dataset(plain)
    assert dataset.explanation_layers == [] and dataset.explanations(0).num_rows == 0
    assert dataset.explanations(0).schema == fmt.EXPLANATION_SCHEMA and dataset.neuron_explanations(1, 5) == []


def test_explanations_verify_and_read_row_by_row(explained):
    assert verify_dataset(str(explained)) == []
    dataset = open_dataset(explained)
    assert dataset.manifest.format_version == "1.1" and dataset.explanation_layers == [1]
    table = dataset.explanations(1)
    assert [(row["neuron"], row["explainer"]) for row in table.to_pylist()] == [(3, "a"), (3, "m"), (7, "m")]
    (first, second) = dataset.neuron_explanations(1, 3)
    assert first["explanation"] == "neuron 3 thing" and first["detection"] == 0.75 and first["detection_n"] == 12
    assert first["created"] == CREATED and second["explainer"] == "m"
    assert dataset.neuron_explanations(1, 7)[0]["refusal"] == "empty explanation"
    assert dataset.explanations(0).num_rows == 0
    with pytest.raises(DatasetError, match="layer 5 is not in dataset"):
        dataset.explanations(5)


def test_an_11_dataset_reads_with_the_10_columns(explained):
    dataset = open_dataset(explained)
    assert dataset.neurons(1).schema.names == V10_NEURON_COLUMNS
    assert dataset.examples(1, 3).schema.names == V10_EXAMPLE_COLUMNS
    neurons = datasets.load_dataset(str(explained), "neurons", split="train")
    layer_1 = datasets.load_dataset(str(explained), "layer_1", split="train")
    assert neurons.column_names == V10_NEURON_COLUMNS and layer_1.column_names == V10_EXAMPLE_COLUMNS
    assert layer_1.num_rows == pq.read_metadata(explained / fmt.examples_path(1)).num_rows


def test_load_dataset_explanations_config(explained):
    table = datasets.load_dataset(str(explained), fmt.EXPLANATIONS_CONFIG, split="train")
    assert table.column_names == fmt.EXPLANATION_SCHEMA.names
    assert table["neuron"] == [3, 3, 7] and table["layer"] == [1, 1, 1] and table["refusal"][2] == "empty explanation"


def test_push_publishes_explanations_and_the_hub_copy_reads_and_verifies(hub_server, explained, tmp_path):
    sha = push(explained, REPO_ID, endpoint=hub_server.url)
    assert sha is not None
    assert push(explained, REPO_ID, endpoint=hub_server.url) is None  # unchanged: no commit
    assert verify_dataset(f"{REPO_ID}@{sha}", endpoint=hub_server.url) == []
    remote = open_dataset(REPO_ID, endpoint=hub_server.url)
    assert remote.explanations(1).equals(open_dataset(explained).explanations(1))
    loaded = datasets.load_dataset(REPO_ID, fmt.EXPLANATIONS_CONFIG, split="train", cache_dir=str(tmp_path / "c"))
    assert loaded["explanation"] == ["neuron 3 thing", "neuron 3 thing", None]


def _damage(folder: Path, change) -> None:
    path = folder / fmt.explanations_path(1)
    table = pq.read_table(path).to_pylist()
    change(table)
    pq.write_table(pa.Table.from_pylist(table, schema=fmt.EXPLANATION_SCHEMA), path)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda rows: rows.reverse(), "rows are not sorted by (neuron, explainer, prompt_version), one row each"),
        (lambda rows: rows.append({**rows[-1]}), "rows are not sorted by (neuron, explainer, prompt_version)"),
        (lambda rows: rows[0].update(detection=1.5), "detection of neurons 3 is outside 0.0..1.0"),
        (lambda rows: rows[0].update(embedding_n=0), "embedding_n of neurons 3 is not a count for its score"),
        (lambda rows: rows[0].update(refusal="why"), "neurons 3 need exactly one of explanation and refusal"),
        (lambda rows: rows[0].update(neuron=D_MLP + 1), f"neurons {D_MLP + 1} are outside 0..{D_MLP - 1}"),
        (lambda rows: rows[0].update(layer=0), "column 'layer' holds 0, expected 1 only"),
    ],
)
def test_verify_reports_broken_explanations(explained, change, problem):
    _damage(explained, change)
    problems = verify_dataset(str(explained))
    assert any(problem in text and text.startswith(fmt.explanations_path(1)) for text in problems), problems


def test_verify_reports_explanation_files_the_manifest_does_not_list(explained, plain):
    shutil.copy(explained / fmt.explanations_path(1), explained / fmt.explanations_path(0))
    assert any(
        "data/explanations/layer_00.parquet" in p and "unexpected file" in p for p in verify_dataset(str(explained))
    )
    (explained / fmt.explanations_path(0)).unlink()
    (explained / fmt.explanations_path(1)).unlink()
    assert any(
        "missing (the manifest's explanations.layers lists layer 1)" in p for p in verify_dataset(str(explained))
    )
    write_explanations(plain, 0, [explanation_row(0, 1)])  # a 1.0 dataset with a stray explanations file
    assert any("unexpected file" in p for p in verify_dataset(str(plain)))


def test_verify_reports_a_card_or_manifest_that_does_not_declare_them(explained):
    manifest_path = explained / fmt.MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    card = (explained / fmt.CARD_FILE).read_text()
    (explained / fmt.CARD_FILE).write_text(render_card(Manifest.from_json(manifest | {"explanations": None})))
    assert any("no `explanations` config" in p for p in verify_dataset(str(explained)))
    (explained / fmt.CARD_FILE).write_text(card)
    manifest_path.write_text(json.dumps(manifest | {"format_version": "1.0"}))
    assert any("section 'explanations' needs format_version 1.1" in p for p in verify_dataset(str(explained)))
    manifest_path.write_text(json.dumps(manifest | {"explanations": {"layers": [9], "runs": []}}))
    assert any("explanations.layers [9] are not layers of harvest.layers" in p for p in verify_dataset(str(explained)))
