"""What one trainee reply does, read against its scenario and the dialogue so far.

:func:`find` runs once per reply; the empathy, accuracy and policy graders and the
scripted customer all read the same :class:`Findings`, so they never disagree about what
the reply said. Every check is tied to the policy clauses that declare it: a shop whose
pack has no ``refund_timing`` check is not graded on refund timing.
"""

from __future__ import annotations

import bisect
import datetime as dt
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Literal, cast

import ahocorasick

from bot.i18n import LANGS, Lang
from bot.scenario import (
    COURIER_NAMES,
    PAYMENT_NAMES,
    TICKET_TEAMS,
    PaymentChannel,
    PhraseCheck,
    ResolvedScenario,
    Scenario,
    Severity,
    SimpleCheck,
    date_text,
    day_of,
)
from graders import learned
from graders._base import Recent
from graders.dialogue import DialogueState, fingerprint, id_digits_pattern, sentence_key
from graders.injection import strip as strip_injections
from graders.lexicon import LEXICON
from graders.numbers import Amount, DateRef, Duration, Numbers, Token, compact_digits, extract
from graders.text import (
    CJK,
    Analysis,
    Hit,
    Matcher,
    Normalized,
    analyze,
    normalize,
    scan_extra,
)

Verdict = Literal["correct", "wrong", "unsupported", "unfit"]
NEUTRAL_RESOLUTIONS = frozenset({"escalate", "urge_courier", "compensation"})
COMMITTING_RESOLUTIONS = frozenset({"refund", "reship", "exchange", "price_difference"})
_DISMISSIVE = (
    "forbidden.insult",
    "forbidden.blame",
    "forbidden.dismissive",
    "forbidden.courier_deflection",
)


@dataclass(frozen=True, slots=True)
class Claim:
    """A factual statement in the reply and whether the order/policy bears it out."""

    fact: str
    verdict: Verdict
    stated: str
    expected: dict[Lang, str] | None
    clause_ids: tuple[str, ...]
    required_fact: str | None = None


@dataclass(frozen=True, slots=True)
class Violation:
    """Policy clauses the reply breaks with the same words (usually one clause)."""

    clause_ids: tuple[str, ...]
    severity: Severity
    """The most severe of the clauses'."""
    code: str
    quote: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class Findings:
    """Everything the graders and the customer need to know about one reply."""

    analysis: Analysis
    courtesy: bool = False
    apologies: int = 0
    ack_quote: str | None = None
    ack_repeated_from: int | None = None
    ownership_quote: str | None = None
    dismissive_quote: str | None = None
    blamed: bool = False
    insulted: bool = False
    deflected: bool = False
    asks: frozenset[str] = frozenset()
    offers: dict[str, str] = field(default_factory=dict)
    commitment_quote: str | None = None
    timeline: bool = False
    stonewall: bool = False
    sentence_keys: tuple[str, ...] = ()
    claims: list[Claim] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    injection_quote: str | None = None
    too_fast: list[str] = field(default_factory=list)
    """Sentences stating a refund faster than the policy's fastest time."""

    @property
    def acknowledged(self) -> bool:
        """A specific acknowledgement that is not a repeat of an earlier one."""
        return self.ack_quote is not None and self.ack_repeated_from is None

    @property
    def wrong_facts(self) -> bool:
        """Whether any stated fact contradicts the order or policy."""
        return any(c.verdict == "wrong" for c in self.claims)

    @property
    def stated_facts(self) -> frozenset[str]:
        """Required facts this reply states correctly."""
        return frozenset(
            c.required_fact for c in self.claims if c.verdict == "correct" and c.required_fact
        )


# --- per-scenario rules, built once --------------------------------------------------


class ScenarioRules:
    """The checks a scenario's applicable clauses declare, compiled for matching."""

    def __init__(self, resolved: ResolvedScenario):
        self.resolved = resolved
        scenario = resolved.scenario
        by_kind: dict[str, list[str]] = {}
        self.phrase_checks: list[tuple[str, PhraseCheck]] = []
        self.phrase_keys: list[tuple[str, PhraseCheck, str | None, str]] = []
        """Per phrase check: its clause, the check, its lexicon category and matcher key."""
        key = scenario.answer_key
        categories: list[tuple[str, list[str]]] = [
            ("problem", [*key.problem_terms.zh, *key.problem_terms.en]),
            ("defect", [*key.defect_terms.zh, *key.defect_terms.en]),
            ("wanted", [*key.wanted_terms.zh, *key.wanted_terms.en]),
        ]
        scenario_first = sorted(
            resolved.applicable_clauses,
            key=lambda cid: resolved.policy.clauses[cid].scope == "always",
        )
        for clause_id in scenario_first:
            clause = resolved.policy.clauses[clause_id]
            for check in clause.checks:
                if isinstance(check, SimpleCheck):
                    by_kind.setdefault(check.kind, []).append(clause_id)
                else:
                    self.phrase_checks.append((clause_id, check))
                    lexicon_key = f"forbidden.{check.lexicon}" if check.lexicon else None
                    self.phrase_keys.append((clause_id, check, lexicon_key, f"clause:{clause_id}"))
                    categories.append(
                        (f"clause:{clause_id}", [*check.phrases.zh, *check.phrases.en])
                    )
        self.moves = {
            f"move:{i}": move for i, move in enumerate(scenario.answer_key.forbidden_phrases)
        }
        categories += [(k, [*m.phrases.zh, *m.phrases.en]) for k, m in self.moves.items()]
        self.matcher = Matcher(categories)
        self.applicable = frozenset(resolved.applicable_clauses)

        def made_only_of(kind: Callable[[SimpleCheck | PhraseCheck], bool]) -> frozenset[str]:
            clauses = resolved.policy.clauses
            return frozenset(
                cid
                for cid in resolved.applicable_clauses
                if clauses[cid].checks and all(kind(c) for c in clauses[cid].checks)
            )

        # every check is about what the reply states: breaking one is a wrong statement
        self.fact_clauses = made_only_of(lambda c: c.kind in _FACT_CHECKS)
        # rude, blaming or brushing off, and nothing else: breaking one makes empathy 0
        self.dismissive_clauses = made_only_of(
            lambda c: isinstance(c, PhraseCheck) and f"forbidden.{c.lexicon}" in _DISMISSIVE
        )
        self._by_kind = {kind: tuple(ids) for kind, ids in by_kind.items()}
        # for resolution_fit the scenario's own clauses come first: INFO-ACCURATE's check
        # is only the fallback for a case with no handling clause
        fit = self._by_kind.get("resolution_fit", ())
        specific = tuple(c for c in fit if resolved.policy.clauses[c].scope == "scenario")
        if fit:
            self._by_kind["resolution_fit"] = specific or fit
        order = scenario.order
        key = scenario.answer_key
        self.resolution_options: dict[Lang, str] = {
            lang: ("、" if lang == "zh" else ", ").join(
                LEXICON.resolutions[k].get(lang)[0] for k in key.acceptable_resolutions
            )
            for lang in LANGS
        }
        self.order_numbers = {
            compact_digits(order.order_id),
            compact_digits(order.tracking_no or ""),
        }
        self.order_id_digits = id_digits_pattern(order.order_id)
        reference = order.refund_reference or ""
        self.reference_digits = compact_digits(reference)
        self.reference_prefix = reference.rstrip("0123456789").lower()
        self.refund_amounts = {_round(key.refund_amount or order.price)}
        if key.price_difference:
            self.refund_amounts.add(_round(key.price_difference))
        if order.shipping_fee and key.refund_amount is None:
            self.refund_amounts |= {
                _round(order.price + order.shipping_fee),
                _round(order.shipping_fee),
            }
        params = resolved.policy.params
        self.cap = params.compensation_cap
        self.known_amounts = self.refund_amounts | {
            _round(order.price),
            _round(order.shipping_fee),
            float(params.compensation_cap),
        }
        if key.price_difference:
            self.known_amounts.add(_round(order.price - key.price_difference))
        self.known_but_cap = self.known_amounts - {float(self.cap)}
        self._address = ahocorasick.Automaton()
        for piece in _windows(order.receiver.address):
            self._address.add_word(piece, piece)
        if len(self._address):
            self._address.make_automaton()
        receiver = order.receiver
        self.phone = receiver.phone
        self.last4 = re.compile(rf"(?<!\d){receiver.phone[-4:]}(?!\d)")
        self.recipient = re.compile(
            rf"(收货人|收件人)(是|为|:)?{re.escape(receiver.name.zh[0])}(先生|女士|小姐)?"
        )
        self.names = _disclosing_names(receiver.name.zh, receiver.name.en)
        self.payment_names: dict[Lang, str] = PAYMENT_NAMES[order.payment]
        self.courier_names: dict[Lang, str] = COURIER_NAMES[order.courier]

    def reads_address(self, compact: str) -> bool:
        """Whether text without spaces holds a distinctive piece of the recipient's address."""
        return len(self._address) > 0 and next(self._address.iter(compact), None) is not None

    def clauses(self, kind: str) -> tuple[str, ...]:
        """Applicable clause ids that declare check ``kind``.

        For ``resolution_fit``: the scenario's own clauses when it has any.
        """
        return self._by_kind.get(kind, ())

    def violation(
        self,
        clause_ids: str | Iterable[str],
        quote: str,
        code: str = "policy.violation",
        **values: Any,
    ) -> Violation:
        """A violation of one or more clauses; its severity is the most severe clause's."""
        ids = (clause_ids,) if isinstance(clause_ids, str) else tuple(dict.fromkeys(clause_ids))
        worst = min(ids, key=lambda cid: _SEVERITY_ORDER[self.severity(cid)])
        return Violation(ids, self.severity(worst), code, quote, values)

    def severity(self, clause_id: str) -> Severity:
        """Severity of a clause."""
        return self.resolved.policy.clauses[clause_id].severity

    def title(self, clause_id: str) -> dict[Lang, str]:
        """Title of a clause in both languages."""
        title = self.resolved.policy.clauses[clause_id].title
        return {"zh": title.zh, "en": title.en}


_SEVERITY_ORDER = {"critical": 0, "major": 1, "minor": 2}
_FACT_CHECKS = frozenset(
    {
        "order_facts",
        "resolution_fit",
        "forbidden_resolution",
        "return_window",
        "exchange_window",
        "price_protection_window",
        "eligibility",
        "shipping_fee_payer",
        "refund_channel",
        "refund_timing",
        "reship_timing",
        "compensation_cap",
    }
)
"""Check kinds about what a reply states: breaking a clause made only of these is a wrong fact."""
_RULES: dict[int, tuple[ResolvedScenario, ScenarioRules]] = {}


def rules_for(resolved: ResolvedScenario) -> ScenarioRules:
    """The compiled rules of a scenario (cached per loaded scenario)."""
    cached = _RULES.get(id(resolved))
    if cached is None or cached[0] is not resolved:
        cached = (resolved, ScenarioRules(resolved))
        _RULES[id(resolved)] = cached
    return cached[1]


_ZH_TITLES = re.compile(r"(先生|女士|小姐|太太|阿姨|老师)$")
_EN_TITLES = re.compile(r"^(mr|mrs|ms|miss|mx|dr)\.?\s+")


def _disclosing_names(zh: str, en: str) -> tuple[str, ...]:
    """The recipient's names whose mention discloses who the order is for.

    A surname with a title (李女士, Mr. Chen) is how agents greet a customer; only a
    given name and surname together identify the recipient.
    """
    given_zh = _ZH_TITLES.sub("", zh.strip())
    given_en = _EN_TITLES.sub("", en.strip().lower())
    names = [given_zh] if len(given_zh) >= 2 else []
    if len(given_en.split()) >= 2:
        names.append(given_en)
    return tuple(names)


def _round(value: float) -> float:
    return round(float(value), 2)


def _windows(address: Any) -> tuple[str, ...]:
    """Distinctive pieces of an address: any 6 consecutive characters (zh) or 12 (en)."""
    pieces: list[str] = []
    for lang, size in (("zh", 6), ("en", 12)):
        text = address.get(lang).lower().replace(" ", "")
        pieces += [text[i : i + size] for i in range(max(0, len(text) - size + 1))]
    return tuple(dict.fromkeys(pieces))


# --- helpers --------------------------------------------------------------------------


class _Reader:
    """Position helpers over one analysis."""

    def __init__(self, analysis: Analysis):
        self.a = analysis
        if "topics" not in analysis.memo:  # the memo must not hold the reader: a cycle
            analysis.memo["topics"] = _topic_index(analysis)
        self.topics: dict[int, list[tuple[str, int, int]]] = analysis.memo["topics"]
        """The topics by clause, in text order; a topic inside a longer one is left out."""

    def topic(
        self, start: int, end: int, allowed: Iterable[str], fallback: bool = True
    ) -> str | None:
        """The nearest allowed topic in the same clause.

        Falls back to a neighbouring clause of the same sentence only when that gives
        exactly one allowed topic ("预计1–3个工作日，退款原路退回"), so a number is never
        read against a topic from an unrelated part of the sentence.
        """
        priority = _priority(tuple(allowed))
        clause = self.a.clause_of(start)
        best: tuple[int, bool, int, str] | None = None
        window: str | None = None
        latin = self.a.text[start:end].isascii()
        for key, t_start, t_end in self.topics.get(clause, ()):
            if key not in priority:
                continue
            overlap = t_start < end and start < t_end
            if t_start >= end and _ALTERNATIVE.search(self.a.text, end, t_start):
                continue  # "reship within 48 hours or refund": the refund is the other option
            if t_end <= start and _ALTERNATIVE.search(self.a.text, t_end, start):
                continue  # 补发新壶48小时内发出，或退299元…1–3个工作日: the reship is the other one
            distance = 0 if overlap else min(abs(t_start - end), abs(start - t_end))
            after = latin and t_start >= end
            if after:
                distance += 8  # English names the thing first: "a new one out within 48 hours"
            if best is None or (distance, after, priority[key]) < best[:3]:
                best = (distance, after, priority[key], key)
            if key in _WINDOW_TOPICS or (key == "topics.damage_report" and window is None):
                window = key if window is None or window == "topics.damage_report" else window
        if best is not None:
            # "3 days from delivery" is the no-reason window, counted from delivery;
            # 签收24小时内报破损 is the damage-report window
            if window and best[3] in _ANCHOR_TOPICS and best[3] != window:
                return window
            if best[3] == "topics.delivery" and "topics.refund" in priority:
                here = self._sentence_topics(self.a.sentence_of(start))
                if "topics.refund" in here and "topics.reship" not in here:
                    return "topics.refund"  # "refund of ¥189 … it'll reach you in 3 days"
            return best[3]
        if not fallback:
            return None
        sentence = self.a.sentence_of(start)
        keys = {
            k
            for k, t_start, _ in (
                *self.topics.get(clause - 1, ()),
                *self.topics.get(clause + 1, ()),
            )
            if k in priority
            and self.a.sentence_of(t_start) == sentence
            and not _ALTERNATIVE.search(self.a.text, min(t_start, end), max(t_start, start))
        }
        return keys.pop() if len(keys) == 1 else None

    def _sentence_topics(self, sentence: int) -> set[str]:
        """The topics named in one sentence."""
        by_sentence: dict[int, set[str]] | None = self.a.memo.get("sentence topics")
        if by_sentence is None:
            by_sentence = self.a.memo["sentence topics"] = {}
            for topics in self.topics.values():
                for key, t_start, _ in topics:
                    by_sentence.setdefault(self.a.sentence_of(t_start), set()).add(key)
        return by_sentence.get(sentence, set())

    def negated_clause(self, pos: int) -> bool:
        """Whether a negation comes before ``pos`` in its clause (不能保证…, can't promise…).

        Numbers in such a clause are not asserted, so they are not checked as claims.
        """
        hits = self.a.by_clause("signals.negation").get(self.a.clause_of(pos), ())
        return any(h.end <= pos for h in hits)

    def in_clause_with(self, pos: int, key: str, negated: bool | None = False) -> bool:
        """Whether a ``key`` hit sits in the same clause as ``pos``."""
        hits = self.a.by_clause(key).get(self.a.clause_of(pos), ())
        return any(negated is None or h.negated == negated for h in hits)

    def in_sentence_with(self, pos: int, key: str, negated: bool | None = False) -> bool:
        """Whether a ``key`` hit sits in the same sentence as ``pos``."""
        hits = self.a.by_sentence(key).get(self.a.sentence_of(pos), ())
        return any(negated is None or h.negated == negated for h in hits)

    def escalated(self, pos: int) -> bool:
        """Whether an approver or an open outcome is named within two sentences of ``pos``.

        "I'd like to request a ¥30 coupon. Anything over ¥20 needs my supervisor's approval."
        """
        sentence = self.a.sentence_of(pos)
        framed = self.a.by_sentence("signals.escalation_framing")
        return any(
            not h.negated  # "no need to wait on anyone's sign-off"
            for near in range(sentence - 2, sentence + 3)
            for h in framed.get(near, ())
        )

    def quote(self, start: int, end: int) -> str:
        """Original characters of a span."""
        return self.a.norm.quote(start, end)


def _topic_index(analysis: Analysis) -> dict[int, list[tuple[str, int, int]]]:
    """Topic hits by clause, category by category as the lexicon lists them.

    A topic inside a longer other one is left out: "price difference" is a difference, not
    a price.
    """
    spans = [
        (f"topics.{key}", hit.start, hit.end)
        for key, hits in analysis.prefixed("topics.").items()
        for hit in hits
    ]
    nesting = _Nesting(spans)
    by_clause: dict[int, list[tuple[str, int, int]]] = {}
    for key, start, end in spans:
        if not nesting.inside_another(key, start, end):
            by_clause.setdefault(analysis.clause_of(start), []).append((key, start, end))
    return by_clause


class _Nesting:
    """Spans of several kinds: which lie inside a longer span of another kind."""

    def __init__(self, spans: Iterable[tuple[str, int, int]]) -> None:
        self._spans = sorted(spans, key=lambda span: span[1])
        self._starts = [start for _, start, _ in self._spans]
        self._longest = max((end - start for _, start, end in self._spans), default=0)

    def inside_another(self, kind: str, start: int, end: int) -> bool:
        """Whether ``start``–``end`` lies inside a longer span of a kind other than ``kind``."""
        first = bisect.bisect_left(self._starts, start - self._longest)
        last = bisect.bisect_right(self._starts, start)
        return any(
            k != kind and s <= start and end <= e and e - s > end - start
            for k, s, e in self._spans[first:last]
        )


@lru_cache(maxsize=64)
def _priority(allowed: tuple[str, ...]) -> dict[str, int]:
    """Each allowed topic's rank (the first wins a tie)."""
    return {key: rank for rank, key in enumerate(allowed)}


def _money(value: float) -> dict[Lang, str]:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return {"zh": f"{text}元", "en": f"¥{text}"}


@lru_cache(maxsize=256)
def _days(lo: float, hi: float, unit_zh: str = "天", unit_en: str = "days") -> dict[Lang, str]:
    def fmt(v: float) -> str:
        return f"{v:g}"

    span = fmt(hi) if lo == hi else f"{fmt(lo)}–{fmt(hi)}"
    return {"zh": f"{span}{unit_zh}", "en": f"{span} {unit_en}"}


def _hours_text(hours: float) -> dict[Lang, str]:
    if hours % 24 == 0:
        return _days(hours / 24, hours / 24)
    return {"zh": f"{hours:g}小时", "en": f"{hours:g} hours"}


@lru_cache(maxsize=1024)
def _amounts_in(message: str) -> frozenset[float]:
    """The amounts in a customer message, bare numbers too ("I saw 379 in another shop")."""
    text = normalize(message).text
    bare = (float(m.group()) for m in _BARE_NUMBER.finditer(text))
    return frozenset(_round(v) for v in [*(a.value for a in extract(text).amounts), *bare])


def _date_text(value: dt.date) -> dict[Lang, str]:
    return {"zh": f"{value.month}月{value.day}日", "en": value.strftime("%b ") + str(value.day)}


# --- the checks -------------------------------------------------------------------------


_FOUND: Recent[Findings] = Recent(4096)


def find(
    reply: str,
    resolved: ResolvedScenario,
    state: DialogueState,
    state_key: tuple[object, ...] | None = None,
) -> Findings:
    """Read one trainee reply against its scenario and the dialogue before it.

    Text aimed at the grader is cut out first (:mod:`graders.injection`): the rest is
    graded as if it had never been written, and the reply is flagged. The same reply in
    the same scenario and dialogue state is read once (stock lines repeat across chats);
    findings are never changed after they are made, so sharing them is safe.
    ``state_key`` is ``fingerprint(state)`` when the caller has it already.
    """
    rules = rules_for(resolved)
    key = (reply, rules, fingerprint(state) if state_key is None else state_key)
    return _FOUND.get(key, lambda: _find(reply, rules, state))


def _find(reply: str, rules: ScenarioRules, state: DialogueState) -> Findings:
    stripped = strip_injections(reply)
    analysis = analyze(stripped.text)
    memo = analysis.memo
    if rules not in memo:  # the scenario's own phrases, found once per text
        memo[rules] = scan_extra(analysis, rules.matcher) if not rules.matcher.empty else {}
    extra: dict[str, list[Hit]] = memo[rules]
    reader = _Reader(analysis)
    if "numbers" not in memo:  # text-only work, shared by every scenario and turn
        memo["numbers"] = extract(_numbers_text(analysis.norm))
    numbers: Numbers = memo["numbers"]
    findings = Findings(analysis=analysis)
    _empathy_signals(findings, reader, extra, state, rules.resolved.scenario)
    if "dialogue" not in memo:
        probe = Findings(analysis=analysis, ownership_quote=findings.ownership_quote)
        _dialogue_signals(probe, reader, numbers)
        memo["dialogue"] = (
            probe.asks,
            dict(probe.offers),
            probe.commitment_quote,
            probe.timeline,
            probe.stonewall,
        )
    asks, offers, commitment, timeline, stonewall = memo["dialogue"]
    findings.asks, findings.offers, findings.commitment_quote = asks, dict(offers), commitment
    findings.timeline, findings.stonewall = timeline, stonewall
    _claims(findings, reader, rules, numbers, state)
    _violations(findings, reader, rules, numbers, extra, state)
    _learned(findings, rules)
    if stripped.injected:
        findings.injection_quote = stripped.injected[0]
    return findings


def _numbers_text(norm: Normalized) -> str:
    """The text to read numbers in, with the Chinese comma kept: 399，100块 is two numbers."""
    if "，" not in norm.original:
        return norm.text
    chars = list(norm.text)
    for i, char in enumerate(chars):
        if char == "," and norm.quote(i, i + 1) == "，":
            chars[i] = "，"
    return "".join(chars)


_OFFICIAL_FLOW = re.compile(
    r"官方流程|系统会自动|我这边(?:能|可以|也能|就能)?(?:直接)?看到|跟进记录都在|"
    r"\bofficial (?:flow|process|return flow)\b|\b(?:i|we)(?:'ll| will| can)? see (?:it|them) (?:there|directly|right away)\b"
)
"""In a sentence sending the customer to the order page: the shop's own flow, still in its hands."""


def _official_flow(a: Analysis, pos: int) -> bool:
    """Whether the sentence at ``pos`` sends the customer to the shop's own flow, still watched."""
    return bool(_OFFICIAL_FLOW.search(a.text, a.sentence_start(pos), a.sentence_end(pos)))


_FREE_TO_RATE = re.compile(
    r"如实|照实|实事求是|怎么评都|随您|随意评|(?:您|你)的自由|真实感受|好坏都|"
    r"\bhowever you (?:like|want|see fit|feel)\b|\bhonest(?:ly)?\b[^.!?]{0,20}\b(?:rating|review|feedback|survey)\b|"
    r"\b(?:rating|review|feedback|survey)\b[^.!?]{0,30}\b(?:honest(?:ly)?|entirely up to you|your call)\b"
)
_BARGAIN = re.compile(
    r"返|红包|券|送|补偿|加急|优先|提成|五星|5星|好评|满分|"
    r"\b(?:cashback|coupon|voucher|gift|faster|priority|bonus|five[- ]stars?|5[- ]stars?|10/10)\b"
)


def _free_to_rate(a: Analysis, pos: int) -> bool:
    """The platform's survey mentioned with the choice left to the customer, nothing offered."""
    sentence = a.text[a.sentence_start(pos) : a.sentence_end(pos)]
    return bool(_FREE_TO_RATE.search(sentence)) and not _BARGAIN.search(sentence)


def _excused(a: Analysis, hit: Hit) -> bool:
    """A move its sentence takes back: the survey left to the customer, the shop's own flow."""
    if hit.key == "forbidden.review_inducement":
        return _free_to_rate(a, hit.start)  # 平台会邀请您评价，您如实评就好
    if hit.key == "forbidden.dismissive":
        return _official_flow(a, hit.start)  # 在订单页点申请售后上传，我这边能直接看到
    return False


def _by_sentence(analysis: Analysis, hits: Iterable[Hit]) -> dict[int, list[Hit]]:
    grouped: dict[int, list[Hit]] = {}
    for hit in hits:
        grouped.setdefault(analysis.sentence_of(hit.start), []).append(hit)
    return grouped


def _empathy_signals(
    f: Findings,
    r: _Reader,
    extra: dict[str, list[Hit]],
    state: DialogueState,
    scenario: Scenario,
) -> None:
    a = r.a
    misnamed = _wrong_names(r, scenario)
    f.courtesy = any(  # 李女士 to 王女士 is no courtesy
        not any(s <= h.start < e for s, e, _ in misnamed) for h in a.get("signals.courtesy")
    )
    f.apologies = len(a.get("signals.apology"))
    for key in _DISMISSIVE:
        # an insult counts even when negated ("我不是说你傻"), as CONDUCT-NO-INSULT does
        hits = [
            h
            for h in a.get(key)
            if (not h.negated or (key == "forbidden.insult" and not h.quoted))
            and not _excused(a, h)
        ]
        if hits:
            f.dismissive_quote = f.dismissive_quote or a.sentence_quote(hits[0].start)
            f.blamed = f.blamed or key == "forbidden.blame"
            f.insulted = f.insulted or key == "forbidden.insult"
            f.deflected = f.deflected or key in (
                "forbidden.courier_deflection",
                "forbidden.dismissive",
            )
    soothing = _by_sentence(a, [*a.get("signals.apology"), *a.get("signals.understanding")])
    feelings = _by_sentence(a, a.get("signals.feeling"))
    problems = _by_sentence(a, extra.get("problem", []))
    photos = a.get("intents.photos")
    defects = _by_sentence(  # not what a photo is asked of ("photos (the crack…)", 裂缝的照片)
        a,
        [
            h
            for h in extra.get("defect", [])
            if not any(
                (  # "photos of the crack"; 裂缝和外箱的照片 (the same clause)
                    (
                        0 <= h.start - p.end <= 30
                        and a.sentence_of(p.start) == a.sentence_of(h.start)
                    )
                    or (0 <= p.start - h.end <= 30 and a.clause_of(p.start) == a.clause_of(h.start))
                )
                and not _CONFIRMED.match(a.text, h.end)  # 裂了是吧，麻烦拍下裂缝: named first
                for p in photos
                if not p.negated
            )
        ],
    )
    restates = _by_sentence(a, [h for h in a.get("signals.restate") if not h.negated])
    empathic = _by_sentence(a, [h for h in a.get("signals.empathic") if not h.negated])
    # a red-line move is never a next step (docs/labelling.md)
    tainted = {
        a.sentence_of(h.start)
        for key in ("forbidden.off_platform", "forbidden.review_inducement", "forbidden.insult")
        for h in a.get(key)
        if not h.negated and not _excused(a, h)
    }
    # 价保要等系统处理，请耐心等待 offers nothing
    no_offer = tainted | {a.sentence_of(h.start) for h in a.get("signals.stonewall")}
    offers = [
        h
        for hs in a.prefixed("resolutions.").values()
        for h in hs
        if not h.negated
        and not r.negated_clause(h.start)
        and a.sentence_of(h.start) not in no_offer
    ]
    offered = {a.sentence_of(h.start) for h in offers}
    wanted = {a.sentence_of(h.start) for h in extra.get("wanted", []) if not h.negated}
    lifts = [h for h in a.get("signals.reassure") if not h.negated]
    heard = normalize(state.last_customer).text if lifts else ""
    voiced = bool(heard) and _voices_worry(heard)
    reassured = {  # 不用您自己找顺丰, after "do I have to call SF myself?"
        a.sentence_of(h.start)
        for h in lifts
        if _same_worry(a.text[a.sentence_start(h.start) : a.sentence_end(h.start)], heard)
        or (voiced and _DONT_WORRY.fullmatch(a.text, h.start, h.end))  # "Don't worry." to it
    }
    keys = []
    for start, end in a.sentences():
        sentence = a.sentence_of(start)
        key = sentence_key(a.text[start:end])
        keys.append(key)
        near = (sentence - 1, sentence, sentence + 1)  # an apology and what it is for may
        specific = (  # be a sentence apart; other problem words (the item) only in the same one
            any(feelings.get(i) or defects.get(i) for i in near) or sentence in problems
        )
        is_ack = bool(
            restates.get(sentence)
            or empathic.get(sentence)
            or (soothing.get(sentence) and specific)
            or (feelings.get(sentence) and any(problems.get(i) for i in near))
            or defects.get(sentence)  # names what went wrong: 裂了, "the wrong size"
            or (sentence in wanted and sentence in offered)  # "the black M ships today"
            or sentence in reassured
        )
        repeated = state.sentences.get(key) if len(key) >= 5 else None
        if is_ack and (
            f.ack_quote is None or (f.ack_repeated_from is not None and repeated is None)
        ):
            f.ack_quote = a.sentence_quote(start)
            f.ack_repeated_from = repeated
    f.sentence_keys = tuple(keys)
    actions = [h for h in a.get("signals.action") if not h.negated]
    actions += [h for hs in a.prefixed("resolutions.").values() for h in hs if not h.negated]
    action_sentences = {a.sentence_of(h.start) for h in actions} - tainted
    for hit in a.get("signals.ownership"):
        if not hit.negated and a.sentence_of(hit.start) in action_sentences:
            f.ownership_quote = a.sentence_quote(hit.start)
            break
    if f.ownership_quote is None and offers:  # a concrete offer is ownership with a next step
        f.ownership_quote = a.sentence_quote(min(h.start for h in offers))
    if f.ownership_quote is None:  # asking for what is needed, and saying what it is for
        for hit in a.get("signals.purpose"):
            if a.sentence_of(hit.start) not in tainted and any(
                a.get(k)
                for k in (
                    "intents.order_id",
                    "intents.photos",
                    "intents.identity",
                    "intents.item_received",
                )
            ):
                f.ownership_quote = a.sentence_quote(hit.start)
                break
    if f.ownership_quote is None and f.courtesy and not state.identity_verified:
        # asking courteously to verify who the customer is: PRIV-VERIFY says what it is for
        asking = {a.sentence_of(h.start) for h in a.get("signals.request")}
        for hit in a.get("intents.identity"):
            sentence = a.sentence_of(hit.start)
            verb = _ASK_TO_VERIFY.search(a.text, a.sentence_start(hit.start), hit.start)
            if (
                not hit.negated
                and sentence in asking
                and sentence not in tainted
                and verb is not None
            ):
                f.ownership_quote = a.sentence_quote(hit.start)
                break
    if f.ownership_quote is None and state.acknowledged and a.has("signals.timeline"):
        # acknowledged before, now the step and its time without a subject: 48小时内发出，
        # 单号出来发您 after "多久能发？"
        for hit in a.get("signals.action"):
            if (
                not hit.negated
                and a.text[hit.start : hit.end] not in _NO_STEP_BY_ITSELF
                and a.sentence_of(hit.start) not in no_offer
                and not _NOT_DONE.match(a.text, hit.end)
            ):
                f.ownership_quote = a.sentence_quote(hit.start)
                break


_ASK_TO_VERIFY = re.compile(
    r"提供|核对|确认|告诉|告知|发一下|发下|发我|说一下|报一下|核实|验证|"
    r"\b(?:confirm|provide|tell me|give me|send me|share|verify|let me know)\b"
)
"""A verb asking the customer for identity data: 麻烦核对一下收货人姓名, "please confirm"."""
_NO_STEP_BY_ITSELF = frozenset({"get", "got", "keep", "look", "help", "put", "审核"})
"""Action words that name no step of the agent's without a subject ("I get how…", 审核通过了)."""
_RULED_OUT = re.compile(
    r"[^，,。！？!?；;]{0,12}?(?:不适用|不在[^，,。！？!?；;]{0,10}范围|不支持|不享受|不参与|不予)"
    r"|[^.!?;,]{0,24}?\b(?:does(?:n't|n’t| not)|do(?:n't|n’t| not)) (?:apply|cover)\b"
    r"|[^.!?;,]{0,24}?\b(?:is|are)(?:n't|n’t| not) (?:covered|included|eligible|available|applicable)\b"
)
"""After a remedy, in its clause: the rule rules it out (价保不适用于定金, "price protection
doesn't apply")."""
_NOT_DONE = re.compile(r"不了|不到|不成")
"""After a verb: it cannot be done (退不了)."""


def _dialogue_signals(f: Findings, r: _Reader, numbers: Numbers) -> None:
    a = r.a
    asking = {
        a.sentence_of(h.start)
        for key in ("signals.question", "signals.request")
        for h in a.get(key)
    }
    f.asks = frozenset(
        intent
        for intent, hits in a.prefixed("intents.").items()
        if any(not h.negated and a.sentence_of(h.start) in asking for h in hits)
    )
    questions = {a.sentence_of(h.start) for h in a.get("signals.question")}
    conditional = {a.sentence_of(h.start) for h in a.get("signals.conditional")}
    resolutions = a.prefixed("resolutions.")
    spans = _Nesting((k, h.start, h.end) for k, hs in resolutions.items() for h in hs)
    inquiring = {a.clause_of(h.start) for h in a.get("signals.inquiry")}
    # a resolution named while stonewalling ("退款已审核，请耐心等待") or inside an
    # off-platform deal is not an offer
    void = {
        a.sentence_of(h.start)
        for key in ("signals.stonewall", "forbidden.off_platform", "forbidden.review_inducement")
        for h in a.get(key)
    }
    difference = {a.sentence_of(h.start) for h in resolutions.get("price_difference", [])}

    def offered(kind: str, hit: Hit) -> bool:
        sentence = a.sentence_of(hit.start)
        return (
            not hit.negated
            and not r.negated_clause(hit.start)  # 没法给您补发或者退款: neither is offered
            and a.clause_of(hit.start) not in inquiring  # only asked about (退款进度, whether…)
            and sentence not in void
            and not (kind == "refund" and sentence in difference)  # it is the difference
            and not _REPLACED.search(a.text[max(0, hit.start - 20) : hit.start])
            and not spans.inside_another(kind, hit.start, hit.end)  # "refund the difference"
            and not _RULED_OUT.match(a.text, hit.end, a.clause_end(hit.start))
        )

    choosing = {  # 退款还是补发？ asks the customer to choose: no commitment yet
        a.sentence_of(h.start)
        for key in ("intents.preference", "signals.choice")
        for h in a.get(key)
    }
    for kind, hits in resolutions.items():
        live = [h for h in hits if offered(kind, h)]
        if live:
            f.offers[kind] = a.sentence_quote(live[0].start)
        if kind in COMMITTING_RESOLUTIONS and f.commitment_quote is None:
            for hit in live:
                sentence = a.sentence_of(hit.start)
                if sentence in conditional or (sentence in questions and sentence in choosing):
                    continue
                if len(resolutions) > 1 and sentence in questions:
                    continue  # several remedies put as a question: a choice
                f.commitment_quote = a.sentence_quote(hit.start)
                break
    f.timeline = (
        a.has("signals.timeline")
        or bool(numbers.durations)
        or any(d.relative_days is not None or d.month is not None for d in numbers.dates)
    )
    f.stonewall = (
        a.has("signals.stonewall") and not f.offers and not f.asks and f.ownership_quote is None
    )


def _claims(
    f: Findings, r: _Reader, rules: ScenarioRules, numbers: Numbers, state: DialogueState
) -> None:
    resolved = rules.resolved
    scenario = resolved.scenario
    order = scenario.order
    key = scenario.answer_key
    params = resolved.policy.params
    claims = f.claims
    a = r.a
    today = day_of(scenario.today)
    paid_asked = _asks_when_paid(state.last_customer)
    money_asked = _asks_only_when_paid(state.last_customer)
    ticket_clauses = rules.clauses("escalation_ticket")
    if ticket_clauses:  # "24小时内回电" is the ticket's callback, not a refund's or a parcel's time
        numbers = _ticket_claims(r, rules, numbers, ticket_clauses, claims)
    private = {  # money moved off the platform: judged by policy, not as refund facts
        a.sentence_of(h.start) for h in a.get("forbidden.off_platform") if not h.negated
    }

    order_clauses = rules.clauses("order_facts")
    if order_clauses:
        _name_claims(claims, r, scenario, order_clauses)
        tainted = {
            a.sentence_of(h.start)
            for key in ("forbidden.off_platform", "forbidden.review_inducement")
            for h in a.get(key)
        }
        given = {(c.start, c.end) for c in _compensations(r, rules, numbers)}
        heard = _amounts_in(state.last_customer)
        cap = params.compensation_cap
        cap_clauses = rules.clauses("compensation_cap") or order_clauses
        for amount in numbers.amounts:
            if amount.value in _HOTLINES and not _CURRENCY.search(a.text, amount.start, amount.end):
                continue  # 12315, the consumer hotline, is no amount
            if (amount.start, amount.end) in given:  # judged against the cap
                escalated = r.escalated(amount.start)
                verdict: Verdict = "correct" if amount.value <= cap or escalated else "wrong"
                stated = r.quote(amount.start, amount.end)
                claims.append(Claim("compensation", verdict, stated, _cap_text(cap), cap_clauses))
            elif a.sentence_of(amount.start) in tainted:  # a red line, judged by policy
                continue
            elif _NOT_A_CENT.search(a.text, max(0, amount.start - 6), amount.end + 2):
                continue  # 唔使你畀一蚊, 一分钱都不用: nothing, not an amount
            elif _round(amount.value) not in rules.known_amounts and r.in_sentence_with(
                amount.start, "signals.escalation_framing"
            ):
                continue  # 看能不能多给到50元，这个需要审批: asked of an approver, not stated
            elif _round(amount.value) not in heard and not _DEMANDED.search(
                a.text, a.clause_start(amount.start), amount.start
            ):  # repeating the customer (您要的100元) is no claim
                claims.extend(_amount_claim(amount, r, rules, order_clauses))
        for quote in _recipient_data(r, rules):  # read back from the order: right by itself
            claims.append(Claim("recipient", "correct", quote, None, order_clauses))
        valid = rules.order_numbers
        for token in numbers.ids:
            if a.sentence_of(token.start) in tainted:  # a contact number, judged by policy
                continue
            digits = compact_digits(token.value)
            if _names_reference(a.text, token, rules):  # 退款单号RF…: the refund's reference
                if (
                    digits != rules.reference_digits
                    and digits in _ids_in(state.last_customer)
                    and any(compact_digits(t.value) == rules.reference_digits for t in numbers.ids)
                ):
                    continue  # "正确的是RF…16，您抄的RF…19错了": the customer's number, corrected
                if not rules.reference_digits:
                    stated = r.quote(token.start, token.end)
                    claims.append(Claim("refund_reference", "unsupported", stated, None,
                                        order_clauses))  # fmt: skip
                    continue
                verdict = "correct" if digits == rules.reference_digits else "wrong"
                expected_ref: dict[Lang, str] = dict.fromkeys(LANGS, order.refund_reference or "")
                stated = r.quote(token.start, token.end)
                claims.append(
                    Claim("refund_reference", verdict, stated, expected_ref, order_clauses)
                )
                continue
            split = rules.order_id_digits.search(a.text, token.start, token.end + 24)
            whole = split is not None and split.start() < token.end  # JD20261201 0042
            verdict = "correct" if whole or digits in valid else "wrong"
            claims.append(
                Claim(
                    "order_id",
                    verdict,
                    r.quote(token.start, token.end),
                    {"zh": order.order_id, "en": order.order_id},
                    order_clauses,
                )
            )
        sending_away = _errand_sentences(a, disavowed_too=True)
        for courier, hits in a.prefixed("couriers.").items():
            for hit in hits:
                if (
                    hit.negated
                    or r.in_sentence_with(hit.start, "resolutions.reship", None)
                    or _NEW_PARCEL.search(
                        a.text, a.sentence_start(hit.start), a.sentence_end(hit.start)
                    )
                ):
                    continue  # 补发走顺丰, "a second set by SF": the new parcel's courier
                if a.sentence_of(hit.start) in sending_away and not (
                    _CARRIES_AFTER.match(a.text, hit.end)
                    or _CARRIES_BEFORE.search(a.text[max(0, hit.start - 16) : hit.start])
                ):
                    continue  # "您得去找顺丰" names the courier to send the customer away
                verdict = "correct" if courier == order.courier else "wrong"
                expected = rules.courier_names
                claims.append(Claim("courier", verdict, a.quote(hit), expected, order_clauses))
        if order.promised_by is not None and today > day_of(order.promised_by):
            overdue = (today - day_of(order.promised_by)).days
            # only a wrong count is a claim: the right one restates the complaint
            for said_late in numbers.late:
                if r.negated_clause(said_late.start) or said_late.hi_hours % 24:
                    continue
                at_least = _MORE_THAN.search(a.text[max(0, said_late.start - 10) : said_late.start])
                low, high = said_late.lo_hours / 24, said_late.hi_hours / 24
                if (overdue > low) if at_least else (low <= overdue <= high):
                    continue
                expected_days: dict[Lang, str] = {"zh": f"{overdue}天", "en": f"{overdue} days"}
                stated = r.quote(said_late.start, said_late.end)
                claims.append(Claim("lateness", "wrong", stated, expected_days, order_clauses))
        for date in numbers.dates:
            if date.day is None or r.negated_clause(date.start):
                continue  # a weekday or "tomorrow" is no order date
            clock = _time_after(a.text, date.end)
            topic = r.topic(date.start, date.end, _DATE_TOPICS, fallback=False)
            if topic is None and clock is not None:  # 11月18日 14:30审核通过: the colon splits
                topic = r.topic(clock[2] - 1, clock[2], _DATE_TOPICS, fallback=False)
            if (
                topic == "topics.signed"
                and order.return_received_on is not None
                and _WAREHOUSE.search(a.text, a.sentence_start(date.start), date.start)
            ):  # 仓库是11月17日签收的, "the warehouse received it on Nov 16": the return
                topic = "topics.received_back"
            if (
                _SINCE.search(a.text[max(0, date.start - 8) : date.start])
                or _SINCE_AFTER.match(a.text, date.end)
                or _ENDS_AFTER.match(a.text, date.end)
                or (
                    topic == "topics.delivery"
                    and _money_arriving(r, date.start, scenario, money_asked)
                )
            ) or (
                date.month is None
                and (
                    _PRICE_DROP.search(a.text, a.clause_start(date.start), date.end + 12)
                    or (
                        topic == "topics.shipped"
                        and _RESHIP_WORD.search(a.text, a.sentence_start(date.start), date.end)
                    )
                )
            ):
                continue  # 补发的水壶最晚17号前发出, "reach you by the 27th", "dropped on the 11th"
            promised = order.promised_by
            if (
                topic == "topics.delivery"
                and promised is not None
                and day_of(promised) < today
                and ((date.month or promised.month), date.day) == (promised.month, promised.day)
                and not _ESTIMATE.search(a.text, a.clause_start(date.start), date.end)
            ):
                # 页面写的是14号前送到: a past date that is the promise is no ETA
                topic = "topics.promised"
            field_name, actual = {
                "topics.promised": ("promised_by", order.promised_by),
                "topics.signed": ("signed_on", order.signed_on),
                "topics.ordered": ("ordered_on", order.ordered_on),
                "topics.shipped": ("shipped_on", order.shipped_on),
                "topics.delivery": ("eta", key.eta),
                "topics.approved": ("refund_approved_on", order.refund_approved_on),
                "topics.received_back": ("return_received_on", order.return_received_on),
            }.get(topic or "", ("", None))
            if not field_name or (
                field_name in ("refund_approved_on", "return_received_on")
                and (
                    actual is None or _DEADLINE.search(a.text[max(0, date.start - 8) : date.start])
                )
            ):
                continue  # checked only where the case records one; "until Nov 27" is no approval
            stated = r.quote(date.start, date.end)
            if actual is None:
                claims.append(Claim(field_name, "unsupported", stated, None, order_clauses))
                continue
            month = date.month or actual.month  # 12号签收: the order's month
            verdict = "correct" if (month, date.day) == (actual.month, actual.day) else "wrong"
            expected_date = _date_text(actual)
            if clock is not None and isinstance(actual, dt.datetime):  # 11月18日14:30审核通过
                stated = r.quote(date.start, clock[2])
                expected_date = {lang: date_text(actual, lang) for lang in LANGS}
                if clock[:2] != (actual.hour, actual.minute):
                    verdict = "wrong"
            required = "eta" if field_name == "eta" else None
            claims.append(
                Claim(field_name, verdict, stated, expected_date, order_clauses, required)
            )
        for channel, hits in a.prefixed("payments.").items():
            for hit in hits:
                paid = r.in_clause_with(hit.start, "topics.payment_verb", None) or bool(
                    _PAID_AMOUNT.match(a.text, hit.end)  # 微信支付329元
                )
                if paid and not r.in_sentence_with(hit.start, "topics.refund", None):
                    verdict = "correct" if channel == order.payment else "wrong"
                    expected = rules.payment_names
                    claims.append(Claim("payment", verdict, a.quote(hit), expected, order_clauses))

    channel_clauses = rules.clauses("refund_channel")
    if channel_clauses:
        expected = rules.payment_names
        for channel, hits in a.prefixed("payments.").items():
            for hit in hits:
                if (
                    hit.negated
                    or r.negated_clause(hit.start)
                    or a.sentence_of(hit.start) in private
                ):
                    continue  # "退款没办法退到支付宝" names the channel it is NOT going to
                if _INSTEAD_OF.search(a.text[max(0, hit.start - 18) : hit.start]):
                    continue  # "to Alipay instead of Huabei": Huabei is where it is not going
                if _linked_card(r, hit, order.payment):
                    continue  # 云闪付绑定的银行卡: the card behind the channel, not another channel
                generic = _KIND_OF_REFUND.match(a.text, hit.end)
                if generic and (
                    _GENERALLY.match(a.text, generic.end())
                    or _GENERALLY_BEFORE.search(a.text[max(0, hit.start - 10) : hit.start])
                ):
                    continue  # 支付宝退款一般是1-3个工作日: how that channel's refunds go in general
                if _THEIR_WISH.search(a.text[max(0, hit.start - 30) : hit.start]) and (
                    r.in_sentence_with(hit.start, "signals.refusal", None)
                    or _CONTRAST.search(a.text, hit.end, hit.end + 40)
                ):
                    continue  # "You'd rather have it on Alipay — but…": the customer's wish
                redirected = r.in_clause_with(hit.start, "signals.redirect", None)
                if not redirected and (
                    not _refund_destination(r, hit)
                    or r.in_clause_with(hit.start, "signals.hypothetical", None)
                ):
                    continue  # "if you'd paid by Alipay it'd be quicker" names no destination
                if r.in_clause_with(hit.start, "topics.payment_verb", None) and not (
                    r.in_clause_with(hit.start, "topics.refund", None)
                ):
                    continue
                verdict = "correct" if channel == order.payment else "wrong"
                claims.append(
                    Claim(
                        "refund_channel",
                        verdict,
                        a.sentence_quote(hit.start),
                        expected,
                        channel_clauses,
                        "refund_channel",
                    )
                )
                if (
                    verdict == "wrong"
                    and order_clauses
                    and (
                        _AS_PAID_BEFORE.search(a.text, max(0, hit.start - 16), hit.start)
                        or _AS_PAID_AFTER.match(a.text, hit.end)
                    )
                ):
                    # 原路退回您的支付宝 when they paid by card: the payment method is misstated too
                    claims.append(Claim("payment", "wrong", a.quote(hit), expected, order_clauses))
        for hit in a.get("claims.original_route"):
            if not hit.negated:
                claims.append(
                    Claim(
                        "refund_channel",
                        "correct",
                        a.quote(hit),
                        expected,
                        channel_clauses,
                        "refund_channel",
                    )
                )

    timing_clauses = rules.clauses("refund_timing")
    if timing_clauses:
        lo, hi = params.refund_days.for_channel(order.payment)
        expected = _days(lo, hi, "个工作日", "business days")
        refund_talk = any(a.get(k) for k in ("topics.refund", "outcomes.credit"))
        for duration in numbers.durations:
            topic = r.topic(duration.start, duration.end, _CLAIM_TOPICS)
            if topic == "topics.delivery" and _money_arriving(
                r, duration.start, scenario, money_asked
            ):
                topic = "topics.refund"  # 银行卡3-7个工作日就到: the money arrives, not a parcel
            elif topic is None and r.in_clause_with(duration.start, "outcomes.credit", None):
                topic = "topics.refund"  # 一小时内钱就回您卡上
            business = (
                (
                    refund_talk
                    or paid_asked
                    or scenario.category == "refund_dispute"  # every time here is the refund's
                    or _names_a_channel(r, duration.start)
                )
                and _BUSINESS_DAYS.search(a.text, duration.start, duration.end) is not None
                and not _agent_acts(r, duration.start, duration.end)
            )
            channel_named = topic is None and (
                (refund_talk and _same_option(r, duration, f"payments.{order.payment}"))
                or business
                or _answers_when_paid(r, duration.start, duration.end, paid_asked)
            )  # 银行卡3–7个工作日, "It usually takes 5-7 business days to show up."
            if (
                a.sentence_of(duration.start) in private
                or _qualified(r, duration)
                or _SO_FAR.search(a.text[max(0, duration.start - 12) : duration.start])
                or _WAIT_FOR_ME.search(a.text[max(0, duration.start - 10) : duration.start])
                or _counted_from_delivery(r, duration)  # a window, not a refund time
                or _COUNTED_FROM_ORDER.match(a.text, duration.end)
                or (topic != "topics.refund" and not channel_named)
                or r.negated_clause(duration.start)
                or r.in_clause_with(duration.start, "signals.hypothetical", None)
            ):
                continue
            # a time given for another channel ("余额0–1个工作日") is that channel's time;
            # naming the channel is the refund-channel finding
            c_lo, c_hi = params.refund_days.for_channel(
                _named_channel(r, duration.start, order.payment)
            )
            span_days = duration.hi_hours / 24
            verdict = (
                "correct" if span_days == c_hi or (c_lo == 0 and span_days <= c_hi) else "wrong"
            )
            stated = r.quote(duration.start, duration.end)
            claims.append(
                Claim("refund_timing", verdict, stated, expected, timing_clauses, "refund_timing")
            )
            if duration.hi_hours < c_lo * 24:  # faster than the fastest the policy allows
                f.too_fast.append(a.sentence_quote(duration.start))
        for date in numbers.dates:  # "by tomorrow morning", 最晚下周一, 最晚23号就到
            arrives = (  # a day named for the money, in a sentence about it
                _money_arriving(r, date.start, scenario, money_asked)
                and _ARRIVES_AFTER.match(a.text, date.end) is not None
            )
            until = date.days_from(today.weekday())
            if until is None and arrives:
                until = _days_until(replace(date, month=date.month or today.month), today)
            if until is None or until < 0 or r.negated_clause(date.start) or _qualified(r, date):
                continue
            if a.sentence_of(date.start) in private:
                continue
            if not (
                _about_refund_arrival(r, Hit("date", date.start, date.end))
                or _answers_when_paid(r, date.start, date.end, paid_asked)
                or arrives
            ):
                continue
            if any(h.start <= date.start < h.end for h in a.get("claims.immediate")):
                continue  # 今天就到账: counted as an immediate refund below
            verdict = "correct" if until >= hi else "wrong"
            stated = r.quote(date.start, date.end)
            claims.append(
                Claim("refund_timing", verdict, stated, expected, timing_clauses, "refund_timing")
            )
            if until < lo:
                f.too_fast.append(a.sentence_quote(date.start))
        for hit in a.get("claims.immediate"):
            if hit.negated or a.sentence_of(hit.start) in private:
                continue
            if _agent_acts(r, hit.start, hit.end, reach=60):
                continue  # "I'm applying for the ¥100 difference right now": the agent's step
            if not _about_refund_arrival(r, hit):
                continue
            verdict = "correct" if lo == 0 else "wrong"
            claims.append(
                Claim(
                    "refund_timing",
                    verdict,
                    a.quote(hit),
                    expected,
                    timing_clauses,
                    "refund_timing",
                )
            )
            if lo > 0:
                f.too_fast.append(a.sentence_quote(hit.start))

    windows = {
        "return_window": ("topics.return_window", params.no_reason_return_days * 24),
        "exchange_window": ("topics.exchange_window", params.quality_exchange_days * 24),
        "damage_report_window": ("topics.damage_report", params.damage_report_hours),
        "price_protection_window": ("topics.price_protection", params.price_protection_days * 24),
        "reship_timing": ("topics.reship", params.reship_within_hours),
    }
    said_of_each = [  # what each time is said of, the same for every window
        _window_from_delivery(r, d, rules) or r.topic(d.start, d.end, _CLAIM_TOPICS)
        for d in numbers.durations
    ]
    for kind, (topic, hours) in windows.items():
        clauses = rules.clauses(kind)
        if not clauses:
            continue
        for duration, said_of in zip(numbers.durations, said_of_each, strict=True):
            late = kind == "reship_timing" and duration.lo_hours > hours  # even at the earliest
            if (
                (_qualified(r, duration) and not late)
                or said_of != topic
                or r.negated_clause(duration.start)
                or _GONE_OR_LEFT.search(a.text[max(0, duration.start - 14) : duration.start])
                or _AGO.match(a.text, duration.end)
                or (
                    kind != "reship_timing"
                    and _BUSINESS_DAYS.search(a.text, duration.start, duration.end) is not None
                )  # windows run in calendar days; business days are a refund's
            ):
                continue
            if kind != "reship_timing" and r.in_clause_with(
                duration.start, "outcomes.credit", None
            ):
                continue  # "price protection done, the ¥100 is back in 1–3 days": refund timing
            if kind == "reship_timing":  # the shop may ship sooner than its limit
                verdict = "correct" if duration.hi_hours <= hours else "wrong"
            else:
                verdict = "correct" if duration.hi_hours == hours else "wrong"
            anchor = _WRONG_ANCHOR.get(kind)
            if anchor and r.in_sentence_with(duration.start, anchor, False):
                verdict = "wrong"  # 15 days from sign-for, where it runs from the order
            required = "reship_timing" if kind == "reship_timing" else None
            claims.append(
                Claim(
                    kind,
                    verdict,
                    r.quote(duration.start, duration.end),
                    _hours_text(hours),
                    clauses,
                    required,
                )
            )
        if kind == "reship_timing":  # "ships today", 下周三才能发, "next Friday"
            for date in numbers.dates:
                if _HOPED.search(a.text[max(0, date.start - 24) : date.start]):
                    continue  # "whether it'll make Saturday": hoped for, not promised
                until = _days_until(date, today)  # 下周三才能发, "around Nov 25"
                if until is None or until < 0 or r.negated_clause(date.start):
                    continue  # a past date is when it shipped, not a promise
                if _qualified(r, date) and until * 24 <= hours:
                    continue  # 最快明天发: an estimate within the limit
                if r.topic(date.start, date.end, _CLAIM_TOPICS, fallback=False) != topic:
                    continue
                verdict = "correct" if until * 24 <= hours else "wrong"
                stated = r.quote(date.start, date.end)
                claims.append(
                    Claim(kind, verdict, stated, _hours_text(hours), clauses, "reship_timing")
                )

    if order_clauses and any(
        k == "topics.delivery" for topics in r.topics.values() for k, _, _ in topics
    ):

        def eta_clauses(pos: int) -> tuple[str, ...]:
            # a guaranteed date is the promise's clause, not a misstated order fact
            return () if r.in_sentence_with(pos, "signals.promise", None) else order_clauses

        def disclaimed(pos: int) -> bool:
            # 周五前送到我没法保证, "I can't guarantee Friday": the date is not given
            return r.negated_clause(pos) or r.in_clause_with(pos, "signals.promise", True)

        for duration in numbers.durations:
            if (
                r.topic(duration.start, duration.end, _CLAIM_TOPICS) != "topics.delivery"
                or disclaimed(duration.start)
                or _money_arriving(r, duration.start, scenario, money_asked)
            ):
                continue
            if _counted_from_delivery(r, duration):
                continue  # "within 7 days of delivery", 签收后3天内: a window, not an ETA
            if _RELATIVE_TO.match(a.text, duration.end):
                continue  # "a day after her birthday": the gap between two days, no ETA
            stated = r.quote(duration.start, duration.end)
            if key.eta is None:
                if not r.in_clause_with(duration.start, "signals.approximate", None):
                    claims.append(
                        Claim("eta", "unsupported", stated, None, eta_clauses(duration.start))
                    )
                continue
            days = (key.eta - day_of(scenario.today)).days
            verdict = "correct" if duration.hi_hours == days * 24 else "wrong"
            claims.append(
                Claim(
                    "eta", verdict, stated, _date_text(key.eta), eta_clauses(duration.start), "eta"
                )
            )
        for date in numbers.dates:
            until = date.days_from(today.weekday())
            if until is None or not r.in_clause_with(date.start, "topics.delivery"):
                continue
            if _money_arriving(r, date.start, scenario, money_asked):
                continue  # "refunds take 3 business days, so it should be there by Friday"
            if r.in_clause_with(date.start, "signals.hypothetical", None):
                continue  # 今天能不能优先派送: asked, not promised
            if disclaimed(date.start):
                continue
            stated = r.quote(date.start, date.end)
            if key.eta is None:
                claims.append(Claim("eta", "unsupported", stated, None, eta_clauses(date.start)))
                continue
            verdict = "correct" if until == (key.eta - today).days else "wrong"
            claims.append(
                Claim("eta", verdict, stated, _date_text(key.eta), eta_clauses(date.start), "eta")
            )

    payer_clauses = rules.clauses("shipping_fee_payer")
    if payer_clauses:
        expected_payer = key.shipping_payer
        names: dict[str, dict[Lang, str]] = {
            "merchant": {"zh": "商家承担运费", "en": "the shop pays return shipping"},
            "customer": {"zh": "客户自付运费", "en": "the customer pays return shipping"},
            "insurance": {"zh": "运费险理赔", "en": "freight insurance covers it"},
        }
        for payer in ("customer", "merchant", "insurance"):
            for hit in a.get(f"claims.payer_{payer}"):
                if hit.negated or _THEY_ASK.search(a.text, a.clause_start(hit.start), hit.start):
                    continue  # 您问是不是要先垫付运费——不用的: their question, not the answer
                if payer == "insurance" and (
                    _NO_INSURANCE_BEFORE.search(a.text[max(0, hit.start - 14) : hit.start])
                    or _NO_INSURANCE_AFTER.match(a.text, hit.end)
                ):
                    continue  # "there's no freight insurance", 跟运费险没关系: nobody said it pays
                if (
                    payer != "insurance"
                    and expected_payer == "insurance"
                    and r.in_sentence_with(hit.start, "claims.payer_insurance")
                ):
                    continue  # 运费您先垫付，运费险理赔后赔给您: how the insurance pays, not who
                verdict = "correct" if payer == expected_payer else "wrong"
                claims.append(
                    Claim(
                        "shipping_payer",
                        verdict,
                        a.sentence_quote(hit.start),
                        names[expected_payer],
                        payer_clauses,
                        "shipping_payer",
                    )
                )

    eligibility_clauses = rules.clauses("eligibility")
    if eligibility_clauses:
        yes: dict[Lang, str] = {"zh": "可以", "en": "yes"}
        no: dict[Lang, str] = {"zh": "不可以", "en": "no"}
        checks = [
            ("refuse_return", "return_eligibility", key.return_eligible is True, yes),
            ("offer_return", "return_eligibility", key.return_eligible is False, no),
            (
                "refuse_price_protection",
                "price_protection_eligibility",
                key.price_protection_eligible is True,
                yes,
            ),
            (
                "offer_price_protection",
                "price_protection_eligibility",
                key.price_protection_eligible is False,
                no,
            ),
            ("refuse_refund", "refund_eligibility", "refund" in key.acceptable_resolutions, yes),
            (
                "refuse_exchange",
                "exchange_eligibility",
                "exchange" in key.acceptable_resolutions,
                yes,
            ),
        ]
        for claim_key, fact, is_wrong, expected_text in checks:
            if not is_wrong:
                continue
            for hit in a.get(f"claims.{claim_key}"):
                if hit.negated or r.in_clause_with(hit.start, "signals.inquiry", None):
                    continue
                if _names_excluded_kind(a.text, a.clause_start(hit.start), hit.start):
                    continue  # 券后价不在价保范围: the rule for such prices, not a refusal
                if claim_key == "refuse_return" and _NOT_ARRIVED.search(
                    a.text, a.sentence_start(hit.start), hit.end + 40
                ):
                    continue  # 包裹还没签收，现在还不能退货: true until it arrives
                if claim_key == "refuse_return" and any(
                    r.in_clause_with(hit.start, k, None)
                    for k in ("topics.difference", "topics.price_protection")
                ):
                    continue  # 差价这块退不了 refuses price protection, not a return
                if claim_key == "refuse_refund" and any(
                    a.clause_of(p.start) == a.clause_of(hit.start)
                    for ps in a.prefixed("payments.").values()
                    for p in ps
                ):
                    continue  # refusing a channel ("can't refund to Alipay"), not the refund
                claims.append(
                    Claim(
                        fact,
                        "wrong",
                        a.sentence_quote(hit.start),
                        expected_text,
                        _eligibility_clauses(rules, fact) or eligibility_clauses,
                    )
                )

    fit_clauses = rules.clauses("resolution_fit")
    if fit_clauses:
        acceptable = set(key.acceptable_resolutions)
        unfit = set(f.offers) - acceptable - NEUTRAL_RESOLUTIONS - set(key.forbidden_resolutions)
        options = rules.resolution_options
        quotes = [f.offers[kind] for kind in sorted(unfit)]
        quotes += [a.sentence_quote(h.start) for h in a.get("claims.substitute") if not h.negated]
        due = {
            a.sentence_of(m.start)
            for m in numbers.amounts
            if _round(m.value) in rules.refund_amounts and _round(m.value) != _round(order.price)
        }
        quotes += [  # part of what is due, as the fix: "keep it and I'll refund ¥20 of it"
            a.sentence_quote(h.start)
            for h in a.get("claims.partial")
            if not h.negated
            and a.sentence_of(h.start) not in due  # the cream's ¥139 is what is due
            and (
                r.in_sentence_with(h.start, "topics.refund", None)
                or r.in_sentence_with(h.start, "topics.difference", None)
            )
        ]
        fixes = bool(set(f.offers) & acceptable)
        refused = any(not h.negated for k in _REFUSALS for h in a.get(f"claims.{k}")) or a.has(
            "signals.instead"
        )
        coupon_only = (  # only a coupon, where a coupon is no fix and none was offered yet
            "compensation" not in acceptable
            and not set(state.offered) & acceptable
            and "photos" not in f.asks  # the fix waits for the evidence
            and not any(c.fact in _REFUND_FACTS for c in claims)  # the refund is on its way
            and any(
                not h.negated
                and not _COUPON_PRICE.match(a.text, h.end)
                and not _AS_WELL.search(a.text[a.clause_start(h.start) : h.start])
                and not _COUPON_ASKED.search(a.text, a.clause_start(h.start), h.start)
                for h in a.get("resolutions.compensation")
            )
        )
        if "compensation" in f.offers and not fixes and (refused or coupon_only):
            quotes.append(f.offers["compensation"])
        for quote in dict.fromkeys(quotes):
            claims.append(Claim("resolution", "unfit", quote, options, fit_clauses))
        if not quotes:  # a remedy this case allows is a correct statement of the policy
            # 您直接打圆通电话催一下吧: the customer's errand, not a remedy
            sending_away = _errand_sentences(a, disavowed_too=False)
            for kind in sorted(set(f.offers) & acceptable - {"compensation"}):
                hits = [h for h in a.get(f"resolutions.{kind}") if not h.negated]
                if _intended(r, kind) or all(a.sentence_of(h.start) in sending_away for h in hits):
                    continue  # only what the agent means to look into, or sends the customer to do
                claims.append(Claim("resolution", "correct", f.offers[kind], options, fit_clauses))

    if order_clauses:  # conditions the policy does not have: 发票, 开箱视频, "only if…"
        for hit in a.get("claims.no_condition"):  # 没录视频也没关系: what the policy says
            if not hit.negated:
                stated = a.sentence_quote(hit.start)
                claims.append(Claim("condition", "correct", stated, None, order_clauses))
        waived = a.get("claims.no_condition")
        for hit in a.get("claims.condition"):
            if hit.negated or _legit(r, hit, scenario.category == "invoice"):
                continue
            if any(w.start <= hit.start and hit.end <= w.end for w in waived):
                continue  # 不需要开箱视频: the condition waived
            claims.append(
                Claim("condition", "wrong", a.sentence_quote(hit.start), None, order_clauses)
            )


_NEW_PARCEL = re.compile(
    r"\b(?:second|another|extra) (?:set|one|parcel|box|kettle|hoodie|cream|unit)\b|"
    r"(?:再|另|重新)(?:发|寄)|转(?:走)?(?:顺丰|京东|圆通|中通|韵达|申通|邮政|ems|极兔)"
)
"""A parcel besides the order's: the courier named for it is no claim about the order."""

_PAID_AMOUNT = re.compile(r"\s*(?:付了?|付款|支付了?)?\s*[¥￥]?\s*\d+(?:\.\d+)?\s*(?:元|块)")
"""A payment channel right before the amount paid: 微信支付329元, 花呗付了329元."""

_PURPOSE = re.compile(
    r"核实|查一下|查查|查看|check|看一下|看看|look into|verify|pull (?:it )?up|so (?:that )?i can|"
    r"好给您|我好|以便|方便我|便于|先帮您查|确认一下"
)


_HOPED = re.compile(r"\b(?:whether|if)\b[^.!?]{0,20}$|\bin time for\s*$|赶(?:得上|得及|上)\s*$")
_NOT_A_CENT = re.compile(
    r"(?:不用|不需|唔使|唔洗|无需|不会|没|免|不收)[^。！？，,]{0,4}(?:一分钱|一蚊|一毛|一块钱)"
    r"|(?:一分钱|一蚊|一毛)(?:都|也)"
)
_ALTERNATIVE = re.compile(r"\bor\b|\+|还是|或者|或是")
"""Between a number and a topic: the topic belongs to another option (…48小时内发出，还是退139元)."""
_COUPON_PRICE = re.compile(r"\s*(?:price|价|(?:was |were )?(?:applied|used))")
"""After a coupon word: a coupon price ("their own coupon prices", 券后价), not a coupon given."""
_COUPON_ASKED = re.compile(
    r"\b(?:was|were|did you (?:use|apply|get)|after)\b|用了|用的|领了|领的|叠加|有没有"
)
"""Before a coupon word: asking about a coupon the customer used, not giving one."""
_AS_WELL = re.compile(r"\b(?:also|as well|on top|in addition)\b|另外|额外|先给|先发|再给|同时|顺便")
"""Before a coupon: given beside the fix, not instead of it."""


def _intended(r: _Reader, kind: str) -> bool:
    """Whether an offer is only what the agent means to look into, not a remedy stated.

    For example "我先帮您核实价保" or "so I can get the exchange started".
    """
    a = r.a
    for hit in a.get(f"resolutions.{kind}"):
        before = a.text[max(0, hit.start - (8 if CJK.match(a.text, hit.start) else 28)) : hit.start]
        clause_start = a.clause_start(hit.start)
        if _PURPOSE.search(before[max(0, clause_start - hit.start + len(before)) :]):
            return True
    return False


def _errand_sentences(a: Analysis, *, disavowed_too: bool) -> set[int]:
    """Sentences that send the customer to the courier or elsewhere (您得去找顺丰)."""
    return {
        a.sentence_of(h.start)
        for key in ("forbidden.courier_deflection", "forbidden.dismissive")
        for h in a.get(key)
        if disavowed_too or not h.negated
    }


def _recipient_data(r: _Reader, rules: ScenarioRules) -> list[str]:
    """The recipient's name, phone or address as the reply reads them back."""
    a = r.a
    quotes: list[str] = []
    if rules.reads_address(a.text.replace(" ", "")):
        quotes.append(a.excerpt())
    for name in rules.names:
        index = a.text.find(name)
        if index >= 0:
            quotes.append(r.quote(index, index + len(name)))
    numbers: Numbers = a.memo["numbers"]
    quotes += [
        r.quote(p.start, p.end) for p in numbers.phones if compact_digits(p.value) == rules.phone
    ]
    for match in _MASKED_PHONE.finditer(a.text):
        if (match["head"], match["tail"]) == (rules.phone[:3], rules.phone[-4:]):
            quotes.append(a.sentence_quote(match.start()))
    for match in rules.last4.finditer(a.text):
        if _PHONE_WORDS.search(a.text[max(0, match.start() - 24) : match.start()]):
            quotes.append(a.sentence_quote(match.start()))
    return list(dict.fromkeys(quotes))


def _eligibility_clauses(rules: ScenarioRules, fact: str) -> tuple[str, ...]:
    """The clause an eligibility claim is about: the one setting that remedy's window."""
    window = {
        "return_eligibility": "return_window",
        "price_protection_eligibility": "price_protection_window",
    }.get(fact)
    if window is None:
        return rules.clauses("resolution_fit")
    eligible = set(rules.clauses("eligibility"))
    return tuple(c for c in rules.clauses(window) if c in eligible)


_WINDOW_TOPICS = frozenset(
    {"topics.return_window", "topics.exchange_window", "topics.price_protection"}
)
_ANCHOR_TOPICS = frozenset({"topics.delivery", "topics.signed", "topics.damage_report"})
_WRONG_ANCHOR = {  # a window counted from the wrong day
    "price_protection_window": "topics.signed",
    "return_window": "topics.ordered",
}
_REFUSALS = ("refuse_refund", "refuse_exchange", "refuse_price_protection", "refuse_return")
_DATE_TOPICS = (
    "topics.promised",
    "topics.signed",
    "topics.ordered",
    "topics.shipped",
    "topics.received_back",
    "topics.delivery",
    "topics.approved",
)
"""What an order date can be said of, in priority order."""
_WAREHOUSE = re.compile(r"仓库|\bwarehouse\b")
_ID_DIGITS = re.compile(r"\d{8,}")
_ID_SEPARATORS = re.compile(r"[\s-]")


def _ids_in(message: str) -> frozenset[str]:
    """The digits of the long numbers in a message (ids the customer read out)."""
    return frozenset(_ID_DIGITS.findall(_ID_SEPARATORS.sub("", message)))


_LINKED_BEFORE = re.compile(r"(?:绑定|关联|绑)的?\s*$")
_LINKED_AFTER = re.compile(r"\s+(?:linked|tied|connected|bound)\s+to\s+(?:your\s+|the\s+)?")


def _linked_card(r: _Reader, hit: Hit, paid_with: PaymentChannel) -> bool:
    """Whether a card is named as the one behind the paying channel (云闪付绑定的银行卡)."""
    if not hit.key.endswith(("bank_card", "credit_card")) or paid_with in (
        "bank_card",
        "credit_card",
    ):
        return False
    a = r.a
    for channel_hit in a.get(f"payments.{paid_with}"):
        if (
            channel_hit.end <= hit.start
            and _LINKED_BEFORE.search(a.text, channel_hit.end, hit.start)
            and hit.start - channel_hit.end <= 6
        ):
            return True
        if channel_hit.start >= hit.end and _LINKED_AFTER.fullmatch(
            a.text, hit.end, channel_hit.start
        ):
            return True
    return False


_REFERENCE_WORDS = re.compile(
    r"(?:退款|售后|退货)(?:单号|编号|流水号|单)[是为:：\s]*$"
    r"|\b(?:refund|return)\s+(?:reference|ref\.?|number|no\.?|id)(?:\s+(?:number|no\.?))?"
    r"(?:\s+is)?[\s:#]*$|\breference(?:\s+(?:number|no\.?))?(?:\s+is)?[\s:#]*$"
)


def _names_reference(text: str, token: Token, rules: ScenarioRules) -> bool:
    """Whether an id-like token is a refund reference: called one, or the case's own.

    The order's own number is never one ("your order reference is JD…").
    """
    if compact_digits(token.value) in rules.order_numbers:
        return False
    if rules.reference_digits and compact_digits(token.value) == rules.reference_digits:
        return True
    if rules.reference_prefix and token.value.startswith(rules.reference_prefix):
        return True
    return _REFERENCE_WORDS.search(text[max(0, token.start - 24) : token.start]) is not None


_CLOCK = re.compile(
    r"\s*(?:,\s*)?(?:at\s+)?(?:上午|早上|中午|下午|晚上|凌晨)?\s*"
    r"(?P<h>\d{1,2})\s*(?::|：|点)\s*(?P<m>\d{2}|半)?分?\s*(?P<ampm>am|pm|a\.m\.|p\.m\.)?"
)
_AFTERNOON = re.compile(r"下午|晚上")


def _time_after(text: str, pos: int) -> tuple[int, int, int] | None:
    """The time of day written right after a date (14:30, 下午2点半, "at 2:30 pm"), and its end."""
    match = _CLOCK.match(text, pos)
    if match is None:
        return None
    hour = int(match["h"])
    minute = 30 if match["m"] == "半" else int(match["m"] or 0)
    if (_AFTERNOON.search(match.group()) or (match["ampm"] or "").startswith("p")) and hour < 12:
        hour += 12
    if hour > 23 or minute > 59:
        return None
    return hour, minute, match.end()


_TICKET = re.compile(r"工单|\btickets?\b")
_TURNED_DOWN = re.compile(
    r"(?:没法|没办法|无法|不能|不敢)(?:向您|跟您|给您)?(?:保证|承诺|答应)|保证不了"
    r"|\b(?:isn't|is not|isn’t) something (?:i|we) can (?:promise|guarantee)"
    r"|\b(?:can't|cannot|can not) (?:promise|guarantee)"
)
_THIS_TIME_TOMORROW = re.compile(r"明天(?:的)?这个(?:时候|时间|点)|\bthis time tomorrow\b")


def _ticket_claims(
    r: _Reader,
    rules: ScenarioRules,
    numbers: Numbers,
    clauses: tuple[str, ...],
    claims: list[Claim],
) -> Numbers:
    """Claims about an escalation ticket: its callback time and the team it goes to.

    Returns the numbers without the callback times, which no other check reads.
    """
    a = r.a
    params = rules.resolved.policy.params
    hours = params.ticket_callback_hours
    callbacks = [
        d
        for d in numbers.durations
        if r.topic(d.start, d.end, ("topics.callback", *_CLAIM_TOPICS), fallback=False)
        == "topics.callback"
    ]
    for duration in callbacks:
        if (
            r.negated_clause(duration.start)
            or r.in_clause_with(duration.start, "signals.hypothetical", None)
            or _TURNED_DOWN.search(a.text, duration.end, a.clause_end(duration.start))
        ):
            continue  # "1小时内回电我没法保证": a time turned down is not given
        verdict: Verdict = "correct" if duration.hi_hours == hours else "wrong"
        stated = r.quote(duration.start, duration.end)
        claims.append(
            Claim("callback_time", verdict, stated, _hours_text(hours), clauses, "callback_time")
        )
    for hit in a.get("topics.callback"):
        tomorrow = _THIS_TIME_TOMORROW.search(
            a.text, a.clause_start(hit.start), a.clause_end(hit.start)
        )
        if tomorrow and not r.negated_clause(hit.start):  # 明天这个时候之前回电: 24 hours
            verdict = "correct" if hours == 24 else "wrong"
            stated = r.quote(tomorrow.start(), tomorrow.end())
            claims.append(
                Claim(
                    "callback_time", verdict, stated, _hours_text(hours), clauses, "callback_time"
                )
            )
            break
    team = rules.resolved.scenario.answer_key.ticket
    if team is not None:
        for named in TICKET_TEAMS:
            for hit in a.get(f"topics.team_{named}"):
                if hit.negated or not _TICKET.search(
                    a.text, a.sentence_start(hit.start), a.sentence_end(hit.start)
                ):
                    continue  # 物流显示…: a team named outside a ticket is no claim
                verdict = "correct" if named == team else "wrong"
                claims.append(
                    Claim("ticket_team", verdict, a.quote(hit), TICKET_TEAMS[team], clauses)
                )
    if not callbacks:
        return numbers
    return replace(numbers, durations=tuple(d for d in numbers.durations if d not in callbacks))


_CLAIM_TOPICS = (
    "topics.refund",
    "topics.return_window",
    "topics.exchange_window",
    "topics.damage_report",
    "topics.price_protection",
    "topics.reship",
    "topics.delivery",
)
"""Topics a duration can be a claim about (amounts use their own list)."""


_NO_INSURANCE_BEFORE = re.compile(
    r"(?:\bno|\bwithout|\bnot covered by|没有|没买|没有买|未购买|无)\s*(?:the |any )?$"
)
_NO_INSURANCE_AFTER = re.compile(r"\s*(?:没关系|无关|不管用|不适用|用不上)")
_INSTEAD_OF = re.compile(
    r"(?:instead of|rather than|not to|withdraw (?:it |the money )?to|而不是|不是退到|不退到?|退不到|退不了|改不到|(?:不能|没法|无法)(?:退|改)到|提现到)\s*(?:your |the |a |an )?$"
)
_DESTINATION = re.compile(
    r"(?:退|回|打|转|到|进|入|存|放|换成|改成|改到|改退|退回|原路)(?:到|回|进|入)?(?:您|你)?的?\s*$"
    r"|(?:to|into|onto|on|back to|via|through|in) (?:your |the |a )?(?:own )?$"
)


_SHARE = re.compile(r"\bshare\b|分摊|摊下来|单价|单品价|单独算")

_MORE_THAN = re.compile(r"(?:more than|over|超过|超出|不止)\s*$")

_REPLACED = re.compile(
    r"(?:in place of|instead of|in lieu of|rather than|代替|替代|顶替|而不是)\s*(?:the |your |a )?$"
)
"""What an offer stands in for is not offered: "1,000 JD beans in place of the difference"."""

_WAIT_FOR_ME = re.compile(
    r"(?:稍等|稍候|等我|给我|give me|bear with me(?: for)?|hold on(?: for)?)\s*(?:a |about |around |大概|约)?\s*$"
)
"""麻烦您稍等两分钟, "give me five minutes": the agent's own check, not the refund."""

_KIND_OF_REFUND = re.compile(r"\s*的?(?:退款|refunds?)")
_GENERALLY = re.compile(
    r"\s*(?:一般|通常|大多|基本上?|都是|才|可能|usually|generally|typically|normally|tend to|"
    r"take|are|can|may|might)"
)
_GENERALLY_BEFORE = re.compile(
    r"(?:一般|通常|大多)(?:都)?是?\s*$|\b(?:that'?s|that is|those are)\s*$"
)


def _same_option(r: _Reader, duration: Duration, key: str) -> bool:
    """A ``key`` hit in the duration's clause, not in another option ("black M in 48h or …")."""
    a = r.a
    clause = a.clause_of(duration.start)
    for hit in a.get(key):
        if a.clause_of(hit.start) != clause:
            continue
        low, high = sorted((duration.end, hit.start))
        if not _ALTERNATIVE.search(a.text, low, high):
            return True
    return False


def _refund_destination(r: _Reader, hit: Hit) -> bool:
    """Whether a payment channel is named as where a refund goes (退到支付宝, "to your card")."""
    a = r.a
    clause = a.clause_of(hit.start)
    keys = ("topics.refund", "outcomes.credit", "topics.difference")
    if any(clause in a.by_clause(key) for key in keys):
        return True
    before = a.text[max(0, hit.start - 8) : hit.start]
    return bool(_DESTINATION.search(before)) and r.in_sentence_with(
        hit.start, "topics.refund", None
    )


def _named_channel(r: _Reader, pos: int, default: PaymentChannel) -> PaymentChannel:
    """The payment channel named in the clause (or sentence) at ``pos``, if any."""
    a = r.a
    for grouped, unit in ((a.by_clause, a.clause_of(pos)), (a.by_sentence, a.sentence_of(pos))):
        named = [
            channel
            for channel in a.prefixed("payments.")
            if any(not h.negated for h in grouped(f"payments.{channel}").get(unit, ()))
        ]
        if named:
            return default if default in named else cast(PaymentChannel, named[0])
    return default


_AGENT_ACTS_AFTER = re.compile(
    r"\s*(?:内|之内|以内)?\s*(?:就|会|马上|立刻|都|再)?(?:去|帮您|给您|为您|跟您)?"
    r"(?:催|查|核查|核实|跟进|处理|提交|联系|申请|登记|反馈|回复|同步)"
)
_AGENT_ACTS_BEFORE = re.compile(
    r"\b(?:chase|chasing|check|checking|follow(?:ing)? up|escalat\w+|contact\w*|call\w*|"
    r"push\w*|update you|get back to you|arrange|sort|process(?:ing)?|apply(?:ing)?(?: for)?|"
    r"submit(?:ting)?|fil(?:e|ing)|issue|start|set up|put through|"
    r"get (?:the|your|it|this|things) [^.!?,;]{0,30}moving|"
    r"what (?:i|we) can do(?: right now| now)?(?: is)?|respond|reply|get back|contact you)\b[^.!?,;—–]{0,60}$"
    r"|(?:答复|回复)[^。！？，,；;]{0,12}$"
)
_CARRIES_AFTER = re.compile(
    r"\s*(?:那边|这边)?(?:在送|送的|派送|配送|在派|运的|送来的|发的|发出的|寄的|寄来的)"
    r"|(?:'s|s) (?:[a-z]+ )?(?:hub|depot|station|transit centre|transit center)\b"
    r"|\s+(?:delivered|is delivering|are delivering|has it|have it)\b"
)
_CARRIES_BEFORE = re.compile(
    r"(?:包裹|快递|货|东西|这单|订单|您这单)(?:是|在|由|走的|用的)\s*$|\b(?:sitting|stuck|held) (?:at|with)\s*$|"
    r"\b(?:shipped|sent|went out|came) (?:with|by|via)\s*$"
)
"""Around a courier's name: it carries the parcel (包裹是中通送的), a checkable fact even
in a reply that sends the customer to it."""
_NAMES_THE_DAY = re.compile(
    r"\s*(?:是|才)?\s*(?:第|\d{1,2}\s*[号日]|[一二三四五六七八九十]+[号日])"
    r"|,?\s*(?:is |it's )?(?:only )?(?:the )?\d{1,2}(?:st|nd|rd|th)\b"
)
"""After "today": the date it is (今天16号, 今天才第2个工作日), not when money arrives."""
_MADE_UP = re.compile(
    r"发票|开箱|视频|录像|video|原包装|包装盒|包装袋|泡沫|快递员签字|身份证|质检报告|检测报告|银行流水|流水|"
    r"invoice|receipt|id card|bank statement|inspection report|original (?:box|packaging)|packing foam"
)
"""Requirements the policy never sets, whatever else is said with them."""
_RESHIP_WORD = re.compile(r"补发|重发|补寄|新壶|新的|\bresh\w*|\breplacement\b|\bnew one\b")
"""Before a shipping date: the replacement's, not the order's (补发的水壶最晚17号前发出)."""
_PRICE_DROP = re.compile(r"降|\bdrop\w*|cheaper|\bfell\b")
_WAIVED = re.compile(
    r"(?:\bnot (?:a |an |the |any )?|\bno |不需要|不用|无需|不必|不要求|也不用|或)\s*$"
)
"""Before a requirement: it is said not to be needed (not a video, 不需要发票或视频)."""
_NOT_ARRIVED = re.compile(
    r"还没(?:签收|到|收到)|未签收|没收到|\b(?:hasn't|has not|haven't|not yet) (?:been )?(?:delivered|arrived|signed)"
    r"|\bnever (?:got|received)\b"
)
_CONTRAST = re.compile(r"\bbut\b|\bhowever\b|但|不过|可是|只能")
_AS_PAID_BEFORE = re.compile(
    r"(?:原路|原渠道|原支付方式|(?:您|你)(?:当时)?(?:付款|支付|下单)(?:时|时候)?(?:用|使用)?的|"
    r"\b(?:back|straight back) (?:to|into|onto) (?:your|the)|\boriginal)[^，,。.;；:：]{0,8}$"
)
_AS_PAID_AFTER = re.compile(
    r"[^，,。.;；:：]{0,20}?(?:\b(?:that |which )?you (?:paid|bought it|ordered) (?:with|by|on|using|via)\b|"
    r"\byou used to pay\b|(?:您|你)(?:当时)?(?:付款|支付)(?:用|使用)?的)"
)
"""Around a refund's channel: the way the customer paid (原路退回您的支付宝, "the card you paid with")."""

_THEIR_WISH = re.compile(
    r"\b(?:you'?d (?:rather|prefer|like)|you (?:want|wanted|asked for|prefer|would prefer))\b"
    r"[^.!?]{0,20}$|(?:您|你)(?:想|想要|希望|要求|说)(?:退到|退回|转到|改到|改成|改退)?\s*$"
)
"""Before a payment channel: what the customer wants, not where the refund goes."""
_WHEN = re.compile(r"什么时候|啥时候|几时|多久|哪天|几天|\bwhen\b|how long")
_ASKING = re.compile(r"\b(?:what|which|does|do|did|how|where|is there)\b|什么|哪|怎么")
"""A question word before a time in its clause: the time is asked about, not stated."""
_MONEY_WORDS = re.compile(r"钱|退款|到账|\b(?:refund|money|cash)\b")
_AFTER_DELIVERY = re.compile(r"(?:签收|收货|收到货|到货|收到)(?:后|之后|以后)(?:的)?\s*$")
_COUNTED_FROM = re.compile(
    r"\s*(?:of|from|after|since) (?:the |your )?(?:delivery|sign-for|signing|receipt|being delivered)\b"
)
"""After a duration: the delivery day a window is counted from."""
_COUNTED_FROM_ORDER = re.compile(
    r"\s*(?:of|from|after|since) (?:the |your )?(?:order|ordering|purchase)\b"
)
"""After a duration: the order day a window is counted from ("within 15 days of your order")."""
_BUSINESS_DAYS = re.compile(r"工作日|business|working")
"""In a duration: counted in business days, as refunds are (in a reply about a refund)."""
_GONE_OR_LEFT = re.compile(
    r"(?:才过了?|已经过了|过了|(?:下单|签收|买|收货|到货)(?:后)?(?:才|刚|已经)|还剩|只剩|剩下)\s*$"
    r"|\b(?:still have|only have|left with)\s+$"
)
"""Before a duration: days already gone or still left (才过了9天, 还剩6天), not the window."""

_SINCE = re.compile(r"\bsince\s+$|自\s*$")
"""Before a date: when something began (stuck at the hub since Nov 15), not an arrival."""
_SINCE_AFTER = re.compile(r"\s*(?:起一直|起就|以来)")
"""After a date: the same (15号起一直压在转运中心)."""
_ENDS_AFTER = re.compile(r"\s*(?:就|便)?(?:已经)?(?:截止|到期|过期|结束|过了)")
"""After a date: when a window ends (10号就截止了), not when the order was placed."""

_HOTLINES = frozenset({12315.0, 12345.0})
_CURRENCY = re.compile(r"¥|元|块|yuan|rmb", re.IGNORECASE)
_DEMANDED = re.compile(
    r"(?:您|你)(?:说的|要求的|要的|想要的|提的)|\byou (?:asked for|wanted|want|demanded|mentioned)\b"
)
"""Before an amount: the customer's own demand (您要的100元), not the agent's claim."""

_MORE_AFTER = re.compile(r"\s*(?:more|less|extra|too much)\b")
_MORE_BEFORE = re.compile(r"(?:多付|多花|多出|多给)了?\s*$")
"""Around an amount: what was overpaid ("paying ¥100 more", 多花了100), the difference."""

_DEADLINE = re.compile(r"\b(?:until|till|by|before)\s+$|最晚\s*$|最迟\s*$")
"""Before a date: a deadline ("until Nov 27"), not when something happened."""

_MONEY_TOPICS = ("topics.refund", "outcomes.credit")
"""In a sentence about money arriving, a date is the money's, not the parcel's."""

_CONFIRMED = re.compile(r"了?(?:是吧|对吧|吗|了吧)")
"""After a problem word: the agent confirms the problem (裂了是吧), an acknowledgement."""

_EXCLUDED_KIND = re.compile(
    r"(?:券后价?|秒杀价|专享券?价|个人券)|\b(?:coupon|flash[- ]sale|personal[- ]coupon) prices\b"
)
"""Before a refusal: a kind of price the policy excludes, named as a rule (not this order)."""
_THIS_PRICE_EXCLUDED = re.compile(
    r"(?:\d+|这个|那个|这单|您这)[^。！？!?,，]{0,8}是[^。！？!?,，]{0,6}(?:秒杀|券后|专享|个人券)"
    r"|(?:¥?\b\d+|\bit|\bthat|\byour price)\b[^.!?]{0,30}\b(?:was|is)\b[^.!?]{0,20}\b(?:flash|coupon)"
)
"""This order's price said to be an excluded kind: a claim about the order, not a rule."""


def _names_excluded_kind(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` states the rule for an excluded kind of price only."""
    return bool(
        _EXCLUDED_KIND.search(text, start, end)
        and not _THIS_PRICE_EXCLUDED.search(text, start, end)
    )


_AGO = re.compile(r"\s*(?:ago\b|前(?![后往]))")
"""After a duration: time gone by ("9 days ago", 9天前), not a window."""

_REFUND_FACTS = frozenset({"refund_amount", "refund_channel", "refund_timing"})
"""Facts that show the reply speaks of the refund itself (a coupon beside it is no substitute)."""

_DUE_AFTER = re.compile(r"\s*(?:元|块)?(?:的)?(?:差价|退款|货款)|\s*(?:difference|refund)\b")
"""After an amount: it is the difference or refund itself (再给您补100元差价), not extra."""
_EXTRA = re.compile(
    r"(?:额外|另外|再|多)(?:补偿|赔|给|送|补)|\b(?:extra|on top|additional(?:ly)?)\b"
)
"""Before an amount: money on top of what is due (另外再额外补偿您100元)."""

_SO_FAR = re.compile(
    r"(?:这|最近|过去|近|才过了?|已经过了)\s*$|\b(?:these|the (?:last|past)|for the past|for|been|only been)\s+$"
)
"""Before a duration: time already gone (这两天, "for 2 days"), not a promised time."""
_ARRIVES_AFTER = re.compile(r"\s*(?:前|之前)?(?:就|能|会|一定|肯定)?(?:到账|到了|到|回来|进卡)")
"""After a date: the money arrives then (最晚23号就到了), not 今天可能还到不了."""
_ARRIVING = re.compile(r"[到回进入]|\b(?:credit\w*|lands?|arrives?|back|instant\w*)\b")


def _counted_from_delivery(r: _Reader, duration: Duration) -> bool:
    """Whether a time is counted from a delivery (签收后3天内, "24 hours after delivery")."""
    text = r.a.text
    return bool(
        _COUNTED_FROM.match(text, duration.end)
        or _AFTER_DELIVERY.search(text[max(0, duration.start - 8) : duration.start])
    )


def _window_from_delivery(r: _Reader, duration: Duration, rules: ScenarioRules) -> str | None:
    """The window a time counted from delivery is about (签收后3天内, "within 7 days of delivery").

    A window named in the sentence decides (the damage report's when damage is named);
    otherwise days are the window of this case whose length they are (签收后15天内 where the
    quality window applies), else the no-reason return's, and hours are no window at all.
    """
    if not _counted_from_delivery(r, duration):
        return None
    windows = ("topics.price_protection", "topics.exchange_window", "topics.return_window")
    for near in (r.in_clause_with, r.in_sentence_with):  # 不是质量问题，无理由退货签收后3天内
        for key in windows:
            if near(duration.start, key, False):
                return key
    if r.in_sentence_with(duration.start, "topics.damage_report", None):
        return "topics.damage_report"
    if duration.hi_hours < 72:
        return None
    params = rules.resolved.policy.params
    for kind, key, days in (
        ("exchange_window", "topics.exchange_window", params.quality_exchange_days),
        ("return_window", "topics.return_window", params.no_reason_return_days),
    ):
        if rules.clauses(kind) and duration.hi_hours == days * 24:
            return key
    return "topics.return_window"


def _days_until(date: DateRef, today: dt.date) -> int | None:
    """Days from ``today`` to a relative date, a weekday or a calendar date (month and day)."""
    until = date.days_from(today.weekday())
    if until is None and date.month is not None and date.day is not None:
        try:
            until = (dt.date(today.year, date.month, date.day) - today).days
        except ValueError:  # 2月30日: no such day
            return None
    return until


def _legit(r: _Reader, condition: Hit, about_invoices: bool = False) -> bool:
    """Whether a condition is one the policy sets (photos, the 7 days, verification).

    A condition naming a made-up requirement (开箱视频, "a photo of your ID card") is made
    up whatever else its clause mentions; in an invoice case the invoice is the subject
    (发票的品名和金额必须跟订单一致), not a requirement.
    """
    text = r.a.text
    required = [
        m
        for m in _MADE_UP.finditer(text, condition.start, condition.end)
        if not _WAIVED.search(text[max(0, m.start() - 8) : m.start()])
        and not (about_invoices and m.group() in ("发票", "invoice"))
    ]
    if required:
        return False
    return bool(
        _MADE_UP.search(text, condition.start, condition.end)  # only waived ones: 不需要发票或视频
        or r.in_clause_with(condition.start, "signals.legit_condition", None)
    )


def _names_a_channel(r: _Reader, pos: int) -> bool:
    """Whether a payment channel is named in the clause at ``pos`` (银行卡3-7个工作日)."""
    clause = r.a.clause_of(pos)
    return any(clause in r.a.by_clause(f"payments.{p}") for p in r.a.prefixed("payments."))


def _agent_acts(r: _Reader, start: int, end: int, reach: int = 40) -> bool:
    """Whether a time is said of the agent's own work (我今天就去催财务, "I'll chase finance today").

    ``reach`` is how far back the agent's verb may stand.
    """
    text = r.a.text
    return bool(
        _AGENT_ACTS_AFTER.match(text, end)
        or _AGENT_ACTS_BEFORE.search(text[max(0, start - reach) : start])
    )


_THEY_ASK = re.compile(
    r"(?:您|你)(?:是)?(?:问|担心)|\byou(?:'re| are)? (?:asked|asking|wonder(?:ed|ing)?) (?:if|whether)\b"
)
_RELATIVE_TO = re.compile(r"\s*(?:after|before|later than|past) (?:her|his|your|the|my|their)\b")
_ESTIMATE = re.compile(r"预计|预估|估计|最新|estimat|expect|\beta\b|\bwill\b|'ll\b")


# What a customer worries about having to do or pay; a reply that lifts the same worry
# off them has heard them (docs/labelling.md, acknowledgement)
_WORRIES = tuple(
    re.compile(p)
    for p in (
        r"快递|圆通|顺丰|中通|申通|韵达|京东物流|派件|网点|驿站|courier|\byto\b|\bsf\b|\bzto\b|driver|\bhub\b",
        r"运费|邮费|垫|postage|shipping fee|shipping cost|return shipping|out of pocket|up ?front"
        r"|pay (?:for |to )?(?:the )?(?:return|shipping|send it back|ship it back)",
        r"视频|video",
        r"拒收|refuse",
        r"银行|\bbank\b",
        r"跑|寄回|寄过去|drop (?:it )?off|post office|send it back|ship it back",
        r"申请|提交|apply|submit|file (?:it|a claim)",
        r"做错|弄错|搞错|操作错|(?:您|你|我)的(?:问题|原因|错)|did (?:anything |something )?wrong"
        r"|(?:you|i) did wrong|mess(?:ed)? (?:something|it|this|anything) up|(?:my|your) fault",
    )
)


_DONT_WORRY = re.compile(r"别担心|不用担心|不要担心|放心|don't worry|do not worry|no need to worry")
"""A reassurance that lifts whatever worry the customer has just voiced."""
_WORRIED = re.compile(
    r"担心|怕|会不会|能不能|是不是|来得及|赶得上|赶不上|吗[?？]|\bworr|\bafraid\b|\bwill (?:it|i|you)\b"
    r"|\bare you (?:going|gonna)\b|\bdo i (?:have|need) to\b|\bin time\b|\bmake it\b"
)


def _voices_worry(customer: str) -> bool:
    """Whether the customer's last message voices a worry (a fear, a yes-or-no about them)."""
    return bool(_WORRIED.search(customer)) or any(w.search(customer) for w in _WORRIES)


def _same_worry(sentence: str, customer: str) -> bool:
    """Whether a sentence and the customer's last message speak of the same worry."""
    return any(w.search(sentence) and w.search(customer) for w in _WORRIES)


@lru_cache(maxsize=1024)
def _asks_when_paid(message: str) -> bool:
    """Whether a customer message asks when the money arrives (钱什么时候到？)."""
    text = normalize(message).text
    return bool(_WHEN.search(text) and _MONEY_WORDS.search(text))


_CLAUSES = re.compile(r"[^，,。！？!?；;…]+")


@lru_cache(maxsize=1024)
def _asks_only_when_paid(message: str) -> bool:
    """Whether a customer message asks when the money arrives, and not when goods do.

    Each "when" must share its clause with the money (钱什么时候到？): 礼物什么时候到？
    再不到我就退款 asks after the present.
    """
    text = normalize(message).text
    asking = [c for c in _CLAUSES.findall(text) if _WHEN.search(c)]
    return bool(asking) and all(_MONEY_WORDS.search(c) for c in asking)


def _answers_when_paid(r: _Reader, start: int, end: int, asked: bool) -> bool:
    """A time with no topic of its own, answering "when do I get my money?"."""
    return (
        asked
        and r.topic(start, end, _CLAIM_TOPICS, fallback=False) is None
        and not _agent_acts(r, start, end)
        and not _NAMES_THE_DAY.match(r.a.text, end)
    )


# The most common Chinese surnames: the character before 女士/先生/小姐 names someone only
# when it is one (这位女士, 各位先生 name no one).
_SURNAMES = frozenset(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程"
    "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝"
    "龚邵钱严覃武戴莫孔汤温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿兰焦俞左"
    "柳甘祝包宁尚符舒阮柯纪梅童凌毕季裴霍涂苗谷盛曲翁冉骆蓝游辛靳管柴蒙鲍华喻祁蒲房滕屈饶"
    "牟艾尤阳穆农司卓古吉缪简车项芦麦褚娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿桂佟臧闵苟邬"
    "边卞姬师仇栾隋刁沙荣巫寇桑郎甄丛仲虞敖巩佘池麻苑迟邝"
)
_ZH_ADDRESS = re.compile(
    r"(?:^|[。！？!?，,、\s～~：:]|您好|你好|亲爱的|尊敬的)"
    r"([\u4e00-\u9fa5])(?:女士|先生|小姐)(?=[，,。！？!?\s～~]|您|你|$)"
)
_EN_ADDRESS = re.compile(
    r"(?:^|[.!?,;:]\s|\b(?:hello|hi|hey|dear|thanks|sorry|thank you)\s)"
    r"((?:ms|mr|mrs|miss)\.?\s+([a-z]+))(?=\s*(?:[,.!?;:—–-]|$))"
)
"""The customer addressed by title and surname: at a sentence's edge, after a greeting."""
_SOMEONE_ELSE = re.compile(
    r"(?:主管|经理|师傅|快递员|小哥|同事|专员|联系人|负责人|骑手|组长|店长)[，,：:\s]*$"
    r"|\b(?:courier|manager|colleague|supervisor|driver|agent|contact|rider|team lead)\b[,:\s]*$"
)
"""Right before a title and name: the person is someone else (我们的主管，刘先生)."""
_ZH_READ_BACK = re.compile(
    r"(?:收货人|收件人)(?:姓名)?(?:(?:是|为|叫|：|:)\s?([\u4e00-\u9fa5]{2,4})"
    r"|([\u4e00-\u9fa5]{2,3})(?=[，,。！？!?、\s]|吧|吗|呢|对|$))"
)
_NOT_NAMES = frozenset({"姓名", "手机", "电话", "地址", "信息", "名字", "本人"})
"""What follows 收货人 when no name is read back."""
_EN_READ_BACK = re.compile(
    r"\b(?:recipient(?:'s name)?(?: is|:)?|(?:order|parcel|it)(?:'s| is) under|under the name"
    r"|(?:goes|going|sent|shipped|addressed) to|pickup (?:is )?(?:for|from)) ([a-z]+) ([a-z]+)\b"
)
"""The recipient's name read back: 收货人李芳, "the order is under Chen Hao"."""
_PINYIN_SURNAME = re.compile(
    r"wang|li|zhang|liu|chen|yang|huang|zhao|wu|zhou|xu|sun|zhu|hu|guo|gao|lin|luo|zheng|liang"
    r"|xie|song|tang|han|feng|deng|cao|peng|zeng|xiao|tian|dong|yuan|pan|cai|jiang|jia|ding|wei"
    r"|xue|ye|yan|du|dai|xia|zhong|qiu|qin|shen|yao|lu|su|cui|kang|mao|hao|kong|meng|qian|tan"
    r"|liao|zou|xiong|jin|gu|hou|shao|wan|duan|lei"
)
"""Pinyin surnames that are no English words (he, long, fan… are left out)."""
_TITLES = re.compile(r"女士|先生|小姐|\b(?:ms|mr|mrs|miss)\b\.?", re.IGNORECASE)


def _name_claims(
    claims: list[Claim], r: _Reader, scenario: Scenario, clauses: tuple[str, ...]
) -> None:
    """A name that is not the customer's (李女士 to 王女士, 收货人李芳) is a wrong fact."""
    persona = scenario.customer.persona.name
    receiver = scenario.order.receiver.name
    for start, end, read_back in _wrong_names(r, scenario):
        expected = receiver if read_back else persona
        claims.append(
            Claim(
                "customer_name",
                "wrong",
                r.quote(start, end),
                {"zh": expected.zh, "en": expected.en},
                clauses,
            )
        )


def _wrong_names(r: _Reader, scenario: Scenario) -> list[tuple[int, int, bool]]:
    """Spans where the reply addresses the customer, or reads back the recipient, wrongly.

    Each is ``(start, end, read_back)``; found once per text and scenario.
    """
    key = ("wrong_names", scenario.id, scenario.customer.persona.name.zh)
    memo = r.a.memo
    if key not in memo:
        memo[key] = _find_wrong_names(r.a.text, scenario)
    found: list[tuple[int, int, bool]] = memo[key]
    return found


def _find_wrong_names(text: str, scenario: Scenario) -> list[tuple[int, int, bool]]:
    persona = scenario.customer.persona.name
    receiver = scenario.order.receiver.name
    surnames = {_TITLES.sub("", persona.zh).strip()[:1], receiver.zh[:1]}
    en_words = {w.lower() for t in (persona.en, receiver.en) for w in _TITLES.sub("", t).split()}
    receiver_words = set(receiver.en.lower().split())
    found: list[tuple[int, int, bool]] = []
    for match in _ZH_ADDRESS.finditer(text):
        surname = match.group(1)
        if surname not in surnames and surname in _SURNAMES and not _someone_else(text, match):
            found.append((match.start(1), match.end(), False))
    for match in _EN_ADDRESS.finditer(text):
        if match.group(2) not in en_words and not _someone_else(text, match):
            found.append((match.start(1), match.end(1), False))
    for match in _ZH_READ_BACK.finditer(text):
        group = 1 if match.group(1) else 2
        said = match.group(group)
        titled = _TITLES.search(said)
        if titled:  # 收货人是王女士: the surname is what is said
            name, right = said[: titled.start()], said[:1] in surnames
        else:
            name = said[: len(receiver.zh)]
            right = name.startswith(receiver.zh)
        if name and not right and name[0] in _SURNAMES and name[:2] not in _NOT_NAMES:
            found.append((match.start(), match.start(group) + len(name), True))
    for match in _EN_READ_BACK.finditer(text):
        if (
            _PINYIN_SURNAME.fullmatch(match.group(1))
            and {match.group(1), match.group(2)} != receiver_words
        ):
            found.append((match.start(1), match.end(), True))
    return found


def _someone_else(text: str, match: re.Match[str]) -> bool:
    """Whether the title and name after ``match``'s start name a third party."""
    return bool(_SOMEONE_ELSE.search(text, max(0, match.start() - 16), match.start() + 1))


def _money_arriving(r: _Reader, pos: int, scenario: Scenario, asked: bool) -> bool:
    """Whether an arrival at ``pos`` is the money's.

    In a refund case; with money in the sentence; or, ``asked`` "when do I get my money?"
    (and nothing else), when the sentence names no goods ("You'll get it in 1–3 days").
    """
    if scenario.category == "refund_dispute":  # the parcel went back long ago
        return True
    sentence = r.a.sentence_of(pos)
    if asked and not _GOODS.search(r.a.text, r.a.sentence_start(pos), r.a.sentence_end(pos)):
        return True
    sentences = {sentence}
    if sentence and _IT_OPENS.match(r.a.text, r.a.sentence_start(pos)):
        sentences.add(sentence - 1)  # "I've refunded ¥139 to your Huabei; it'll arrive in 1–3 days"
    coupons = r.a.by_clause("topics.compensation")
    return any(  # a coupon "already in your account" is no refund arriving
        r.a.clause_of(h.start) not in coupons
        for key in (*_MONEY_TOPICS, *(f"payments.{p}" for p in PAYMENT_NAMES))
        for sentence in sentences
        for h in r.a.by_sentence(key).get(sentence, ())
    )


_GOODS = re.compile(
    r"包裹|快递|货|新的|新品|补发|换的|寄|发出|\b(?:parcel|package|replacement|new one|the new"
    r"|ships?|shipped|shipping|courier|item|kettle|hoodie|cream|fryer|blender|set)\b"
)
"""Words that name goods on their way, not money."""
_IT_OPENS = re.compile(r"\s*(?:(?:it|that)(?:'ll| will| should|'s| is)?\b|这笔|钱|款项?)")
"""A sentence about the money named in the one before: "…to your Huabei; it'll arrive…"."""


def _about_refund_arrival(r: _Reader, hit: Hit) -> bool:
    """Whether a time word ("today", 马上) is said of the refund arriving.

    Not of a parcel, nor of the agent's own work (我今天就去催财务, "I'll chase finance today").
    """
    if _agent_acts(r, hit.start, hit.end):
        return False
    end = r.a.sentence_end(hit.start)
    if r.a.text[end - 1 : end] in ("?", "？") and _ASKING.search(
        r.a.text, r.a.clause_start(hit.start), hit.start
    ):
        return False  # "What does your refund page show right now?" asks, states no time
    clause = r.a.clause_of(hit.start)
    if clause in r.a.by_clause("topics.compensation"):
        return False  # a coupon or red packet arriving is not the refund
    if (
        r.in_sentence_with(hit.start, "topics.compensation", None)
        and not any(
            r.in_clause_with(hit.start, key, None) for key in ("topics.refund", "topics.difference")
        )
        and not _MONEY_WORDS.search(r.a.text, r.a.clause_start(hit.start), hit.start)
    ):
        return False  # 给您发一张20元券，马上到账: the coupon arrives
    keys = ("topics.refund", "outcomes.credit", "topics.difference")
    if any(clause in r.a.by_clause(key) for key in keys):
        return True
    # "面霜那139给您退了，原路回花呗，一般当天就到": an arrival (当天就到) of the money named
    # earlier in the sentence, in a sentence about no parcel
    if not _ARRIVING.search(r.a.text[hit.start : hit.end]):
        return False
    sentence = r.a.sentence_of(hit.start)
    money = any(
        sentence in r.a.by_sentence(key)
        for key in (*keys, *(f"payments.{p}" for p in PAYMENT_NAMES))
    )
    return money and not r.in_sentence_with(hit.start, "topics.reship", None)


def _qualified(r: _Reader, span: Duration | DateRef) -> bool:
    """Times after 最快/usually are estimates, not commitments: not checked."""
    return r.in_clause_with(span.start, "signals.most_quickly", None) and any(
        h.end <= span.start for h in r.a.get("signals.most_quickly")
    )


def _amount_claim(
    amount: Amount, r: _Reader, rules: ScenarioRules, clauses: tuple[str, ...]
) -> list[Claim]:
    order = rules.resolved.scenario.order
    key = rules.resolved.scenario.answer_key
    value = _round(amount.value)
    stated = r.quote(amount.start, amount.end)
    topic = r.topic(
        amount.start,
        amount.end,
        (
            "topics.refund",
            "topics.difference",
            "topics.compensation",
            "topics.price",
            "topics.shipping_fee",
        ),
    )
    if topic == "topics.compensation":
        return []  # judged by the compensation cap (policy), not accuracy
    if _MORE_AFTER.match(r.a.text, amount.end) or _MORE_BEFORE.search(
        r.a.text, max(0, amount.start - 4), amount.start
    ):
        topic = "topics.difference"  # "paying ¥100 more", 多花了100: what was overpaid
    if topic == "topics.price" and _SHARE.search(
        r.a.text, r.a.clause_start(amount.start), amount.start
    ):
        topic = "topics.refund"  # "the face cream's share of the set price is ¥139": what is due
    if topic == "topics.refund":
        expected = _money(key.refund_amount or order.price)
        ok = value in rules.refund_amounts
        return [
            Claim(
                "refund_amount",
                "correct" if ok else "wrong",
                stated,
                expected,
                clauses,
                "refund_amount",
            )
        ]
    if topic == "topics.difference":
        if key.price_difference is None:
            return [Claim("price_difference", "unsupported", stated, None, clauses)]
        if value == _round(order.price - key.price_difference) or (
            value == _round(order.price)
            and r.topic(amount.start, amount.end, ("topics.difference",), fallback=False) is None
        ):  # 降到399; "ordered at ¥499 …, so the difference is ¥100": the prices
            return [Claim("price", "correct", stated, _money(order.price), clauses)]
        ok = value == _round(key.price_difference)
        return [
            Claim(
                "price_difference",
                "correct" if ok else "wrong",
                stated,
                _money(key.price_difference),
                clauses,
                "price_difference",
            )
        ]
    if (
        topic == "topics.price"
        and value in rules.refund_amounts
        and r.in_sentence_with(amount.start, "topics.refund", None)
        and not r.in_sentence_with(amount.start, "topics.difference", None)
    ):  # "the full ¥3999 you paid has been refunded": the amount paid is what comes back
        expected = _money(key.refund_amount or order.price)
        return [Claim("refund_amount", "correct", stated, expected, clauses, "refund_amount")]
    if topic == "topics.price":
        prices = {_round(order.price)}
        if key.price_difference:
            prices.add(_round(order.price - key.price_difference))  # the price after the drop
        ok = value in prices
        return [Claim("price", "correct" if ok else "wrong", stated, _money(order.price), clauses)]
    if topic == "topics.shipping_fee":
        ok = value in (_round(order.shipping_fee), 0.0)
        return [
            Claim(
                "shipping_fee",
                "correct" if ok else "wrong",
                stated,
                _money(order.shipping_fee),
                clauses,
            )
        ]
    ok = value in rules.known_amounts
    return [Claim("amount", "correct" if ok else "unsupported", stated, None, clauses)]


def _violations(
    f: Findings,
    r: _Reader,
    rules: ScenarioRules,
    numbers: Numbers,
    extra: dict[str, list[Hit]],
    state: DialogueState,
) -> None:
    a = r.a
    out = f.violations
    resolved = rules.resolved
    key = resolved.scenario.answer_key

    # the same words may break several clauses (sending the customer to the courier breaks
    # the damage clause and the no-deflection clause): one violation cites them all
    cited: dict[tuple[str, int], list[str]] = {}
    for move_key, move in rules.moves.items():  # the scenario's own forbidden moves first
        for hit in extra.get(move_key, []):
            if not (hit.negated and (move.negatable or hit.quoted)):
                cited.setdefault((hit.key, hit.start), []).append(move.clause)
    for clause_id, check, lexicon_key, extra_key in rules.phrase_keys:  # most specific first
        own = extra.get(extra_key, [])
        hits = [*a.get(lexicon_key), *own] if lexicon_key else own
        for hit in hits:
            if _excused(a, hit):
                continue
            if not (hit.negated and (check.negatable or hit.quoted)):
                cited.setdefault((hit.key, hit.start), []).append(clause_id)
    refund_channel = rules.clauses("refund_channel")
    money_moves = {
        h.start for h in a.get("forbidden.off_platform") if _MONEY.search(a.text[h.start : h.end])
    }
    for (category, start), clause_ids in sorted(cited.items(), key=lambda kv: kv[0][1]):
        paid_privately = category == "forbidden.off_platform" and start in money_moves
        route = Claim("payment_route", "wrong", a.sentence_quote(start), _PLATFORM_ROUTE, ())
        if paid_privately and route not in f.claims:  # money moves only through the platform
            f.claims.append(route)
        if paid_privately and refund_channel and _pays_the_refund(r, rules, start):
            clause_ids = [*clause_ids, *refund_channel]  # the refund, paid privately
        out.append(rules.violation(clause_ids, a.sentence_quote(start)))
    customers = {resolved.scenario.order.receiver.phone, *state.customer_numbers}
    changing = {a.sentence_of(h.start) for h in a.get("forbidden.change_order_data")}
    for phone in numbers.phones:  # a number that is not the customer's is the agent's own
        if (
            compact_digits(phone.value) not in customers
            and a.sentence_of(phone.start) not in changing
        ):
            off = [cid for cid, check in rules.phrase_checks if check.lexicon == "off_platform"]
            if off:
                out.append(rules.violation(off, r.quote(phone.start, phone.end)))

    promise_clauses = rules.clauses("promise_beyond_authority")
    if promise_clauses:
        out.extend(_promises(r, rules, promise_clauses, f.too_fast))

    cap = resolved.policy.params.compensation_cap
    cap_clauses = rules.clauses("compensation_cap")
    if cap_clauses:
        approval_promised = any(
            v.clause_ids[0] in rules.clauses("promise_beyond_authority") for v in out
        ) and a.has("outcomes.approval") | a.has("signals.certain_outcome")
        for amount in _compensations(r, rules, numbers):
            escalated = r.escalated(amount.start)
            if amount.value <= cap or (escalated and not approval_promised):
                continue
            stated = r.quote(amount.start, amount.end)  # approval promised: not a request now
            f.claims[:] = [
                replace(c, verdict="wrong")
                if c.fact == "compensation" and c.stated == stated
                else c
                for c in f.claims
            ]
            out.append(
                rules.violation(
                    cap_clauses,
                    a.sentence_quote(amount.start),
                    "policy.over_cap",
                    amount=f"{amount.value:g}",
                    cap=cap,
                )
            )
        for hit in a.get("forbidden.excessive_compensation"):
            if (
                hit.negated
                or r.in_clause_with(
                    hit.start, "signals.negation", None
                )  # "… isn't something I can give"
                or r.escalated(hit.start)
                or (  # 差价退您，东西您留着用: price protection keeps the item by design
                    "留着" in a.text[hit.start : hit.end]
                    and r.in_sentence_with(hit.start, "topics.difference", None)
                )
            ):
                continue
            quote = a.sentence_quote(hit.start)
            out.append(rules.violation(cap_clauses, quote))
            extra_given = Claim("compensation", "wrong", quote, _cap_text(cap), cap_clauses)
            if extra_given not in f.claims:  # a free extra item is beyond what the agent may give
                f.claims.append(extra_given)

    identity_clauses = rules.clauses("identity_before_disclosure")
    if identity_clauses and not state.identity_verified:
        quotes: list[str] = []
        compact = a.text.replace(" ", "")
        for phone in numbers.phones:
            if compact_digits(phone.value) == rules.phone:
                quotes.append(r.quote(phone.start, phone.end))
        for match in _MASKED_PHONE.finditer(a.text):
            if (match["head"], match["tail"]) == (rules.phone[:3], rules.phone[-4:]):
                quotes.append(a.sentence_quote(match.start()))
        if rules.reads_address(compact):
            quotes.append(a.excerpt())
        for name in rules.names:
            index = a.text.find(name)
            if index >= 0:
                quotes.append(r.quote(index, index + len(name)))
        for match in rules.last4.finditer(a.text):
            if r.in_clause_with(match.start(), "intents.identity", None) or _PHONE_WORDS.search(
                a.text[max(0, match.start() - 24) : match.start()]
            ):
                quotes.append(a.sentence_quote(match.start()))
        for match in rules.recipient.finditer(a.text):
            quotes.append(a.sentence_quote(match.start()))
        quotes += [
            a.sentence_quote(h.start) for h in a.get("forbidden.change_order_data") if not h.negated
        ]
        for clause_id in identity_clauses:
            for quote in dict.fromkeys(quotes):
                out.append(rules.violation(clause_id, quote, "policy.identity_first"))

    evidence_clauses = rules.clauses("evidence_before_commitment")
    if evidence_clauses and f.commitment_quote and key.evidence_required:
        missing = []
        for fact_id in key.evidence_required:
            fact = resolved.scenario.fact(fact_id)
            intents = set(fact.asked_by) if fact else set()
            if fact_id in state.revealed or intents & (set(state.asked) | set(f.asks)):
                continue
            missing.append(fact_id)
        if missing:
            names = [_evidence_name(resolved, m) for m in missing]
            evidence = {"zh": "、".join(n[0] for n in names), "en": ", ".join(n[1] for n in names)}
            for clause_id in evidence_clauses:
                out.append(
                    rules.violation(
                        clause_id, f.commitment_quote, "policy.evidence_first", evidence=evidence
                    )
                )

    for clause_id in rules.clauses("forbidden_resolution"):
        for kind in key.forbidden_resolutions:
            if kind in f.offers:
                out.append(
                    rules.violation(clause_id, f.offers[kind], "policy.forbidden_resolution")
                )
    unique = list({(v.clause_ids, v.code, v.quote): v for v in out}.values())
    alike: dict[tuple[str, str], list[set[str]]] = {}  # the clauses cited per quote and code
    for v in unique:
        alike.setdefault((v.quote, v.code), []).append(set(v.clause_ids))
    out[:] = [  # words already cited under more clauses are not cited again
        v
        for v in unique
        if not any(set(v.clause_ids) < cited for cited in alike[(v.quote, v.code)])
    ]


def _learned(f: Findings, rules: ScenarioRules) -> None:
    """Clauses the patterns did not cite that the shipped model reads in the reply."""
    model = learned.shipped()
    if model is None or not model.applies_to(rules.resolved.policy.id):
        return
    a = f.analysis
    candidates = model.candidates(a, rules.applicable)
    if not candidates:
        return
    cited = {c for v in f.violations for c in v.clause_ids}  # the rules explain these already
    cited |= {c for claim in f.claims if claim.verdict != "correct" for c in claim.clause_ids}
    judged = {c for claim in f.claims for c in claim.clause_ids}  # facts the rules checked
    left = [
        c for c in candidates if c not in cited and not (c in rules.fact_clauses and c in judged)
    ]
    for p in model.propose(a, left):
        said = [h for key in _DISAVOWED.get(p.clause, ()) for h in a.get(key)]
        here = [h for h in said if p.start <= h.start < p.end]
        if here and all(h.negated for h in here):
            continue  # 您不用自己去找顺丰: the sentence says the agent will not do it
        if (
            p.clause == "CONDUCT-NO-BLAME"
            and not here
            and _POLITE_QUESTION.search(a.text, p.start, p.end)
        ):
            continue  # 请问您是什么时候下单的？ asks what the agent needs to know
        if p.clause in rules.clauses("eligibility") and _names_excluded_kind(
            a.text, p.start, p.end
        ):
            continue  # 券后价不在价保范围内: the rule for excluded prices, not a refusal
        if p.clause == "CONDUCT-NO-DEFLECT" and _official_flow(a, p.start):
            continue  # 在订单页点申请换货，系统会自动预约上门取件: the shop's own flow, not a brush-off
        quote = a.norm.quote(p.start, p.end).strip()
        if p.clause in rules.fact_clauses:  # a wrong statement, graded as accuracy
            title = rules.title(p.clause)
            cited_clause: dict[Lang, str] = {
                "zh": f"{p.clause}（{title['zh']}）",
                "en": f"{p.clause} ({title['en']})",
            }
            f.claims.append(Claim("learned", "wrong", quote, cited_clause, (p.clause,)))
            continue
        words = ("、" if CJK.match(quote) else ", ").join(f"“{w}”" for w in p.words) or "—"
        f.violations.append(rules.violation(p.clause, quote, "policy.learned", words=words))
        if p.clause in rules.dismissive_clauses:  # rude, blaming or brushing off: empathy 0
            f.dismissive_quote = f.dismissive_quote or quote


_POLITE_QUESTION = re.compile(
    r"请问|想跟您确认|想确认一下|麻烦问一下|\bmay i ask\b|\bjust to confirm\b"
    r"|\b(?:could|can) you (?:please )?(?:tell|confirm|let)\b"
)
_DISAVOWED = {
    "CONDUCT-NO-DEFLECT": ("forbidden.courier_deflection", "forbidden.dismissive"),
    "DELAY-HANDLING": ("forbidden.courier_deflection",),
    "CONDUCT-NO-BLAME": ("forbidden.blame",),
    "CONDUCT-OFF-PLATFORM": ("forbidden.off_platform",),
    "CONDUCT-NO-REVIEW-BAIT": ("forbidden.review_inducement",),
    "AUTH-NO-OVERPROMISE": ("signals.promise",),
}
"""Per clause the model may add: the moves whose negation in a sentence disavows it there."""

_PROMISE_GAP = {True: 24, False: 90}  # chars between a promise marker and its outcome


def _promises(
    r: _Reader, rules: ScenarioRules, clause_ids: tuple[str, ...], too_fast: list[str]
) -> list[Violation]:
    """Guarantees of what the agent does not control, in any words.

    A promise marker (保证, 肯定, "you have my word") with an outcome (delivery, money
    arriving, an approval, a flawless item, never again) in the same sentence; an outcome
    stated as certain in one breath (审核秒过); a refund faster than the policy's
    fastest time. A delivery guarantee also breaks clauses with a delivery_guarantee check.
    """
    a = r.a
    delivery = rules.clauses("delivery_guarantee")
    outcomes: dict[int, list[tuple[str, Hit]]] = {}  # by sentence
    for kind, hits in a.prefixed("outcomes.").items():
        for h in hits:
            if not h.negated:
                outcomes.setdefault(a.sentence_of(h.start), []).append((kind, h))
    disclaimed = {a.sentence_of(h.start) for h in a.get("signals.promise") if h.negated}
    found: dict[int, tuple[str, set[str]]] = {}
    for marker in a.get("signals.promise"):
        sentence = a.sentence_of(marker.start)
        if marker.negated or sentence in disclaimed:
            continue
        cjk = CJK.match(a.text, marker.start) is not None
        if cjk and a.text.startswith(("不是", "没", "不会是", "不了", "不到"), marker.end):
            continue  # 肯定不是您的问题, 我真保证不了: no promise of an outcome
        gap = _PROMISE_GAP[cjk]
        kinds = {
            kind
            for kind, h in outcomes.get(sentence, ())
            if (not cjk or a.clause_of(h.start) == a.clause_of(marker.start))
            and min(abs(h.start - marker.end), abs(marker.start - h.end)) <= gap
        }
        if kinds:
            found.setdefault(sentence, (a.sentence_quote(marker.start), set()))[1].update(kinds)
    for hit in a.get("signals.certain_outcome"):
        if not hit.negated:
            sentence = a.sentence_of(hit.start)
            found.setdefault(sentence, (a.sentence_quote(hit.start), set()))[1].add("approval")
    out = []
    for quote, kinds in found.values():
        parcel = "delivery" in kinds and "credit" not in kinds  # "in your account by tomorrow"
        cited = [*clause_ids, *(delivery if parcel else ())]
        out.append(rules.violation(cited, quote))
    quoted = {q for q, _ in found.values()}
    out += [rules.violation(clause_ids, q) for q in dict.fromkeys(too_fast) if q not in quoted]
    return out


def _compensations(r: _Reader, rules: ScenarioRules, numbers: Numbers) -> list[Amount]:
    """Amounts given as compensation.

    Named so (红包, coupon, goodwill), or money handed over (补您50, "send you 50") that
    is not the refund, the difference or the price; not when declined or only quoted.
    """
    a = r.a
    memo_key = ("compensations", rules)
    if memo_key in a.memo:
        cached: list[Amount] = a.memo[memo_key]
        return cached
    found = []
    for amount in numbers.amounts:
        if _declined(r, amount.start, amount.end) and not r.escalated(amount.start):
            continue  # "the extra ¥50 is beyond what I can approve, so I've passed it on" stays
        topic = r.topic(
            amount.start,
            amount.end,
            ("topics.compensation", "topics.refund", "topics.difference", "topics.price"),
        )
        extra = _EXTRA.search(
            a.text, a.clause_start(amount.start), amount.start
        ) and not _DUE_AFTER.match(a.text, amount.end)
        known = _round(amount.value) in rules.known_but_cap and not extra
        if topic == "topics.compensation":
            if not known or _COUPON_OF.match(a.text, amount.end):
                found.append(amount)  # 100元店铺券 is a coupon over the cap; 券后价399 a price
            continue
        # its clause is in its sentence: the sentence decides
        framed = a.sentence_of(amount.start) in a.by_sentence("signals.compensation_context")
        if not known and (framed or (topic is None and amount.handed)):
            found.append(amount)
    a.memo[memo_key] = found
    return found


_COUPON_OF = re.compile(
    r"\s*(?:的)?(?:店铺|无门槛|平台)?(?:券|优惠券|代金券|红包)|\s*(?:shop |store )?(?:coupon|voucher)"
)
"""Right after an amount: a coupon of that value, compensation even when it equals the difference."""

_REPORTED_DEMAND = re.compile(
    r"(?:您|你)(?:说|要求|要|想)(?:让我|要我|我)?|you (?:asked|want|wanted|said|demanded)(?: me)?"
)


_BECAUSE = re.compile(r"\b(?:because|since|as this|as it)\b|因为|毕竟")
"""Between an amount and a later negation: the reason, which declines nothing."""


def _declined(r: _Reader, start: int, end: int) -> bool:
    """Whether what is said at ``start:end`` is negated, refused or only the customer's demand."""
    a = r.a
    if any(
        not _BECAUSE.search(a.text, end, max(end, h.start))
        for h in a.by_clause("signals.negation").get(a.clause_of(start), ())
    ):
        return True  # "¥50 isn't something I can approve"; not "¥100 because this is not OK"
    sentence = a.sentence_of(start)
    chinese = CJK.search(a.text, max(0, start - 2), end + 2) is not None  # 发一张20元券
    gap = 16 if chinese or not a.text[start].isascii() else 60
    if any(0 <= h.start - end <= gap for h in a.by_sentence("signals.refusal").get(sentence, ())):
        return True
    clause_start = a.clause_start(start)
    return bool(_REPORTED_DEMAND.search(a.text[clause_start:start]))


def _cap_text(cap: float) -> dict[Lang, str]:
    return {
        "zh": f"平台优惠券或红包，不超过{cap:g}元",
        "en": f"a platform coupon or red packet up to ¥{cap:g}",
    }


_PLATFORM_ROUTE: dict[Lang, str] = {
    "zh": "只能通过平台：原路退款或平台优惠券",
    "en": "only through the platform: a refund to the original payment method or a platform coupon",
}


def _pays_the_refund(r: _Reader, rules: ScenarioRules, pos: int) -> bool:
    """Whether the money in an off-platform move is the refund (or the price difference)."""
    sentence = r.a.sentence_of(pos)
    start, end = r.a.sentence_start(pos), r.a.sentence_end(pos)
    if not r.in_sentence_with(pos, "topics.compensation", None) and _THE_MONEY.search(
        r.a.text, start, end
    ):
        sentences = {sentence, sentence - 1}  # "your ¥100 back fast. I'll send it on WeChat"
    else:
        sentences = {sentence}
    if any(sentence in r.a.by_sentence("topics.refund") for sentence in sentences):
        return True
    numbers: Numbers = r.a.memo["numbers"]
    bare = (
        float(m.group())
        for m in _BARE_NUMBER.finditer(r.a.text)
        if r.a.sentence_of(m.start()) in sentences
    )
    in_sentence = [a.value for a in numbers.amounts if r.a.sentence_of(a.start) in sentences]
    return any(_round(v) in rules.refund_amounts for v in [*in_sentence, *bare]) or bool(
        _OWED_MONEY.search(r.a.text, start, end)
    )


_THE_MONEY = re.compile(r"\b(?:it|the money|your money)\b|这笔|钱")
_OWED_MONEY = re.compile(
    r"\b(?:the|your) money\b|货款|(?:您|你|面霜|水壶|卫衣|炸锅|积木|差价|货|东西)的钱|这笔钱|钱(?:我|直接)"
)
"""The money the customer is owed, named as such: it is the refund."""


_MONEY = re.compile(
    r"转|垫|打款|红包|收款码|付款码|掏腰包|扫|钱|账号|pay|transfer|send|drop|wire|alipay|wechat pay|"
    r"qr|pocket|account|¥|(?<![a-z_\d-])\d{2,}"  # not the digits of a handle (kf0921)
)
_BARE_NUMBER = re.compile(r"(?<![\d.])\d{2,5}(?:\.\d{1,2})?(?![\d.])")
_PHONE_WORDS = re.compile(
    r"手机|电话|尾号|尾数|后四位|号码|phone|number|ending|ends in|end in|last four|last 4"
)
_MASKED_PHONE = re.compile(r"(?<!\d)(?P<head>1[3-9]\d)\s*[*xX•·]{3,5}\s*(?P<tail>\d{4})(?!\d)")

_EVIDENCE_NAMES = {
    "photos": ("照片", "photos"),
    "order_id": ("订单号", "the order number"),
    "identity": ("身份核验信息", "identity details"),
    "signed_time": ("签收时间", "the sign-for date"),
}


def _evidence_name(resolved: ResolvedScenario, fact_id: str) -> tuple[str, str]:
    fact = resolved.scenario.fact(fact_id)
    kind = fact.kind if fact else fact_id
    return _EVIDENCE_NAMES.get(kind, (fact_id, fact_id))


__all__ = ["Claim", "Findings", "ScenarioRules", "Violation", "find", "rules_for"]
