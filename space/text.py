"""How a dataset's token strings are shown: visible whitespace and matching keys.

Token strings are untrusted text; these helpers only transform them, escaping is the renderer's job.
"""

from __future__ import annotations

_GLYPHS = {"\n": "↵", "\t": "→", "\r": "␍"}


def visible_token(token: str) -> str:
    """A token with newlines and tabs drawn as glyphs, and an all-space token drawn as middle dots."""
    if token and token.strip(" ") == "":
        return "·" * len(token)
    return "".join(_GLYPHS.get(char, char) for char in token)


def search_key(token: str) -> str:
    """The form a keyword and a token are compared in: lower case, surrounding whitespace removed."""
    return token.strip().lower()
