"""What a state change owes a chat arrives: poison updates, crashes at every step, missing methods.

A crash is staged as ``kill -9`` would leave it: the bot stops where it is, what was
committed stays, writes deferred to the next commit are lost, and a new bot starts on
the same database file.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from botapi import FakeBotAPI
from test_telegram import KETTLE_EN, count, ended_exam_session, start_session
from tgharness import BotHarness

from bot.storage import Store
from bot.telegram import app as app_module
from bot.telegram.app import TelegramApp

BOT_ID = 123456
INSULT = "Stop whining, you idiot. It's your own fault, deal with it."


class Crash(BaseException):
    """The process dies here (nothing in the bot catches a BaseException)."""


@pytest.fixture
def db(shared_db: str) -> str:
    """Each test runs on an SQLite file and on PostgreSQL."""
    return shared_db


async def crash(h: BotHarness, path: str) -> None:
    """Stop the bot as kill -9 would, and give the harness a store opened afresh."""
    app = h.app
    assert app is not None
    if h._poller is not None:
        h._poller.cancel()
        await asyncio.gather(h._poller, return_exceptions=True)
        h._poller = None
    for task in list(app._tasks):
        task.cancel()
    await asyncio.gather(*app._tasks, return_exceptions=True)
    if app._retry is not None:
        app._retry.cancel()
    await app.charts.close()
    await app.bot.session.close()
    if h._runner is not None:
        await h._runner.cleanup()
        h._runner = None
    h.app = None
    h.store._deferred.clear()  # never committed: gone with the process
    h.store = Store.open(path)


def crash_once(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> Callable[[], bool]:
    """Make ``owner.name`` die the first time it is called; returns whether it did."""
    original = getattr(owner, name)
    fired = False

    def dying(*args: Any, **kwargs: Any) -> Any:
        nonlocal fired
        if not fired:
            fired = True
            raise Crash(name)
        return original(*args, **kwargs)

    async def dying_async(*args: Any, **kwargs: Any) -> Any:
        nonlocal fired
        if not fired:
            fired = True
            raise Crash(name)
        return await original(*args, **kwargs)

    monkeypatch.setattr(
        owner, name, dying_async if asyncio.iscoroutinefunction(original) else dying
    )
    return lambda: fired


async def wait_until(check: Callable[[], bool], timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


def scorecards(h: BotHarness, chat: int) -> list[str]:
    return [t for t in h.api.texts(chat) if t.startswith("📊")]


def photos(h: BotHarness, chat: int) -> int:
    return len(h.api.sent(chat, methods=("sendPhoto",)))


# ---------------------------------------------------------------- poison updates


def test_an_update_naming_no_numeric_chat_is_skipped_and_marked_failed(db: str) -> None:
    """Webhook: a chat id "abc" once stopped the bot and every restart after it."""

    async def run() -> None:
        async with BotHarness(Store.open(db), webhook=True) as h:
            poison = {"update_id": 9016, "message": {"chat": {"id": "abc"}, "text": "x"}}
            assert await h.api.post_to_webhook(poison) == 200
            assert (
                await h.api.post_to_webhook(
                    {
                        "update_id": 9017,
                        "callback_query": {"id": "1", "from": {"id": "x"}, "data": "p:s:x:::0"},
                    }
                )
                == 200
            )
            await h.say(31, "/start")
            await h.idle()
            assert h.api.texts(31)  # other chats are answered
            for update_id in (9016, 9017):
                assert h.store.inbox_status(BOT_ID, update_id) == "failed"
                assert "not a valid update" in (h.store.inbox_error(BOT_ID, update_id) or "")
            await h.stop_bot()
            await h.start_bot()  # starts, and answers
            assert await h.say(31, "/help")

    asyncio.run(run())


def test_a_button_press_aiogram_cannot_parse_is_skipped_when_polling(db: str) -> None:
    async def run() -> None:
        async with BotHarness(Store.open(db)) as h:
            await h.say(32, "/start")
            nameless = {"id": 32}  # no is_bot, no first_name: not a User aiogram can read
            query = {"id": "77", "from": nameless, "chat_instance": "1", "data": "x"}
            bad = h.api.add_update({"callback_query": query})
            not_an_update = h.api.add_update({"message": "hello"})
            answered = await h.say(32, "/help")
            assert answered
            await h.idle()
            assert h.store.inbox_status(BOT_ID, bad) == "failed"
            assert "callback_query.from" in (h.store.inbox_error(BOT_ID, bad) or "")
            assert h.store.inbox_status(BOT_ID, not_an_update) == "failed"
            # Some servers leave out chat_instance, which the bot never reads: accepted.
            await h.say(32, "/practice")
            press = {"id": "78", "from": h.api.user(32), "data": "p:s:damaged-kettle:::0",
                     "message": h.api.last_message(32)}  # fmt: skip
            before = len(h.api.texts(32))
            pressed = h.api.add_update({"callback_query": press})
            await h.api.wait_texts(32, before + 1)
            await h.idle()
            assert h.store.inbox_status(BOT_ID, pressed) == "done"

    asyncio.run(run())


@pytest.mark.parametrize(
    "body",
    [
        b'{"update_id": 1e20, "message": {}}',
        b'{"update_id": true, "message": {}}',
        b'{"update_id": 9013.7, "message": {}}',
        b'{"update_id": "9013", "message": {}}',
        b'{"update_id": 99999999999999999999999}',
        b"[1, 2]",
        b"{not json",
        b'{"update_id": 5, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=["1e20", "true", "float", "string", "too-big", "array", "broken", "deep"],
)
def test_the_webhook_answers_400_to_what_is_not_an_update(db: str, body: bytes) -> None:
    async def run() -> None:
        async with BotHarness(Store.open(db), webhook=True) as h:
            assert h.app is not None and h.app.config.webhook_url
            headers = {"X-Telegram-Bot-Api-Secret-Token": h.secret}
            async with (
                aiohttp.ClientSession() as client,
                client.post(h.app.config.webhook_url, data=body, headers=headers) as resp,
            ):
                assert resp.status == 400
            assert count(h.store, "updates") == 0

    asyncio.run(run())


def test_an_update_that_keeps_crashing_the_bot_is_skipped_after_three_starts(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def run() -> None:
        async with BotHarness(Store.open(db)) as h:
            await h.say(33, "/start")
            original = TelegramApp._process

            async def dies_on_help(
                self: TelegramApp, update_id: int, payload: Any, chat: int
            ) -> None:
                if (payload.get("message") or {}).get("text") == "/help":
                    raise Crash("help")
                await original(self, update_id, payload, chat)

            monkeypatch.setattr(TelegramApp, "_process", dies_on_help)
            poison = h.api.message(33, "/help")
            await wait_until(lambda: h.store.inbox_status(BOT_ID, poison) == "received")
            await asyncio.sleep(0.1)
            for _ in range(app_module.MAX_STARTS):
                await crash(h, db)
                await h.start_bot()
                await asyncio.sleep(0.1)
            await crash(h, db)
            await h.start_bot()
            assert h.store.inbox_status(BOT_ID, poison) == "failed"
            assert "stopped the bot 3 times" in (h.store.inbox_error(BOT_ID, poison) or "")
            assert await h.say(33, "/lang")  # the bot answers the rest

    asyncio.run(run())


# ---------------------------------------------------------------- crashes at each step


async def _ready_to_end(h: BotHarness, chat: int) -> str:
    await start_session(h, chat, "en", "coach")
    await h.say(chat, KETTLE_EN[0])
    return h.store.sessions(limit=1)[0].id


def _ending_steps() -> list[tuple[str, str, str]]:
    """(how the session ends, what dies, when): each a separate test."""
    steps = []
    for how in ("end", "insult"):
        steps += [
            (how, "store", "before the change is committed"),
            (how, "deliver", "after the commit, before anything is sent"),
            (how, "chart", "after the feedback, before the chart"),
            (how, "card", "after the chart, before the scorecard"),
        ]
    return steps


@pytest.mark.parametrize(("how", "where", "when"), _ending_steps())
def test_kill_at_each_step_of_a_session_ending_sends_everything_once(
    db: str, monkeypatch: pytest.MonkeyPatch, how: str, where: str, when: str
) -> None:
    del when  # in the test id only
    chat = 40

    async def run() -> None:
        async with BotHarness(Store.open(db)) as h:
            sid = await _ready_to_end(h, chat)
            texts_before = len(h.api.texts(chat))
            if where == "store":
                target = "add_answer" if how == "insult" else "end_session"
                fired = crash_once(monkeypatch, Store, target)
            elif where == "deliver":
                fired = crash_once(monkeypatch, TelegramApp, "deliver")
            elif where == "chart":
                fired = crash_once(monkeypatch, TelegramApp, "send_chart")
            else:
                fired = crash_once(monkeypatch, TelegramApp, "send_card")
            h.api.message(chat, "/end" if how == "end" else INSULT)
            await wait_until(fired)
            await asyncio.sleep(0.05)
            await crash(h, db)
            await h.start_bot()
            await wait_until(lambda: len(scorecards(h, chat)) >= 1)
            await h.idle()
            await asyncio.sleep(0.3)  # anything sent twice would have arrived by now
            row = h.store.session(sid)
            assert row is not None and row.status == "ended"
            assert len(scorecards(h, chat)) == 1
            assert photos(h, chat) == 1
            after = h.api.texts(chat)[texts_before:]
            if how == "insult":  # the customer's last words, once, before the scorecard
                answers = [t for t in after if "Grades for reply #2" in t]
                assert len(answers) == 1
            assert not any("no session in progress" in t.lower() for t in after)
            assert h.store.outbox_counts().get("pending", 0) == 0

    asyncio.run(run())


@pytest.mark.parametrize(
    "where", ["create", "deliver"], ids=["before-the-opening-is-stored", "before-it-is-sent"]
)
def test_kill_at_each_step_of_a_session_opening_sends_the_briefing_once(
    db: str, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    chat = 41

    async def run() -> None:
        async with BotHarness(Store.open(db)) as h:
            await h.say(chat, "/start")
            await h.say(chat, "/practice")
            await h.press(chat, "p:s:damaged-kettle:::0")
            await h.press(chat, "p:d:damaged-kettle:normal::0")
            if where == "create":
                fired = crash_once(monkeypatch, Store, "add_turn")
            else:
                fired = crash_once(monkeypatch, TelegramApp, "deliver")
            h.api.callback(chat, "p:m:damaged-kettle:normal:coach:0")
            await wait_until(fired)
            await asyncio.sleep(0.05)
            await crash(h, db)
            await h.start_bot()
            await wait_until(lambda: any("Briefing" in t for t in h.api.texts(chat)))
            await h.idle()
            await asyncio.sleep(0.3)
            briefings = [t for t in h.api.texts(chat) if "Briefing" in t]
            assert len(briefings) == 1
            assert count(h.store, "sessions") == 1
            answer = await h.say(chat, KETTLE_EN[0])  # the session goes on
            assert answer and "Grades for reply #1" in answer[0]

    asyncio.run(run())


# ---------------------------------------------------------------- Bot API servers that differ


def test_a_server_without_sendphoto_still_sends_the_scorecard_and_dispute_buttons(
    db: str,
) -> None:
    async def run() -> None:
        async with BotHarness(Store.open(db)) as h:
            await _ready_to_end(h, 42)
            h.api.fail_next("sendPhoto", status=404, count=5, description="Not Found")
            await h.say(42, "/end")
            assert len(scorecards(h, 42)) == 1
            assert any(d.startswith("dp:") for _, d in h.buttons(42))
            assert photos(h, 42) == 0

    asyncio.run(run())


def test_a_scorecard_the_network_keeps_refusing_arrives_late_not_never(db: str) -> None:
    async def run() -> None:
        async with BotHarness(Store.open(db)) as h:
            await _ready_to_end(h, 43)
            assert h.app is not None
            h.app.throttle.backoff = (0.01, 0.02)
            h.api.fail_next("sendMessage", status=502, count=h.app.throttle.max_retries + 3)
            h.api.message(43, "/end")
            await wait_until(lambda: h.store.outbox_counts().get("pending", 0) > 0)
            await wait_until(lambda: len(scorecards(h, 43)) == 1)
            await h.idle()  # the send returned and was marked
            assert h.store.outbox_counts().get("pending", 0) == 0
            assert len(scorecards(h, 43)) == 1

    asyncio.run(run())


def test_a_failing_set_my_commands_does_not_stop_the_bot(db: str) -> None:
    async def run() -> None:
        async with FakeBotAPI() as api:
            api.fail_next("setMyCommands", status=404, count=2, description="Not Found")
            async with BotHarness(Store.open(db), api=api) as h:
                assert await h.say(44, "/start")
            assert not api.sent(methods=("setMyCommands",))

    asyncio.run(run())


def test_owed_messages_are_stored_with_the_change_that_owes_them(db: str) -> None:
    async def run() -> None:
        async with BotHarness(Store.open(db)) as h:
            await _ready_to_end(h, 45)
            rows = h.store.backend.fetchall(
                "SELECT kind, status, body FROM outbox WHERE address = 'telegram:45' ORDER BY id"
            )
            assert [k for k, _, _ in rows] == ["text", "text"]  # opening, first answer
            assert all(s == "sent" for _, s, _ in rows)
            assert "Grades for reply #1" in json.loads(rows[1][2])["text"]

    asyncio.run(run())


def test_history_with_an_id_shows_that_scorecard_again_with_dispute_buttons(db: str) -> None:
    async def run() -> None:
        async with BotHarness(Store.open(db)) as h:
            sid = await _ready_to_end(h, 46)
            await h.say(46, "/end")
            listed = await h.say(46, "/history")
            assert sid in listed[0] and "/history" in listed[0]
            again = await h.say(46, f"/history {sid}")
            assert len(again) == 1 and again[0].startswith("📊")
            assert any(d.startswith(f"dp:{sid}:") for _, d in h.buttons(46))
            refused = await h.say(46, "/history nosuchsession")
            assert refused and "nosuchsession" in refused[0]

    asyncio.run(run())


def test_a_server_that_answers_an_empty_poll_at_once_is_not_polled_in_a_loop(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = FakeBotAPI._m_getUpdates

    async def at_once(self: FakeBotAPI, params: dict[str, Any], call: Any) -> Any:
        return await original(self, {**params, "timeout": 0}, call)

    monkeypatch.setattr(FakeBotAPI, "_m_getUpdates", at_once)

    async def run() -> None:
        async with BotHarness(Store.open(db)) as h:
            assert await h.say(47, "/start")
            before = len([c for c in h.api.calls if c.method == "getUpdates"])
            await asyncio.sleep(3.0)
            polls = len([c for c in h.api.calls if c.method == "getUpdates"]) - before
            assert polls <= 10  # it was about 140 a second
            assert await h.say(47, "/help")  # and still answers

    asyncio.run(run())


def test_an_override_is_announced_to_the_trainee(db: str) -> None:
    async def run() -> None:
        async with BotHarness(Store.open(db)) as h:
            mentor, trainee, sid = await ended_exam_session(h)
            await h.say(mentor, f"/override {sid} 1 0 grader misread")
            told = h.api.texts(trainee)[-1]
            assert "导师调整了会话" in told and "grader misread" in told and sid in told

    asyncio.run(run())


def test_a_ruling_survives_a_kill_before_the_trainee_is_told(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def run() -> None:
        async with BotHarness(Store.open(db)) as h:
            mentor, trainee, sid = await ended_exam_session(h)
            await h.press(trainee, f"dp:{sid}:1", lang="zh")
            await h.say(trainee, "我已经道歉了", lang="zh")
            await h.say(mentor, "/disputes")
            await h.press(mentor, "rl:1:a")
            fired = crash_once(monkeypatch, TelegramApp, "_deliver_quietly")
            h.api.message(mentor, "fair: the apology was there")
            await wait_until(fired)
            await asyncio.sleep(0.05)
            await crash(h, db)
            assert not any("申诉 #1 已处理" in t for t in h.api.texts(trainee))
            await h.start_bot()
            await wait_until(lambda: any("申诉 #1 已处理" in t for t in h.api.texts(trainee)))
            await h.idle()
            assert sum("申诉 #1 已处理" in t for t in h.api.texts(trainee)) == 1
            assert h.store.dispute(1) is not None and h.store.dispute(1).status == "accepted"

    asyncio.run(run())


def test_a_server_without_senddocument_gets_the_csv_as_text(db: str) -> None:
    async def run() -> None:
        async with BotHarness(Store.open(db)) as h:
            mentor, _, sid = await ended_exam_session(h)
            h.api.fail_next("sendDocument", status=404, count=3, description="Not Found")
            answer = await h.say(mentor, "/export Alpha")
            assert answer and "cannot send files" in answer[0]
            assert "trainee,user_id,session" in answer[0] and sid in "\n".join(answer)

    asyncio.run(run())
