"""Explanations in the Space, through the real server and gradio_client: the neuron page shows them best-scored first,
the search finds neurons by their explanations' words and sorts by score (checked against a brute-force pass over the
explanations files), hostile explanations come back escaped, and "Explain this neuron" runs one live explanation
against the suite's loopback OpenAI-compatible server (scripted replies for the failures, the real SmolLM2 once).
A format 1.0 dataset looks as it did."""

from __future__ import annotations

import re
import shutil
import socket
import threading
import urllib.request
from contextlib import ExitStack
from html import escape, unescape
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from gradio_client import Client
from huggingface_hub import constants

from harvest.explain import prompts
from harvest.explain.backends import InferenceBackend
from harvest.explain.examples import split_examples
from harvest.explain.retry import RetryPolicy, call_with_retries
from harvest.explain.run import ExplainConfig, explain_dataset
from hub_sync import format as fmt
from hub_sync.reader import open_dataset
from hub_sync.synthetic import HOSTILE_EXPLANATIONS, write_synthetic_dataset, write_synthetic_explanations
from space.explainer import ENABLE_HINT, LIVE_POLICY, LiveExplainer, explain_view, settings_from_env
from space.explanations import Explanation
from space.render import explanations_html
from space.server import CONCURRENT_EVENTS, build_app, running
from space.sources import open_sources
from space.ui import build_blocks
from space.views import RESULT_COLUMNS, neuron_view
from testkit.openai_server import Fault, OpenAIServer
from testkit.planted import DOG_NEURON, SILENT_NEURON, write_planted_dataset

EXPLAINED, PLAIN, PLANTED = "org/explained", "org/plain", "planted/model"
SCORES = fmt.EXPLANATION_SCORES
WORD = re.compile(r"[^\W_]+")  # letters and digits: the Space's rule, written with Python's re
SHOWN_TEXT = re.compile(r'<p class="ns-expl-text[^"]*">(.*?)</p>')


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def live_explainer(url: str, **settings) -> LiveExplainer:
    environ = {"NEUROSCOPE_EXPLAINER_URL": url, "NEUROSCOPE_EXPLAINER_MODEL": "scripted"}
    environ |= {f"NEUROSCOPE_EXPLAINER_{key.upper()}": value for key, value in settings.items()}
    return LiveExplainer.from_env(environ)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("space_explanations")
    explained = write_synthetic_dataset(root / "explained", n_layers=3, d_mlp=40, name=EXPLAINED, seed=4)
    write_synthetic_explanations(explained, hostile=True, seed=1)
    plain = write_synthetic_dataset(root / "plain", n_layers=2, d_mlp=16, name=PLAIN, seed=5)
    planted = write_planted_dataset(root / "planted", d_mlp=6, top_k=4, random_k=4)
    return {EXPLAINED: explained, PLAIN: plain, PLANTED: planted}


@pytest.fixture(scope="module")
def scripted():
    """The loopback OpenAI-compatible server without a model (every reply scripted), HTTP allowed for the module."""
    with pytest.MonkeyPatch.context() as patch, OpenAIServer(None) as server:
        patch.setattr(constants, "HF_HUB_OFFLINE", False)
        yield server


@pytest.fixture(scope="module")
def served(folders, scripted):
    """Three servers over the same datasets: explaining through the scripted server, through an unreachable
    endpoint, and not configured at all."""
    catalog = open_sources([str(folders[name]) for name in (EXPLAINED, PLAIN, PLANTED)])
    explainers = {
        "scripted": live_explainer(scripted.base_url, scorers="detection", timeout="30"),
        "unreachable": live_explainer(f"http://127.0.0.1:{closed_port()}/v1", scorers="detection"),
        "off": LiveExplainer.from_env({}),
    }
    with ExitStack() as stack:
        urls = {name: stack.enter_context(running(build_app(catalog, (), item))) for name, item in explainers.items()}
        yield catalog, {name: Client(url, verbose=False) for name, url in urls.items()}


@pytest.fixture
def llm(scripted):
    scripted.reset()
    yield scripted
    scripted.reset()


# --- a brute-force reading of the explanations files, the reference for the page and the search ---


def rank(row: dict) -> float:
    """The documented order: mean of the scores rescaled to chance 0 / perfect 1; unscored -2; refused -3."""
    if row["refusal"] is not None:
        return -3.0
    rescaled = []
    for name in SCORES:
        if row[name] is not None:
            low, high = fmt.SCORE_RANGES[name]
            chance = (low + high) / 2
            rescaled.append((row[name] - chance) / (high - chance))
    return sum(rescaled) / len(rescaled) if rescaled else -2.0


def layer_rows(folder: Path, directory_path, layer: int) -> list[dict]:
    path = folder / directory_path(layer)
    return pq.read_table(path).to_pylist() if path.exists() else []


def all_explanations(folder: Path, layers=range(3)) -> list[tuple[int, dict]]:
    return [(layer, row) for layer in layers for row in layer_rows(folder, fmt.explanations_path, layer)]


def stored(folder: Path, layer: int, neuron: int) -> list[dict]:
    """A neuron's explanation rows, best first (ties: stored order)."""
    rows = [row for row in layer_rows(folder, fmt.explanations_path, layer) if row["neuron"] == neuron]
    return sorted(rows, key=lambda row: -rank(row))


def parsed(keyword: str) -> tuple[str, bool]:
    """The peak-token key and whether it is a prefix (`pri*`), as the README says."""
    key = keyword.strip().lower()
    prefix = len(key) > 1 and key.endswith("*") and bool(key.strip("*"))
    return (key[:-1] if prefix else key), prefix


def peak_matches(tokens: list[str], keyword: str) -> bool:
    key, prefix = parsed(keyword)
    return bool(key) and any(t.strip().lower().startswith(key) if prefix else t.strip().lower() == key for t in tokens)


def words_match(text: str | None, keyword: str) -> bool:
    """Every word of the keyword is a word of the text; with a trailing *, the last one as a prefix."""
    key, prefix = parsed(keyword)
    wanted, have = WORD.findall(key), WORD.findall((text or "").lower())
    if not wanted:
        return False
    last_matches = any(word.startswith(wanted[-1]) if prefix else word == wanted[-1] for word in have)
    return last_matches and all(word in have for word in wanted[:-1])


MATCHED = {(False, False): "", (True, False): "peak token", (False, True): "explanation", (True, True): "both"}


def brute_force_search(folders: dict[str, Path], keyword: str, sort: str) -> list[tuple]:
    """(model, layer, neuron, shown explanation, matched, sort value) of every hit, best first."""
    hits = []
    for order, model in enumerate((EXPLAINED, PLAIN, PLANTED)):
        for layer in range(3):
            explanations = layer_rows(folders[model], fmt.explanations_path, layer)
            for row in layer_rows(folders[model], fmt.neurons_path, layer):
                mine = sorted([e for e in explanations if e["neuron"] == row["neuron"]], key=lambda e: -rank(e))
                peak = peak_matches(row["peak_tokens"], keyword)
                matching = [e for e in mine if words_match(e["explanation"], keyword)]
                if keyword.strip() and not peak and not matching:
                    continue
                shown = (matching or mine or [None])[0]
                text = "" if shown is None else shown["explanation"] or f"(refused: {shown['refusal']})"
                value = None if shown is None else shown[sort]
                hit = (model, layer, row["neuron"], text, MATCHED[peak, bool(matching)], value)
                hits.append(((value is None, -(value or 0), order, layer, row["neuron"]), hit))
    return [hit for _, hit in sorted(hits)]


# --- the neuron page ---


def test_the_page_shows_every_explanation_best_scored_first_with_scores_and_n(served, folders):
    _, clients = served
    checked = 0
    for layer in range(3):
        for neuron in range(40):
            rows = stored(folders[EXPLAINED], layer, neuron)
            if len(rows) < 2:
                continue
            page = clients["off"].predict(EXPLAINED, layer, neuron, api_name="/neuron")[4]
            texts = [escape(r["explanation"]) if r["explanation"] else f"Refused: {escape(r['refusal'])}" for r in rows]
            assert SHOWN_TEXT.findall(page) == texts
            for row in rows:
                meta = f"by {row['explainer']} · prompt {row['prompt_version']} · {row['created'].date()}"
                assert escape(meta) in page
                for name in SCORES:
                    if row[name] is not None:
                        count = f'<span class="ns-muted">n={row[f"{name}_n"]}</span>'
                        assert f"{name} <b>{row[name]:.2f}</b> {count}" in page
            checked += 1
    assert checked >= 10, "the synthetic explanations should give many neurons two explainers"


def test_a_refused_explanation_shows_its_reason(served, folders):
    _, clients = served
    layer, row = next((layer, row) for layer, row in all_explanations(folders[EXPLAINED]) if row["refusal"])
    page = clients["off"].predict(EXPLAINED, layer, row["neuron"], api_name="/neuron")[4]
    assert f"Refused: {escape(row['refusal'])}" in page


def test_score_meanings_are_on_hover_and_in_a_legend(served, folders):
    _, clients = served
    layer, row = next((layer, row) for layer, row in all_explanations(folders[EXPLAINED]) if row["detection"])
    page = clients["off"].predict(EXPLAINED, layer, row["neuron"], api_name="/neuron")[4]
    assert re.search(r'<span class="ns-escore" title="detection: balanced accuracy[^"]*0\.5 = chance', page)
    assert "What the scores mean" in page and "rescaled so chance is 0" in page


def test_hostile_explanations_come_back_escaped(served):
    _, clients = served
    pages = "".join(clients["off"].predict(EXPLAINED, 0, neuron, api_name="/neuron")[4] for neuron in range(3))
    for text in HOSTILE_EXPLANATIONS:
        assert escape(text) in pages
    assert "<img" not in pages and "<script" not in pages and "<b>bold" not in pages


def test_a_10_dataset_page_is_unchanged_and_explanations_add_only_their_section(served, folders, tmp_path):
    _, clients = served
    copy = shutil.copytree(folders[PLAIN], tmp_path / "copy")
    write_synthetic_explanations(copy, explainers=("only/one",), seed=2)
    catalog = open_sources([str(copy)])
    explained = next(n for n in range(16) if stored(copy, 1, n))
    unexplained = next(n for n in range(16) if not stored(copy, 1, n))
    for neuron in (explained, unexplained):
        page = clients["off"].predict(PLAIN, 1, neuron, api_name="/neuron")[4]
        assert "ns-expl" not in page and "No explanation" not in page
        section = explanations_html([Explanation.from_row(row) for row in stored(copy, 1, neuron)])
        with_explanations = neuron_view(catalog, PLAIN, 1, neuron).page
        assert section in with_explanations and with_explanations.replace(section, "", 1) == page
    assert "No explanation of this neuron is stored yet" in neuron_view(catalog, PLAIN, 1, unexplained).page
    assert "ns-expl-text" in neuron_view(catalog, PLAIN, 1, explained).page


def test_an_unreadable_explanations_file_is_a_notice_and_the_page_still_shows(folders, tmp_path):
    copy = shutil.copytree(folders[EXPLAINED], tmp_path / "copy")
    (copy / fmt.explanations_path(2)).write_bytes(b"not parquet")
    catalog = open_sources([str(copy)])
    view = neuron_view(catalog, EXPLAINED, 2, 3)
    assert "The explanations of this layer cannot be shown" in view.notice and "ns-title" in view.page
    assert any("explanations of 'org/explained' layer 2" in problem for problem in catalog.index.problems)
    assert neuron_view(catalog, EXPLAINED, 1, 3).notice == ""


def card_description(client: Client, path: str) -> str:
    html = urllib.request.urlopen(client.src.rstrip("/") + path).read().decode()
    return unescape(re.search(r'<meta property="og:description" content="([^"]*)"', html).group(1))


def test_the_short_link_card_quotes_the_best_explanation(served, folders):
    _, clients = served
    layer, row = next((layer, row) for layer, row in all_explanations(folders[EXPLAINED]) if row["neuron"] >= 3)
    neuron = row["neuron"]
    best = next((row["explanation"] for row in stored(folders[EXPLAINED], layer, neuron) if row["explanation"]), None)
    assert best is not None, "pick a neuron with a stored explanation"
    assert card_description(clients["off"], f"/n/{EXPLAINED}/{layer}/{neuron}").startswith(f"“{best}” · max ")
    assert card_description(clients["off"], f"/n/{PLAIN}/0/0").startswith("max ")


# --- search ---


def search(client: Client, keyword: str, sort: str = "max") -> tuple[str, list[list]]:
    notice, results = client.predict(keyword, [], 0, 2, sort, api_name="/search")
    assert results["headers"] == RESULT_COLUMNS
    return notice, results["data"]


def as_hits(data: list[list], sort: str) -> list[tuple]:
    explanation, matched, column = (RESULT_COLUMNS.index(name) for name in ("explanation", "matched", sort))
    return [(row[0], row[1], row[2], row[explanation], row[matched], row[column]) for row in data]


def same_hits(got: list[tuple], expected: list[tuple]) -> None:
    assert [hit[:5] for hit in got] == [hit[:5] for hit in expected]
    for mine, theirs in zip(got, expected, strict=True):
        assert (mine[5] is None) == (theirs[5] is None) and (theirs[5] is None or abs(mine[5] - theirs[5]) < 1e-4)


@pytest.mark.parametrize(
    "keyword", ["dog", "DOGS", "colour*", "closing brackets", "Python keywords", "onerror", "nam*"]
)
def test_search_by_explanation_words_matches_a_brute_force_filter(served, folders, keyword):
    _, clients = served
    notice, data = search(clients["off"], keyword, "detection")
    expected = brute_force_search(folders, keyword, "detection")
    assert expected and any(hit[4] in ("explanation", "both") for hit in expected)
    same_hits(as_hits(data, "detection"), expected[:100])
    assert f"{len(expected):,} neurons" in notice


@pytest.mark.parametrize("sort", SCORES)
def test_sorting_by_a_score_matches_a_brute_force_sort(served, folders, sort):
    _, clients = served
    notice, data = search(clients["off"], "", sort)
    expected = brute_force_search(folders, "", sort)
    same_hits(as_hits(data, sort), expected[:100])
    assert f"{len(expected):,} neurons" in notice and "come last" in notice


def test_a_peak_token_search_is_unchanged_and_says_where_it_matched(served, folders):
    _, clients = served
    token = layer_rows(folders[PLAIN], fmt.neurons_path, 0)[3]["peak_tokens"][0]
    _, data = search(clients["off"], token)
    expected = brute_force_search(folders, token, "detection")
    assert {tuple(row[:3]) for row in data} == {hit[:3] for hit in expected}
    plain_rows = [row for row in data if row[0] == PLAIN]
    assert (PLAIN, 0, 3) in {tuple(row[:3]) for row in plain_rows}
    first = RESULT_COLUMNS.index("explanation")
    assert all(row[first:] == ["", "peak token", None, None, None] for row in plain_rows)


# --- explaining live ---


def props_by_id(client: Client) -> dict[str, dict]:
    return {c["props"].get("elem_id"): c["props"] for c in client.config["components"] if c.get("props")}


def test_without_configuration_the_button_is_off_and_says_how_to_turn_it_on(served):
    _, clients = served
    components = props_by_id(clients["off"])
    assert components["ns-explain"]["interactive"] is False
    assert "NEUROSCOPE_EXPLAINER_URL" in components["ns-explain-status"]["value"]
    assert components["ns-explain-status"]["value"] == f'<p class="ns-muted">{escape(ENABLE_HINT)}</p>'
    notice, html, values = clients["off"].predict(PLANTED, 0, DOG_NEURON, api_name="/explain")
    assert "Explaining live is off" in notice and html == "" and values == {}
    on = props_by_id(clients["scripted"])
    assert on["ns-explain"]["interactive"] is True
    assert "scripted" in on["ns-explain-status"]["value"] and "not saved" in on["ns-explain-status"]["value"]


def test_explain_runs_one_live_explanation_from_the_stored_examples_and_saves_nothing(served, folders, llm):
    _, clients = served
    before = sorted(path.name for path in folders[PLANTED].rglob("*"))
    llm.script(Fault("reply", text="the word dog"))
    llm.always(Fault("reply", text="yes"))
    notice, html, values = clients["scripted"].predict(PLANTED, 0, DOG_NEURON, api_name="/explain")
    held_out = split_examples(0, DOG_NEURON, open_dataset(folders[PLANTED]).neuron_examples(0, DOG_NEURON)).held_out
    assert values["explanation"] == "the word dog" and values["explainer"] == "scripted"
    assert values["detection"] == 0.5 and values["detection_n"] == len(held_out)  # "yes" to everything: chance
    assert values["embedding"] is None and values["simulation"] is None
    assert "not saved" in notice and "the word dog" in html and "detection <b>0.50</b>" in html
    requests = llm.requests()
    assert len(requests) == 1 + len(held_out)
    examples = split_examples(0, DOG_NEURON, open_dataset(folders[PLANTED]).neuron_examples(0, DOG_NEURON))
    assert requests[0].body["messages"] == prompts.explainer_messages(examples.shown, examples.max_activation)
    assert sorted(path.name for path in folders[PLANTED].rglob("*")) == before


def test_a_hostile_live_explanation_comes_back_escaped(served, llm):
    _, clients = served
    llm.script(Fault("reply", text=HOSTILE_EXPLANATIONS[0]))
    llm.always(Fault("reply", text="no"))
    _, html, values = clients["scripted"].predict(PLANTED, 0, DOG_NEURON, api_name="/explain")
    assert values["explanation"] == HOSTILE_EXPLANATIONS[0]
    assert escape(HOSTILE_EXPLANATIONS[0]) in html and "<img" not in html


def test_a_refused_live_explanation_says_why(served, llm):
    _, clients = served
    llm.always(Fault("empty"))
    _, html, values = clients["scripted"].predict(PLANTED, 0, DOG_NEURON, api_name="/explain")
    assert values["refusal"] == "empty explanation" and "Refused: empty explanation" in html
    _, html, values = clients["scripted"].predict(PLANTED, 0, SILENT_NEURON, api_name="/explain")
    assert values["refusal"].startswith("never fired") and "Refused: never fired" in html


@pytest.mark.parametrize(
    ("explainer", "fault", "message"),
    [
        ("unreachable", None, "cannot be reached: ConnectError"),
        ("scripted", Fault.http(429, retry_after=0.1), "rate-limiting requests (429 Too Many Requests), still after 3"),
        ("scripted", Fault("malformed"), "sent no chat completion in 3 tries"),
        ("scripted", Fault.http(401), "answered 401 Unauthorized: check its key."),
        ("scripted", Fault.http(404), "answered 404 Not Found: see the Space's log."),
    ],
)
def test_a_failing_explainer_is_a_clear_notice_never_an_error(served, llm, explainer, fault, message):
    _, clients = served
    llm.always(fault)
    notice, html, values = clients[explainer].predict(PLANTED, 0, DOG_NEURON, api_name="/explain")
    assert message in unescape(notice) and html == "" and values == {}
    assert clients[explainer].predict(PLANTED, 0, 1, api_name="/neuron")[:3] == (PLANTED, 0, 1)  # still serving


def test_bad_input_explains_nothing(served, llm):
    _, clients = served
    notice, html, values = clients["scripted"].predict(PLANTED, 9, 99, api_name="/explain")
    assert "Nothing was explained" in notice and html == "" and values == {} and llm.requests() == []


def test_an_explanation_past_its_deadline_stops(folders, llm):
    catalog = open_sources([str(folders[PLANTED])])
    explainer = live_explainer(llm.base_url, scorers="detection", timeout="0.000001")
    llm.always(Fault("reply", text="the word dog"))
    notice, html, _ = explain_view(catalog, explainer, PLANTED, 0, DOG_NEURON)
    assert "did not finish: the explanation took longer than 1e-06 s" in unescape(notice) and html == ""
    assert llm.requests() == []


def catalog_examples(served, neuron: int):
    catalog, _ = served
    return catalog.models[PLANTED].neuron_examples(0, neuron)


def test_explanations_queue_one_at_a_time_in_their_own_group(served, llm):
    blocks = build_blocks(open_sources([]))
    blocks.queue(default_concurrency_limit=CONCURRENT_EVENTS)
    by_name = {fn.api_name: fn for fn in blocks.fns.values() if fn.api_name}
    assert (by_name["explain"].concurrency_id, by_name["explain"].concurrency_limit) == ("explain", 1)
    assert by_name["neuron"].concurrency_id != "explain" and by_name["search"].concurrency_id != "explain"
    _, clients = served
    llm.always(Fault("reply", text="the word dog"))
    neurons = (0, 1, 3)
    users = [Client(clients["scripted"].src, verbose=False) for _ in neurons]
    start = threading.Barrier(len(neurons))

    def explain(client: Client, neuron: int) -> None:
        start.wait()
        client.predict(PLANTED, 0, neuron, api_name="/explain")

    threads = [threading.Thread(target=explain, args=pair) for pair in zip(users, neurons, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    asked = [request.body["messages"][-1]["content"] for request in llm.requests()]
    kinds = ["explain" if prompts.EXPLAINER_QUESTION in question else "score" for question in asked]
    held_out = len(split_examples(0, 0, catalog_examples(served, 0)).held_out)
    assert kinds == (["explain"] + ["score"] * held_out) * len(neurons)  # one explanation after another


def test_settings_come_from_the_environment_and_bad_values_turn_it_off_with_the_reason():
    assert settings_from_env({}) == (None, ENABLE_HINT)
    settings, _ = settings_from_env({
        "NEUROSCOPE_EXPLAINER_URL": "hf:together", "NEUROSCOPE_EXPLAINER_MODEL": "meta/x",
        "NEUROSCOPE_EXPLAINER_SCORERS": "detection, embedding", "NEUROSCOPE_EXPLAINER_TIMEOUT": "45",
        "NEUROSCOPE_EXPLAINER_KEY_ENV": "MY_KEY",
    })
    assert (settings.url, settings.model, settings.scorers, settings.timeout, settings.key_env) == (
        "hf:together", "meta/x", ["detection", "embedding"], 45.0, "MY_KEY"
    )
    assert settings.where == "Hugging Face Inference Providers"
    bad_scorer = settings_from_env({"NEUROSCOPE_EXPLAINER_URL": "http://x/v1", "NEUROSCOPE_EXPLAINER_SCORERS": "vibes"})
    assert bad_scorer[0] is None and "unknown scorers ['vibes']" in bad_scorer[1]
    for timeout in ("soon", "0", "-3"):
        off = settings_from_env({"NEUROSCOPE_EXPLAINER_URL": "http://x/v1", "NEUROSCOPE_EXPLAINER_TIMEOUT": timeout})
        assert off[0] is None and "NEUROSCOPE_EXPLAINER_TIMEOUT must be a number of seconds" in off[1]
    hf_without_model = LiveExplainer.from_env({"NEUROSCOPE_EXPLAINER_URL": "hf"})
    assert not hf_without_model.enabled and "need a model id" in hf_without_model.off_reason


def test_the_key_comes_from_the_named_variable_and_a_hugging_face_token_never_goes_elsewhere():
    secret = {"HF_TOKEN": "hf_secret", "OPENAI_API_KEY": "sk-openai", "MINE": "sk-mine"}
    def key_of(environ: dict) -> str | None:
        return LiveExplainer.from_env(environ)._backend.client.token

    url = {"NEUROSCOPE_EXPLAINER_URL": "http://127.0.0.1:1/v1", "NEUROSCOPE_EXPLAINER_MODEL": "m"}
    assert key_of(url | secret) == "sk-openai"
    assert key_of(url | {"HF_TOKEN": "hf_secret"}) == "none"
    assert key_of(url | secret | {"NEUROSCOPE_EXPLAINER_KEY_ENV": "MINE"}) == "sk-mine"
    assert key_of({"NEUROSCOPE_EXPLAINER_URL": "hf", "NEUROSCOPE_EXPLAINER_MODEL": "m"} | secret) == "hf_secret"


@pytest.mark.slow
def test_explain_with_the_real_smollm2_gives_what_harvest_explain_stores(smollm2_llm, tmp_path):
    folder = write_planted_dataset(tmp_path / "planted", d_mlp=4, window=8, top_k=4, random_k=2)
    reference = shutil.copytree(folder, tmp_path / "reference")
    model = "HuggingFaceTB/SmolLM2-135M-Instruct"
    environ = {"NEUROSCOPE_EXPLAINER_URL": smollm2_llm.base_url, "NEUROSCOPE_EXPLAINER_MODEL": model}
    with running(build_app(open_sources([str(folder)]), (), LiveExplainer.from_env(environ))) as url:
        notice, html, values = Client(url, verbose=False).predict(PLANTED, 0, DOG_NEURON, api_name="/explain")
    assert "not saved" in notice, notice
    backend = InferenceBackend(smollm2_llm.base_url, model, api_key="none")
    explain_dataset(ExplainConfig(reference, neurons=[DOG_NEURON], progress=False), backend)
    (row,) = pq.read_table(reference / fmt.explanations_path(0)).to_pylist()
    for key in ("explanation", "refusal", "explainer", "prompt_version", *(f"{name}_n" for name in SCORES)):
        assert values[key] == row[key], key
    for name in SCORES:
        assert values[name] == (None if row[name] is None else pytest.approx(row[name], abs=1e-4)), name
    assert not (folder / fmt.EXPLANATIONS_DIR).exists()
    assert escape(row["explanation"] or row["refusal"]) in html
    if row["refusal"] is None:  # every scorer ran: the server returns logprobs and the sentence model is installed
        assert all(values[f"{name}_n"] > 0 for name in SCORES)


def test_a_live_request_waits_out_a_long_retry_after_only_up_to_its_cap(llm):
    llm.script(Fault.http(429, retry_after=600))
    llm.always(Fault("reply", text="the word dog"))
    backend = InferenceBackend(llm.base_url, "scripted", api_key="none")
    waited: list[float] = []
    request = lambda: backend._request([{"role": "user", "content": "hi"}], 5, 0)  # noqa: E731
    assert call_with_retries(request, LIVE_POLICY, sleep=waited.append).text == "the word dog"
    assert waited == [LIVE_POLICY.max_retry_after] and LIVE_POLICY.max_retry_after < 600
    waited.clear()
    llm.script(Fault.http(429, retry_after=600))
    assert call_with_retries(request, RetryPolicy(), sleep=waited.append).text == "the word dog"
    assert waited == [600.0]  # the CLI's default policy waits as the server asks
