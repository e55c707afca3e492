"""The rule graders' lexicon: phrase lists by category, compiled for fast matching.

Data lives in ``graders/data/lexicon.yaml`` (format: ``docs/graders.md``); the jieba
user dictionary for e-commerce words in ``graders/data/ecommerce_dict.txt``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import marshal
import os
import tempfile
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from bot.i18n import Lang, Phrases
from bot.scenario import (
    COURIER_NAMES,
    PAYMENT_NAMES,
    AskIntent,
    Courier,
    PaymentChannel,
    ResolutionKind,
    check_patterns,
)
from graders.yamlload import load as load_yaml


class _Lexicon(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    signals: dict[str, Phrases]
    forbidden: dict[str, Phrases]
    intents: dict[AskIntent, Phrases]
    resolutions: dict[ResolutionKind, Phrases]
    topics: dict[str, Phrases]
    claims: dict[str, Phrases]
    outcomes: dict[str, Phrases]
    couriers: dict[Courier, Phrases]
    payments: dict[PaymentChannel, Phrases]

    @field_validator("signals", "forbidden", "topics", "claims", "outcomes")
    @classmethod
    def _regexes_compile(cls, value: dict[str, Phrases]) -> dict[str, Phrases]:
        for name, phrases in value.items():
            try:
                check_patterns([*phrases.zh, *phrases.en])
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _display_names_listed(self) -> _Lexicon:
        names: list[tuple[str, dict[Any, Phrases], dict[Any, dict[Lang, str]]]] = [
            ("couriers", dict(self.couriers), dict(COURIER_NAMES)),
            ("payments", dict(self.payments), dict(PAYMENT_NAMES)),
        ]
        for section, entries, display in names:
            for key, by_lang in display.items():
                for lang, name in by_lang.items():
                    if key not in entries or name not in entries[key].get(lang):
                        raise ValueError(f"{section}.{key}.{lang} must list {name!r}")
        for kind, phrases in self.resolutions.items():  # the first phrase names the remedy
            for lang in ("zh", "en"):
                first = phrases.get(lang)[0]
                if first.startswith("re:"):
                    raise ValueError(
                        f"resolutions.{kind}.{lang}: the first phrase names the remedy in"
                        f" feedback, so it must be words, not a pattern ({first[:30]!r}…)"
                    )
        return self

    def sections(self) -> dict[str, dict[Any, Phrases]]:
        """Every category keyed by ``section``; used to build one matcher."""
        return {
            "signals": self.signals,
            "forbidden": self.forbidden,
            "intents": dict(self.intents),
            "resolutions": dict(self.resolutions),
            "topics": self.topics,
            "claims": self.claims,
            "outcomes": self.outcomes,
            "couriers": dict(self.couriers),
            "payments": dict(self.payments),
        }


def _load() -> _Lexicon:
    text = resources.files("graders").joinpath("data/lexicon.yaml").read_text(encoding="utf-8")
    return _Lexicon.model_validate(load_yaml(text))


LEXICON = _load()
"""The loaded lexicon (validated at import time)."""

_SIGNAL_KEYS = {
    "courtesy",
    "apology",
    "understanding",
    "feeling",
    "restate",
    "ownership",
    "action",
    "timeline",
    "negation",
    "promise",
    "certain_outcome",
    "conditional",
    "stonewall",
    "compensation_context",
    "escalation_framing",
    "question",
    "request",
    "most_quickly",
    "inquiry",
    "refusal",
    "non_negating",
    "redirect",
    "reassure",
}
_missing = _SIGNAL_KEYS - set(LEXICON.signals)
if _missing:  # the graders read these by name
    raise RuntimeError(f"graders/data/lexicon.yaml: signals lack {sorted(_missing)}")


@cache
def tokenizer() -> Any:
    """The jieba tokenizer with the e-commerce user dictionary (built once per user).

    ``digit_words`` is added: its dictionary words with a digit in them.

    Lexicon phrases are deliberately not added as words: a phrase such as 非常抱歉 would
    then swallow the 抱歉 that other categories look for. HMM is never used, so cutting
    is deterministic.
    """
    import jieba

    jieba.setLogLevel(logging.WARNING)
    tok = jieba.Tokenizer()
    user_words = resources.files("graders").joinpath("data/ecommerce_dict.txt").read_bytes()
    source = f"{WORD_MODEL_FORMAT}\0{jieba.__version__}\0".encode() + user_words
    cache = _word_cache(source)
    kept = _read_words(cache) if cache is not None else None
    if kept is not None:
        tok.FREQ, tok.total, tok.digit_words = kept
        tok.initialized = True  # jieba's own dictionary is in it: not read again
        return tok
    tok.initialize()
    tok.load_userdict(io.BytesIO(user_words))
    tok.digit_words = tuple(  # 618, 双11, 7天无理由: numbers no cut may split
        word for word, count in tok.FREQ.items() if count and any(c.isdigit() for c in word)
    )
    if cache is not None:
        _keep_words(cache, (tok.FREQ, tok.total, tok.digit_words))
    return tok


WORD_MODEL_FORMAT = 1
"""Part of the cache's name: raised when what :func:`tokenizer` keeps changes."""


def _word_cache(source: bytes) -> Path | None:
    """Where the word model built from ``source`` is kept between runs (per user), if anywhere.

    Reading it takes a fifth of the second jieba and the user dictionary take to build.
    """
    try:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    except RuntimeError:  # no home directory: built every time
        return None
    return root / "cs-trainer" / f"words-{hashlib.sha256(source).hexdigest()[:16]}.marshal"


def _read_words(cache: Path) -> tuple[dict[str, int], int, tuple[str, ...]] | None:
    """The kept word model, or None if there is none (or it is not one)."""
    try:
        owner = getattr(os, "getuid", None)  # (not on Windows)
        if owner is not None and cache.stat().st_uid != owner():
            return None  # only a file of this user's is read
        freq, total, digit_words = marshal.loads(cache.read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if isinstance(freq, dict) and isinstance(total, int) and isinstance(digit_words, tuple):
        return freq, total, digit_words
    return None


def _keep_words(cache: Path, model: tuple[dict[str, int], int, tuple[str, ...]]) -> None:
    """Write the word model for later runs; a cache that cannot be written is only slower."""
    with contextlib.suppress(OSError):
        cache.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=cache.parent, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(marshal.dumps(model))
            os.replace(partial, cache)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(partial)  # left only if the replace failed
