"""/hint and the better reply answer the curveball the customer is waiting on."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.content import ScenarioLibrary
from bot.engine import Engine
from bot.storage import Store
from graders.session import stage_of

FIRST = "王女士您好，水壶到手就裂了真的很抱歉。麻烦发一下订单号和壶身、外箱的照片，我马上为您处理。"
SECOND = "收到，谢谢您。我这就为您核对。"


def _waiting_for_the_address(library: ScenarioLibrary, store: Store):  # type: ignore[no-untyped-def]
    session, _ = asyncio.run(
        Engine(store, library).start(
            trainee="t", scenario="damaged-kettle", lang="zh", seed=3, difficulty="normal"
        )
    )
    asyncio.run(session.reply(FIRST))
    asyncio.run(session.reply(SECOND))  # the customer now asks to hear the address read out
    waiting = session.mind.waiting_on()
    assert waiting is not None and waiting.id == "check-address"
    return session, waiting


def test_hint_answers_the_curveball_the_customer_waits_on(library, store) -> None:
    session, waiting = _waiting_for_the_address(library, store)
    assert waiting.answer is not None
    hint = session.hint()
    assert hint["zh"] == session.scenario.render(waiting.answer.zh, "zh")
    assert "手机号后四位" in hint["zh"] and "last four digits" in hint["en"]
    assert hint != session.scenario.exemplar("resolve")


def test_a_docked_reply_to_a_curveball_gets_its_answer_as_the_better_reply(library, store) -> None:
    session, waiting = _waiting_for_the_address(library, store)
    result = asyncio.run(session.reply("好的。"))
    assert result.better is not None
    assert result.better["zh"] == session.scenario.render(waiting.answer.zh, "zh")  # type: ignore[union-attr]
    assert session.better_reply(result.record) == result.better


def test_once_the_curveball_is_answered_the_hint_is_the_stage_exemplar(library, store) -> None:
    session, waiting = _waiting_for_the_address(library, store)
    asyncio.run(session.reply(session.scenario.render(waiting.answer.zh, "zh")))  # type: ignore[union-attr]
    assert session.mind.waiting_on() is None
    stage = stage_of(session.scenario, session.grader.state)
    assert session.hint() == session.scenario.exemplar(stage)


def test_the_better_reply_to_a_curveball_survives_a_restart(library, tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = Store.open(db)
    session, waiting = _waiting_for_the_address(library, store)
    docked = asyncio.run(session.reply("好的。"))
    store.close()

    store = Store.open(db)
    resumed, _ = asyncio.run(Engine(store, library).resume(session.id))
    record = next(r for r in resumed.grader.records if r.number == docked.record.number)
    assert resumed.better_reply(record) == docked.better
    assert docked.better is not None and docked.better["zh"] == session.scenario.render(
        waiting.answer.zh,  # type: ignore[union-attr]
        "zh",
    )
    store.close()


def test_a_curveball_without_a_written_answer_is_quoted_before_the_exemplar(library) -> None:
    scenario = library.get("damaged-kettle")
    item = next(a for a in scenario.scenario.customer.agenda if a.id == "check-address")
    bare = item.model_copy(update={"answer": None})
    reply = scenario.model_reply("resolve", bare)
    for lang in ("zh", "en"):
        assert scenario.render(item.say.get(lang), lang) in reply[lang]
        assert reply[lang].endswith(scenario.exemplar("resolve")[lang])
    assert scenario.model_reply("resolve", None) == scenario.exemplar("resolve")
