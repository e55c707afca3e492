"""Accuracy grader: facts of the order and terms of the policy, on an anchored 0–2 scale.

Scale: 2 every checked fact agrees with the order and policy; 1 a claim with no basis
(an amount not in the order, a delivery date nobody gave) or a solution that does not
fix the problem; 0 a fact that contradicts the order or policy. N/A when the reply
states nothing checkable.
"""

from __future__ import annotations

from bot.i18n import LANGS
from graders._base import Deduction, Grade, grader
from graders.context import GradingContext, RuleGrader
from graders.messages import fact_name, message

MAX = 2.0
_POINTS = {"wrong": 2.0, "unsupported": 1.0, "unfit": 1.0}


class AccuracyGrader(RuleGrader):
    """Checks each factual claim against the answer key, order facts and policy params."""

    name = "accuracy"
    dimension = "accuracy"

    def grade(self, reply: str, ctx: GradingContext) -> Grade:
        """Grade one reply."""
        f = ctx.findings(reply)
        claims = f.claims
        if not claims:
            return Grade(
                self.dimension,
                self.name,
                "not_applicable",
                None,
                MAX,
                message("accuracy.na"),
                flags=ctx.flags(reply),
            )
        deductions: list[Deduction] = []
        remaining = MAX
        said: set[tuple[str, str, str]] = set()
        for claim in sorted(claims, key=lambda c: -_POINTS.get(c.verdict, 0)):
            if claim.verdict == "correct" or (claim.fact, claim.verdict, claim.stated) in said:
                continue  # the same words read twice are one mistake
            said.add((claim.fact, claim.verdict, claim.stated))
            points = min(_POINTS[claim.verdict], remaining)
            remaining -= points
            expected = claim.expected or {"zh": "", "en": ""}
            if claim.fact == "learned":
                reason = message("accuracy.learned", stated=claim.stated, clause=expected)
            elif claim.verdict == "unfit":
                reason = message("accuracy.unfit", stated=claim.stated, expected=expected)
            elif claim.verdict == "unsupported":
                note = {
                    lang: (
                        f"（应为{expected[lang]}）"
                        if lang == "zh"
                        else f" (it is {expected[lang]})"
                    )
                    if expected[lang]
                    else ""
                    for lang in LANGS
                }
                reason = message(
                    "accuracy.unsupported",
                    fact=fact_name(claim.fact),
                    stated=claim.stated,
                    expected_note=note,
                )
            elif claim.expected is None:  # a made-up condition: nothing to set against it
                reason = message(
                    "accuracy.baseless", fact=fact_name(claim.fact), stated=claim.stated
                )
            else:
                reason = message(
                    "accuracy.wrong",
                    fact=fact_name(claim.fact),
                    stated=claim.stated,
                    expected=expected,
                )
            deductions.append(
                Deduction(
                    f"accuracy.{claim.verdict}.{claim.fact}",
                    points,
                    reason,
                    claim.stated,
                    claim.clause_ids,
                )
            )
        correct = [c for c in claims if c.verdict == "correct"]
        if deductions:
            reason = deductions[0].reason
            if len(deductions) > 1:
                reason = {lang: " ".join(d.reason[lang] for d in deductions) for lang in LANGS}
        else:
            names = {
                lang: "、".join(dict.fromkeys(fact_name(c.fact)[lang] for c in correct))
                if lang == "zh"
                else ", ".join(dict.fromkeys(fact_name(c.fact)[lang] for c in correct))
                for lang in LANGS
            }
            reason = message("accuracy.correct", facts=names)
        clause_ids = tuple(dict.fromkeys(cid for c in claims for cid in c.clause_ids))
        return Grade(
            dimension=self.dimension,
            grader=self.name,
            status="scored",
            score=remaining,
            max_score=MAX,
            reason=reason,
            evidence=tuple(dict.fromkeys(c.stated for c in claims)),
            clause_ids=clause_ids,
            deductions=tuple(deductions),
            flags=ctx.flags(reply),
        )


@grader("accuracy")
def accuracy() -> AccuracyGrader:
    """Accuracy on the 0–2 anchored scale (N/A when no facts are stated)."""
    return AccuracyGrader()
