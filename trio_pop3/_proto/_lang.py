"""Choosing a language for LANG (RFC 6856 section 3): pure functions.

``LANG <range>`` asks for human-readable text in a language matching a basic
language range (RFC 4647 section 2.1).  The server answers with the tag it chose, or
``-ERR`` if it has none that matches; ``*`` asks for the server's default.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["choose_language"]

#: RFC 4647 section 2.1: language-range = (1*8ALPHA *("-" 1*8alphanum)) / "*".
_BASIC_RANGE = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")


def choose_language(language_range: str, tags: Iterable[str], default: str) -> str | None:
    """Return the tag of ``tags`` that ``language_range`` selects, or None if none does.

    ``*`` selects ``default``.  Otherwise, case-insensitively, RFC 4647 section 3.4
    lookup: the range itself, then shorter and shorter prefixes of it (``de-CH-1996``,
    ``de-CH``, ``de``; a single-letter subtag left at the end goes with the next
    one).  Failing that, the first tag the range is a prefix of (filtering, section
    3.3.1), so ``en`` also selects ``en-GB`` when there is no plain ``en``.

    >>> choose_language("EN-us", ["en", "de"], "en")
    'en'
    >>> choose_language("*", ["en", "de"], "en")
    'en'
    >>> choose_language("fr", ["en", "de"], "en") is None
    True
    """
    if language_range == "*":
        return default
    if not _BASIC_RANGE.fullmatch(language_range):
        return None
    by_lower = {tag.lower(): tag for tag in tags}
    wanted = language_range.lower()
    candidate = wanted
    while candidate:
        tag = by_lower.get(candidate)
        if tag is not None:
            return tag
        candidate = candidate.rpartition("-")[0]
        if len(candidate) > 2 and candidate[-2] == "-":  # drop a trailing singleton
            candidate = candidate[:-2]
    return next((tag for lower, tag in by_lower.items() if lower.startswith(wanted + "-")), None)
