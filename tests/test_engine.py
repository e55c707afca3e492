"""The engine: order of writes, bad input, resume after a crash, transcript export."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.engine import MAX_REPLY_CHARS, Engine, ReplyRejected, SessionClosed
from bot.storage import Store

REPLY = "王女士您好，水壶裂了真的很抱歉。麻烦发一下订单号和照片，我马上为您处理。"


def start(library, store: Store, **kw):  # type: ignore[no-untyped-def]
    params = dict(trainee="t", scenario="damaged-kettle", lang="zh", seed=3) | kw
    return asyncio.run(Engine(store, library).start(**params))


def test_reply_is_stored_before_grading_and_grades_before_returning(
    library, store, monkeypatch
) -> None:
    session, _ = start(library, store)
    seen: list[str] = []
    original = session.grader.trainee

    async def spy(text, latency=None):  # type: ignore[no-untyped-def]
        seen.append(store.turns(session.id)[-1].text)  # what is stored when grading starts
        return await original(text, latency)

    monkeypatch.setattr(session.grader, "trainee", spy)
    result = asyncio.run(session.reply(REPLY))
    assert seen == [REPLY]
    stored = store.grades(session.id)[1]
    assert [g.to_dict() for g in stored] == [g.to_dict() for g in result.record.grades]


@pytest.mark.parametrize("text", ["", "   ", "\x00\x07\u200b"])
def test_empty_replies_are_refused_with_a_message(library, store, text: str) -> None:
    session, _ = start(library, store)
    with pytest.raises(ReplyRejected) as err:
        asyncio.run(session.reply(text))
    assert err.value.code == "empty" and "Type what you want" in err.value.message["en"]
    assert "/end" not in err.value.message["en"]  # no channel's command: the web has none
    assert len(store.turns(session.id)) == 1  # only the opening: nothing half-written


def test_a_10000_character_reply_is_refused_and_nothing_is_lost(library, store) -> None:
    session, _ = start(library, store)
    asyncio.run(session.reply(REPLY))
    before = store.turns(session.id)
    with pytest.raises(ReplyRejected) as err:
        asyncio.run(session.reply("很抱歉" * 3334))
    assert err.value.code == "too_long" and str(MAX_REPLY_CHARS) in err.value.message["zh"]
    assert store.turns(session.id) == before
    assert not session.ended
    asyncio.run(session.reply("好的，我这就处理。"))  # the session goes on


@pytest.mark.parametrize(
    "text",
    [
        "非常抱歉😭🙏 水壶裂了，我马上为您处理！",
        "Sorry 水壶裂了 I'll fix it 马上处理",
        "抱歉\x1b[31m水壶\x00裂了，我来处理",
    ],
)
def test_emoji_mixed_languages_and_control_characters_are_graded(library, store, text: str) -> None:
    session, _ = start(library, store)
    result = asyncio.run(session.reply(text))
    assert {g.dimension for g in result.record.grades} == {"empathy", "accuracy", "policy"}
    assert all(g.status != "unscored" for g in result.record.grades)
    assert "\x00" not in store.turns(session.id)[1].text


def test_replying_after_the_end_is_refused(library, store) -> None:
    session, _ = start(library, store)
    asyncio.run(session.end())
    with pytest.raises(SessionClosed):
        asyncio.run(session.reply(REPLY))
    assert asyncio.run(session.end()) is session.card  # ending twice is harmless


def test_resume_continues_exactly_where_it_stopped(library, tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = Store.open(db)
    session, _ = start(library, store)
    asyncio.run(session.reply(REPLY))
    mood = session.mind.snapshot()
    store.close()  # the process goes away

    store = Store.open(db)
    resumed, pending = asyncio.run(Engine(store, library).resume(session.id))
    assert pending is None
    assert resumed.mind.snapshot() == mood
    assert resumed.grader.state == session.grader.state
    result = asyncio.run(resumed.reply("照片收到，给您添麻烦了，48小时内免费补发。"))
    assert result.record.number == 2


def test_resume_after_a_hint_does_not_grade_the_hint_as_a_reply(library, tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = Store.open(db)
    session, _ = start(library, store)
    session.hint()  # stored as a system turn
    asyncio.run(session.reply(REPLY))
    store.close()

    store = Store.open(db)
    resumed, pending = asyncio.run(Engine(store, library).resume(session.id))
    assert pending is None
    assert [r.text for r in resumed.grader.records] == [REPLY]
    assert resumed.mind.snapshot() == session.mind.snapshot()
    store.close()


def test_resume_finishes_a_turn_the_crash_interrupted(library, tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = Store.open(db)
    session, _ = start(library, store)
    # the crash came after the reply was stored, before it was graded or answered
    store.add_turn(session.id, "trainee", REPLY)
    store.close()

    store = Store.open(db)
    _resumed, pending = asyncio.run(Engine(store, library).resume(session.id))
    assert pending and "JD2026111100123" in pending  # the customer answers the question
    assert 1 in store.grades(session.id)  # the missing grades were produced and stored
    assert [t.role for t in store.turns(session.id)] == ["customer", "trainee", "customer"]


def test_transcript_export_round_trips(library, store) -> None:
    session, _ = start(library, store)
    asyncio.run(session.reply(REPLY))
    data = session.transcript()
    assert data["scenario"] == "damaged-kettle" and data["language"] == "zh"
    assert [t["role"] for t in data["turns"]] == ["customer", "trainee", "customer"]


def test_the_stored_ledger_is_the_scorecards(library, store) -> None:
    session, _ = start(library, store)
    asyncio.run(session.reply("亲，给您带来不便非常抱歉，给您退款199元到微信。"))
    card = asyncio.run(session.end())
    assert card.ledger
    assert store.ledger(session.id) == [e.to_dict() for e in card.ledger]
    row = store.session(session.id)
    assert row is not None and row.scorecard == card.to_dict() and row.total == card.total
