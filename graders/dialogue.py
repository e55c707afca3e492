"""Dialogue state read from the transcript text alone.

Live sessions and ``trainer grade`` build the state the same way, from the words of the
chat, so a transcript re-graded later gets exactly the grades it got live.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import lru_cache

from bot.i18n import LANGS
from bot.scenario import PHOTO_MARKERS, CustomerFact, ResolvedScenario
from graders.numbers import compact_digits, extract
from graders.text import normalize

_SENTENCE_KEY = re.compile(r"[\W_]+", re.UNICODE)


def sentence_key(text: str) -> str:
    """A sentence reduced to letters and digits, for spotting repeated stock lines."""
    return _SENTENCE_KEY.sub("", text)


@dataclass(frozen=True)
class DialogueState:
    """What has happened in the chat before the reply being graded."""

    replies: int = 0
    """Trainee replies so far."""
    revealed: frozenset[str] = frozenset()
    """Customer fact ids given in the chat."""
    identity_verified: bool = False
    asked: dict[str, int] = field(default_factory=dict)
    """Ask intent → number of the reply that first asked for it."""
    offered: dict[str, int] = field(default_factory=dict)
    """Resolution kind → number of the reply that first offered it."""
    timeline_stated: bool = False
    ownership_taken: bool = False
    acknowledged: int = 0
    """Replies so far with a specific acknowledgement."""
    sentences: dict[str, int] = field(default_factory=dict)
    """Sentence key → number of the reply it first appeared in."""
    stated_facts: frozenset[str] = frozenset()
    """Required facts stated correctly so far."""
    last_customer: str = ""
    customer_numbers: frozenset[str] = frozenset()
    """Phone numbers the customer wrote (their own, or a new one for the order)."""


def fingerprint(state: DialogueState) -> tuple[object, ...]:
    """A hashable value equal for equal states (a cache key)."""
    return (
        state.replies,
        state.revealed,
        state.identity_verified,
        tuple(state.asked.items()),
        tuple(state.offered.items()),
        state.timeline_stated,
        state.ownership_taken,
        state.acknowledged,
        tuple(state.sentences.items()),
        state.stated_facts,
        state.last_customer,
        state.customer_numbers,
    )


def revealed_in(scenario: ResolvedScenario, text: str) -> set[str]:
    """Fact ids that a customer message gives (in either language)."""
    return {fact.id for fact in scenario.scenario.customer.facts if _gives(scenario, fact, text)}


def _gives(scenario: ResolvedScenario, fact: CustomerFact, text: str) -> bool:
    order = scenario.scenario.order
    lowered = text.lower()
    if fact.kind == "order_id":
        return mentions_order_id(scenario, text)
    if fact.kind == "identity":
        return gives_identity(scenario, text)
    if fact.kind == "photos":
        return any(m.lower() in lowered for lang in LANGS for m in PHOTO_MARKERS[lang])
    if fact.kind == "signed_time":
        signed = order.signed_on
        return signed is not None and any(
            scenario.render("{signed_on}", lang).lower() in lowered for lang in LANGS
        )
    return any(m.lower() in lowered for lang in LANGS for m in fact.markers.get(lang))


@lru_cache(maxsize=64)
def id_digits_pattern(identifier: str) -> re.Pattern[str]:
    """The digits of an id, with any separators between them (JD20261201 0042, 2026-1201…)."""
    gap = r"[\s\-_./\u2010-\u2015\u2212]{0,2}"
    return re.compile(r"(?<!\d)" + gap.join(compact_digits(identifier)) + r"(?!\d)")


def mentions_order_id(scenario: ResolvedScenario, text: str) -> bool:
    """Whether ``text`` contains the order number, however it is written (JD-2026…, 2026…)."""
    return (
        id_digits_pattern(scenario.scenario.order.order_id).search(normalize(text).text) is not None
    )


def gives_identity(scenario: ResolvedScenario, text: str) -> bool:
    """Whether a customer message carries the verification data (phone last 4 or name)."""
    receiver = scenario.scenario.order.receiver
    if re.search(rf"(?<!\d){receiver.phone[-4:]}(?!\d)", text):
        return True
    return any(receiver.name.get(lang).lower() in text.lower() for lang in LANGS)


def after_customer(state: DialogueState, scenario: ResolvedScenario, text: str) -> DialogueState:
    """State after a customer message."""
    revealed = state.revealed | revealed_in(scenario, text)
    numbers = {compact_digits(p.value) for p in extract(normalize(text).text).phones}
    return replace(
        state,
        revealed=frozenset(revealed),
        identity_verified=state.identity_verified or gives_identity(scenario, text),
        last_customer=text,
        customer_numbers=state.customer_numbers | numbers,
    )
