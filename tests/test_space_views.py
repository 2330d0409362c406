"""The Space's views without a server: rendering, escaping, search, link resolution."""

from __future__ import annotations

import re
from html import escape
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from hub_sync import format as fmt
from hub_sync.synthetic import HOSTILE_TOKENS, write_synthetic_dataset
from space.links import NeuronRef, resolve, resolve_query, step
from space.sources import open_sources, sources_from_env
from space.text import visible_token
from space.views import SNIPPET_LIMIT, neuron_view, search_view


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    root = tmp_path_factory.mktemp("space_views")
    hostile = write_synthetic_dataset(
        root / "hostile", n_layers=3, d_mlp=40, bottom_k=2, d_vocab=10, hostile=True, name="org/hostile"
    )
    plain = write_synthetic_dataset(root / "plain", n_layers=2, d_mlp=24, name="org/plain", seed=1)
    broken = root / "broken"
    broken.mkdir()
    (broken / fmt.MANIFEST_FILE).write_text("{not json")
    return open_sources([str(hostile), str(plain), str(broken), str(root / "absent")])


def test_failed_sources_are_listed_with_their_error_while_others_open(catalog, tmp_path_factory):
    assert catalog.model_names == ["org/hostile", "org/plain"]
    errors = {Path(item.source).name: item.error for item in catalog.unavailable}
    assert set(errors) == {"broken", "absent"}
    assert "not valid JSON" in errors["broken"]
    assert "neither a local folder" in errors["absent"]


def test_two_sources_of_one_model_get_names_that_show_no_server_path(tmp_path):
    first = write_synthetic_dataset(tmp_path / "first" / "copy", n_layers=1, d_mlp=4, name="org/same")
    second = write_synthetic_dataset(tmp_path / "second" / "copy", n_layers=1, d_mlp=4, name="org/same")
    third = write_synthetic_dataset(tmp_path / "third", n_layers=1, d_mlp=4, name="org/same")
    catalog = open_sources([str(first), str(second), str(third)])
    assert catalog.model_names == ["org/same", "org/same (copy)", "org/same (third)"]
    assert all(str(tmp_path) not in name and "/tmp" not in name for name in catalog.model_names)
    fourth = write_synthetic_dataset(tmp_path / "fourth" / "copy", n_layers=1, d_mlp=4, name="org/same")
    names = open_sources([str(first), str(second), str(fourth)]).model_names
    assert names == ["org/same", "org/same (copy)", "org/same (copy) #2"]


def test_sources_from_env_splits_on_commas_and_drops_blanks():
    assert sources_from_env({"NEUROSCOPE_SOURCES": " a/b , ./x,,"}) == ["a/b", "./x"]
    assert sources_from_env({}) == []


def test_whitespace_tokens_get_visible_glyphs():
    assert visible_token("\n") == "↵"
    assert visible_token(" ") == "·"
    assert visible_token("\t") == "→"
    assert visible_token(" the") == " the"
    assert visible_token("a\nb") == "a↵b"


def _example_rows(dataset_dir: Path, layer: int, neuron: int) -> list[dict]:
    table = pq.read_table(dataset_dir / fmt.examples_path(layer)).to_pylist()
    return [row for row in table if row["neuron"] == neuron]


def test_neuron_page_shows_every_example_and_escapes_every_dataset_string(catalog):
    dataset = catalog.models["org/hostile"]
    for neuron in range(dataset.d_mlp):
        page = neuron_view(catalog, "org/hostile", 1, neuron).page
        assert "<script" not in page and "<img" not in page and "<b>bold" not in page
        rows = _example_rows(Path(dataset.source), 1, neuron)
        assert page.count('<details class="ns-ex">') == len(rows)
        for row in rows:
            for token in row["tokens"]:
                assert escape(visible_token(token)) in page
    hostile_page = "".join(neuron_view(catalog, "org/hostile", 1, n).page for n in range(dataset.d_mlp))
    assert escape(HOSTILE_TOKENS[0]) in hostile_page
    for attribute in re.findall(r'title="([^"]*)"', hostile_page):
        assert "<" not in attribute and ">" not in attribute


def test_tokens_share_one_colour_scale_per_neuron(catalog):
    dataset = catalog.models["org/hostile"]
    page = neuron_view(catalog, "org/hostile", 0, 3).page
    rows = _example_rows(Path(dataset.source), 0, 3)
    after_bos = [value for row in rows for value in row["activations"][1:]]
    positive, negative = max(max(after_bos), 0) or 1.0, -min(min(after_bos), 0) or 1.0
    assert f"Colour scale: 0 to +{positive:.3g} (orange), 0 to −{negative:.3g} (blue)" in page
    shades = re.findall(r'<span class="t ([pn])(\d+)', page)
    assert max(int(step) for _, step in shades) == 10
    largest_row = max(rows, key=lambda row: max(abs(value) for value in row["activations"]))
    largest_position = max(range(len(largest_row["activations"])), key=lambda p: abs(largest_row["activations"][p]))
    assert f'title="{largest_row["activations"][largest_position]:.4g}"' in page


def test_unknown_or_malformed_links_resolve_to_a_valid_neuron_with_a_message(catalog):
    ref, messages = resolve_query(catalog, {"model": "org/plain", "layer": "1", "neuron": "5"})
    assert ref == NeuronRef("org/plain", 1, 5) and messages == []
    ref, messages = resolve_query(catalog, {"model": "nope", "layer": "x", "neuron": "-3"})
    assert ref == NeuronRef("org/hostile", 0, 0)
    assert len(messages) == 3 and "Unknown model 'nope'" in messages[0]
    ref, messages = resolve(catalog, "org/plain", 7, 24)
    assert ref == NeuronRef("org/plain", 0, 0) and len(messages) == 2
    assert resolve_query(catalog, {}) == (NeuronRef("org/hostile", 0, 0), [])


@pytest.mark.parametrize("value", ["³", "①", "٣", "9" * 5000, "1e0", "0x1", "1.5", "1,0", 1.5, float("nan"), True])
def test_anything_but_a_whole_number_gives_a_message_never_an_exception(catalog, value):
    ref, messages = resolve_query(catalog, {"model": "org/plain", "layer": value, "neuron": value})
    assert ref == NeuronRef("org/plain", 0, 0)
    assert len(messages) == 2 and all("is not a whole number" in message and len(message) < 200 for message in messages)


@pytest.mark.parametrize("value", ["1", " 1 ", "+1", "1.0", "1.", 1, 1.0])
def test_a_whole_number_is_taken_however_it_is_written(catalog, value):
    assert resolve(catalog, "org/plain", value, value) == (NeuronRef("org/plain", 1, 1), [])


def test_step_crosses_layers_and_wraps(catalog):
    assert step(catalog, NeuronRef("org/plain", 0, 23), 1) == NeuronRef("org/plain", 1, 0)
    assert step(catalog, NeuronRef("org/plain", 1, 23), 1) == NeuronRef("org/plain", 0, 0)
    assert step(catalog, NeuronRef("org/plain", 0, 0), -1) == NeuronRef("org/plain", 1, 23)


def token_matches(token: str, keyword: str) -> bool:
    """The documented rule, written out: case and surrounding spaces ignored; a trailing `*` after other
    characters matches every token starting with what precedes it."""
    token, keyword = token.strip().lower(), keyword.strip().lower()
    if len(keyword) > 1 and keyword.endswith("*") and keyword.strip("*"):
        return token.startswith(keyword[:-1])
    return token == keyword


def brute_force_search(catalog, keyword: str, layer_min: int, layer_max: int) -> list[tuple[str, int, int, float]]:
    """Every (model, layer, neuron, max) whose peak tokens match, read straight from the Parquet files."""
    found = []
    for name, dataset in catalog.models.items():
        for layer in dataset.layers:
            if not layer_min <= layer <= layer_max:
                continue
            for row in pq.read_table(Path(dataset.source) / fmt.neurons_path(layer)).to_pylist():
                if any(token_matches(token, keyword) for token in row["peak_tokens"]):
                    found.append((name, layer, row["neuron"], row["max"]))
    return sorted(found, key=lambda hit: -hit[3])


@pytest.mark.parametrize("keyword", ["W7", "  TOK9 ", HOSTILE_TOKENS[1], "tok1*", "W*", "<*"])
def test_search_finds_exactly_the_neurons_peaking_on_the_keyword(catalog, keyword):
    expected = brute_force_search(catalog, keyword, 1, 2)
    assert expected, "the hostile dataset's small vocabulary makes every keyword a peak token"
    notice, frame = search_view(catalog, keyword, None, 1, 2, "max")
    shown = list(zip(frame["model"], frame["layer"], frame["neuron"], strict=True))
    assert [(m, layer, n) for m, layer, n, _ in expected] == shown
    assert f"{len(expected):,} neurons" in notice
    assert frame["matches"].min() >= 1


def test_a_prefix_search_takes_more_tokens_than_the_exact_one_and_stars_alone_are_a_token(catalog):
    exact, prefix = (brute_force_search(catalog, keyword, 0, 9) for keyword in ("tok1", "tok1*"))
    assert set(exact) < set(prefix), "tok10, tok11, ... peak too"
    assert all(token_matches(token, "tok1*") for token in ("tok1", "TOK12", " tok1x"))
    _, frame = search_view(catalog, "*", None, None, None, "max")
    assert len(frame) == len(brute_force_search(catalog, "*", 0, 9)) < catalog.index.size, "not every neuron"


def test_search_results_show_the_top_example_around_its_peak(catalog):
    _, frame = search_view(catalog, "", None, None, None, "max")
    assert len(frame) == 100
    for _, hit in frame.iloc[:SNIPPET_LIMIT].iterrows():
        rows = _example_rows(Path(catalog.models[hit["model"]].source), hit["layer"], hit["neuron"])
        top = next(row for row in rows if row["kind"] == "top" and row["rank"] == 0)
        peak, tokens = top["max_position"], top["tokens"]
        shown = [visible_token(token) for token in tokens]
        shown[peak] = f"⟦{shown[peak]}⟧"
        assert hit["top example"] == "".join(shown[max(1, peak - 8) : peak + 4])
    assert set(frame["top example"].iloc[SNIPPET_LIMIT:]) == {""}
    _, hostile = search_view(catalog, "", ["org/hostile"], None, None, "max")
    assert any(token in "".join(hostile["top example"]) for token in HOSTILE_TOKENS)  # plain text, as stored


def test_search_sorts_and_filters_by_model(catalog):
    _, frame = search_view(catalog, "", ["org/plain"], None, None, "density")
    assert set(frame["model"]) == {"org/plain"} and len(frame) == 48
    assert list(frame["density"]) == sorted(frame["density"], reverse=True)
    notice, _ = search_view(catalog, "", ["nope"], None, None, "bogus")
    assert "Unknown sort" in notice and "Unknown models ignored" in notice


def test_search_layer_bounds_follow_the_number_rule_and_an_empty_range_is_named(catalog):
    notice, frame = search_view(catalog, "", None, "³", 0.5, "max")
    assert "From layer &#x27;³&#x27; is not a whole number" in notice
    assert "To layer 0.5 is not a whole number" in notice
    assert len(frame) == 100
    notice, frame = search_view(catalog, "", None, 2, 1, "max")
    assert "From layer 2 is above to layer 1" in notice and frame.empty


def test_an_unreadable_neuron_table_is_reported_and_its_pages_give_a_message(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "cut", n_layers=2, d_mlp=8, name="org/cut")
    table_file = folder / fmt.neurons_path(1)
    table_file.write_bytes(table_file.read_bytes()[:100])
    catalog = open_sources([str(folder)])
    assert catalog.index.size == 8
    assert any("layer 1" in message and "org/cut" in message for message in catalog.unavailable_messages())
    assert neuron_view(catalog, "org/cut", 0, 3).page
    broken = neuron_view(catalog, "org/cut", 1, 3)
    assert broken.page == "" and "cannot be shown" in broken.notice
