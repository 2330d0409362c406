"""verify_dataset: one test per kind of problem, each message naming the file and what is wrong."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from hub_sync import format as fmt
from hub_sync.synthetic import write_synthetic_dataset
from hub_sync.verify import verify_dataset
from hub_sync.writer import write_examples_parquet
from testkit.support import edit_manifest

D_MLP = 100
PER_NEURON = 5 + 3 + 2  # top_k + random_k + bottom_k of the fixture dataset
WINDOWS = 1000  # corpus size written into the manifest, so exact top/bottom counts are checked


@pytest.fixture(scope="module")
def valid_dir(tmp_path_factory) -> Path:
    folder = write_synthetic_dataset(tmp_path_factory.mktemp("valid") / "ds", n_layers=2, d_mlp=D_MLP, bottom_k=2)
    edit_manifest(folder, lambda manifest: manifest["corpus"].update(windows=WINDOWS))
    return folder


@pytest.fixture
def dataset(valid_dir, tmp_path) -> Path:
    """A private copy of the valid dataset that a test may damage."""
    return Path(shutil.copytree(valid_dir, tmp_path / "ds"))


def rewrite(path: Path, change: Callable[[pa.Table], pa.Table], rows_per_group: int | None = None) -> None:
    """Rewrite a Parquet file with a changed table; one row group unless `rows_per_group` is given."""
    table = change(pq.read_table(path))
    pq.write_table(table, path, compression="zstd", row_group_size=rows_per_group or max(1, table.num_rows))


def rewrite_examples(path: Path, change: Callable[[pa.Table], pa.Table]) -> None:
    """Rewrite an examples file with a changed table, as the writer groups rows: four whole neurons per row group."""
    write_examples_parquet(change(pq.read_table(path)).cast(fmt.EXAMPLE_SCHEMA), path, neurons_per_group=4)


def only_problem(folder: Path, relative: str) -> str:
    """The single problem verify reports, checked to name the damaged file."""
    problems = verify_dataset(str(folder))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{relative} (in {folder}): "), problems[0]
    return problems[0]


def test_valid_datasets_have_no_problems(valid_dir, tmp_path):
    assert verify_dataset(str(valid_dir)) == []
    hostile = write_synthetic_dataset(tmp_path / "hostile", d_mlp=40, hostile=True)
    assert verify_dataset(str(hostile)) == []


@pytest.mark.parametrize("relative", [fmt.examples_path(1), fmt.neurons_path(0)])
def test_truncated_parquet_is_reported_as_such(dataset, relative):
    path = dataset / relative
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "not a readable Parquet file (truncated or corrupt)" in only_problem(dataset, relative)


def test_corrupt_column_data_is_reported_as_such(dataset):
    path = dataset / fmt.examples_path(0)
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(fmt.EXAMPLE_SCHEMA.get_field_index("rank"))
    data = bytearray(path.read_bytes())
    start, size = chunk.data_page_offset, chunk.total_compressed_size
    data[start : start + size] = b"\xff" * size
    path.write_bytes(bytes(data))
    assert "data is unreadable (truncated or corrupt)" in only_problem(dataset, fmt.examples_path(0))


def without_neuron(neuron: int) -> Callable[[pa.Table], pa.Table]:
    return lambda table: table.filter(pc.not_equal(table.column("neuron"), neuron))


@pytest.mark.parametrize(
    ("relative", "rewrite_file", "change", "message"),
    [
        (fmt.neurons_path(1), rewrite, without_neuron(7), "neurons 7 have no row"),
        (
            fmt.neurons_path(1),
            rewrite,
            lambda table: pa.concat_tables([table, table.slice(3, 1)]),
            "neurons 3 have more than one row",
        ),
        (fmt.examples_path(0), rewrite_examples, without_neuron(42), "neurons 42 have no examples"),
        # Dropping neuron 9's last top row (rank 4) keeps ranks 0..n-1 and the sort: only the count is wrong.
        (
            fmt.examples_path(0),
            rewrite_examples,
            lambda table: pa.concat_tables([table.slice(0, 94), table.slice(95)]),
            "neurons 9 have fewer than top_k=5 top rows",
        ),
    ],
    ids=["neuron-row-dropped", "neuron-row-repeated", "neuron-without-examples", "top-example-dropped"],
)
def test_missing_or_repeated_rows_are_reported(dataset, relative, rewrite_file, change, message):
    rewrite_file(dataset / relative, change)
    assert message in only_problem(dataset, relative)


def test_unsorted_examples_are_reported(dataset):
    relative = fmt.examples_path(1)
    rewrite(dataset / relative, lambda table: table.take(pa.array(np.r_[1, 0, 2 : table.num_rows])))
    problem = only_problem(dataset, relative)
    assert "rows are not sorted by (neuron, kind, rank): row 1 (neuron 0, top, rank 0) follows row 0" in problem


def test_ranks_not_counting_from_zero_are_reported(dataset):
    relative = fmt.examples_path(1)

    def shift_ranks_of_neuron_5(table: pa.Table) -> pa.Table:
        ranks = table.column("rank").to_numpy().copy()
        ranks[table.column("neuron").to_numpy() == 5] += 1
        return table.set_column(2, "rank", pa.array(ranks, type=pa.int16()))

    rewrite(dataset / relative, shift_ranks_of_neuron_5)
    assert "ranks of neurons 5 are not 0..n-1 within each kind" in only_problem(dataset, relative)


def test_unknown_kind_is_reported(dataset):
    relative = fmt.examples_path(0)
    kinds = pc.replace_substring(pq.read_table(dataset / relative).column("kind"), "random", "rnd")
    rewrite(dataset / relative, lambda table: table.set_column(1, "kind", kinds))
    assert "unknown kinds rnd" in only_problem(dataset, relative)


@pytest.mark.parametrize(
    ("relative", "column", "bad_type", "message"),
    [
        (fmt.examples_path(0), "score", pa.float64(), "column 'score' is double, expected float"),
        (fmt.examples_path(1), "activations", pa.list_(pa.float32()), "expected list<item: halffloat>"),
        (fmt.neurons_path(0), "neuron", pa.int64(), "column 'neuron' is int64, expected int32"),
    ],
)
def test_wrong_column_type_is_reported(dataset, relative, column, bad_type, message):
    def cast(table: pa.Table) -> pa.Table:
        index = table.schema.get_field_index(column)
        return table.set_column(index, column, table.column(column).cast(bad_type))

    rewrite(dataset / relative, cast)
    problem = only_problem(dataset, relative)
    assert "schema differs from format v1" in problem and message in problem


def test_missing_column_is_reported(dataset):
    relative = fmt.examples_path(0)
    rewrite(dataset / relative, lambda table: table.drop_columns(["tokens"]))
    assert "column 'tokens' is missing" in only_problem(dataset, relative)


def test_window_of_wrong_length_is_reported(dataset):
    relative = fmt.examples_path(1)

    def shorten_neuron_11(table: pa.Table) -> pa.Table:
        ids = table.column("token_ids").to_pylist()
        for row in np.flatnonzero(table.column("neuron").to_numpy() == 11):
            ids[row] = ids[row][:-1]
        return table.set_column(6, "token_ids", pa.array(ids, type=pa.list_(pa.int32())))

    rewrite_examples(dataset / relative, shorten_neuron_11)
    assert "column 'token_ids' of neurons 11 does not hold window=16 values" in only_problem(dataset, relative)


def test_row_group_splitting_a_neuron_is_reported(dataset):
    relative = fmt.examples_path(0)
    rewrite(dataset / relative, lambda table: table, rows_per_group=PER_NEURON * 3 // 2)
    problems = verify_dataset(str(dataset))
    assert problems and all(p.startswith(f"{relative} (in {dataset}): ") for p in problems)
    assert problems[0].endswith("neuron 1 is split across row groups 0 and 1")


def test_missing_neuron_statistics_in_footer_are_reported(dataset):
    relative = fmt.examples_path(0)
    table = pq.read_table(dataset / relative)
    pq.write_table(table, dataset / relative, write_statistics=["kind"], row_group_size=PER_NEURON * 4)
    assert "row group 0 has no min/max statistics for 'neuron'" in verify_dataset(str(dataset))[0]


def test_manifest_naming_a_missing_layer_is_reported(dataset):
    def add_layer_2(manifest: dict) -> None:
        manifest["model"]["n_layers"] = 3
        manifest["harvest"]["layers"] = [0, 1, 2]

    edit_manifest(dataset, add_layer_2)
    problems = verify_dataset(str(dataset))
    prefix = f"(in {dataset}): missing (the manifest's harvest.layers lists layer 2)"
    assert f"{fmt.neurons_path(2)} {prefix}" in problems
    assert f"{fmt.examples_path(2)} {prefix}" in problems
    assert f"{fmt.CARD_FILE} (in {dataset}): no `layer_2` config reading {fmt.examples_path(2)}" in problems
    assert len(problems) == 3, problems


def test_layer_file_not_in_manifest_is_reported(dataset):
    shutil.copyfile(dataset / fmt.examples_path(1), dataset / fmt.examples_path(5))
    assert "unexpected file, not a layer of the manifest" in only_problem(dataset, fmt.examples_path(5))


def test_card_without_layer_configs_is_reported(dataset):
    card = (dataset / fmt.CARD_FILE).read_text()
    (dataset / fmt.CARD_FILE).write_text(card.replace("config_name: layer_1", "config_name: layer_one"))
    problems = verify_dataset(str(dataset))
    assert problems == [
        f"{fmt.CARD_FILE} (in {dataset}): no `layer_1` config reading {fmt.examples_path(1)}",
        f"{fmt.CARD_FILE} (in {dataset}): configs layer_one are not layers of the manifest",
    ]


def test_card_missing_is_reported(dataset):
    (dataset / fmt.CARD_FILE).unlink()
    assert "file is missing" in only_problem(dataset, fmt.CARD_FILE)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda manifest: manifest.update(format_version="3.1"), "format_version 3.1 has major version 3"),
        (lambda manifest: manifest["harvest"].pop("top_k"), "harvest.top_k is missing"),
        (lambda manifest: manifest["model"].update(d_mlp="100"), "model.d_mlp is '100', expected an integer"),
        (lambda manifest: manifest["harvest"].update(layers=[]), "harvest.layers is empty"),
        (lambda manifest: manifest["harvest"].update(layers=[0, 0]), "harvest.layers [0, 0] repeats a layer"),
    ],
)
def test_manifest_problems_are_reported(dataset, change, message):
    edit_manifest(dataset, change)
    assert message in only_problem(dataset, fmt.MANIFEST_FILE)


def test_missing_manifest_is_reported(dataset):
    (dataset / fmt.MANIFEST_FILE).unlink()
    assert "file is missing" in only_problem(dataset, fmt.MANIFEST_FILE)


def test_hub_dataset_is_verified_at_its_revision(hub_server, valid_dir):
    sha = hub_server.add_folder("org/name", valid_dir)
    assert verify_dataset(f"hf://datasets/org/name@{sha}", endpoint=hub_server.url) == []
    assert verify_dataset("org/absent", endpoint=hub_server.url)[0].startswith("cannot open Hub dataset 'org/absent'")


def test_extra_column_is_reported_unless_a_newer_minor_version_adds_it(dataset):
    relative = fmt.neurons_path(0)
    rewrite(dataset / relative, lambda table: table.append_column("future", pa.array([0] * table.num_rows)))
    assert "unexpected column 'future'" in only_problem(dataset, relative)
    edit_manifest(dataset, lambda manifest: manifest.update(format_version="1.2"))
    assert verify_dataset(str(dataset)) == []
