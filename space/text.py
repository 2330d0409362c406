"""How a dataset's token strings are shown: visible whitespace and matching keys.

Token strings are untrusted text; these helpers only transform them, escaping is the renderer's job.
"""

from __future__ import annotations

from dataclasses import dataclass

_GLYPHS = {"\n": "↵", "\t": "→", "\r": "␍"}


def visible_token(token: str) -> str:
    """A token with newlines and tabs drawn as glyphs, and an all-space token drawn as middle dots."""
    if token and token.strip(" ") == "":
        return "·" * len(token)
    return "".join(_GLYPHS.get(char, char) for char in token)


def search_key(token: str) -> str:
    """The form a keyword and a token are compared in: lower case, surrounding whitespace removed."""
    return token.strip().lower()


@dataclass(frozen=True)
class Keyword:
    """What a search asks for: one token, or with a trailing `*` (`pri*`) every token that starts with it.

    A keyword of stars alone (`*`, `**`) is that token itself: Python code peaks on them.
    """

    key: str
    prefix: bool

    @classmethod
    def parse(cls, keyword: str) -> Keyword:
        key = search_key(keyword)
        if len(key) > 1 and key.endswith("*") and key.strip("*"):
            return cls(key[:-1], prefix=True)
        return cls(key, prefix=False)

    def matches(self, token: str) -> bool:
        token_key = search_key(token)
        return token_key.startswith(self.key) if self.prefix else token_key == self.key
