"""Checks shared by everything that shows a model's words to a trainee."""

from __future__ import annotations

import re
import unicodedata

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def numbers_in(text: str) -> set[str]:
    """The numbers in ``text``, full-width digits folded and thousands separators dropped.

    Used to catch a model inventing a price, a date or an order number.
    """
    normal = unicodedata.normalize("NFKC", text)
    return {n.replace(",", "") for n in _NUMBER.findall(normal)}
