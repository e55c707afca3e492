"""Empathy grader: acknowledgement, ownership and next step, on an anchored 0–3 scale.

Scale: 0 dismissive, blaming or cold; 1 courtesy only; 2 acknowledges this customer's
specific problem or feeling; 3 acknowledges, takes ownership and states the next step.
Sentiment is never used: apologies read as "negative" to sentiment tools.
"""

from __future__ import annotations

from bot.i18n import LANGS
from graders._base import Deduction, Grade, grader
from graders.context import GradingContext, RuleGrader
from graders.messages import message

MAX = 3.0


class EmpathyGrader(RuleGrader):
    """Rule-based empathy grading from lexicons and dialogue state."""

    name = "empathy"
    dimension = "empathy"

    def grade(self, reply: str, ctx: GradingContext) -> Grade:
        """Grade one reply."""
        f = ctx.findings(reply)
        excerpt = f.analysis.excerpt()
        deductions: list[Deduction] = []
        evidence = [q for q in (f.ack_quote, f.ownership_quote) if q]

        def lose(code: str, points: float, cited: str, **values: object) -> None:
            deductions.append(Deduction(code, points, message(code, **values), cited))

        if f.dismissive_quote:
            lose("empathy.dismissive", MAX, f.dismissive_quote, quote=f.dismissive_quote)
            return self.result(deductions, [f.dismissive_quote], ctx, reply)
        earlier_ack = ctx.state.acknowledged > 0
        if f.acknowledged:
            level = 3 if f.ownership_quote else 2
            if level == 2:
                lose("empathy.no_ownership", 1, excerpt)
        elif f.ack_quote is not None:  # its only acknowledgement repeats an earlier reply
            level = 1
            lose("empathy.repeated", 2, f.ack_quote, turn=f.ack_repeated_from)
        elif earlier_ack and f.ownership_quote:  # acknowledged before; this reply moves on
            level = 3 if f.courtesy else 2
            if level == 2:
                lose("empathy.no_courtesy", 1, excerpt)
        elif f.courtesy or f.ownership_quote:
            level = 1
            lose("empathy.no_acknowledgement", 2, excerpt, problem=ctx.problem_example())
        else:
            level = 0
            lose("empathy.cold", MAX, excerpt)
        if f.apologies >= 3 and level > 1:
            lose("empathy.stuffed", level - 1, f.ack_quote or excerpt, count=f.apologies)
            level = 1
        if f.wrong_facts and level > 2:
            wrong = next(c for c in f.claims if c.verdict == "wrong")
            lose("empathy.wrong_facts", level - 2, wrong.stated)
        return self.result(deductions, evidence, ctx, reply)

    def result(
        self, deductions: list[Deduction], evidence: list[str], ctx: GradingContext, reply: str
    ) -> Grade:
        """Build the grade from deductions (score = max − points lost)."""
        lost = sum(d.points for d in deductions)
        reason = deductions[0].reason if deductions else message("empathy.full")
        if len(deductions) > 1:
            reason = {lang: " ".join(d.reason[lang] for d in deductions) for lang in LANGS}
        return Grade(
            dimension=self.dimension,
            grader=self.name,
            status="scored",
            score=max(0.0, MAX - lost),
            max_score=MAX,
            reason=reason,
            evidence=tuple(evidence),
            deductions=tuple(deductions),
            flags=ctx.flags(reply),
        )


@grader("empathy")
def empathy() -> EmpathyGrader:
    """Empathy on the 0–3 anchored scale."""
    return EmpathyGrader()
