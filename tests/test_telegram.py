"""End-to-end: the real bot (aiogram, aiohttp) against the fake Bot API on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import signal
import sqlite3
import sys
import weakref
from pathlib import Path

import pytest
from aiogram.methods import Response, SendMessage
from tgharness import TRAINER, BotHarness, serve_process

import bot.telegram.app as app_module
from bot.config import ConfigError, telegram_config
from bot.engine import Session
from bot.service import Training
from bot.storage import Store
from bot.storage.schema import TABLES
from bot.telegram.app import TokenFilter
from bot.telegram.texts import split

ROOT = Path(__file__).resolve().parent.parent
KETTLE_ZH = [
    "王女士您好，水壶到手就裂了，换谁都会生气，真的很抱歉。麻烦您发一下订单号和壶身、外箱的照片，我马上为您处理。",
    "谢谢您提供的照片，确实是运输途中损坏，给您添麻烦了。您可以选：我们48小时内给您补发一台新水壶，或者全额退款299元，原路退回支付宝，1到3个工作日到账。您看哪种方便？",
]
KETTLE_EN = [
    "Hello Ms. Wang, I'm so sorry the kettle arrived cracked; that would make anyone angry. "
    "Could you send me the order number and photos of the crack and the box? I'll sort it out now.",
    "Thank you for the photos; it was clearly damaged in transit and I'm sorry for the trouble. "
    "You can choose: we send a new kettle within 48 hours, or we refund the full ¥299 to your "
    "Alipay within 1–3 business days. Which works better for you?",
]


def count(store: Store, table: str, where: str = "1=1") -> int:
    return int(store.backend.fetchone(f"SELECT COUNT(*) FROM {table} WHERE {where}")[0])


async def start_session(h: BotHarness, user: int, lang: str, mode: str) -> list[str]:
    await h.say(user, "/start", lang=lang)
    await h.say(user, "/practice", lang=lang)
    assert ("p:s:damaged-kettle:::0") in [d for _, d in h.buttons(user)]
    await h.press(user, "p:s:damaged-kettle:::0", lang=lang)
    assert [d for _, d in h.buttons(user)] == [
        f"p:d:damaged-kettle:{d}::0" for d in ("easy", "normal", "hard")
    ]
    await h.press(user, "p:d:damaged-kettle:normal::0", lang=lang)
    return await h.press(user, f"p:m:damaged-kettle:normal:{mode}:0", lang=lang)


@pytest.mark.parametrize(("lang", "replies"), [("zh", KETTLE_ZH), ("en", KETTLE_EN)])
def test_coach_session_one_message_per_reply_then_chart_and_ledger(
    store: Store, lang: str, replies: list[str]
) -> None:
    async def run() -> None:
        async with BotHarness(store) as h:
            opening = await start_session(h, 7, lang, "coach")
            assert len(opening) == 1
            assert ("王女士" if lang == "zh" else "Ms. Wang") in opening[0]
            # A quick answer goes out without a typing action (it would vanish unseen).
            assert not any(c.method == "sendChatAction" for c in h.api.calls)
            for reply in replies:
                answer = await h.say(7, reply, lang=lang)
                if len(answer) > 1:  # the customer accepted: the session ended
                    break
                assert len(answer) == 1, answer  # feedback and the customer's line together
                assert ("评分" if lang == "zh" else "Grades for reply") in answer[0]
                assert "👤" in answer[0]
            else:
                answer = await h.say(7, "/end", lang=lang)
            photos = h.api.sent(7, methods=("sendPhoto",))
            assert len(photos) == 1
            png = next(iter(photos[0].files.values()))
            assert png.startswith(b"\x89PNG")
            card = answer[-1]
            assert ("成绩单" if lang == "zh" else "Scorecard") in card
            session = store.sessions(limit=1)[0]
            assert session.status == "ended"
            n_entries = len(store.ledger(session.id))
            dispute_buttons = [d for _, d in h.buttons(7) if d.startswith("dp:")]
            assert len(dispute_buttons) == n_entries
            for call in h.api.sent():
                for row in (call.params.get("reply_markup") or {}).get("inline_keyboard", []):
                    assert all(len(b["callback_data"].encode()) <= 64 for b in row)

    asyncio.run(run())


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_exam_session_shows_no_grades_until_the_end(store: Store, lang: str) -> None:
    async def run() -> None:
        async with BotHarness(store) as h:
            await start_session(h, 8, lang, "exam")
            replies = KETTLE_ZH if lang == "zh" else KETTLE_EN
            answer = await h.say(8, replies[0], lang=lang)
            assert len(answer) == 1 and answer[0].startswith("👤")
            hint = await h.say(8, "/hint", lang=lang)
            assert hint == [
                "考试模式不提供参考回复。" if lang == "zh" else "No model replies in exam mode."
            ]
            end = await h.say(8, "/end", lang=lang)
            assert ("成绩单" if lang == "zh" else "Scorecard") in end[-1]
            assert store.sessions(limit=1)[0].mode == "exam"

    asyncio.run(run())


def _code(text: str) -> str:
    match = re.search(r"/start (\S+)", text)
    assert match, text
    return match.group(1)


async def _team(h: BotHarness) -> tuple[int, int, int]:
    """Admin 1, mentor 2 and trainee 3 (zh) in team Alpha, set up through the bot."""
    code = h.app.svc.create_invite("admin", None)  # what `trainer admin invite` does
    assert "admin" in (await h.say(1, f"/start {code}"))[0]
    assert "Alpha" in (await h.say(1, "/newteam Alpha"))[0]
    mentor_code = _code((await h.say(1, "/invite Alpha mentor"))[0])
    assert "mentor" in (await h.say(2, f"/start {mentor_code}"))[0]
    trainee_code = _code((await h.say(2, "/invite Alpha trainee"))[0])
    assert "学员" in (await h.say(3, f"/start {trainee_code}", lang="zh", username="xiaoli"))[0]
    return 1, 2, 3


async def ended_exam_session(h: BotHarness) -> tuple[int, int, str]:
    """Team Alpha (mentor 2, trainee 3); the trainee's ended exam session with deductions."""
    _, mentor, trainee = await _team(h)
    await start_session(h, trainee, "zh", "exam")
    await h.say(trainee, "不知道", lang="zh")
    await h.say(trainee, "/end", lang="zh")
    session = h.store.sessions(limit=1)[0]
    assert h.store.ledger(session.id)
    return mentor, trainee, session.id


def test_mentor_assigns_trainee_practises_team_report_and_override(store: Store) -> None:
    async def run() -> None:
        async with BotHarness(store) as h:
            _, mentor, trainee = await _team(h)
            done = await h.say(
                mentor, "/assign damaged-kettle team=Alpha due=2099-01-31 pass=60 attempts=2"
            )
            assert "1 trainee(s) notified" in done[-1]
            note = h.api.texts(trainee)[-1]
            assert "新任务" in note and "2099-01-31" in note
            await h.say(trainee, "/practice", lang="zh")
            label, data = h.buttons(trainee)[0]
            assert label.startswith("📌") and data.startswith("p:a:")
            await h.press(trainee, data, lang="zh")
            for reply in KETTLE_ZH:
                await h.say(trainee, reply, lang="zh")
            if store.sessions(limit=1)[0].status == "active":
                await h.say(trainee, "/end", lang="zh")
            session = store.sessions(limit=1)[0]
            assert session.assignment_id is not None and session.mode == "exam"
            report = (await h.say(mentor, "/team"))[0]
            assert "Team 'Alpha'" in report and "Assignments completed" in report
            transcript = "\n".join(await h.say(mentor, f"/transcript {session.id}"))
            assert KETTLE_ZH[0] in transcript
            if store.ledger(session.id):
                before = session.total
                text = (await h.say(mentor, f"/override {session.id} 1 0 grader misread"))[0]
                assert "→ 0 points" in text
                events = store.grade_events([session.id])
                assert [(e.kind, e.new_points, e.reason) for e in events] == [
                    ("override", 0.0, "grader misread")
                ]
                assert store.session(session.id).total == before  # original never overwritten
            await h.say(mentor, "/export Alpha")
            doc = h.api.sent(mentor, methods=("sendDocument",))[-1]
            csv_bytes = next(iter(doc.files.values()))
            assert csv_bytes.decode("utf-8-sig").startswith("trainee,user_id,session")
            assert session.id in csv_bytes.decode("utf-8-sig")

    asyncio.run(run())


def test_dispute_is_queued_for_the_mentor_and_ruled_with_a_reason(store: Store) -> None:
    async def run() -> None:
        async with BotHarness(store) as h:
            mentor, trainee, sid = await ended_exam_session(h)
            session = store.sessions(limit=1)[0]
            assert session.id == sid
            ask = await h.press(trainee, f"dp:{session.id}:1", lang="zh")
            assert "第 1 项" in ask[0]
            saved = await h.say(trainee, "我已经道歉了", lang="zh")
            assert "申诉 #1" in saved[0]
            assert "New dispute #1" in h.api.texts(mentor)[-1]
            listing = await h.say(mentor, "/disputes")
            assert "我已经道歉了" in listing[0]
            assert [d for _, d in h.buttons(mentor)] == ["rl:1:a", "rl:1:p", "rl:1:r"]
            await h.press(mentor, "rl:1:a")
            ruled = await h.say(mentor, "fair: the apology was there")
            assert "Dispute #1 ruled Accept" in ruled[0]
            assert "申诉 #1 已处理" in h.api.texts(trainee)[-1]
            assert store.dispute(1).status == "accepted"
            (event,) = store.grade_events([session.id])
            assert (event.kind, event.verdict, event.new_points) == ("dispute", "accepted", 0.0)
            again = await h.press(mentor, "rl:1:r")
            assert again == []  # refused with an alert, nothing changed
            alerts = [c for c in h.api.calls if c.method == "answerCallbackQuery"]
            assert alerts[-1].params.get("show_alert") in (True, "true")
            assert len(store.grade_events([session.id])) == 1

    asyncio.run(run())


def test_a_redelivered_update_is_processed_once(store: Store) -> None:
    async def run() -> None:
        async with BotHarness(store) as h:
            await start_session(h, 9, "en", "coach")
            update_id = h.api.message(9, KETTLE_EN[0])
            await h.idle()
            sent = len(h.api.texts(9))
            h.api.redeliver(update_id)
            await h.idle()
            assert len(h.api.texts(9)) == sent
            session = store.sessions(limit=1)[0]
            assert [t.role for t in store.turns(session.id)].count("trainee") == 1

    asyncio.run(run())


async def _ticks_while(done: asyncio.Future[object], period: float = 0.005) -> float:
    """The longest gap between the event loop's turns until ``done``, in seconds."""
    loop = asyncio.get_running_loop()
    last, longest = loop.time(), 0.0
    while not done.done():
        await asyncio.sleep(period)
        now = loop.time()
        longest, last = max(longest, now - last - period), now
    return longest


def test_the_webhook_keeps_reading_while_another_process_holds_the_write_lock(
    tmp_path: Path,
) -> None:
    """Updates wait for the lock without stalling the loop, then share one commit, in order."""
    store = Store.open(tmp_path / "bot.db")
    other = sqlite3.connect(str(tmp_path / "bot.db"), isolation_level=None)

    async def run() -> None:
        async with BotHarness(store, webhook=True) as h:
            await h.say(21, "/start")
            await h.say(22, "/start")
            commits = count(store, "updates")
            other.execute("BEGIN IMMEDIATE")  # a worker writing
            first = asyncio.ensure_future(h.deliver(h.api.message(21, "/help")))
            await asyncio.sleep(0.05)
            second = asyncio.ensure_future(h.deliver(h.api.message(22, "/help")))
            stall = asyncio.ensure_future(_ticks_while(second))
            await asyncio.sleep(0.2)
            assert not first.done() and not second.done()  # not stored: not acknowledged
            assert count(store, "updates") == commits
            other.execute("COMMIT")
            assert await first == 200 and await second == 200
            assert await stall < 0.1  # the loop kept turning through the 0.2 s the lock was held
            stored = store.backend.db.execute(
                "SELECT update_id, received_at FROM updates ORDER BY update_id DESC LIMIT 2"
            ).fetchall()
            assert stored[0][1] == stored[1][1]  # one commit for both
            await h.idle()
            assert h.api.texts(21)[-1] == h.api.texts(22)[-1]  # both answered

    asyncio.run(run())
    other.close()
    store.close()


def test_an_update_the_inbox_cannot_take_is_not_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "BUSY_TIMEOUT_S", 0.1)
    store = Store.open(tmp_path / "bot.db")
    other = sqlite3.connect(str(tmp_path / "bot.db"), isolation_level=None)

    async def run() -> None:
        async with BotHarness(store, webhook=True) as h:
            await h.say(23, "/start")
            sent = len(h.api.texts(23))
            other.execute("BEGIN IMMEDIATE")
            update_id = h.api.message(23, "/help")
            assert await h.deliver(update_id) == 500  # Telegram delivers it again later
            other.execute("ROLLBACK")
            assert count(store, "updates", f"update_id = {update_id}") == 0
            assert await h.deliver(update_id) == 200
            await h.idle()
            assert len(h.api.texts(23)) == sent + 1  # answered once

    asyncio.run(run())
    other.close()
    store.close()


def test_restart_mid_session_resumes_it(store: Store) -> None:
    async def run() -> None:
        async with BotHarness(store) as h:
            await start_session(h, 10, "en", "coach")
            await h.say(10, KETTLE_EN[0])
            sid = store.sessions(limit=1)[0].id
            await h.stop_bot()
            await h.start_bot()
            answer = await h.say(10, KETTLE_EN[1])
            assert answer and "Grades for reply #2" in answer[0]
            assert [t.role for t in store.turns(sid)].count("trainee") == 2

    asyncio.run(run())


def test_a_started_bot_waits_for_the_disk_at_the_inbox_and_has_its_startup_heap_frozen(
    tmp_path: Path,
) -> None:
    store = Store.open(tmp_path / "bot.db")

    async def run() -> None:
        async with BotHarness(store) as h:
            # Other commits skip the fsync; the inbox's own commit still waits for it.
            assert store.backend.db.execute("PRAGMA synchronous").fetchone()[0] == 1
            assert gc.get_freeze_count() > 0  # full collections skip aiogram's models
            answer = await h.say(14, "/start")
            assert answer
            await h.stop_bot()
        reopened = Store.open(tmp_path / "bot.db")
        assert reopened.inbox_pending(123456) == []
        assert reopened.user_by_external("telegram", "14") is not None
        reopened.close()

    try:
        asyncio.run(run())
    finally:
        gc.unfreeze()
        store.close()


def test_an_update_stored_but_unprocessed_is_handled_at_the_next_start(store: Store) -> None:
    async def run() -> None:
        async with BotHarness(store) as h:
            await start_session(h, 11, "en", "coach")
            sid = store.sessions(limit=1)[0].id
            await h.stop_bot()
            # As after kill -9: the update was stored (and so confirmed) but never processed.
            update_id = h.api.message(11, KETTLE_EN[0])
            store.inbox_add(123456, update_id, __import__("json").dumps(h.api.updates[update_id]))
            h.api._pending.clear()
            before = len(h.api.texts(11))
            await h.start_bot()
            await h.idle()
            assert len(h.api.texts(11)) == before + 1
            assert store.inbox_status(123456, update_id) == "done"
            assert [t.role for t in store.turns(sid)].count("trainee") == 1

    asyncio.run(run())


def test_429_and_server_errors_are_retried_and_nothing_is_lost_or_reordered(store: Store) -> None:
    async def run() -> None:
        async with BotHarness(store) as h:
            await h.say(12, "/start")
            h.api.fail_next("sendMessage", status=429, retry_after=1)
            h.api.fail_next("sendMessage", status=502, count=1)
            await h.say(12, "/help")
            await h.say(12, "/history")
            texts = h.api.texts(12)
            assert "Trainee commands" in texts[1]
            assert "No sessions yet" in texts[2]
            assert h.app.throttle.stats.retried_429 >= 1
            assert count(store, "updates", "status = 'failed'") == 0

    asyncio.run(run())


def test_flood_limits_are_respected_with_a_backlog(store: Store) -> None:
    async def run() -> None:
        from botapi import FakeBotAPI

        async with (
            FakeBotAPI(chat_rate=5, global_rate=20) as api,
            BotHarness(store, api=api, global_rate=20, chat_rate=5) as h,
        ):
            for user in range(200, 230):
                api.message(user, "/start")
            await h.idle(timeout=120)
            assert api.limit_violations == 0
            assert all(len(api.texts(u)) == 1 for u in range(200, 230))

    asyncio.run(run())


def test_webhook_with_a_wrong_secret_is_rejected_and_nothing_is_written(store: Store) -> None:
    async def run() -> None:
        async with BotHarness(store, webhook=True) as h:
            assert await h.say(13, "/start")
            before = count(store, "updates")
            update_id = h.api.message(13, "/help")
            update = h.api.updates[update_id]
            assert await h.api.post_to_webhook(update, secret="wrong") == 401
            assert await h.api.post_to_webhook(update, secret=None) == 401
            await h.idle()
            assert count(store, "updates") == before
            assert len(h.api.texts(13)) == 1
            assert await h.api.post_to_webhook(update) == 200
            await h.idle()
            assert count(store, "updates") == before + 1
            assert await h.api.post_to_webhook(update) == 200  # re-delivery: acknowledged
            await h.idle()
            assert len(h.api.texts(13)) == 2  # ...and processed once

    asyncio.run(run())


def test_long_messages_are_split_under_the_limit() -> None:
    text = "\n".join(f"line {i} " + "字" * 80 for i in range(200))
    parts = split(text)
    assert len(parts) > 1 and all(len(p) <= 4096 for p in parts)
    assert "\n".join(parts) == text
    assert split("x" * 9000) == ["x" * 4096, "x" * 4096, "x" * 808]


def test_the_token_never_reaches_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    token = "987654:SECRET-token-value"
    logger = logging.getLogger("trainer.test")
    caplog.handler.addFilter(TokenFilter(token))
    logger.warning("calling https://api.telegram.org/bot%s/getMe failed", token)
    assert token not in caplog.text and "<token>" in caplog.text


def test_config_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    path = tmp_path / "trainer.toml"
    path.write_text('[telegram]\ntoken = "1:file"\nchat_rate = 0\nglobal_rte = 5\n')
    with pytest.raises(ConfigError, match=r"unknown key.*global_rte"):
        telegram_config(path)
    path.write_text('[telegram]\ntoken = "1:file"\nchat_rate = 0\n')
    config = telegram_config(path)
    assert (config.token, config.chat_rate, config.global_rate) == ("1:file", None, 30.0)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "2:env")
    assert telegram_config(path).token == "2:env"
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN")
    with pytest.raises(ConfigError, match="no Telegram bot token"):
        telegram_config(None)
    path.write_text('[telegram]\ntoken = "1:file"\ntyping_after = 2\nchart_processes = 0\n')
    assert (telegram_config(path).typing_after, telegram_config(path).chart_processes) == (2, 0)
    monkeypatch.setenv("TELEGRAM_CHART_PROCESSES", "two")
    with pytest.raises(ConfigError, match="TELEGRAM_CHART_PROCESSES: 'two' is not a valid int"):
        telegram_config(path)


def test_serve_without_a_token_explains_how_to_get_one(tmp_path: Path) -> None:
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEGRAM_")}
    env["TRAINER_DB"] = str(tmp_path / "x.db")
    result = subprocess.run(
        [*TRAINER, "serve", "telegram"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 1
    assert "@BotFather" in result.stderr and "trainer play" in result.stderr


@pytest.mark.slow
def test_kill_9_mid_session_then_sigterm_exits_cleanly(tmp_path: Path) -> None:
    """A real `trainer serve telegram` process: killed hard mid-session, restarted, the
    session goes on; SIGTERM then stops it cleanly."""
    from botapi import FakeBotAPI

    async def run() -> None:
        async with FakeBotAPI() as api:

            async def spawn() -> asyncio.subprocess.Process:
                return await serve_process(api, tmp_path / "bot.db")

            async def say(text: str, n: int) -> None:
                before = len(api.texts(50))
                api.message(50, text)
                await api.wait_texts(50, before + n, timeout=120)

            proc = await spawn()
            await say("/start", 1)
            api.callback(50, "p:m:damaged-kettle:normal:coach:0")
            await api.wait_texts(50, 2, timeout=120)
            await say(KETTLE_EN[0], 1)
            proc.kill()  # kill -9
            await proc.wait()
            proc = await spawn()
            api.message(50, KETTLE_EN[1])
            # If the kill came between sending the answer to reply 1 and marking its update
            # done, that answer is sent once more (at least once, never lost); then reply 2.
            await api.wait_for(lambda c: "Grades for reply #2" in (c.text or ""), timeout=120)
            proc.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(proc.communicate(), 120)
            assert proc.returncode == 0, stderr.decode()[-2000:]
            assert api.token not in stderr.decode()
            assert "stopped" in stderr.decode()
            store = Store.open(tmp_path / "bot.db")
            (session,) = store.sessions()
            assert [t.role for t in store.turns(session.id)].count("trainee") == 2
            store.close()

    asyncio.run(run())


def test_updates_of_one_chat_never_overlap_even_when_its_queue_empties(store: Store) -> None:
    """An update arriving just as the chat's previous one finishes (while another still
    waits) must queue behind the waiting one, not run beside it."""

    async def run() -> None:
        async with BotHarness(store) as h:
            app = h.app
            assert app is not None
            running: list[int] = []
            overlaps: list[tuple[int, int]] = []
            order: list[int] = []

            async def feed(bot: object, update: object) -> None:
                uid = update.update_id  # type: ignore[attr-defined]
                if running:
                    overlaps.append((running[0], uid))
                running.append(uid)
                await asyncio.sleep(0.02)
                running.remove(uid)
                order.append(uid)

            app.dp.feed_update = feed  # type: ignore[method-assign]
            done = app.store.inbox_done
            late: list[asyncio.Task[int]] = []

            def inbox_done(
                bot_id: int, update_id: int, error: str | None = None, **kw: bool
            ) -> None:
                done(bot_id, update_id, error, **kw)
                if update_id == 9001:  # the first finishes; 9002 waits; 9003 arrives now
                    late.append(asyncio.get_running_loop().create_task(app.accept(payload(9003))))

            app.store.inbox_done = inbox_done  # type: ignore[method-assign]

            def payload(update_id: int) -> dict[str, object]:
                return {
                    "update_id": update_id,
                    "message": {
                        "message_id": update_id,
                        "date": 0,
                        "chat": {"id": 77, "type": "private"},
                        "from": {"id": 77, "is_bot": False, "first_name": "T"},
                        "text": "hi",
                    },
                }

            assert await app.accept(payload(9001)) == 1
            assert await app.accept(payload(9002)) == 1
            await asyncio.sleep(0.01)
            assert await app.drain(5)
            await asyncio.sleep(0.01)
            assert await app.drain(5)
            assert order == [9001, 9002, 9003]
            assert overlaps == []

    asyncio.run(run())


def test_a_slow_answer_shows_typing_first_and_a_quick_one_does_not(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def run() -> None:
        async with BotHarness(store, typing_after=0.05) as h:
            await start_session(h, 31, "en", "coach")
            await h.say(31, KETTLE_EN[0])
            assert h.api.sent(31, methods=("sendChatAction",)) == []

            quick = Session.reply

            async def slow(self: Session, *args: object, **kwargs: object) -> object:
                await asyncio.sleep(0.3)  # an LLM customer thinking
                return await quick(self, *args, **kwargs)

            monkeypatch.setattr(Session, "reply", slow)
            await h.say(31, KETTLE_EN[1])
            calls = h.api.sent(31, methods=("sendChatAction", "sendMessage"))
            actions = [i for i, c in enumerate(calls) if c.method == "sendChatAction"]
            assert len(actions) == 1, [c.method for c in calls]
            assert calls[actions[0]].params.get("action") == "typing"
            answer = next(i for i, c in enumerate(calls) if "Grades for reply #2" in (c.text or ""))
            assert actions[0] < answer

    asyncio.run(run())


def test_parsed_response_types_stay_built(store: Store) -> None:
    """aiogram's Response[T] classes must not be rebuilt for every request."""

    async def run() -> None:
        async with BotHarness(store) as h:
            await h.say(32, "/start")
            gc.collect()
            built = weakref.ref(Response[SendMessage.__returning__])
            gc.collect()
            assert built() is not None

    asyncio.run(run())


def test_no_filter_or_handler_runs_in_a_thread(store: Store) -> None:
    """aiogram runs a plain (not async) filter or handler in a worker thread per check.

    A State used as a filter is such a function: every message paid two thread hops, and
    under load each hop waited milliseconds for the GIL from the busy event loop.
    """

    async def run() -> None:
        async with BotHarness(store) as h:
            assert h.app is not None
            sync = [
                f"{router.name}.{name}: {callable_.callback!r}"
                for router in h.app.dp.chain_tail
                for name, observer in router.observers.items()
                for handler in observer.handlers
                for callable_ in [handler, *(handler.filters or [])]
                if not callable_.awaitable
            ]
            assert sync == []

    asyncio.run(run())


STALE_ALERT = {
    "zh": "这个按钮已失效，请重新发送命令。",
    "en": "This button no longer works; send the command again.",
}
UNHANDLED_BUTTONS = (
    "dp:x:abc",  # malformed dispute button
    "dp:x",
    "rl:zz",  # malformed ruling button
    "rl:1:x",  # a verdict that does not exist
    "tm:1:q",
    "lg:fr",
    "p:zz",
    "p:q::::0",  # a practice step this version does not know
    "zz:1",  # a prefix no handler knows, e.g. a button of an older bot version
    "x",
)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_a_button_no_handler_takes_is_answered_once_with_an_alert(store: Store, lang: str) -> None:
    """Forged, malformed or stale callback data never leaves the client spinning."""

    async def run() -> None:
        async with BotHarness(store) as h:
            await h.say(41, "/start", lang=lang)
            tables = [t for t in TABLES if t != "updates"]  # the inbox stores every update
            before = {table: count(store, table) for table in tables}
            calls = len(h.api.calls)
            for data in UNHANDLED_BUTTONS:
                assert await h.press(41, data, lang=lang) == []  # no message, only the alert
            answers = [c.params for c in h.api.calls[calls:] if c.method == "answerCallbackQuery"]
            ids = [str(a["callback_query_id"]) for a in answers]
            assert len(ids) == len(set(ids)) == len(UNHANDLED_BUTTONS)  # each answered once
            assert [a.get("text") for a in answers] == [STALE_ALERT[lang]] * len(answers)
            assert all(a.get("show_alert") in (True, "true") for a in answers)
            assert {table: count(store, table) for table in tables} == before
            assert count(store, "updates", "status = 'failed'") == 0
            # Real buttons and the catch-all chat handlers still answer as before.
            await h.say(41, "/practice", lang=lang)
            calls = len(h.api.calls)
            picked = await h.press(41, "p:s:damaged-kettle:::0", lang=lang)
            assert [d for _, d in h.buttons(41)] == [
                f"p:d:damaged-kettle:{d}::0" for d in ("easy", "normal", "hard")
            ]
            (answer,) = [c for c in h.api.calls[calls:] if c.method == "answerCallbackQuery"]
            assert not answer.params.get("text") and len(picked) == 1
            welcome = "你好" if lang == "zh" else "Hi "  # no session yet: how to begin
            assert (await h.say(41, "hello", lang=lang))[0].startswith(welcome)
            unknown = "未知命令" if lang == "zh" else "Unknown command"
            assert (await h.say(41, "/nope", lang=lang))[0].startswith(unknown)

    asyncio.run(run())


def test_web_and_link_bring_one_account_to_both_channels(store: Store) -> None:
    async def run() -> None:
        async with BotHarness(store) as h:
            (answer,) = await h.say(21, "/web")
            code = re.search(r"\n([A-Z2-9]{8})$", answer)
            assert code, answer
            assert h.app is not None
            web_side = Training(store, h.app.library, h.app.engine, platform="web")
            browser, _ = web_side.sign_in_linked(code.group(1), device="phone")
            assert browser.user.external_id == "21"  # the browser is the Telegram account
            (refused,) = await h.say(22, "/link NOPE1234")
            assert "unknown, used or older" in refused
            wendy = web_side.register("w1", name="Wendy", lang="en")
            (linked,) = await h.say(22, f"/link {web_side.link_code(wendy)}")
            assert "Wendy" in linked
            user = store.user_by_external("telegram", "22")
            assert user is not None and user.id == wendy.id and user.chat_id == "22"
            (usage,) = await h.say(22, "/link")
            assert "/link" in usage

    asyncio.run(run())


QUICK_RETRIES = (
    "from bot.telegram.throttle import Throttle; "
    "Throttle.__init__.__kwdefaults__['backoff'] = (0.05, 0.1); "
)
"""Prefix for ``TRAINER``'s code: the Bot API is retried as often, with shorter pauses."""


@pytest.mark.parametrize(
    "problem", ["malformed", "refused", "unreachable", "refused-standby", "no-redis"]
)
def test_a_token_or_bot_api_the_bot_cannot_start_with_is_one_line(
    tmp_path: Path, problem: str
) -> None:
    """A malformed token is said before anything starts (and never echoed); a token the Bot
    API refuses, or a Bot API that does not answer, ends the start in one line. A process
    meant to stand by (Redis set) finds them before it stands by, and a Redis that does not
    answer too, not when it is needed."""
    from botapi import FakeBotAPI

    async def run() -> tuple[int, str]:
        async with FakeBotAPI() as api:
            token = {
                "malformed": "12345 secret",
                "refused": "999:NOT-THE-TOKEN",
                "refused-standby": "999:NOT-THE-TOKEN",
            }.get(problem, api.token)
            env = {k: v for k, v in os.environ.items() if not k.startswith("TELEGRAM_")}
            env.update(
                TELEGRAM_BOT_TOKEN=token,
                TELEGRAM_API_BASE=api.base_url,
                TRAINER_DB=str(tmp_path / "x.db"),
            )
            if problem == "unreachable":
                await api.stop()
            if problem in ("refused-standby", "no-redis"):
                env["TRAINER_REDIS_URL"] = (
                    "redis://127.0.0.1:6379/0" if problem == "refused-standby" else
                    "redis://127.0.0.1:1/0"  # nothing listens there
                )  # fmt: skip
            trainer = TRAINER
            if problem == "unreachable":  # the same five retries, sooner than 0.5 s ... 8 s
                trainer = [sys.executable, "-c", QUICK_RETRIES + TRAINER[-1]]
            proc = await asyncio.create_subprocess_exec(
                *trainer, "serve", "telegram", env=env, cwd=tmp_path,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _, stderr = await asyncio.wait_for(proc.communicate(), 120)
            return int(proc.returncode or 0), stderr.decode()

    returncode, stderr = asyncio.run(run())
    assert returncode == 1, stderr
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("Error: "), stderr
    expected = {
        "malformed": "TELEGRAM_BOT_TOKEN: that is not a bot token",
        "refused": "the Bot API refused the token (Unauthorized)",
        "unreachable": "cannot reach the Bot API at http://127.0.0.1:",
        "refused-standby": "the Bot API refused the token (Unauthorized)",
        "no-redis": "cannot reach Redis at redis://127.0.0.1:1/0",
    }[problem]
    assert "standing by" not in stderr
    assert expected in last
    assert "secret" not in stderr and "NOT-THE-TOKEN" not in stderr
    if problem == "unreachable":  # the retries before giving up are not silent
        assert "the Bot API did not take getMe" in stderr and "trying again" in stderr
