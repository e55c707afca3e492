"""Grading context: the scenario, the dialogue so far, and per-reply findings."""

from __future__ import annotations

import gc
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from bot.i18n import Lang
from bot.scenario import ResolvedScenario
from graders._base import Grade, Grader, Recent
from graders.dialogue import DialogueState, after_customer, fingerprint
from graders.findings import Findings, find, rules_for
from graders.messages import message


class GradingContext:
    """Everything a grader may look at for one reply: scenario, language, prior state."""

    def __init__(self, scenario: ResolvedScenario, lang: Lang, state: DialogueState):
        self.scenario = scenario
        self.lang = lang
        self.state = state
        self._findings: dict[str, Findings] = {}
        self.key = (rules_for(scenario), lang, fingerprint(state))
        """What a rule grade depends on besides the reply (a cache key)."""

    @property
    def reply_number(self) -> int:
        """1-based number of the reply being graded."""
        return self.state.replies + 1

    def findings(self, reply: str) -> Findings:
        """What the reply does (computed once and shared by all graders)."""
        cached = self._findings.get(reply)
        if cached is None:
            cached = find(reply, self.scenario, self.state, self.key[2])
            self._findings[reply] = cached
        return cached

    def flags(self, reply: str | None = None) -> tuple[str, ...]:
        """Flags every grade of this reply carries (e.g. text aimed at the grader)."""
        texts = [reply] if reply is not None else list(self._findings)
        for text in texts:
            if self.findings(text).injection_quote:
                return ("injection_attempt", "needs_review")
        return ()

    def problem_example(self) -> dict[Lang, str]:
        """A word naming the customer's problem, for hints in reasons."""
        terms = self.scenario.scenario.answer_key.problem_terms
        return {"zh": terms.zh[0], "en": terms.en[0]}


class RuleGrader(ABC):
    """Base for deterministic graders: implement :meth:`grade`; the protocol call wraps it."""

    name = "rule"
    dimension = "rule"

    @abstractmethod
    def grade(self, reply: str, ctx: GradingContext) -> Grade:
        """Grade one reply synchronously."""

    async def __call__(self, reply: str, ctx: Any) -> Grade:
        """The :class:`graders.Grader` protocol.

        A rule grade depends only on the reply, the scenario, the language and the
        dialogue state, so the same reply in the same chat state is graded once.
        """
        if not isinstance(ctx, GradingContext):
            return self.grade(reply, ctx)
        return _GRADED.get((self, reply, ctx.key), lambda: self.grade(reply, ctx))


_GRADED: Recent[Grade] = Recent(8192)


class _Pacer:
    """Collects the youngest generation every ``every`` graded replies (0: never).

    Python collects it when allocations outnumber deallocations by a threshold, but once
    the graders' caches are full every new entry frees an old one, so the two cancel out:
    the young generation grew to 100,000+ objects between collections, each one a pause
    of 40-100 ms. Collected every few replies, it holds a few thousand (under 1 ms).
    """

    def __init__(self) -> None:
        self.every = 0
        self.graded = 0

    def graded_one(self) -> None:
        """Count a reply about to be graded; collect if it is the ``every``-th."""
        if not self.every:
            return
        self.graded += 1
        if self.graded >= self.every:
            self.graded = 0
            if gc.isenabled():
                gc.collect(0)


PACER = _Pacer()
"""Turned on by :func:`graders.tune_gc`."""


async def grade_reply(reply: str, ctx: GradingContext, graders: Sequence[Grader]) -> list[Grade]:
    """Run every grader on one reply. A grader that fails yields an unscored, flagged grade."""
    PACER.graded_one()
    grades = []
    for grader in graders:
        try:
            grades.append(await grader(reply, ctx))
        except Exception as exc:  # a broken grader must not lose the reply or guess a score
            grades.append(
                Grade(
                    dimension=grader.dimension,
                    grader=grader.name,
                    status="unscored",
                    score=None,
                    max_score=0.0,
                    reason=message("grader.error", grader=grader.name, error=repr(exc)[:200]),
                    flags=("needs_review",),
                )
            )
    return grades


class DialogueTracker:
    """Builds the dialogue state turn by turn from transcript text."""

    def __init__(self, scenario: ResolvedScenario, lang: Lang):
        self.scenario = scenario
        self.lang = lang
        self.state = DialogueState()

    def customer(self, text: str) -> None:
        """Record a customer message."""
        self.state = after_customer(self.state, self.scenario, text)

    def context(self) -> GradingContext:
        """The grading context for the next trainee reply."""
        return GradingContext(self.scenario, self.lang, self.state)

    def trainee(self, findings: Findings) -> None:
        """Record a trainee reply, given its findings."""
        state = self.state
        number = state.replies + 1
        asked = dict(state.asked)
        for intent in findings.asks:
            asked.setdefault(intent, number)
        offered = dict(state.offered)
        for kind in findings.offers:
            offered.setdefault(kind, number)
        sentences = dict(state.sentences)
        for key in findings.sentence_keys:
            if len(key) >= 5:
                sentences.setdefault(key, number)
        self.state = replace(
            state,
            replies=number,
            asked=asked,
            offered=offered,
            timeline_stated=state.timeline_stated or findings.timeline,
            ownership_taken=state.ownership_taken or findings.ownership_quote is not None,
            acknowledged=state.acknowledged + (1 if findings.acknowledged else 0),
            sentences=sentences,
            stated_facts=state.stated_facts | findings.stated_facts,
        )
