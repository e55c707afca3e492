r"""Literals a regular expression cannot match without: a cheap gate before running it.

Most lexicon patterns can only match where some word occurs (``\bnot (?:an?|the)
(?:kidney )?transplant`` needs "transplant"; ``(?:说|问)…遍`` needs 遍). Finding those
words once with Aho-Corasick and running only the patterns whose words are present
gives the same matches as running every pattern, for a fraction of the time.
"""

from __future__ import annotations

import re
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

import ahocorasick

Literals = frozenset[str]


def required_literals(pattern: str, flags: int = 0) -> Literals | None:
    """Strings one of which is in every match of ``pattern`` (None: no useful set).

    Only mandatory parts of the pattern are used: a literal run, a group, an
    alternation whose every branch has its own set, a repeat of at least once.
    Optional parts, classes and look-arounds are skipped. A case-insensitive pattern
    gets lower-case literals: look for them in the lower-cased text.
    """
    try:
        parsed = sre_parse.parse(pattern, flags)
    except Exception:  # an unparsable pattern fails at compile time instead
        return None
    if parsed.state.flags & sre.SRE_FLAG_VERBOSE:
        return None
    found = _sequence(list(parsed))
    if not found or any(_weak(s) for s in found):
        return None
    if parsed.state.flags & sre.SRE_FLAG_IGNORECASE:
        found = frozenset(s.lower() for s in found)
    return found


class Gate:
    """Whether a text can match a pattern at all, from its required literals."""

    def __init__(self, pattern: re.Pattern[str]):
        literals = required_literals(pattern.pattern, pattern.flags)
        self.fold = bool(pattern.flags & re.IGNORECASE)
        self._automaton: Any = None
        if literals is not None:
            self._automaton = ahocorasick.Automaton()
            for literal in literals:
                self._automaton.add_word(literal, literal)
            self._automaton.make_automaton()

    def open(self, text: str, lowered: str | None = None) -> bool:
        """False only when no match is possible (``lowered``: ``text.lower()`` if known)."""
        if self._automaton is None:
            return True
        haystack = (lowered if lowered is not None else text.lower()) if self.fold else text
        return next(self._automaton.iter(haystack), None) is not None


def _weak(literal: str) -> bool:
    """A single Latin letter, digit or space is in nearly every text: no gate at all."""
    return len(literal) == 1 and literal.isascii() and (literal.isalnum() or literal.isspace())


def _sequence(items: list[tuple[Any, Any]]) -> Literals | None:
    best: Literals | None = None
    run: list[str] = []

    def consider(candidate: Literals | None) -> None:
        nonlocal best
        if candidate is None or not candidate:
            return
        if best is None or _better(candidate, best):
            best = candidate

    def flush() -> None:
        if run:
            consider(frozenset({"".join(run)}))
            run.clear()

    for op, value in items:
        if op is sre.LITERAL:
            run.append(chr(value))
            continue
        flush()
        if op is sre.SUBPATTERN:
            consider(_sequence(list(value[-1])))
        elif op is sre.BRANCH:
            branches = [_sequence(list(branch)) for branch in value[1]]
            if all(b is not None for b in branches):
                consider(frozenset().union(*(b for b in branches if b is not None)))
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT) and value[0] >= 1:
            consider(_sequence(list(value[2])))
        elif op is sre.IN:
            chars = [chr(v) for kind, v in value if kind is sre.LITERAL]
            if chars and len(chars) == len(value):  # a class of plain characters: [您你]
                consider(frozenset(chars))
    flush()
    return best


def _better(candidate: Literals, current: Literals) -> bool:
    """Prefer sets whose least selective literal is rarest, then smaller sets."""
    key_new = (min(_rarity(s) for s in candidate), -len(candidate))
    key_old = (min(_rarity(s) for s in current), -len(current))
    return key_new > key_old


def _rarity(literal: str) -> float:
    """How seldom a literal occurs by chance.

    A Chinese character counts double; a short Latin fragment ("to", "hi") is inside
    too many words to count at all.
    """
    if literal.isascii() and literal.isalnum() and len(literal) <= 2:
        return 0.5
    return sum(1 if c.isascii() else 2 for c in literal)
