"""Grading a whole conversation: the record of each graded reply and transcript replay.

A live session and ``trainer grade`` both go through :class:`SessionGrader`, fed the
same words in the same order, so they produce the same grades.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from bot.i18n import Lang
from bot.scenario import STAGES, ResolvedScenario, Stage
from graders._base import Grade, Grader, get_grader
from graders.context import DialogueTracker, grade_reply
from graders.dialogue import DialogueState
from graders.findings import Findings


@dataclass(frozen=True)
class ReplyRecord:
    """One graded trainee reply with what the graders saw."""

    number: int
    """1-based reply number."""
    text: str
    grades: tuple[Grade, ...]
    findings: Findings
    state: DialogueState
    """The dialogue state before this reply."""
    stage: Stage
    latency_s: float | None = None


def stage_of(scenario: ResolvedScenario, state: DialogueState) -> Stage:
    """Which stage of the case a reply answers, for choosing the exemplar."""
    if state.replies == 0:
        return "opening"
    s = scenario.scenario
    needed = set(s.answer_key.evidence_required)
    needed |= {f.id for f in s.customer.facts if f.kind == "order_id"}
    if needed - state.revealed:
        return "investigate"
    if not set(state.offered) & set(s.answer_key.acceptable_resolutions):
        return "resolve"
    return "follow_up"


class SessionGrader:
    """Grades trainee replies in order, keeping the dialogue state between them."""

    def __init__(
        self,
        scenario: ResolvedScenario,
        lang: Lang,
        graders: Sequence[Grader] | None = None,
    ):
        self.scenario = scenario
        self.lang = lang
        self.graders = list(graders or [get_grader(n) for n in scenario.scenario.graders])
        self.tracker = DialogueTracker(scenario, lang)
        self.records: list[ReplyRecord] = []

    @property
    def state(self) -> DialogueState:
        """The dialogue state now."""
        return self.tracker.state

    def customer(self, text: str) -> None:
        """Record a customer message."""
        self.tracker.customer(text)

    async def trainee(self, text: str, latency_s: float | None = None) -> ReplyRecord:
        """Grade a trainee reply and record it."""
        ctx = self.tracker.context()
        grades = await grade_reply(text, ctx, self.graders)
        findings = ctx.findings(text)
        record = ReplyRecord(
            number=ctx.reply_number,
            text=text,
            grades=tuple(grades),
            findings=findings,
            state=ctx.state,
            stage=stage_of(self.scenario, ctx.state),
            latency_s=latency_s,
        )
        self.tracker.trainee(findings)
        self.records.append(record)
        return record

    def settle(self, record: ReplyRecord, grades: tuple[Grade, ...]) -> ReplyRecord:
        """Replace the grades of the latest ``record`` with its final ones (e.g. a judge's)."""
        if grades == record.grades:
            return record
        settled = replace(record, grades=grades)
        index = next(i for i, r in enumerate(self.records) if r is record)
        self.records[index] = settled
        return settled

    async def replay(
        self, turns: Sequence[tuple[Literal["customer", "trainee"], str, float | None]]
    ) -> list[ReplyRecord]:
        """Grade a whole transcript of ``(role, text, latency_s)`` turns."""
        for role, text, latency in turns:
            if role == "customer":
                self.customer(text)
            else:
                await self.trainee(text, latency)
        return self.records


async def grade_exemplars(
    scenario: ResolvedScenario, lang: Lang
) -> list[tuple[Stage, ReplyRecord]]:
    """Grade a scenario's model replies, stage by stage, as a chat would go.

    The customer opens with their first line and answers every question an exemplar
    asks, so each exemplar is graded in the context it is written for. Exemplars are
    shown to trainees as better replies, so each should earn full marks.
    """
    graded: list[tuple[Stage, ReplyRecord]] = []
    grader = SessionGrader(scenario, lang)
    grader.customer(scenario.render(scenario.lines_for("opening", "normal")[0].get(lang), lang))
    for stage in STAGES:
        record = await grader.trainee(scenario.exemplar(stage)[lang])
        graded.append((stage, record))
        for fact in scenario.scenario.customer.facts:
            if set(fact.asked_by) & record.findings.asks:
                grader.customer(scenario.render(fact.say[0].get(lang), lang))
    return graded


async def grade_agenda_answers(
    scenario: ResolvedScenario, lang: Lang
) -> list[tuple[str, ReplyRecord]]:
    """Grade each curveball's written answer right after the customer raises it.

    The chat goes as in :func:`grade_exemplars` until the curveball is due (its turn, an
    offer of an acceptable resolution, or the evidence given); then the customer says it
    and the answer is graded. Answers are shown by /hint, so each should earn full marks.
    """
    s = scenario.scenario
    graded: list[tuple[str, ReplyRecord]] = []
    for item in s.customer.agenda:
        if item.answer is None:
            continue
        grader = SessionGrader(scenario, lang)
        grader.customer(scenario.render(scenario.lines_for("opening", "normal")[0].get(lang), lang))
        offered = False
        for stage in STAGES:
            record = await grader.trainee(scenario.exemplar(stage)[lang])
            offered = offered or bool(
                set(record.findings.offers) & set(s.answer_key.acceptable_resolutions)
            )
            for fact in s.customer.facts:  # not what the curveball waits for: it is pending
                if set(fact.asked_by) & record.findings.asks and not set(fact.asked_by) & set(
                    item.expects
                ):
                    grader.customer(scenario.render(fact.say[0].get(lang), lang))
            evidence = set(s.answer_key.evidence_required)
            if (
                (item.after_turn is not None and grader.state.replies >= item.after_turn)
                or (item.after_event == "resolution_offered" and offered)
                or (item.after_event == "evidence_given" and evidence <= grader.state.revealed)
            ):
                break
        grader.customer(scenario.render(item.say.get(lang), lang))
        graded.append((item.id, await grader.trainee(scenario.render(item.answer.get(lang), lang))))
    return graded
