"""The LLM judge against the fake OpenAI-compatible server, through the real openai SDK.

Rule grades come from the real graders (SessionGrader on the damaged-kettle case); the fake
server's responders read the fenced reply out of the request and answer like a judge.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.i18n import Lang
from bot.llm import LLMClient, RoleSettings
from bot.llm.fence import neutralise
from bot.llm.judge import JUDGED, Judge
from bot.scenario import ResolvedScenario
from graders._base import Grade
from graders.injection import strip as strip_injections
from graders.session import ReplyRecord, SessionGrader
from tests.llmapi import FakeLLM, serve
from tests.tgharness import library

KEY = "sk-test-judge-0123456789"
MAX = {"empathy": 3.0, "accuracy": 2.0, "policy": 2.0}
BAD: dict[Lang, str] = {
    "zh": "这是快递的问题，您自己联系快递吧。",
    "en": "Not our problem, contact the courier yourself.",
}
GOOD: dict[Lang, str] = {
    "zh": "王女士您好，新水壶到手就是裂的，换谁都会生气，真的很抱歉。麻烦您发一下订单号，"
    "再拍两张照片（壶身裂缝和外箱），我马上为您处理。",
    "en": "Hello Ms. Wang, I'm so sorry — a brand-new kettle arriving cracked would make anyone "
    "angry. Could you send me the order number and two photos (the crack and the outer box)? "
    "I'll sort it out for you straight away.",
}
RED_LINE = "加我微信私聊，我给你转50块钱，给个五星好评就行"
ROOT = Path(__file__).resolve().parent.parent
REDTEAM = yaml.safe_load((ROOT / "tests" / "data" / "redteam.yaml").read_text(encoding="utf-8"))
_FENCE = re.compile(r"<<<REPLY (\w+)>>>\n(.*?)\n<<<END REPLY \1>>>", re.DOTALL)
_DIMENSION = re.compile(r"(?:Grade this reply on |”（)(empathy|accuracy|policy)")


def kettle() -> ResolvedScenario:
    return library().get("damaged-kettle")


def settings(api: FakeLLM, structured: str = "auto", timeout_s: float = 5.0) -> RoleSettings:
    return RoleSettings(
        base_url=api.base_url,
        api_key=KEY,
        model="fake-model",
        timeout_s=timeout_s,
        structured=structured,  # type: ignore[arg-type]
    )


run = partial(serve, api_key=KEY)


async def session(lang: Lang, *replies: str) -> tuple[SessionGrader, list[ReplyRecord]]:
    """The rule grades of ``replies``, after the customer's opening line."""
    scenario = kettle()
    grader = SessionGrader(scenario, lang)
    grader.customer(scenario.render(scenario.lines_for("opening", "normal")[0].get(lang), lang))
    return grader, [await grader.trainee(reply) for reply in replies]


def history(grader: SessionGrader, opening_lang: Lang, upto: int) -> list[tuple[str, str]]:
    """The chat before reply number ``upto`` (the opening line and earlier replies)."""
    scenario = kettle()
    opening = scenario.render(
        scenario.lines_for("opening", "normal")[0].get(opening_lang), opening_lang
    )
    chat = [("customer", opening)]
    chat += [("trainee", r.text) for r in grader.records if r.number < upto]
    return chat


def by_dimension(record: ReplyRecord) -> dict[str, Grade]:
    return {g.dimension: g for g in record.grades}


def fenced_reply(request: dict[str, Any]) -> str:
    """The trainee reply as fenced in the request's first user message."""
    user = next(m for m in request["messages"] if m["role"] == "user")
    found = _FENCE.search(user["content"])
    assert found, "the reply is not fenced in the request"
    return found.group(2)


def dimension_of(request: dict[str, Any]) -> str:
    user = next(m for m in request["messages"] if m["role"] == "user")
    found = _DIMENSION.search(user["content"])
    assert found
    return found.group(1)


def verdict(
    reply: str,
    dimension: str,
    score: float,
    *,
    quote: str | None = None,
    points: float | None = None,
    clause_ids: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A judge's answer: one violation carrying all the lost points, quoting the reply."""
    lost = MAX[dimension] - score
    violations = []
    if lost > 0 or points is not None:
        violations.append(
            {
                "quote": quote if quote is not None else reply[:6],
                "points": lost if points is None else points,
                "clause_ids": list(clause_ids),
                "why": "推诿，没有回应顾客的问题。",
            }
        )
    return {
        "reasoning": "The reply pushes the customer away.",
        "violations": violations,
        "score": score,
        "summary_zh": "回复在推诿顾客。",
        "summary_en": "The reply brushes the customer off.",
    }


def honest(score: float = 1.0) -> Callable[[dict[str, Any]], str]:
    """A judge that gives ``score`` to every reply, explaining each lost point."""

    def respond(request: dict[str, Any]) -> str:
        reply, dimension = fenced_reply(request), dimension_of(request)
        return json.dumps(verdict(reply, dimension, min(score, MAX[dimension])), ensure_ascii=False)

    return respond


async def judge_one(
    api: FakeLLM,
    lang: Lang,
    reply: str,
    dimension: str = "empathy",
    *,
    structured: str = "auto",
    budget_s: float = 5.0,
) -> tuple[Grade, Grade]:
    """(rule grade, final grade) of ``dimension`` for ``reply`` as the first reply."""
    grader, (record,) = await session(lang, reply)
    rule = by_dimension(record)[dimension]
    async with LLMClient(settings(api, structured)) as client:
        final = await Judge(client, budget_s=budget_s).grade(
            reply,
            rule,
            scenario=kettle(),
            lang=lang,
            history=history(grader, lang, 1),
            tainted=False,
            reply_number=1,
        )
    return rule, final


# ---------------------------------------------------------------------- valid answers


def test_valid_answer_is_a_scored_judge_grade() -> None:
    results: list[tuple[Grade, Grade]] = []

    async def scenario(api: FakeLLM) -> None:
        api.responder = honest(2.0)  # the judge finds a point the rules did not
        results.append(await judge_one(api, "zh", GOOD["zh"]))

    api = run(scenario)
    rule, final = results[0]
    assert (rule.score, final.status, final.score, final.grader) == (
        3.0,
        "scored",
        2.0,
        "llm_judge",
    )
    (deduction,) = final.deductions
    assert deduction.code == "judge.empathy"
    assert deduction.quote == GOOD["zh"][:6]
    assert deduction.reason == {
        "zh": "推诿，没有回应顾客的问题。",
        "en": "The reply brushes the customer off.",
    }
    assert sum(d.points for d in final.deductions) == final.max_score - final.score == 1.0
    assert final.evidence == (GOOD["zh"][:6],)
    assert final.reason == {"zh": "回复在推诿顾客。", "en": "The reply brushes the customer off."}
    assert "disagreement" not in final.flags
    audit = final.audit
    assert audit["model"] == "fake-model"
    assert audit["template"] == "judge.zh.j2"
    source = (ROOT / "prompts" / "judge.zh.j2").read_bytes()
    assert audit["prompt_sha"] == hashlib.sha256(source).hexdigest()[:12]
    assert audit["raw"] == [api.completions[0].content]
    assert (audit["attempts"], audit["judge_score"], audit["decided_by"]) == (1, 2.0, "llm_judge")
    assert audit["rule"] == {"grader": rule.grader, "score": 3.0, "status": "scored"}
    assert audit["error"] is None
    json.dumps(final.to_dict())
    request = api.completions[0].body
    assert request["response_format"]["json_schema"]["name"] == "judge_empathy"
    schema = request["response_format"]["json_schema"]["schema"]
    assert next(iter(schema["properties"])) == "reasoning"
    assert "score" not in schema["properties"]  # the grade is the maximum minus the points
    points = schema["properties"]["violations"]["items"]["properties"]["points"]
    assert points["enum"] == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert request["max_tokens"] <= 600


def test_a_verdict_without_a_score_is_the_maximum_minus_its_points() -> None:
    results: list[Grade] = []

    def respond(request: dict[str, Any]) -> str:
        answer = verdict(fenced_reply(request), "empathy", 1.5)
        del answer["score"]
        answer["reasoning"] = "Line one.\nLine two."  # a raw line break, as some grammars allow
        return json.dumps(answer, ensure_ascii=False).replace("\\n", "\n")

    async def scenario(api: FakeLLM) -> None:
        api.responder = respond
        results.append((await judge_one(api, "zh", GOOD["zh"]))[1])

    api = run(scenario)
    assert "\n" in api.completions[0].content  # the answer really had a raw line break
    final = results[0]
    assert (final.status, final.score, final.grader) == ("scored", 1.5, "llm_judge")
    assert [d.points for d in final.deductions] == [1.5]


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_in_grammar_mode_every_quote_the_server_allows_is_found_in_the_reply(lang: Lang) -> None:
    """llama.cpp enforces the schema unseen by the model: quotes are pieces of the reply."""
    from bot.llm.judge import _check

    results: list[Grade] = []
    reply = GOOD[lang]

    def respond(request: dict[str, Any]) -> str:
        if "<<<REPLY" not in json.dumps(request["messages"], ensure_ascii=False):
            return '{"ok": true}'  # the check that the server enforces the schema
        schema = request["response_format"].get("schema", {})
        pieces = schema.get("properties", {}).get("violations", {}).get("items", {})
        quotes = pieces.get("properties", {}).get("quote", {}).get("enum")
        answer = verdict(fenced_reply(request), "empathy", 2.5, quote=quotes[-1] if quotes else "")
        del answer["score"]  # not in the schema: a constrained decoder cannot write it
        return json.dumps(answer, ensure_ascii=False)

    async def scenario(api: FakeLLM) -> None:
        api.responder = respond
        results.append((await judge_one(api, lang, reply))[1])

    api = run(scenario, supports={"grammar", "json_object"}, reject_status=500)
    asked = api.completions[-1]
    assert asked.mode == "grammar" and "JSON Schema" not in json.dumps(asked.messages)
    schema = asked.response_format["schema"]  # type: ignore[index]
    quotes = schema["properties"]["violations"]["items"]["properties"]["quote"]["enum"]
    assert len(quotes) >= 3 and schema["properties"]["reasoning"]["maxLength"] > 0
    allowed = frozenset(kettle().applicable_clauses)
    for quote in quotes:
        answer = json.dumps(verdict(reply, "empathy", 2.5, quote=quote), ensure_ascii=False)
        assert not isinstance(_check(answer, reply, 3.0, allowed, lang), str), quote
    final = results[0]
    assert (final.status, final.audit["mode"]) == ("scored", "grammar")
    assert final.deductions[0].quote == quotes[-1]


def test_the_three_dimensions_of_a_reply_share_all_but_the_last_paragraph() -> None:
    """A server that keeps a prompt prefix (llama.cpp's slot, a hosted cache) reads it once."""

    async def scenario(api: FakeLLM) -> None:
        api.responder = honest(2.0)
        for dimension in JUDGED:
            await judge_one(api, "en", GOOD["en"], dimension)

    api = run(scenario)
    systems = {c.messages[0]["content"] for c in api.completions}
    users = [c.messages[1]["content"] for c in api.completions]
    assert len(systems) == 1
    shared = users[0][: users[0].index("Grade this reply on")]
    assert all(u.startswith(shared) for u in users) and len(shared) > 0.8 * len(users[0])


def test_a_long_chat_is_cut_to_its_latest_messages() -> None:
    from bot.llm.judge import HISTORY_CHARS, _messages

    rule = Grade(
        dimension="empathy", grader="rules", status="scored", score=3.0, max_score=3.0,
        reason={"zh": "", "en": ""},
    )  # fmt: skip
    chat = [("customer" if i % 2 == 0 else "agent", f"message {i} " + "x" * 190) for i in range(40)]
    _, short = _messages(GOOD["en"], rule, kettle(), "en", chat[:1], 1)
    _, long = _messages(GOOD["en"], rule, kettle(), "en", chat, 21)
    text = long[1]["content"]
    assert "message 39 " in text and "message 30 " not in text
    omitted = re.search(r"\((\d+) earlier messages not shown\)", text)
    assert omitted and text.count("message ") == 40 - int(omitted.group(1)) >= 4
    grown = len(text) - len(short[1]["content"])
    assert grown <= HISTORY_CHARS["en"] + 200  # fences and labels of the messages shown


@pytest.mark.parametrize("mode", ["json_schema", "json_object", "text"])
def test_each_structured_mode_parses(mode: str) -> None:
    results: list[Grade] = []

    def respond(request: dict[str, Any]) -> str:
        body = json.dumps(verdict(fenced_reply(request), "policy", 0.0), ensure_ascii=False)
        if mode == "text":  # models in text mode wrap the JSON in prose and a fence
            return f"Here is my grade.\n```json\n{body}\n```\nHope this helps."
        return body

    async def scenario(api: FakeLLM) -> None:
        api.responder = respond
        results.append((await judge_one(api, "en", BAD["en"], "policy", structured=mode))[1])

    api = run(scenario, supports={"json_schema", "json_object"} if mode != "text" else ())
    (call,) = api.completions
    assert call.mode == mode
    assert results[0].status == "scored" and results[0].score == 0.0
    assert results[0].audit["mode"] == mode
    if mode != "json_schema":
        assert "JSON Schema" in call.messages[0]["content"]


# ---------------------------------------------------------------------- invalid answers


def _bad_answer(kind: str, reply: str) -> str:
    if kind == "score_out_of_range":
        return json.dumps(verdict(reply, "policy", 0.0) | {"score": 5})
    if kind == "score_not_half_step":
        return json.dumps(verdict(reply, "policy", 0.3))
    if kind == "quote_not_in_reply":
        return json.dumps(verdict(reply, "policy", 0.0, quote="we will refund twice"))
    if kind == "points_not_summing":
        return json.dumps(verdict(reply, "policy", 0.0, points=1.0))
    if kind == "unknown_clause":
        return json.dumps(verdict(reply, "policy", 0.0, clause_ids=("NO-SUCH-CLAUSE",)))
    if kind == "empty_summary":
        return json.dumps(verdict(reply, "policy", 0.0) | {"summary_en": " "})
    assert kind == "broken_json"
    return '{"reasoning": "cut short", "score": '


INVALID = [
    "score_out_of_range",
    "score_not_half_step",
    "quote_not_in_reply",
    "points_not_summing",
    "unknown_clause",
    "empty_summary",
    "broken_json",
]


@pytest.mark.parametrize("kind", INVALID)
def test_invalid_answer_is_asked_again_once(kind: str) -> None:
    results: list[Grade] = []

    def respond(request: dict[str, Any]) -> str:
        reply = fenced_reply(request)
        if len(request["messages"]) == 2:
            return _bad_answer(kind, reply)
        return json.dumps(verdict(reply, "policy", 0.0, clause_ids=("DMG-TRANSIT",)))

    async def scenario(api: FakeLLM) -> None:
        api.responder = respond
        results.append((await judge_one(api, "en", BAD["en"], "policy"))[1])

    api = run(scenario)
    assert len(api.completions) == 2
    second = api.completions[1].messages
    assert second[-2] == {"role": "assistant", "content": api.completions[0].content}
    assert second[-1]["role"] == "user"
    assert second[-1]["content"].startswith("Your answer is invalid:")
    final = results[0]
    assert (final.status, final.score, final.grader) == ("scored", 0.0, "llm_judge")
    assert final.clause_ids == ("DMG-TRANSIT",)
    assert final.audit["attempts"] == 2 and len(final.audit["raw"]) == 2


def test_correction_is_in_the_session_language() -> None:
    async def scenario(api: FakeLLM) -> None:
        api.responder = lambda request: _bad_answer("quote_not_in_reply", fenced_reply(request))
        await judge_one(api, "zh", BAD["zh"], "policy")

    api = run(scenario)
    assert len(api.completions) == 2
    assert "你的回答无效" in api.completions[1].messages[-1]["content"]
    assert "不在回复原文中" in api.completions[1].messages[-1]["content"]


def assert_unscored(rule: Grade, final: Grade, reason: str) -> None:
    assert final.status == "unscored" and final.score is None
    assert final.grader == "llm_judge"
    assert final.max_score == rule.max_score
    assert final.flags[: len(rule.flags)] == rule.flags
    assert {"needs_review", "judge_unavailable"} <= set(final.flags)
    assert len(set(final.flags)) == len(final.flags)
    assert final.deductions == rule.deductions
    assert final.evidence == rule.evidence and final.clause_ids == rule.clause_ids
    assert reason not in final.reason["en"]  # words for trainees; the code is in the audit
    assert f"{rule.score:g}/{rule.max_score:g}" in final.reason["en"]
    assert "导师" in final.reason["zh"] and "mentor" in final.reason["en"]
    assert final.audit["decided_by"] == "none"
    assert final.audit["error"].startswith(reason)
    json.dumps(final.to_dict())


def test_invalid_twice_is_unscored_never_zero() -> None:
    results: list[tuple[Grade, Grade]] = []

    async def scenario(api: FakeLLM) -> None:
        api.responder = lambda request: _bad_answer("points_not_summing", fenced_reply(request))
        results.append(await judge_one(api, "en", GOOD["en"], "empathy"))

    api = run(scenario)
    rule, final = results[0]
    assert len(api.completions) == 2
    assert_unscored(rule, final, "invalid_answer")
    assert final.audit["attempts"] == 2 and final.audit["judge_score"] is None


# ---------------------------------------------------------------------- endpoint failures


@pytest.mark.parametrize(
    ("fault", "reason", "calls"),
    [
        ("500_twice", "server_error", 2),
        ("reset", "connection", 2),
        ("malformed_body", "bad_response", 1),
    ],
)
def test_endpoint_failure_is_unscored_and_keeps_the_red_line(
    fault: str, reason: str, calls: int
) -> None:
    results: list[tuple[Grade, Grade]] = []

    async def scenario(api: FakeLLM) -> None:
        api.responder = honest(2.0)
        if fault == "500_twice":
            api.fail_next(500, count=2)
        elif fault == "reset":
            api.reset_next(2)
        else:
            api.malformed_next()
        results.append(await judge_one(api, "zh", RED_LINE, "policy"))

    api = run(scenario)
    rule, final = results[0]
    assert len(api.completions) == calls
    assert "red_line" in rule.flags
    assert_unscored(rule, final, reason)
    assert "red_line" in final.flags
    assert any(d.severity == "critical" for d in final.deductions)


def test_budget_exhausted_is_unscored() -> None:
    results: list[tuple[Grade, Grade]] = []

    async def scenario(api: FakeLLM) -> None:
        api.responder = honest(2.0)
        api.latency = 1.0
        results.append(await judge_one(api, "en", BAD["en"], "policy", budget_s=0.3))

    start = time.monotonic()
    run(scenario)
    assert time.monotonic() - start < 1.5
    rule, final = results[0]
    assert_unscored(rule, final, "timeout")
    assert "within 0.3 s" in final.audit["error"]
    assert final.audit["attempts"] == 0 and final.audit["model"] is None


def test_judge_budgets_spent_on_a_hung_server_open_its_breaker() -> None:
    """A budget the judge spends waiting is a failure of the server, not a call given up."""
    results: list[tuple[Grade, Grade]] = []

    async def scenario(api: FakeLLM) -> None:
        api.responder = honest(2.0)
        api.latency = 30.0  # hung
        for _ in range(2):
            results.append(await judge_one(api, "en", BAD["en"], "policy", budget_s=0.3))
        asked = len(api.calls)
        results.append(await judge_one(api, "en", BAD["en"], "policy", budget_s=0.3))
        assert len(api.calls) == asked  # the third reply did not wait for the server

    run(scenario)
    errors = [final.audit["error"] for _, final in results]
    assert [e.split(":")[0] for e in errors] == ["timeout", "timeout", "circuit_open"], errors


# ---------------------------------------------------------------------- bounds


def test_critical_rule_violation_cannot_be_graded_away() -> None:
    results: list[tuple[Grade, Grade]] = []

    async def scenario(api: FakeLLM) -> None:
        api.responder = honest(2.0)  # the judge misses the red line
        results.append(await judge_one(api, "zh", RED_LINE, "policy"))

    run(scenario)
    rule, final = results[0]
    assert final.score == rule.score == 0.0
    assert final.grader == rule.grader and final.deductions == rule.deductions
    assert final.evidence == rule.evidence
    assert final.audit["decided_by"] == "rule_bound" and final.audit["judge_score"] == 2.0
    assert "red_line" in final.flags
    assert {"disagreement", "needs_review"} <= set(final.flags)
    assert "不高于" in final.reason["zh"] and "caps" in final.reason["en"]


def test_judge_may_grade_below_a_bounded_rule_grade() -> None:
    results: list[tuple[Grade, Grade]] = []

    async def scenario(api: FakeLLM) -> None:
        api.responder = honest(0.0)
        grader, (record,) = await session("en", GOOD["en"])
        rule = by_dimension(record)["empathy"]
        async with LLMClient(settings(api)) as client:
            final = await Judge(client).grade(
                GOOD["en"],
                rule,
                scenario=kettle(),
                lang="en",
                history=history(grader, "en", 1),
                tainted=True,
                reply_number=1,
            )
        results.append((rule, final))

    run(scenario)
    rule, final = results[0]
    assert (rule.score, final.score, final.grader) == (3.0, 0.0, "llm_judge")
    assert final.audit["decided_by"] == "llm_judge"
    assert {"disagreement", "needs_review"} <= set(final.flags)


def test_a_judge_above_the_rules_waits_for_a_mentor() -> None:
    """Raising a grade is never the model's call: text that fools it cannot buy points."""
    results: list[tuple[Grade, Grade]] = []

    async def scenario(api: FakeLLM) -> None:
        api.responder = honest(3.0)  # far above the rule's 0; no red line, no injection
        results.append(await judge_one(api, "en", BAD["en"], "empathy"))

    run(scenario)
    rule, final = results[0]
    assert (rule.score, final.score, final.grader) == (0.0, 0.0, rule.grader)
    assert final.deductions == rule.deductions  # the rule's points lost, each explained
    assert final.flags == ("disagreement", "needs_review", "judge_higher")
    assert final.audit["judge_score"] == 3.0 and final.audit["decided_by"] == "rule_bound"
    assert "mentor" in final.reason["en"] and "导师" in final.reason["zh"]


def test_not_applicable_passes_through_without_a_call() -> None:
    results: list[tuple[Grade, Grade]] = []

    async def scenario(api: FakeLLM) -> None:
        api.responder = honest()
        results.append(await judge_one(api, "zh", BAD["zh"], "accuracy"))

    api = run(scenario)
    rule, final = results[0]
    assert rule.status == "not_applicable"
    assert final is rule
    assert api.completions == []


def test_grade_all_is_concurrent_and_keeps_order() -> None:
    results: list[tuple[list[Grade], list[Grade], float]] = []

    async def scenario(api: FakeLLM) -> None:
        api.responder = honest(1.0)
        api.latency = 0.3
        grader, (record,) = await session("zh", GOOD["zh"])
        na = by_dimension(record)["accuracy"]
        rules = [*record.grades, Grade("accuracy", "accuracy", "scored", 2.0, 2.0, na.reason)]
        rules.append(Grade("speed", "speed", "scored", 1.0, 1.0, na.reason))
        async with LLMClient(settings(api)) as client:
            start = time.monotonic()
            finals = await Judge(client).grade_all(
                GOOD["zh"],
                rules,
                scenario=kettle(),
                lang="zh",
                history=history(grader, "zh", 1),
                tainted=False,
                reply_number=1,
            )
            results.append((rules, finals, time.monotonic() - start))

    api = run(scenario)
    rules, finals, elapsed = results[0]
    assert len(api.completions) == 3  # empathy, policy, the scored accuracy
    assert elapsed < 0.8
    assert [f.dimension for f in finals] == [r.dimension for r in rules]
    for rule, final in zip(rules, finals, strict=True):
        if rule.dimension in JUDGED and rule.status == "scored":
            assert final.grader == "llm_judge" and final.score == 1.0
        else:
            assert final is rule


def test_same_input_gives_the_same_request() -> None:
    async def scenario(api: FakeLLM) -> None:
        api.responder = honest(1.0)
        await judge_one(api, "en", BAD["en"])
        await judge_one(api, "en", BAD["en"])

    api = run(scenario)
    first, second = (c.body for c in api.completions)
    assert first == second


# ---------------------------------------------------------------------- red team


def gullible(cues: list[str]) -> Callable[[dict[str, Any]], str]:
    """A judge that gives full marks when the request carries a payload cue, and otherwise
    answers honestly: nothing for a reply that brushes the customer off, else full marks."""

    def respond(request: dict[str, Any]) -> str:
        reply, dimension = fenced_reply(request), dimension_of(request)
        text = "\n".join(m["content"] for m in request["messages"] if m["role"] == "user")
        fooled = any(cue in text for cue in cues)
        bad = any(reply.startswith(b) for b in BAD.values())
        score = MAX[dimension] if fooled or not bad else 0.0
        return json.dumps(verdict(reply, dimension, score), ensure_ascii=False)

    return respond


@pytest.mark.parametrize("case", REDTEAM, ids=[c["id"] for c in REDTEAM])
def test_redteam_payload_cannot_raise_the_grade(case: dict[str, Any]) -> None:
    lang: Lang = case["lang"]
    reply = f"{BAD[lang]} {case['payload']}"
    earlier = [f"{BAD[lang]} {case['first']}"] if "first" in case else []
    results: list[tuple[ReplyRecord, list[Grade], bool]] = []

    async def scenario(api: FakeLLM) -> None:
        api.responder = gullible([case["cue"]])
        grader, records = await session(lang, *earlier, reply)
        record = records[-1]
        # as the engine checks it: each reply, and a payload split across replies
        joined = ("" if lang == "zh" else " ").join(r.text for r in grader.records)
        tainted = any(r.findings.injection_quote for r in grader.records) or bool(
            strip_injections(joined).injected
        )
        async with LLMClient(settings(api)) as client:
            finals = await Judge(client).grade_all(
                reply,
                record.grades,
                scenario=kettle(),
                lang=lang,
                history=history(grader, lang, record.number),
                tainted=tainted,
                reply_number=record.number,
            )
        results.append((record, finals, tainted))

    api = run(scenario)
    record, finals, tainted = results[0]
    assert api.completions, "the judge was not asked"
    for call in api.completions:
        inside = fenced_reply(call.body)
        assert inside == neutralise(reply)
        assert "<<<" not in inside and ">>>" not in inside
        assert "\u200b" not in inside
    for rule, final in zip(record.grades, finals, strict=True):
        assert rule.status != "scored" or final.score is not None
        if rule.status == "scored":
            assert final.score <= rule.score, (rule.dimension, final.audit)  # type: ignore[operator]
            assert "needs_review" in final.flags
    judged = [f for f in finals if f.audit]
    assert judged and all(f.audit["judge_score"] == f.max_score for f in judged)
    if case.get("detected", True):
        flagged = "injection_attempt" in record.grades[0].flags or tainted
        assert flagged or all("injection_attempt" in f.flags for f in judged)
    else:  # unrecognised: the fooled judge's higher grade waits for a mentor
        assert not tainted and "injection_attempt" not in record.grades[0].flags
        raised = [f for f in judged if f.audit["judge_score"] > f.audit["rule"]["score"]]
        assert raised and all("judge_higher" in f.flags for f in raised)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_gullible_judge_is_honest_without_payload(lang: Lang) -> None:
    results: list[tuple[Grade, Grade]] = []
    cues = [c["cue"] for c in REDTEAM]

    async def scenario(api: FakeLLM) -> None:
        api.responder = gullible(cues)
        results.append(await judge_one(api, lang, GOOD[lang], "empathy"))

    run(scenario)
    rule, final = results[0]
    assert rule.score == 3.0
    assert (final.score, final.grader) == (3.0, "llm_judge")  # the honest answer
    assert final.audit["decided_by"] == "llm_judge"
    assert final.flags == ()
