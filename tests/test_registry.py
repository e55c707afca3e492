from __future__ import annotations

import asyncio

import pytest

import graders
from graders import (
    Grade,
    GradingContext,
    RuleGrader,
    UnknownGrader,
    available_graders,
    get_grader,
    grader,
)


def test_the_public_api_is_exactly_what_is_documented() -> None:
    assert sorted(graders.__all__) == sorted(
        ["Deduction", "DialogueState", "DialogueTracker", "Findings", "Grade", "Grader",
         "GradingContext", "RuleGrader", "Status", "UnknownGrader", "available_graders",
         "get_grader", "grade_reply", "grader", "tune_gc", "warm_up"]
    )  # fmt: skip


def test_unknown_grader_suggests_close_names() -> None:
    with pytest.raises(UnknownGrader, match="empathy"):
        get_grader("empathie")


def test_graders_register_by_name_and_run(kettle) -> None:
    class Length(RuleGrader):
        name = "length"
        dimension = "brevity"

        def grade(self, reply: str, ctx: GradingContext) -> Grade:
            ok = len(reply) <= 80
            return Grade(self.dimension, self.name, "scored", 1.0 if ok else 0.0, 1.0,
                         {"zh": "长度", "en": "length"}, (reply[:20],))  # fmt: skip

    grader("test.length")(Length)
    try:
        assert "test.length" in available_graders()
        ctx = graders.DialogueTracker(kettle, "zh").context()
        result = asyncio.run(graders.grade_reply("好的" * 50, ctx, [get_grader("test.length")]))
        assert result[0].score == 0.0
        with pytest.raises(ValueError, match="already registered"):
            grader("test.length")(Length)
    finally:
        from graders._base import _REGISTRY

        _REGISTRY.pop("test.length")


def test_a_rule_grader_grades_the_same_reply_in_the_same_state_once(kettle) -> None:
    calls: list[int] = []

    class Counting(RuleGrader):
        name = "counting"
        dimension = "brevity"

        def grade(self, reply: str, ctx: GradingContext) -> Grade:
            calls.append(ctx.state.replies)
            return Grade(self.dimension, self.name, "scored", 1.0, 1.0,
                         {"zh": "好", "en": "ok"}, ())  # fmt: skip

    counting = Counting()
    tracker = graders.DialogueTracker(kettle, "zh")
    tracker.customer("水壶裂了")
    first = asyncio.run(counting("您好，请问订单号是多少？", tracker.context()))
    again = asyncio.run(counting("您好，请问订单号是多少？", tracker.context()))
    assert again is first and calls == [0]
    reply = "您好，请问订单号是多少？"
    tracker.trainee(tracker.context().findings(reply))  # the chat moves on: a new state
    asyncio.run(counting("您好，请问订单号是多少？", tracker.context()))
    assert calls == [0, 1]
    asyncio.run(Counting()("您好，请问订单号是多少？", tracker.context()))  # another instance
    assert calls == [0, 1, 1]
