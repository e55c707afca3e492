"""End-to-end: the real bot with an LLM customer and judge, against the fake Bot API and two
fake OpenAI-compatible servers (one per role, so a fault hits one role only), all on 127.0.0.1.

The bundled kettle scenario defaults to the scripted customer and the rule graders; the
fixture ``llm_kettle`` makes it ask for the model roles (as ``player: llm`` / ``judge: llm``
in its YAML would) for the duration of a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from llmapi import FakeLLM, Reply
from tgharness import BotHarness, library

from bot.llm.client import LLMClient
from bot.llm.config import RoleSettings
from bot.llm.roles import Assistants
from bot.storage import Store
from bot.telegram.texts import customer_line, t

LINE_EN = "My kettle arrived cracked. Are you going to sort this out or not?"
LINE_ZH = "我的水壶裂了，你们到底管不管？"
JUDGE_EN = "Judged by the model: warm, clear and on policy."
JUDGE_ZH = "模型评审：语气得体，符合政策。"
NOTE_EN = "(The scripted customer wrote this line: the model server is unavailable.)"
NOTE_ZH = "（这条由脚本客户回复：模型服务暂时不可用）"
KETTLE_ZH = (
    "王女士您好，水壶到手就裂了，换谁都会生气，真的很抱歉。"
    "麻烦您发一下订单号和壶身、外箱的照片，我马上为您处理。"
)
KETTLE_EN = (
    "Hello Ms. Wang, I'm so sorry the kettle arrived cracked; that would make anyone angry. "
    "Could you send me the order number and photos of the crack and the box? I'll sort it out now."
)


# ---------------------------------------------------------------------- helpers


@pytest.fixture
def llm_kettle() -> Iterator[None]:
    """The kettle scenario asks for the LLM customer and judge while the test runs."""
    scenario = library().get("damaged-kettle").scenario
    saved = (scenario.player, scenario.judge)
    object.__setattr__(scenario, "player", "llm")
    object.__setattr__(scenario, "judge", "llm")
    try:
        yield
    finally:
        object.__setattr__(scenario, "player", saved[0])
        object.__setattr__(scenario, "judge", saved[1])


def _client(api: FakeLLM) -> LLMClient:
    return LLMClient(
        RoleSettings(base_url=api.base_url, api_key="sk-test", model="fake", timeout_s=2.0)
    )


def _all_text(request: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content")) for m in request["messages"])


def _max_score(request: dict[str, Any]) -> float:
    text = json.dumps(request, ensure_ascii=False)
    return 3.0 if "empathy" in text.split("score", 1)[0].lower() or "共情" in text else 2.0


def _verdict(request: dict[str, Any]) -> str:
    """A judge's answer: full marks, with summaries the feedback can be recognised by."""
    return json.dumps(
        {
            "reasoning": "checked against the rubric",
            "violations": [],
            "score": _max_score(request),
            "summary_zh": JUDGE_ZH,
            "summary_en": JUDGE_EN,
        },
        ensure_ascii=False,
    )


def _customer(line: str, latency: float = 0.0) -> Any:
    return lambda request: Reply(line, latency=latency)


@contextlib.asynccontextmanager
async def llm_bot(
    store: Store, *, customer: str = LINE_EN, latency: float = 0.0, **config: Any
) -> AsyncIterator[tuple[BotHarness, FakeLLM, FakeLLM]]:
    """The bot with an LLM customer (saying ``customer``) and an LLM judge (full marks)."""
    async with (
        FakeLLM(responder=_customer(customer, latency)) as customer_api,
        FakeLLM(responder=_verdict) as judge_api,
    ):
        assistants = Assistants(customer=_client(customer_api), judge=_client(judge_api))
        try:
            async with BotHarness(store, assistants=assistants, **config) as h:
                yield h, customer_api, judge_api
        finally:
            await assistants.aclose()


async def start_session(h: BotHarness, user: int, lang: str, mode: str) -> list[str]:
    """/start, /practice and the kettle at normal difficulty in ``mode``; the opening."""
    await h.say(user, "/start", lang=lang)
    await h.say(user, "/practice", lang=lang)
    await h.press(user, "p:s:damaged-kettle:::0", lang=lang)
    await h.press(user, "p:d:damaged-kettle:normal::0", lang=lang)
    return await h.press(user, f"p:m:damaged-kettle:normal:{mode}:0", lang=lang)


def _session_id(store: Store) -> str:
    return store.sessions(limit=1)[0].id


def _name(lang: str) -> str:
    return library().get("damaged-kettle").scenario.customer.persona.name.get(lang)


# ---------------------------------------------------------------------- tests


def test_the_judge_grades_and_the_model_speaks_in_a_coach_session(
    store: Store, llm_kettle: None
) -> None:
    async def run() -> None:
        async with llm_bot(store) as (h, customer_api, judge_api):
            opening = await start_session(h, 41, "en", "coach")
            assert opening[-1].endswith(customer_line(_name("en"), LINE_EN, "en")), opening
            row = store.sessions(limit=1)[0]
            assert (row.player, row.judge) == ("llm", "llm")

            answer = await h.say(41, KETTLE_EN)
            assert len(answer) == 1, answer  # feedback and the customer's line together
            text = answer[0]
            assert text.startswith("📝 Grades for reply #1"), text
            assert JUDGE_EN in text  # the judge's summary is the grade's reason
            assert NOTE_EN not in text
            assert text.endswith(customer_line(_name("en"), LINE_EN, "en")), text

            grades = store.grades(_session_id(store))
            judged = [g for turn in grades.values() for g in turn if g.grader == "llm_judge"]
            assert judged, [g.to_dict() for turn in grades.values() for g in turn]
            for grade in judged:
                assert grade.status == "scored" and grade.score == grade.max_score
                assert grade.audit["model"] == "fake" and grade.audit["prompt_sha"]
                assert grade.audit["decided_by"] == "llm_judge"
            assert len(judge_api.completions) >= len(judged)
            assert len(customer_api.completions) == 2  # the opening and the answer
            voices = [t.meta["voice"]["by"] for t in store.turns(row.id) if t.role == "customer"]
            assert voices == ["llm", "llm"]

    asyncio.run(run())


def test_a_failing_customer_endpoint_falls_back_with_a_note_and_the_session_goes_on(
    store: Store, llm_kettle: None
) -> None:
    async def run() -> None:
        async with llm_bot(store, customer=LINE_ZH) as (h, customer_api, _):
            await start_session(h, 42, "zh", "coach")
            first = await h.say(42, KETTLE_ZH, lang="zh")
            assert len(first) == 1 and first[0].endswith(LINE_ZH), first

            # The request and the SDK's one retry both fail: the script answers instead.
            customer_api.fail_next(status=500, count=2, retry_after=0.01)
            second = await h.say(42, "请问您的订单号是多少？", lang="zh")
            assert len(second) == 1, second  # still one message: feedback, note, customer
            text = second[0]
            assert NOTE_ZH in text, text
            assert NOTE_EN not in text  # in the user's language only
            assert LINE_ZH not in text  # the scripted line, not the model's
            head = text.index("📝 第 2 条回复的评分")
            note = text.index(NOTE_ZH)
            said = text.index(f"👤 {_name('zh')}：")
            assert head < note < said, text
            assert customer_api.pending_faults == 0

            # The endpoint is back: the model speaks again and no note is repeated.
            third = await h.say(42, "好的，我帮您查一下。", lang="zh")
            assert len(third) == 1, third
            assert third[0].endswith(customer_line(_name("zh"), LINE_ZH, "zh")), third
            assert NOTE_ZH not in third[0]

            sid = _session_id(store)
            voice = [t.meta["voice"] for t in store.turns(sid) if t.role == "customer"]
            assert [(v["by"], v["fallback"]) for v in voice] == [
                ("llm", None),
                ("llm", None),
                ("scripted", "server_error"),
                ("llm", None),
            ]
            assert store.session(sid).status == "active"

    asyncio.run(run())


def test_a_failing_judge_leaves_grades_for_review_and_a_provisional_scorecard(
    store: Store, llm_kettle: None
) -> None:
    async def run() -> None:
        async with llm_bot(store) as (h, _, judge_api):
            judge_api.responder = lambda request: Reply(status=503, retry_after=0.01)
            await start_session(h, 43, "en", "coach")
            answer = await h.say(43, KETTLE_EN)
            assert len(answer) == 1, answer
            text = answer[0]
            assert t("unscored", "en") in text, text  # "unscored (flagged for review)"
            assert (
                "The AI judge could not grade this reply (the model server is unavailable)" in text
            )
            assert JUDGE_EN not in text
            assert text.endswith(customer_line(_name("en"), LINE_EN, "en")), text
            assert judge_api.completions and all(c.status == 503 for c in judge_api.completions)

            sid = _session_id(store)
            grades = [g for turn in store.grades(sid).values() for g in turn]
            unscored = [g for g in grades if g.grader == "llm_judge"]
            assert unscored and all(g.status == "unscored" for g in unscored)
            assert all({"needs_review", "judge_unavailable"} <= set(g.flags) for g in unscored)

            ended = await h.say(43, "/end")
            card = ended[-1]
            assert "Scorecard" in card, ended
            assert t("provisional", "en") in card, card
            assert store.session(sid).status != "active"

    asyncio.run(run())


def test_a_slow_model_shows_typing_before_the_answer(store: Store, llm_kettle: None) -> None:
    async def run() -> None:
        # 0.8 s per completion, over the default typing_after of 0.5 s.
        async with llm_bot(store, latency=0.8) as (h, _, judge_api):
            assert h.app is not None and h.app.config.typing_after == 0.5
            judge_api.responder = lambda request: Reply(_verdict(request), latency=0.8)
            await start_session(h, 44, "en", "coach")
            answer = await h.say(44, KETTLE_EN)
            assert len(answer) == 1 and answer[0].endswith(LINE_EN), answer

            calls = h.api.sent(44, methods=("sendChatAction", "sendMessage"))
            methods = [c.method for c in calls]
            actions = [i for i, m in enumerate(methods) if m == "sendChatAction"]
            assert all(calls[i].params.get("action") == "typing" for i in actions)
            opening = next(i for i, c in enumerate(calls) if LINE_EN in (c.text or ""))
            reply = next(i for i, c in enumerate(calls) if "Grades for reply #1" in (c.text or ""))
            # One typing action while the opening was written, one while the reply was.
            assert [i for i in actions if i < opening] != [], methods
            assert [i for i in actions if opening < i < reply] != [], methods
            assert len(actions) == 2, methods  # renewed only every 4 s

    asyncio.run(run())


def test_a_quick_model_sends_no_typing_action(store: Store, llm_kettle: None) -> None:
    async def run() -> None:
        async with llm_bot(store) as (h, _, __):
            await start_session(h, 45, "en", "coach")
            answer = await h.say(45, KETTLE_EN)
            assert len(answer) == 1 and re.search(re.escape(LINE_EN) + "$", answer[0])
            assert h.api.sent(45, methods=("sendChatAction",)) == []

    asyncio.run(run())
