"""Checks shared by everything that shows a model's words to a trainee."""

from __future__ import annotations

import re
from functools import lru_cache

from graders.numbers import extract
from graders.text import normalize

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


@lru_cache(maxsize=1024)
def numbers_in(text: str) -> frozenset[str]:
    """The numbers in ``text``, to catch a model inventing a price, a date or an order number.

    Digits as written (full-width folded, thousands separators dropped), plus what the
    graders' own number reader finds in any form: ``两百九十九元`` is 299, ``三天`` a
    duration, ``11月11日`` a date. Relative days ("today", 明天) are not facts to check.
    Remembered per text: every check of a turn reads the same facts, clauses and chat.
    """
    norm = normalize(text).text
    found = extract(norm)
    return frozenset(
        {n.replace(",", "") for n in _NUMBER.findall(norm)}
        | {f"{a.value:g}" for a in found.amounts}
        | {f"hours:{d.lo_hours:g}-{d.hi_hours:g}" for d in found.durations}
        | {f"date:{d.month}/{d.day}" for d in found.dates if d.month}  # not "today"
        | {t.value for t in found.ids + found.phones}
    )
