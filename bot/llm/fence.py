"""Trainee text is hostile input for any LLM: fence it and neutralise what could break out.

A fenced block is ``<<<LABEL nonce>>>`` … ``<<<END LABEL nonce>>>``. The prompt tells the
model that everything between the markers is data written by the trainee, never an
instruction. The trainee cannot close the block early: every run of three or more angle
brackets (ASCII, full-width or small forms) in their text becomes single guillemets, and
invisible characters that could hide a marker (zero-width, bidi controls, other control
characters) are removed. The nonce is derived from the context, so the same reply in the
same context gives the same prompt (and so the same replayable grade).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from functools import lru_cache

_OPEN = re.compile(r"[<＜﹤〈⟨‹]{3,}")
_CLOSE = re.compile(r"[>＞﹥〉⟩›]{3,}")
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")


@lru_cache(maxsize=1024)
def neutralise(text: str) -> str:
    """``text`` with no fence markers and no invisible or control characters.

    Remembered per text: a reply and the chat before it are fenced in several prompts.
    """
    cleaned = _INVISIBLE.sub("", text)
    # Printable text holds no control (Cc), format (Cf) or surrogate (Cs) character:
    # only text that is not needs to be read character by character.
    if not cleaned.replace("\n", "").replace("\t", "").isprintable():
        cleaned = "".join(
            c for c in cleaned if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cf", "Cs")
        )
    cleaned = _OPEN.sub(lambda m: "‹" * len(m.group()), cleaned)
    return _CLOSE.sub(lambda m: "›" * len(m.group()), cleaned)


def nonce(*context: object) -> str:
    """A short marker id derived from the context (session, turn, role)."""
    joined = "\x1f".join(str(part) for part in context)
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:10]


def fence(text: str, label: str, marker: str) -> str:
    """``text`` neutralised and wrapped in ``<<<label marker>>>`` markers."""
    return f"<<<{label} {marker}>>>\n{neutralise(text)}\n<<<END {label} {marker}>>>"
