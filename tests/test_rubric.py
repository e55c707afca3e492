"""Scorecards: every point lost is in the ledger, red lines fail, both presets work."""

from __future__ import annotations

import asyncio

import pytest

from graders import Grade, GradingContext, RuleGrader, get_grader
from graders.rubric import scorecard
from graders.session import SessionGrader

GOOD = [
    ("customer", "水壶裂了！", None),
    (
        "trainee",
        "王女士您好，水壶到手就裂了，真的很抱歉。麻烦发一下订单号和照片，我马上为您处理。",
        20.0,
    ),
    ("customer", "订单号JD2026111100123 [图片][图片]", None),
    (
        "trainee",
        "照片收到了，确实摔裂了，给您添麻烦了。48小时内免费补发，或全额退款299元，1–3个工作日原路退回支付宝。",
        30.0,
    ),
]
MIXED = [
    ("customer", "水壶裂了！", None),
    ("trainee", "亲，给您带来不便非常抱歉，可以给您退款199元，退到微信。", 90.0),
    ("customer", "就这？", None),
    ("trainee", "我保证明天到账，给您补偿50元。", 200.0),
]


def records(kettle, turns, graders=None):  # type: ignore[no-untyped-def]
    return asyncio.run(SessionGrader(kettle, "zh", graders).replay(turns))


@pytest.mark.parametrize("rubric", ["default", "assessment100"])
def test_ledger_adds_up_to_the_points_lost(kettle, rubric: str) -> None:
    card = scorecard(rubric, kettle, records(kettle, MIXED), "escalated", 300.0)
    assert card.total is not None
    assert sum(e.points for e in card.ledger) == pytest.approx(100 - card.total)
    for e in card.ledger:
        assert e.reason["zh"] and e.reason["en"] and e.item_title["en"]
        assert e.reply is None or e.quote  # a reply's deduction quotes the words


def test_a_good_session_passes_with_nothing_lost(kettle) -> None:
    card = scorecard("default", kettle, records(kettle, GOOD), "resolved")
    assert card.passed and card.total == 100 and card.ledger == ()


def test_red_line_fails_the_session_whatever_the_total(kettle) -> None:
    turns = [*GOOD, ("trainee", "对了，加我微信，好评返现。", None)]
    card = scorecard("default", kettle, records(kettle, turns), "resolved")
    assert not card.passed
    assert {c for e in card.red_lines for c in e.clause_ids} >= {"CONDUCT-OFF-PLATFORM"}
    assert any("red line" in r["en"] for r in card.fail_reasons)


def test_unresolved_sessions_do_not_pass(kettle) -> None:
    card = scorecard("default", kettle, records(kettle, GOOD), "trainee_ended")
    assert not card.passed and any("not resolved" in r["en"] for r in card.fail_reasons)


def test_weakest_reply_gets_an_exemplar(kettle) -> None:
    card = scorecard("default", kettle, records(kettle, MIXED), "escalated")
    assert card.weakest_reply in (1, 2)
    assert card.exemplar and "王女士" in card.exemplar["zh"]


def test_missing_required_facts_cost_accuracy(kettle) -> None:
    turns = [
        GOOD[0],
        GOOD[1],
        GOOD[2],
        ("trainee", "照片收到，给您添麻烦了，我马上为您全额退款。", None),
    ]
    card = scorecard("default", kettle, records(kettle, turns), "resolved")
    codes = {e.code for e in card.ledger}
    assert {"session.missing_fact.refund_amount", "session.missing_fact.refund_timing"} <= codes


def test_assessment100_uses_the_company_items_caps_and_reply_times(kettle) -> None:
    card = scorecard("assessment100", kettle, records(kettle, MIXED), "escalated", 900.0)
    items = {d.id: d for d in card.dimensions}
    assert sum(d.max_score for d in card.dimensions) == 100
    assert items["efficiency.response_time"].score == 1  # two replies over 60 s: -1 each
    assert items["efficiency.resolution_time"].score == 1  # 15 minutes > 10
    assert items["communication.emotion"].score == 3  # escalated: -2
    for d in card.dimensions:
        assert 0 <= d.score <= d.max_score  # capped at each item's points


def test_assessment100_without_times_says_so(kettle) -> None:
    card = scorecard("assessment100", kettle, records(kettle, [(r, t, None) for r, t, _ in GOOD]),
                     "resolved")  # fmt: skip
    assert any("response time" in n["en"] for n in card.notes)


class Exploding(RuleGrader):
    name = "exploding"
    dimension = "empathy"

    def grade(self, reply: str, ctx: GradingContext) -> Grade:
        raise RuntimeError("boom")


def test_a_grade_that_cannot_be_computed_is_unscored_and_flagged_never_zero(kettle) -> None:
    graders = [Exploding(), get_grader("accuracy"), get_grader("policy")]
    recs = records(kettle, GOOD, graders)
    grade = recs[0].grades[0]
    assert grade.status == "unscored" and grade.score is None and "needs_review" in grade.flags
    card = scorecard("default", kettle, recs, "resolved")
    empathy = next(d for d in card.dimensions if d.id == "empathy")
    assert empathy.score is None and empathy.unscored == 2
    assert card.provisional and card.needs_review == 2
    assert card.total == 100  # computed from what could be graded, and marked provisional
