"""What a trainee or mentor reads when something is refused, repeated or out of order."""

from __future__ import annotations

import asyncio

from test_telegram import KETTLE_EN, _team, ended_exam_session, start_session
from tgharness import BotHarness

from bot.service import PracticeChoice
from bot.storage import AssignmentRow, Store
from bot.telegram.texts import choice_label


def test_practice_during_a_session_says_so_at_once(store: Store) -> None:
    async def run() -> None:
        async with BotHarness(store) as h:
            await start_session(h, 60, "en", "coach")
            answer = await h.say(60, "/practice")
            assert len(answer) == 1 and "session in progress" in answer[0]
            assert not h.buttons(60)  # no scenario menu to walk through

    asyncio.run(run())


def test_exam_mode_does_not_offer_hint_and_says_how_red_lines_count(store: Store) -> None:
    async def run() -> None:
        async with BotHarness(store) as h:
            briefing = "\n".join(await start_session(h, 61, "en", "exam"))
            assert "/hint" not in briefing and "grades come at the end" in briefing
            assert "insulting the customer makes them leave" in briefing
            coach = "\n".join(await start_session(h, 62, "en", "coach"))
            assert "/hint" in coach

    asyncio.run(run())


def test_a_burst_without_a_session_gets_one_answer_not_twenty(store: Store) -> None:
    async def run() -> None:
        async with BotHarness(store, webhook=True) as h:
            await h.say(63, "/start")
            await start_session(h, 63, "en", "coach")
            await h.say(63, "/end")
            before = len(h.api.texts(63))
            ids = [h.api.message(63, f"hello {i}") for i in range(20)]
            await asyncio.gather(*(h.deliver(i) for i in ids))
            await h.idle()
            answers = h.api.texts(63)[before:]
            assert 1 <= len(answers) <= 3, answers
            assert all("no session in progress" in a for a in answers)

    asyncio.run(run())


def test_someone_without_an_invite_is_welcomed_not_told_of_no_session(store: Store) -> None:
    async def run() -> None:
        async with BotHarness(store) as h:
            answer = await h.say(64, "hello?")
            assert answer and answer[0].startswith("Hi ") and "/practice" in answer[0]

    asyncio.run(run())


def test_a_deduction_already_disputed_is_refused_at_the_button(store: Store) -> None:
    async def run() -> None:
        async with BotHarness(store) as h:
            _, trainee, sid = await ended_exam_session(h)
            await h.press(trainee, f"dp:{sid}:1", lang="zh")
            await h.say(trainee, "我已经道歉了", lang="zh")
            asked = await h.press(trainee, f"dp:{sid}:1", lang="zh")
            assert asked == []  # not asked for a reason again
            alert = [c for c in h.api.calls if c.method == "answerCallbackQuery"][-1]
            assert "已在申诉中" in (alert.params.get("text") or "")
            await h.press(trainee, f"dp:{sid}:99", lang="zh")  # a forged entry
            alert = [c for c in h.api.calls if c.method == "answerCallbackQuery"][-1]
            assert "按钮已失效" in (alert.params.get("text") or "")

    asyncio.run(run())


def test_a_trainee_who_joins_after_an_assignment_is_told_about_it(store: Store) -> None:
    async def run() -> None:
        async with BotHarness(store) as h:
            _, mentor, _ = await _team(h)
            await h.say(mentor, "/assign damaged-kettle team=Alpha due=2099-01-31 pass=60")
            code = (await h.say(mentor, "/invite Alpha trainee"))[0].split("start=")[1].split()[0]
            joined = "\n".join(await h.say(65, f"/start {code}"))
            assert "New assignment" in joined and "2099-01-31" in joined

    asyncio.run(run())


def test_a_long_title_is_shortened_in_a_button_never_the_due_date() -> None:
    assignment = AssignmentRow(1, 1, None, "x", "normal", "exam", "default", "2026-12-31",
                               80.0, 3, None, "2026-12-01")  # fmt: skip
    title = "Damaged in transit: the kettle arrived cracked and the customer is furious"
    choice = PracticeChoice("x", {"zh": title, "en": title}, assignment, attempts_used=1)
    label = choice_label(choice, "en")
    assert len(label) <= 60 and label.endswith("due 2026-12-31 · 2 left")
    assert "…" in label


def test_a_used_menu_loses_its_buttons(store: Store) -> None:
    async def run() -> None:
        async with BotHarness(store) as h:
            await h.say(66, "/start")
            await h.say(66, "/practice")
            menu = h.api.last_message(66)
            assert menu is not None and menu.get("reply_markup")
            await h.press(66, "p:s:damaged-kettle:::0")
            assert not h.api.messages[66][menu["message_id"]].get("reply_markup")
            assert h.buttons(66)  # the next menu has its own

    asyncio.run(run())


def test_a_reply_still_gets_one_message(store: Store) -> None:
    """The usual flow is untouched by the changes above: one message per reply."""

    async def run() -> None:
        async with BotHarness(store) as h:
            await start_session(h, 67, "en", "coach")
            answer = await h.say(67, KETTLE_EN[0])
            assert len(answer) == 1 and "Grades for reply #1" in answer[0]

    asyncio.run(run())
