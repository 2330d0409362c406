"""Blind rating: nothing reveals the neuron before it is rated, the reveal tells the truth, samples are stratified
and never repeated, bad input is refused with nothing written, ratings survive a restart and reach a Hub dataset
through CommitScheduler (against the loopback Hub), and the summary's Wilson interval is the textbook one."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from html import escape
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from hub_sync.synthetic import write_synthetic_dataset
from space.intervals import wilson_interval
from space.rating import (
    MAX_NOTE_CHARACTERS,
    RATINGS_PREFIX,
    SAMPLES_FILE,
    RatingError,
    RatingStore,
    layer_band,
    open_ratings,
    strata_of,
    summarise,
)
from space.rating_view import rate_view, sample_view
from space.research_tabs import research_tabs
from space.server import build_app, running
from space.sources import open_sources
from space.text import visible_token
from testkit.wilson_reference import wilson_by_inversion

FIRST, SECOND = "org/first-model", "org/second-model"
TOKEN_TEXT = re.compile(r'<span class="t [pn]\d+(?: pk)?" title="[^"]*">([^<]*)</span>')


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    root = tmp_path_factory.mktemp("rating")
    first = write_synthetic_dataset(root / "first", n_layers=6, d_mlp=12, name=FIRST, seed=7)
    second = write_synthetic_dataset(root / "second", n_layers=2, d_mlp=8, bottom_k=2, name=SECOND, seed=8)
    return open_sources([str(first), str(second)])


def rating_lines(folder: Path) -> list[dict]:
    return [
        json.loads(line) for path in folder.glob(f"{RATINGS_PREFIX}*.jsonl") for line in path.read_text().splitlines()
    ]


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (8, 10, 0.4902, 0.9433),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (1, 2, 0.0945, 0.9055),
        (0, 0, 0.0, 1.0),
    ],
)
def test_wilson_interval_matches_hand_values_and_the_inverted_score_test(k, n, low, high):
    computed = [float(value) for value in wilson_interval(k, n)]
    assert computed == pytest.approx([low, high], abs=5e-5)
    assert computed == pytest.approx(list(wilson_by_inversion(k, n)), abs=1e-9)


def test_layer_bands_are_thirds_of_the_model():
    assert [layer_band(layer, 6) for layer in range(6)] == ["early", "early", "middle", "middle", "late", "late"]
    assert [layer_band(layer, 2) for layer in range(2)] == ["early", "middle"]
    assert layer_band(0, 1) == "early"


def test_samples_go_round_robin_over_strata_and_never_repeat(catalog, tmp_path):
    store = RatingStore(tmp_path / "ratings")
    strata = strata_of(catalog)
    assert [(s.model, s.band) for s in strata] == [
        (FIRST, "early"),
        (FIRST, "middle"),
        (FIRST, "late"),
        (SECOND, "early"),
        (SECOND, "middle"),
    ]
    issued = [store.issue(catalog, "rater-aaaaaaaa") for _ in range(3 * len(strata))]
    assert [(s.model, layer_band(s.layer, catalog.models[s.model].manifest.model.n_layers)) for s in issued] == [
        (s.model, s.band) for s in strata
    ] * 3
    total = sum(len(dataset.layers) * dataset.d_mlp for dataset in catalog.models.values())
    issued += [store.issue(catalog, "rater-aaaaaaaa") for _ in range(total - len(issued))]
    shown = Counter((s.model, s.layer, s.neuron) for s in issued)
    assert len(shown) == total and set(shown.values()) == {1}  # every neuron once, then none left
    with pytest.raises(RatingError, match="shown every neuron"):
        store.issue(catalog, "rater-aaaaaaaa")
    assert store.issue(catalog, "rater-bbbbbbbb").model == FIRST  # another rater starts afresh
    assert len({s.token for s in issued}) == len(issued)


def test_nothing_reveals_the_neuron_before_it_is_rated_and_the_reveal_is_true(catalog, tmp_path):
    store = RatingStore(tmp_path / "ratings")
    with running(build_app(catalog, research_tabs(store))) as url:
        client = Client(url, verbose=False)
        for _ in range(6):
            reply = client.predict("", api_name="/rating_sample")
            rater, token, notice, page = reply
            sample = store._pending[token]
            text = json.dumps(reply)
            for secret in (
                FIRST,
                SECOND,
                "org/",
                "first-model",
                "second-model",
                "data-",
                "href",
                str(catalog.models[sample.model].source),
            ):
                assert secret not in text, secret
            assert not re.search(r"(?i)(layer|neuron|window)\W*\d|\bL\d+\s*N\d+", text)
            assert all(re.fullmatch(r"-?[0-9.e+-]+|-?inf|nan", title) for title in re.findall(r'title="([^"]*)"', page))
            assert sample.model not in token and not re.search(rf"\b{sample.layer}_{sample.neuron}\b", token)
            examples = catalog.models[sample.model].neuron_examples(sample.layer, sample.neuron)
            shown = [example for example in examples if example.kind in ("top", "random")]
            windows = re.findall(r'<div class="ns-text ns-full">(.*?)</div>', page)
            assert len(windows) == len(shown)  # no bottom examples: only gated models have them
            notice, reveal, record = client.predict(rater, token, "unsure", "", api_name="/rate")
            assert notice == "" and (record["model"], record["layer"], record["neuron"]) == (
                sample.model,
                sample.layer,
                sample.neuron,
            )
            assert f"layer {sample.layer}" in reveal and f"neuron {sample.neuron}" in reveal
            # the reveal is the neuron whose examples were shown: its windows' tokens, in order
            for window, example in zip(windows, shown, strict=True):
                assert TOKEN_TEXT.findall(window) == [escape(visible_token(token)) for token in example.tokens]


def test_bad_input_is_refused_and_nothing_is_written(catalog, tmp_path):
    folder = tmp_path / "ratings"
    store = RatingStore(folder)
    rater, token, _, _ = sample_view(store, catalog, None)
    other, other_token, _, _ = sample_view(store, catalog, None)
    refusals = {
        "unknown": (rater, "not-a-token", "interpretable", ""),
        "another rater's": (other, token, "interpretable", ""),
        "bad answer": (rater, token, "maybe", ""),
        "long note": (rater, token, "not", "x" * (MAX_NOTE_CHARACTERS + 1)),
        "bad rater": ("<script>", token, "not", ""),
        "empty": (None, None, None, None),
    }
    for case, arguments in refusals.items():
        notice, reveal, record = rate_view(store, catalog, *arguments)
        assert 'class="ns-notice"' in notice and reveal == "" and record == {}, case
    assert rating_lines(folder) == []
    assert "<script>" not in rate_view(store, catalog, "<script>", token, "not", "")[0]
    assert rate_view(store, catalog, rater, token, "not", "  a loop  ")[2]["note"] == "a loop"  # still rateable
    notice, _, record = rate_view(store, catalog, rater, token, "not", "")
    assert "already been rated" in notice and record == {}
    assert len(rating_lines(folder)) == 1
    assert "rater id" in sample_view(store, catalog, "x y")[2]


def test_two_raters_at_once_lose_nothing_and_one_sample_is_rated_once(catalog, tmp_path):
    folder = tmp_path / "ratings"
    store = RatingStore(folder)

    def rate_five(index: int) -> list[str]:
        rater = f"parallel-rater-{index}"
        ids = []
        for _ in range(5):
            sample = store.issue(catalog, rater)
            ids.append(store.rate(catalog, rater, sample.token, "interpretable", f"note {index}")["id"])
        return ids

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = [rating_id for batch in pool.map(rate_five, range(8)) for rating_id in batch]
    lines = rating_lines(folder)
    assert sorted(line["id"] for line in lines) == sorted(ids) and len(ids) == 40
    for rater in {line["rater"] for line in lines}:
        assert len({(line["model"], line["layer"], line["neuron"]) for line in lines if line["rater"] == rater}) == 5

    sample = store.issue(catalog, "double-submitter")
    barrier = threading.Barrier(6)

    def submit(_: int) -> str:
        barrier.wait()
        return rate_view(store, catalog, "double-submitter", sample.token, "not", "")[0]

    with ThreadPoolExecutor(max_workers=6) as pool:
        notices = list(pool.map(submit, range(6)))
    assert notices.count("") == 1 and all("already been rated" in notice for notice in notices if notice)
    assert len(rating_lines(folder)) == 41


def test_ratings_and_pending_samples_survive_a_restart(catalog, tmp_path):
    folder = tmp_path / "ratings"
    before = RatingStore(folder)
    rated = [before.issue(catalog, "restart-rater") for _ in range(4)]
    for sample, answer in zip(rated, ["interpretable", "not", "interpretable", "unsure"], strict=True):
        before.rate(catalog, "restart-rater", sample.token, answer, "")
    pending = before.issue(catalog, "restart-rater")
    after = RatingStore(folder)
    assert sorted(r["id"] for r in after.ratings()) == sorted(r["id"] for r in before.ratings())
    assert summarise(after.ratings(), catalog.model_names) == summarise(before.ratings(), catalog.model_names)
    assert after.rate(catalog, "restart-rater", pending.token, "not", "")["neuron"] == pending.neuron
    with pytest.raises(RatingError, match="already been rated"):
        after.rate(catalog, "restart-rater", rated[0].token, "not", "")
    seen = {(s.model, s.layer, s.neuron) for s in [*rated, pending]}
    fresh = [after.issue(catalog, "restart-rater") for _ in range(30)]
    assert not seen & {(s.model, s.layer, s.neuron) for s in fresh}
    assert after.ratings_file != before.ratings_file and (folder / SAMPLES_FILE).exists()


def test_summary_counts_and_intervals_by_model_and_band(catalog, tmp_path):
    store = RatingStore(tmp_path / "ratings")
    answers = ["interpretable", "not", "unsure", "interpretable", "interpretable", "not", "not"] * 3
    records = []
    for index, answer in enumerate(answers):
        sample = store.issue(catalog, f"summary-rater-{index % 3}")
        records.append(store.rate(catalog, sample.rater, sample.token, answer, ""))
    with running(build_app(catalog, research_tabs(store))) as url:
        html, values = Client(url, verbose=False).predict(api_name="/rating_summary")
    rows = {(row["model"], row["band"]): row for row in values["rows"]}
    for (model, band), row in rows.items():
        mine = [r for r in records if r["model"] == model and (band == "all" or r["band"] == band)]
        k = sum(r["answer"] == "interpretable" for r in mine)
        m = sum(r["answer"] == "not" for r in mine)
        assert (row["interpretable"], row["not_interpretable"], row["n"]) == (k, m, k + m)
        assert row["unsure"] == sum(r["answer"] == "unsure" for r in mine)
        assert (row["low"], row["high"]) == pytest.approx(wilson_by_inversion(k, m + k), abs=1e-9)
    assert {band for _, band in rows} <= {"all", "early", "middle", "late"}
    assert sum(rows[(model, "all")]["n"] + rows[(model, "all")]["unsure"] for model in (FIRST, SECOND)) == len(answers)
    assert "95%" in html


def test_ratings_reach_the_hub_dataset_and_come_back_after_a_restart(catalog, hub_server, tmp_path):
    environ = {
        "NEUROSCOPE_RATINGS_REPO": "user/neuroscope-ratings",
        "HF_TOKEN": "hub-test-token",
        "NEUROSCOPE_RATINGS_EVERY": "60",
    }
    store = open_ratings(tmp_path / "first-run", environ)
    assert store.hub.ready.result(timeout=60) == 0
    records = []
    for _ in range(3):
        sample = store.issue(catalog, "hub-rater-1")
        records.append(store.rate(catalog, "hub-rater-1", sample.token, "interpretable", "on the Hub"))
    store.hub.push_now()
    files = hub_server.files("user/neuroscope-ratings")
    uploaded = files[f"data/{store.ratings_file.name}"].decode().splitlines()
    assert [json.loads(line) for line in uploaded] == records
    assert all(name in (".gitattributes", f"data/{store.ratings_file.name}") for name in files)  # samples stay local
    repo_requests = [
        r for r in hub_server.requests() if "neuroscope-ratings" in r.path or r.path == "/api/repos/create"
    ]
    assert repo_requests and all(r.status < 400 for r in repo_requests), [
        (r.method, r.path, r.status) for r in repo_requests
    ]

    restarted = open_ratings(tmp_path / "fresh-disk", environ)  # a Space restarts on an empty disk
    issued = []  # asked for at once: the first sample waits until the Hub's ratings are read
    with pytest.raises(RatingError, match="shown every neuron"):
        while True:
            issued.append(restarted.issue(catalog, "hub-rater-1"))
    seen = {(r["model"], r["layer"], r["neuron"]) for r in records}
    total = sum(len(dataset.layers) * dataset.d_mlp for dataset in catalog.models.values())
    assert len(issued) == total - 3 and not seen & {(s.model, s.layer, s.neuron) for s in issued}
    assert restarted.hub.ready.result() == 3
    assert sorted(r["id"] for r in restarted.ratings()) == sorted(r["id"] for r in records)
    assert "appended to the Hub dataset" in restarted.hub.status()


def test_an_unreachable_ratings_repo_keeps_ratings_local_and_says_so(catalog, tmp_path):
    store = open_ratings(tmp_path / "local", {"NEUROSCOPE_RATINGS_REPO": "user/unreachable"})  # HF_HUB_OFFLINE=1
    assert store.hub.ready.exception(timeout=60) is not None
    sample = store.issue(catalog, "offline-rater")
    store.rate(catalog, "offline-rater", sample.token, "not", "")
    assert len(rating_lines(tmp_path / "local")) == 1 and "kept in this server's folder only" in store.hub.status()


def test_the_api_refuses_bad_input_with_a_notice_and_writes_nothing_for_it(catalog, tmp_path):
    folder = tmp_path / "ratings"
    with running(build_app(catalog, research_tabs(RatingStore(folder)))) as url:
        client = Client(url, verbose=False)
        rater, token, _, _ = client.predict("", api_name="/rating_sample")
        other, _, _, _ = client.predict("", api_name="/rating_sample")
        refusals = [
            ((rater, "forged-token", "interpretable", ""), "Unknown or expired sample"),
            ((other, token, "interpretable", ""), "given to another rater"),
            ((rater, token, "not", "x" * (MAX_NOTE_CHARACTERS + 1)), "shorten it"),
        ]
        for arguments, message in refusals:
            notice, reveal, record = client.predict(*arguments, api_name="/rate")
            assert message in notice and reveal == "" and not record, message
        with pytest.raises(AppError, match="not in the list of choices"):  # the answer radio checks its choices
            client.predict(rater, token, "maybe", "", api_name="/rate")
        assert rating_lines(folder) == []
        assert client.predict(rater, token, "not", "", api_name="/rate")[0] == ""
        notice, reveal, record = client.predict(rater, token, "not", "", api_name="/rate")
        assert "already been rated" in notice and reveal == "" and not record
        bad_rater, bad_token, notice, page = client.predict("<b>x</b>", api_name="/rating_sample")
        assert bad_token == "" and page == "" and "rater id" in notice and "<b>" not in notice
    assert len(rating_lines(folder)) == 1
