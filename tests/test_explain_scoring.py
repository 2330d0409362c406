"""Explanations' parts without a language model: scorer math against independent computations, the held-out
split, prompts, screening, simulated-activation parsing, the embedding scorer on a planted feature, retries."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pyarrow as pa
import pytest

from harvest.explain import metrics, prompts, screening
from harvest.explain.backends import TokenLogprob
from harvest.explain.embedding import SentenceEmbedder
from harvest.explain.examples import split_examples
from harvest.explain.scorers import EmbeddingScorer
from harvest.explain.workfile import WorkFile
from hub_sync.reader import open_dataset
from hub_sync.records import examples_from_table
from testkit.planted import COLOUR_NEURON, DOG_NEURON, write_planted_dataset


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return open_dataset(write_planted_dataset(tmp_path_factory.mktemp("planted") / "ds", top_k=10, random_k=10))


@pytest.fixture(scope="module")
def embedder():
    return SentenceEmbedder()


def test_auroc_equals_the_brute_force_pair_count():
    rng = np.random.default_rng(0)
    for _ in range(50):
        positive = rng.integers(0, 6, rng.integers(1, 12)).astype(float)  # small integers: many ties
        negative = rng.integers(0, 6, rng.integers(1, 12)).astype(float)
        pairs = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(positive, negative)]
        assert metrics.auroc(positive, negative) == pytest.approx(sum(pairs) / len(pairs))
    assert metrics.auroc([], [1.0]) is None


def test_balanced_accuracy_by_hand():
    labels = [True, True, True, True, False, False]
    predictions = [True, True, False, None, False, True]  # TPR 2/4 (None is never right), TNR 1/2
    assert metrics.balanced_accuracy(labels, predictions) == pytest.approx((2 / 4 + 1 / 2) / 2)
    assert metrics.balanced_accuracy([True, True], [True, False]) is None


def test_correlation_equals_numpy():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=40), rng.normal(size=40)
    assert metrics.correlation(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert metrics.correlation([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]) is None


def test_the_explainer_never_sees_held_out_examples(planted):
    examples = split_examples(0, DOG_NEURON, planted.neuron_examples(0, DOG_NEURON))
    assert [item.rank for item in examples.shown] == [0, 2, 4, 6, 8]
    assert [item.rank for item in examples.held_out_top] == [1, 3, 5, 7, 9]
    assert len(examples.held_out_random) == 10
    prompt = prompts.prompt_text(prompts.explainer_messages(examples.shown, examples.max_activation))
    shown_windows = {item.window_index for item in examples.shown}
    for item in examples.held_out:
        assert item.window_index not in shown_windows
        assert item.text not in prompt
    for item in examples.shown:
        assert item.text.replace(" dog", "<< dog>>") in prompt


def test_a_random_example_that_is_also_a_top_window_is_not_held_out(planted):
    table = planted.examples(0, COLOUR_NEURON)
    kinds = table.column("kind").to_pylist()
    windows = table.column("window_index").to_pylist()
    first_random = kinds.index("random")
    windows[first_random] = windows[0]  # the sample drew the top window
    table = table.set_column(
        table.schema.get_field_index("window_index"), "window_index", pa.array(windows, pa.int64())
    )
    examples = split_examples(0, COLOUR_NEURON, examples_from_table(table))
    assert windows[0] not in {item.window_index for item in examples.held_out_random}
    assert len(examples.held_out_random) == 9


def test_activations_are_scaled_to_0_10_and_the_peak_marked():
    assert prompts.scaled([0.0, 0.24, 2.6, 5.0, 7.0, -3.0], 5.0) == [0, 0, 5, 10, 10, 0]
    assert prompts.scaled([1.0], 0.0) == [0]
    message = prompts.explainer_messages(prompts.EXAMPLE_SHOWN, 1.0)[-1]["content"]
    assert "I like<< apples>> and pears" in message and "' apples'\t10" in message


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("", "empty explanation"),
        ("   \n ", "empty explanation"),
        ("a" * 100_000, "absurdly long: 100,000 characters"),
        ("<think>the user wants</think> dogs", "leaks its reasoning"),
        ("Let's think step by step: dogs", "leaks its reasoning"),
        ("Text 1: the old boat << dog>>", "leaks the prompt"),
        ("Look at the texts and the tokens the neuron fires on, then say", "leaks the prompt (copies"),
    ],
)
def test_bad_explanations_are_refused_with_their_reason(reply, reason):
    prompt = prompts.prompt_text(prompts.explainer_messages(prompts.EXAMPLE_SHOWN, 1.0))
    assert reason in screening.refusal_reason(screening.clean_explanation(reply), prompt)


def test_an_echo_of_the_worked_example_is_refused_unless_the_neuron_reads_it_too():
    prompt = prompts.prompt_text(prompts.explainer_messages(prompts.EXAMPLE_SHOWN, 1.0))
    echo = screening.refusal_reason('the word "apple"', prompt, prompts.EXAMPLE_WORDS, " the big dog ran")
    assert echo == "repeats the prompt's worked example ('apple')"
    assert screening.refusal_reason('the word "apple"', prompt, prompts.EXAMPLE_WORDS, " an apple a day") is None


def test_good_explanations_pass_cleaned():
    prompt = prompts.prompt_text(prompts.explainer_messages(prompts.EXAMPLE_SHOWN, 1.0))
    assert screening.clean_explanation(' Explanation:  the word "dog". ') == 'the word "dog"'
    assert screening.clean_explanation('"colour words"') == "colour words"
    assert screening.refusal_reason("the word dog", prompt) is None


def test_detection_answers_are_parsed():
    assert [prompts.parse_detection(a) for a in ["Yes", " no.", "No, the", "YES!", "The text", "nope"]] == [
        True,
        False,
        False,
        True,
        None,
        None,
    ]


def _position(token: str, alternatives: dict[str, float]) -> TokenLogprob:
    return TokenLogprob(token, tuple((text, math.log(p)) for text, p in alternatives.items()))


def test_simulated_activations_are_expected_values_per_line():
    positions = [
        _position("1", {"1": 0.9, "2": 0.1}),
        _position(".", {".": 1.0}),
        _position(" ", {" ": 1.0}),
        _position("0", {"0": 0.5, "10": 0.25, "x": 0.25}),
        _position("\n", {"\n": 1.0}),
        _position("7", {"7": 0.6, "9": 0.4}),
        _position("\n", {"\n": 1.0}),
    ]
    # line 1 is "1. 0": its label 1 is skipped, its value 0 has E = (0 * .5 + 10 * .25) / .75; line 2: 7.8
    assert prompts.simulated_activations(positions, 3) == pytest.approx([10 * 0.25 / 0.75, 0.6 * 7 + 0.4 * 9, 0.0])
    assert prompts.simulated_activations(positions, 1) == pytest.approx([10 * 0.25 / 0.75])


def test_embedding_scores_the_right_explanation_above_a_wrong_one(planted, embedder):
    scorer = EmbeddingScorer(embedder)
    dog = split_examples(0, DOG_NEURON, planted.neuron_examples(0, DOG_NEURON))
    colour = split_examples(0, COLOUR_NEURON, planted.neuron_examples(0, COLOUR_NEURON))
    right_dog, wrong_dog = scorer.score("the word dog", dog), scorer.score("colours such as red and blue", dog)
    right_colour, wrong_colour = (
        scorer.score("colours such as red and blue", colour),
        scorer.score("the word dog", colour),
    )
    print(
        f"embedding AUROC dog: right {right_dog}, wrong {wrong_dog}; colour: right {right_colour}, wrong {wrong_colour}"
    )
    assert right_dog.n == wrong_dog.n == 15
    assert right_dog.value >= 0.9 and right_dog.value > wrong_dog.value + 0.3
    assert right_colour.value >= 0.9 and right_colour.value > wrong_colour.value + 0.3


def test_embeddings_are_unit_mean_pooled_minilm_vectors(embedder):
    from transformers import AutoModel, AutoTokenizer

    from harvest.explain.embedding import model_folder

    texts = ["the word dog", "a red car", "an unrelated sentence about rivers and boats"]
    vectors = embedder.embed(texts)
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    tokenizer, model = AutoTokenizer.from_pretrained(model_folder()), AutoModel.from_pretrained(model_folder())
    for text, vector in zip(texts, vectors, strict=True):  # one text alone: no padding, plain mean over its tokens
        states = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0].detach().numpy()
        mean = states.mean(axis=0)
        np.testing.assert_allclose(vector, mean / np.linalg.norm(mean), atol=1e-5)


def test_a_torn_work_file_line_is_dropped_and_the_next_append_is_whole(tmp_path):
    path = tmp_path / "run.jsonl"
    work = WorkFile(path, {"explainer": "x"}, "2026-01-01T00:00:00+00:00")
    work.append({"layer": 0, "neuron": 1})
    with path.open("a") as out:
        out.write('{"layer": 0, "neu')  # the process was killed mid-write
    resumed = WorkFile(path, {"explainer": "x"}, "later")
    assert resumed.done() == {(0, 1)} and resumed.header["started"] == "2026-01-01T00:00:00+00:00"
    resumed.append({"layer": 0, "neuron": 2})
    assert WorkFile(path, {}, "").done() == {(0, 1), (0, 2)}
