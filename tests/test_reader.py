"""The lazy reader: same answers as a full read, clear errors, one ranged GET per page over the Hub."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from hub_sync import format as fmt
from hub_sync.reader import DatasetError, open_dataset, parse_hub_source
from hub_sync.synthetic import write_synthetic_dataset
from space.sources import open_sources
from testkit.support import edit_manifest

D_MLP = 200  # 64 neurons per row group: four row groups, the last one partial


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("ds") / "ds", n_layers=2, d_mlp=D_MLP, bottom_k=2)


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("hostile") / "ds", d_mlp=70, hostile=True, seed=3)


@pytest.fixture
def copy_dir(dataset_dir, tmp_path) -> Path:
    """A private copy of the dataset that a test may damage."""
    return Path(shutil.copytree(dataset_dir, tmp_path / "copy"))


def full_examples(folder: Path, layer: int, neuron: int):
    table = pq.read_table(folder / fmt.examples_path(layer))
    return table.filter(pc.equal(table.column("neuron"), neuron))


def row_group_span(folder: Path, layer: int, group: int) -> tuple[int, int]:
    """First and last byte (inclusive) of a row group's column chunks in an examples file."""
    row_group = pq.ParquetFile(folder / fmt.examples_path(layer)).metadata.row_group(group)
    starts, ends = [], []
    for column in range(row_group.num_columns):
        chunk = row_group.column(column)
        starts.append(min(o for o in (chunk.dictionary_page_offset, chunk.data_page_offset) if o is not None))
        ends.append(starts[-1] + chunk.total_compressed_size)
    return min(starts), max(ends) - 1


@pytest.mark.parametrize("which", ["dataset_dir", "hostile_dir"])
def test_every_neurons_examples_equal_a_full_read(which, request):
    folder = request.getfixturevalue(which)
    ds = open_dataset(folder)
    for layer in ds.layers:
        for neuron in range(ds.d_mlp):
            assert ds.examples(layer, neuron).equals(full_examples(folder, layer, neuron)), (layer, neuron)


def test_opened_dataset_exposes_manifest_and_neuron_tables(dataset_dir):
    ds = open_dataset(str(dataset_dir))
    manifest = json.loads((dataset_dir / fmt.MANIFEST_FILE).read_text())
    assert (ds.source, ds.revision, ds.name) == (str(dataset_dir), None, "synthetic/model")
    assert ds.manifest.to_json() == manifest
    assert (ds.layers, ds.d_mlp, ds.histogram_edges) == ([0, 1], D_MLP, fmt.HISTOGRAM_EDGES)
    assert ds.neurons(1).equals(pq.read_table(dataset_dir / fmt.neurons_path(1)))
    assert ds.neurons(1) is ds.neurons(1)


def test_examples_come_sorted_by_kind_then_rank(dataset_dir):
    rows = open_dataset(dataset_dir).examples(1, 63).to_pydict()
    assert rows["kind"] == ["top"] * 5 + ["random"] * 3 + ["bottom"] * 2
    assert rows["rank"] == [0, 1, 2, 3, 4, 0, 1, 2, 0, 1]
    assert set(rows["neuron"]) == {63}


def test_pages_read_from_many_threads_match_serial_reads(dataset_dir):
    ds = open_dataset(dataset_dir)
    pages = [(layer, neuron) for layer in ds.layers for neuron in range(0, D_MLP, 3)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda page: ds.examples(*page), pages * 2))
    serial = [full_examples(dataset_dir, *page) for page in pages * 2]
    assert all(got.equals(want) for got, want in zip(parallel, serial, strict=True))


@pytest.mark.parametrize(
    ("layer", "neuron", "message"),
    [
        (2, 0, r"layer 2 is not in dataset 'synthetic/model' \(its layers: \[0, 1\]\)"),
        (-1, 0, r"layer -1 is not in dataset"),
        (0, D_MLP, rf"neuron {D_MLP} is out of range: 'synthetic/model' has neurons 0..{D_MLP - 1}"),
        (0, -1, r"neuron -1 is out of range"),
        ("0", 0, r"layer must be an integer, got '0'"),
        (0, 1.5, r"neuron must be an integer, got 1.5"),
    ],
)
def test_out_of_range_requests_raise_dataset_error(dataset_dir, layer, neuron, message):
    ds = open_dataset(dataset_dir)
    with pytest.raises(DatasetError, match=message):
        ds.examples(layer, neuron)
    assert issubclass(DatasetError, ValueError)


def test_unknown_major_format_version_is_refused(copy_dir):
    edit_manifest(copy_dir, lambda manifest: manifest.update(format_version="2.0"))
    message = r"neuroscope.json .*format_version 2.0 has major version 2; .*knows major version 1"
    with pytest.raises(DatasetError, match=message):
        open_dataset(copy_dir)


def test_newer_minor_format_version_is_read(copy_dir):
    edit_manifest(copy_dir, lambda manifest: manifest.update(format_version="1.7"))
    assert open_dataset(copy_dir).examples(0, 0).num_rows == 10


@pytest.mark.parametrize(
    "damage",
    [lambda path: path.write_bytes(path.read_bytes()[:-100]), lambda path: path.write_bytes(b"PAR1" + b"\0" * 5000)],
    ids=["truncated", "garbage"],
)
@pytest.mark.parametrize("relative", [fmt.examples_path(1), fmt.neurons_path(1)])
def test_an_unreadable_layer_file_is_named_on_its_pages_and_the_other_layers_serve(copy_dir, damage, relative):
    damage(copy_dir / relative)
    ds = open_dataset(copy_dir)
    with pytest.raises(DatasetError) as raised:
        ds.examples(1, 5) if "examples" in relative else ds.neurons(1)
    assert f"{relative} (in {copy_dir})" in str(raised.value)
    assert "not a readable Parquet file (truncated or corrupt)" in str(raised.value)
    assert ds.examples(0, 5).num_rows == 10
    assert ds.unreadable_files == [relative]


def test_corrupt_row_group_is_named_in_the_error(copy_dir):
    path = copy_dir / fmt.examples_path(0)
    start, end = row_group_span(copy_dir, 0, 1)
    data = bytearray(path.read_bytes())
    data[start : end + 1] = b"\xff" * (end + 1 - start)
    path.write_bytes(bytes(data))
    ds = open_dataset(copy_dir)
    with pytest.raises(DatasetError, match=r"data/examples/layer_00.parquet .*row groups \[1\] are unreadable"):
        ds.examples(0, 64)
    assert ds.examples(0, 0).num_rows == 10


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "file is missing"),
        (b"{not json", "not valid JSON"),
        (b'{"format_version": "1.0", "model": {}}', "model.name is missing"),
        (b'{"format_version": "1.0", "model": {"name": 3}}', "model.name is 3, expected a string"),
        (b'{"format_version": "one"}', "format_version 'one' is not a MAJOR.MINOR string"),
    ],
)
def test_broken_manifest_is_refused(copy_dir, content, message):
    path = copy_dir / fmt.MANIFEST_FILE
    path.unlink() if content is None else path.write_bytes(content)
    with pytest.raises(DatasetError) as raised:
        open_dataset(copy_dir)
    assert str(raised.value).startswith(f"neuroscope.json (in {copy_dir}): ")
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("source", "parsed"),
    [
        ("org/name", ("org/name", None)),
        ("org/name@main", ("org/name", "main")),
        ("hf://datasets/org/name@refs/pr/1", ("org/name", "refs/pr/1")),
        ("hf://datasets/org/name", ("org/name", None)),
        ("not a repo", None),
        ("/abs/path", None),
    ],
)
def test_hub_sources_are_parsed(source, parsed):
    assert parse_hub_source(source) == parsed


def test_a_source_that_is_neither_folder_nor_repo_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="is neither a local folder nor a Hub dataset id"):
        open_dataset(tmp_path / "no-such-folder")


def test_hub_dataset_is_pinned_to_its_commit_sha(hub_server, dataset_dir):
    sha = hub_server.add_folder("org/name", dataset_dir)
    for source in ("org/name", "org/name@main", f"hf://datasets/org/name@{sha}", f"org/name@{sha}"):
        ds = open_dataset(source, endpoint=hub_server.url)
        assert (ds.source, ds.revision) == (source, sha)
        assert ds.neurons(0).equals(pq.read_table(dataset_dir / fmt.neurons_path(0)))


def test_missing_hub_repo_or_revision_is_a_dataset_error(hub_server, dataset_dir):
    hub_server.add_folder("org/name", dataset_dir)
    with pytest.raises(DatasetError, match="cannot open Hub dataset 'org/absent'"):
        open_dataset("org/absent", endpoint=hub_server.url)
    with pytest.raises(DatasetError, match="cannot open Hub dataset 'org/name@nope'"):
        open_dataset("org/name@nope", endpoint=hub_server.url)


def test_hub_dataset_opens_with_small_ranged_reads_of_its_footers(hub_server, dataset_dir):
    sha = hub_server.add_folder("org/name", dataset_dir)
    hub_server.clear_log()
    open_dataset("org/name", endpoint=hub_server.url)
    parquet_reads = [request for request in hub_server.requests() if request.path.endswith(".parquet")]
    read_files = sorted(request.path.split(f"/resolve/{sha}/", 1)[1] for request in parquet_reads)
    assert read_files == sorted([fmt.examples_path(0), fmt.examples_path(1), fmt.neurons_path(0), fmt.neurons_path(1)])
    for request in parquet_reads:
        size = (dataset_dir / request.path.split(f"/resolve/{sha}/", 1)[1]).stat().st_size
        assert (request.method, request.status) == ("GET", 206)
        assert request.range.endswith(f"-{size - 1}") and request.bytes_sent <= 16 << 10 < size


def test_hub_page_is_one_ranged_get_of_one_row_group(hub_server, dataset_dir):
    sha = hub_server.add_folder("org/name", dataset_dir)
    ds = open_dataset("org/name", endpoint=hub_server.url)
    resolve_path = f"/datasets/org/name/resolve/{sha}/{fmt.examples_path(1)}"
    for neuron, group in ((70, 1), (199, 3), (5, 0), (128, 2)):
        hub_server.clear_log()
        page = ds.examples(1, neuron)
        start, end = row_group_span(dataset_dir, 1, group)
        [request] = hub_server.requests()
        assert (request.method, request.path, request.status) == ("GET", resolve_path, 206)
        assert request.range == f"bytes={start}-{end}"
        assert request.bytes_sent == end + 1 - start
        assert page.equals(full_examples(dataset_dir, 1, neuron))


def test_open_hub_dataset_keeps_reading_its_revision_after_a_new_push(hub_server, dataset_dir, tmp_path):
    first_sha = hub_server.add_folder("org/name", dataset_dir)
    ds = open_dataset("org/name", endpoint=hub_server.url)
    newer = write_synthetic_dataset(tmp_path / "newer", n_layers=2, d_mlp=D_MLP, bottom_k=2, seed=9)
    second_sha = hub_server.add_folder("org/name", newer)
    assert second_sha != first_sha
    assert ds.revision == first_sha
    assert ds.examples(1, 3).equals(full_examples(dataset_dir, 1, 3))
    assert ds.neurons(1).equals(pq.read_table(dataset_dir / fmt.neurons_path(1)))
    fresh = open_dataset("org/name", endpoint=hub_server.url)
    assert fresh.revision == second_sha
    assert fresh.examples(1, 3).equals(full_examples(newer, 1, 3))
    assert not fresh.examples(1, 3).equals(ds.examples(1, 3))


def test_newer_minor_version_may_add_columns(copy_dir):
    path = copy_dir / fmt.examples_path(0)
    table = pq.read_table(path)
    pq.write_table(table.append_column("future", pa.array([1.0] * table.num_rows)), path, row_group_size=640)
    edit_manifest(copy_dir, lambda manifest: manifest.update(format_version="1.2"))
    assert open_dataset(copy_dir).examples(0, 70).equals(full_examples(copy_dir, 0, 70))


def test_hub_pages_from_many_threads_cost_one_get_each(hub_server, dataset_dir):
    hub_server.add_folder("org/name", dataset_dir)
    ds = open_dataset("org/name", endpoint=hub_server.url)
    ds.examples(0, 0)
    hub_server.clear_log()
    neurons = list(range(0, D_MLP, 7))
    with ThreadPoolExecutor(max_workers=8) as pool:
        pages = list(pool.map(lambda neuron: ds.examples(0, neuron), neurons))
    assert all(page.equals(full_examples(dataset_dir, 0, n)) for page, n in zip(pages, neurons, strict=True))
    assert [request.status for request in hub_server.requests()] == [206] * len(neurons)


def test_a_neuron_split_across_row_groups_is_still_read_whole(copy_dir):
    path = copy_dir / fmt.examples_path(1)
    pq.write_table(pq.read_table(path), path, row_group_size=15)  # 10 rows per neuron: every other one is split
    ds = open_dataset(copy_dir)
    for neuron in (0, 1, 2, 199):
        assert ds.examples(1, neuron).equals(full_examples(copy_dir, 1, neuron))


def change_manifest(section: str, **changes) -> Callable[[Path], None]:
    return lambda folder: edit_manifest(folder, lambda manifest: manifest[section].update(changes))


@pytest.mark.parametrize(
    ("damage", "messages"),
    [
        (change_manifest("harvest", layers=[]), ["neuroscope.json (in {copy}): harvest.layers is empty"]),
        (
            change_manifest("model", d_mlp=D_MLP + 50),
            [f"{fmt.neurons_path(0)} (in {{copy}}): holds {D_MLP} neuron rows, "
             f"but the manifest's model.d_mlp is {D_MLP + 50}"],
        ),
        (
            change_manifest("model", d_mlp=D_MLP - 50),
            [
                f"{fmt.neurons_path(0)} (in {{copy}}): holds {D_MLP} neuron rows, "
                f"but the manifest's model.d_mlp is {D_MLP - 50}",
                f"{fmt.examples_path(0)} (in {{copy}}): holds examples of neurons 0..{D_MLP - 1}, but the manifest's "
                f"model.d_mlp is {D_MLP - 50} (neurons 0..{D_MLP - 51})",
            ],
        ),
        (
            lambda folder: (folder / fmt.examples_path(1)).unlink(),
            [f"{fmt.examples_path(1)} (in {{copy}}): file is missing (the manifest's harvest.layers lists layer 1)"],
        ),
    ],
    ids=["no-layers", "d_mlp-larger-than-the-files", "d_mlp-smaller-than-the-files", "layer-file-missing"],
)
def test_a_source_that_does_not_match_its_data_is_refused_and_the_others_serve(dataset_dir, copy_dir, damage, messages):
    damage(copy_dir)
    catalog = open_sources([str(copy_dir), str(dataset_dir)])
    [unavailable] = catalog.unavailable
    assert unavailable.source == str(copy_dir)
    for message in messages:
        assert message.format(copy=copy_dir) in unavailable.error
    assert [dataset.source for dataset in catalog.models.values()] == [str(dataset_dir)]
    assert catalog.index.problems == []
    served = catalog.models["synthetic/model"]
    assert served.examples(1, D_MLP - 1).equals(full_examples(dataset_dir, 1, D_MLP - 1))
    banner = catalog.unavailable_messages()
    assert any(message.startswith(f"Source {str(copy_dir)!r} is unavailable") for message in banner)
