"""User text for the live tabs: caps, `[[marked]]` spans, tokenization the harvest's way, and the samples compared.

A text is tokenized without special tokens and BOS is prepended, as harvest windows are. Texts longer
than the cap are cut and lists longer than the cap are shortened, each with a notice: never silently.
The finder and the probe also share a token budget over both lists, so one run's cost is bounded
(bench/probe.py measures it at the caps).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from harvest.models import LoadedModel

MAX_TOKENS_PER_TEXT = 128
MAX_TEXTS_PER_LIST = 24  # the probe fits every (layer, fold) problem on all samples: its cost grows as samples^3
MAX_LIST_TOKENS = 1024  # both lists together, BOS included: the tokens one finder or probe run puts through the model
# A text longer than MAX_TOKENS_PER_TEXT * this many characters is cut before tokenizing (a pasted book must not be
# tokenized whole) and counts as cut: no tokenizer's tokens average 64 characters, so the cut never loses tokens.
MAX_CHARACTERS_PER_TOKEN = 64
MARKED_SPAN = re.compile(r"\[\[(.*?)\]\]", re.DOTALL)


class TextError(ValueError):
    """Input the live tabs cannot run; the message says what to change."""


@dataclass(frozen=True)
class EncodedText:
    """A text as the model sees it: BOS first; `marked` flags positions inside `[[...]]` (None: no marks)."""

    text: str
    token_ids: list[int]
    tokens: list[str]
    marked: np.ndarray | None
    n_text_tokens: int

    @property
    def truncated(self) -> bool:
        """Whether the text had more tokens than the model was run on."""
        return self.n_text_tokens > len(self.token_ids) - 1


@dataclass(frozen=True)
class Sample:
    """What one statistic is taken over: some positions of one text, with or without the feature."""

    text_index: int
    label: bool
    positions: np.ndarray
    description: str


def token_cap(model: LoadedModel) -> int:
    """Tokens per text (BOS not counted): the cap, or less where the model's context is shorter."""
    return min(MAX_TOKENS_PER_TEXT, model.n_ctx - 1)


def strip_marks(text: str) -> tuple[str, list[tuple[int, int]]]:
    """The text without `[[` `]]` markers, and the character spans they enclosed in that text."""
    pieces, spans, cursor, length = [], [], 0, 0
    for match in MARKED_SPAN.finditer(text):
        before = text[cursor : match.start()]
        pieces.append(before)
        length += len(before)
        spans.append((length, length + len(match.group(1))))
        pieces.append(match.group(1))
        length += len(match.group(1))
        cursor = match.end()
    pieces.append(text[cursor:])
    return "".join(pieces), spans


def check_unicode(text: str) -> None:
    """Refuse a text the tokenizer cannot take: a lone surrogate (half of a UTF-16 pair) is not a character."""
    for position, character in enumerate(text):
        if "\ud800" <= character <= "\udfff":
            raise TextError(
                f"The text holds a lone surrogate (U+{ord(character):04X}) at character {position + 1}, "
                "half of a character that was cut: paste the text again or remove it."
            )


def decode_each(model: LoadedModel, token_ids: list[int]) -> list[str]:
    """Each token decoded alone, as the dataset stores token strings."""
    return model.tokenizer.batch_decode([[token] for token in token_ids], clean_up_tokenization_spaces=False)


def encode_text(model: LoadedModel, text: str, allow_marks: bool = False) -> EncodedText:
    """Tokenize as the harvest does (no special tokens, BOS prepended), cut to the cap, marks resolved to tokens."""
    plain, spans = strip_marks(text) if allow_marks else (text, [])
    if not plain:
        raise TextError("The text is empty: type or paste some text.")
    character_cap = MAX_TOKENS_PER_TEXT * MAX_CHARACTERS_PER_TOKEN
    cut_characters = len(plain) > character_cap
    plain = plain[:character_cap]
    check_unicode(plain)
    encoding = model.tokenizer(plain, add_special_tokens=False, return_offsets_mapping=bool(spans))
    ids = list(encoding["input_ids"])
    if not ids:
        raise TextError("The text gives no tokens.")
    kept = ids[: token_cap(model)]
    marked = None
    if spans:
        offsets = encoding["offset_mapping"][: len(kept)]
        inside = [
            any(start < end_span and end > start_span for start_span, end_span in spans) for start, end in offsets
        ]
        marked = np.array([False, *inside])
    token_ids = [model.bos_id, *kept]
    tokens = decode_each(model, token_ids)
    n_text_tokens = max(len(ids), len(kept) + 1) if cut_characters else len(ids)
    return EncodedText(text, token_ids, tokens, marked, n_text_tokens)


def text_lines(block: str | None) -> list[str]:
    """One text per line; blank lines skipped."""
    return [line for line in (block or "").splitlines() if line.strip()]


def capped_lines(block: str | None, label: str, notices: list[str]) -> list[str]:
    """The list's texts, at most MAX_TEXTS_PER_LIST of them, with a notice when some were left out."""
    lines = text_lines(block)
    if len(lines) > MAX_TEXTS_PER_LIST:
        notices.append(f"The {label} list has {len(lines)} texts; only the first {MAX_TEXTS_PER_LIST} were used.")
    return lines[:MAX_TEXTS_PER_LIST]


def truncation_notices(texts: list[EncodedText], label: str, cap: int) -> list[str]:
    """One notice naming every text that was cut to the token cap."""
    cut = [str(number) for number, text in enumerate(texts, 1) if text.truncated]
    if not cut:
        return []
    return [f"{label}: text {', '.join(cut)} exceeded {cap} tokens and was cut to its first {cap}."]


def samples_for(positive: list[EncodedText], negative: list[EncodedText], notices: list[str]) -> list[Sample]:
    """Samples to compare: each text's tokens after BOS; for a marked text, its marked tokens are the feature
    and its other tokens count as one more sample without it (so the feature is per token, not per text)."""
    samples = []
    for number, text in enumerate(positive, 1):
        body = np.arange(len(text.token_ids)) > 0
        if text.marked is None:
            samples.append(Sample(number - 1, True, body, f"with #{number}"))
            continue
        if not text.marked.any():
            notices.append(
                f"With-feature text {number}: its [[marked]] span is beyond the token cap or empty; text left out."
            )
            continue
        samples.append(Sample(number - 1, True, text.marked, f"with #{number} [[span]]"))
        rest = body & ~text.marked
        if rest.any():
            samples.append(Sample(number - 1, False, rest, f"with #{number} outside span"))
    offset = len(positive)
    for number, text in enumerate(negative, 1):
        samples.append(Sample(offset + number - 1, False, np.arange(len(text.token_ids)) > 0, f"without #{number}"))
    return samples


def within_budget(
    positive: list[EncodedText], negative: list[EncodedText], notices: list[str]
) -> tuple[list[EncodedText], list[EncodedText]]:
    """The first texts of each list that fit MAX_LIST_TOKENS together, taken in turns (with, without, with, ...)
    so both lists keep a share; a list stops at its first text that does not fit. A notice says what was left out."""
    kept: tuple[list[EncodedText], list[EncodedText]] = ([], [])
    stopped = [False, False]
    used = 0
    for index in range(max(len(positive), len(negative))):
        for side, texts in enumerate((positive, negative)):
            if index >= len(texts) or stopped[side]:
                continue
            cost = len(texts[index].token_ids)
            stopped[side] = used + cost > MAX_LIST_TOKENS
            if not stopped[side]:
                kept[side].append(texts[index])
                used += cost
    if len(kept[0]) < len(positive) or len(kept[1]) < len(negative):
        total = sum(len(text.token_ids) for text in positive + negative)
        notices.append(
            f"The lists hold {total:,} tokens; a run takes at most {MAX_LIST_TOKENS:,} (BOS included): the first "
            f"{len(kept[0])} of {len(positive)} with-feature and {len(kept[1])} of {len(negative)} without-feature "
            "texts were used."
        )
    return kept


def encode_lists(
    model: LoadedModel, with_feature: str | None, without_feature: str | None, notices: list[str]
) -> tuple[list[EncodedText], list[Sample]]:
    """Both lists encoded (marks allowed in the first), cut to the token budget and turned into samples; every cut
    gets a notice."""
    cap = token_cap(model)
    positive = [
        encode_text(model, line, allow_marks=True) for line in capped_lines(with_feature, "with-feature", notices)
    ]
    negative = [encode_text(model, line) for line in capped_lines(without_feature, "without-feature", notices)]
    notices += truncation_notices(positive, "With feature", cap) + truncation_notices(negative, "Without feature", cap)
    positive, negative = within_budget(positive, negative, notices)
    return positive + negative, samples_for(positive, negative, notices)
