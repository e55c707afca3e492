"""The better reply: an LLM rewrites the trainee's own reply, fixing what lost points.

The model gets the scenario's facts, the deductions to fix (with the clauses they cite), the
fenced chat and the fenced reply, and answers with the reply rewritten in the same language.
Its answer is shown only when it passes every check: no fence marker in it, not empty, not
over the length cap, in the right language, no number that appears nowhere in the reply, the
order facts, the policy or the chat, and, decisively, the project's own rule graders score it
strictly higher than the original in the same dialogue state with no major or critical
deduction and no red line. Otherwise (or on a timeout or an endpoint error) the caller keeps
showing the scenario's exemplar.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.i18n import Lang
from bot.llm.checks import numbers_in
from bot.llm.client import LLMClient, LLMError
from bot.llm.fence import fence, neutralise, nonce
from bot.llm.prompts import render
from bot.scenario import ResolvedScenario
from graders._base import Grade, get_grader
from graders.context import GradingContext, grade_reply
from graders.dialogue import DialogueState

MAX_CHARS: dict[Lang, int] = {"zh": 220, "en": 600}
"""Hard cap on a rewrite's length."""
MIN_TARGET: dict[Lang, int] = {"zh": 80, "en": 200}
"""The length asked for is 1.5× the reply's, but never less than this (room to fix it)."""
MAX_TOKENS = 512
BLOCKING_SEVERITIES = frozenset({"major", "critical"})
BLOCKING_FLAGS = frozenset({"red_line", "injection_attempt"})
_SPEAKERS: dict[Lang, dict[str, str]] = {
    "zh": {"customer": "顾客", "trainee": "客服"},
    "en": {"customer": "Customer", "trainee": "Agent"},
}
_CJK = re.compile(r"[\u3400-\u9fff]")
_LATIN = re.compile(r"[A-Za-z]")
_QUOTES = "\"'“”‘’「」『』"


@dataclass(frozen=True)
class Rewrite:
    """A model's better version of one reply, or why there is none."""

    text: str | None
    """The improved reply, or None when it was not usable."""
    rejected: str | None
    """Why not: ``timeout``, an ``LLMError`` reason, ``invented_number``, ``wrong_language``,
    ``too_long``, ``prompt_leak``, ``not_better``, ``empty`` or ``unchanged`` (nothing lost)."""
    model: str | None
    prompt_sha: str | None
    raw: str | None
    """The full response body, when the model answered."""


def lost_points(grades: Sequence[Grade]) -> bool:
    """Whether any scored grade is below its maximum."""
    return any(
        g.status == "scored" and (g.lost > 0 or (g.score is not None and g.score < g.max_score))
        for g in grades
    )


class Rewriter:
    """Asks the ``rewriter`` role for a better version of a trainee reply and checks it."""

    def __init__(self, client: LLMClient, *, budget_s: float = 20.0) -> None:
        self.client = client
        self.budget_s = budget_s

    async def rewrite(
        self,
        reply: str,
        grades: Sequence[Grade],
        *,
        scenario: ResolvedScenario,
        lang: Lang,
        history: Sequence[tuple[str, str]],
        state: DialogueState,
        reply_number: int,
    ) -> Rewrite:
        """A checked rewrite of ``reply``, graded ``grades`` in ``state``.

        ``history`` is the chat before the reply as ``(role, text)``. Never raises for
        endpoint problems: they come back as ``rejected``.
        """
        if not lost_points(grades):
            return Rewrite(None, "unchanged", None, None, None)
        marker = nonce(scenario.id, lang, reply_number, "rewriter", reply)
        facts = order_facts(scenario, lang)
        clauses = _clauses(scenario, grades, lang)
        prompt = render(
            "rewriter",
            lang,
            marker=marker,
            facts=facts,
            wants=scenario.scenario.customer.wants.get(lang),
            resolutions=list(scenario.scenario.answer_key.acceptable_resolutions),
            clauses=clauses,
            fixes=_fixes(grades, lang, marker),
            target=min(MAX_CHARS[lang], max(MIN_TARGET[lang], len(reply) * 3 // 2)),
            max_chars=MAX_CHARS[lang],
        )
        messages = [
            {"role": "system", "content": prompt.text},
            {"role": "user", "content": _data(reply, history, lang, marker)},
        ]
        try:  # a budget spent counts against the server's breaker, as a timeout
            done = await self.client.complete(
                messages, max_tokens=MAX_TOKENS, budget_s=self.budget_s
            )
        except LLMError as exc:
            return Rewrite(None, exc.reason, None, prompt.sha, None)
        text = done.text.strip().strip(_QUOTES).strip()
        known = [reply, *facts.values(), *(t for _, t in clauses), *(t for _, t in history)]
        problem = _check(text, lang, marker, known)
        if problem is None and not await better(text, reply, scenario, lang, state):
            problem = "not_better"
        if problem is not None:
            return Rewrite(None, problem, done.model, prompt.sha, done.raw)
        return Rewrite(text, None, done.model, prompt.sha, done.raw)


async def better(
    rewrite: str, reply: str, scenario: ResolvedScenario, lang: Lang, state: DialogueState
) -> bool:
    """Whether the rule graders prefer ``rewrite`` to ``reply`` in ``state``.

    The rewrite's total must be strictly higher, with no major or critical deduction and
    no red line or injection flag.
    """
    graders = [get_grader(name) for name in scenario.scenario.graders]
    before = await grade_reply(reply, GradingContext(scenario, lang, state), graders)
    after = await grade_reply(rewrite, GradingContext(scenario, lang, state), graders)
    for grade in after:
        if BLOCKING_FLAGS & set(grade.flags):
            return False
        if any(d.severity in BLOCKING_SEVERITIES for d in grade.deductions):
            return False
    return _total(after) > _total(before)


def _total(grades: Sequence[Grade]) -> float:
    return sum(g.score or 0.0 for g in grades if g.status == "scored")


def order_facts(scenario: ResolvedScenario, lang: Lang) -> dict[str, str]:
    """The order facts the model may use, by name.

    No receiver details: those are what identity checks protect.
    """
    order = scenario.scenario.order
    values = scenario.template_values(lang)
    for private in ("receiver_name", "phone_last4", "address"):
        values.pop(private, None)
    values["quantity"] = str(order.quantity)
    values["payment"] = order.payment
    if order.shipping_fee:
        values["shipping_fee"] = f"{order.shipping_fee:g}"
    return values


def _clauses(
    scenario: ResolvedScenario, grades: Sequence[Grade], lang: Lang
) -> list[tuple[str, str]]:
    """(id, text) of the scenario's clauses and of every clause a grade cites, in order."""
    ids = list(scenario.applicable_clauses)
    for grade in grades:
        for cited in (*grade.clause_ids, *(c for d in grade.deductions for c in d.clause_ids)):
            if cited not in ids and cited in scenario.policy.clauses:
                ids.append(cited)
    return [(i, scenario.policy.clause_text(i, lang)) for i in ids]


def _fixes(grades: Sequence[Grade], lang: Lang, marker: str) -> list[dict[str, Any]]:
    """The deductions to fix: reason, clause ids and the fenced words that cost the points."""
    return [
        {
            "dimension": grade.dimension,
            "reason": deduction.reason[lang],
            "clauses": list(deduction.clause_ids),
            "quote": fence(deduction.quote, "QUOTE", marker),
        }
        for grade in grades
        if grade.status == "scored"
        for deduction in grade.deductions
    ]


def _data(reply: str, history: Sequence[tuple[str, str]], lang: Lang, marker: str) -> str:
    """The user message: the fenced chat so far and the fenced reply to rewrite."""
    names = _SPEAKERS[lang]
    chat = "\n".join(
        f"{names[role]}: {neutralise(text)}" for role, text in history if role in names
    )
    return f"{fence(chat, 'CHAT', marker)}\n\n{fence(reply, 'REPLY', marker)}"


def _check(text: str, lang: Lang, marker: str, known: Sequence[str]) -> str | None:
    """Why the model's answer cannot be shown, or None."""
    if not text:
        return "empty"
    if marker in text or "<<<" in text or ">>>" in text:
        return "prompt_leak"
    if len(text) > MAX_CHARS[lang]:
        return "too_long"
    cjk = len(_CJK.findall(text))
    if lang == "zh" and not cjk:
        return "wrong_language"
    if lang == "en" and cjk >= len(_LATIN.findall(text)):
        return "wrong_language"
    written = numbers_in(text)  # without a number in it, no need to read the rest
    if written and written.difference(*(numbers_in(t) for t in known)):
        return "invented_number"
    return None
