"""A drill in Telegram: labelled customers, answers by quoting, never a guess, the board.

The real bot (aiogram, HTTP) against the fake Bot API; the drill's clock is a fake one the
test moves, so arrivals and departures come exactly when the test says.
"""

from __future__ import annotations

import asyncio
import re

from tgharness import BotHarness

from bot.storage import Store
from tests.test_drill import GOOD, T0, Clock

LABELLED = re.compile(r"^【(C\d+) · ")


def _customer_messages(h: BotHarness, chat: int) -> dict[str, int]:
    """The message id of each drill customer's latest message in a chat, by label."""
    found: dict[str, int] = {}
    for message_id, message in sorted(h.api.messages.get(chat, {}).items()):
        label = LABELLED.match(message.get("text") or "")
        if label and message.get("from", {}).get("id") == h.api.bot_user["id"]:
            found[label.group(1)] = message_id
    return found


def test_a_telegram_drill_labels_customers_routes_quoted_replies_and_shows_the_board(
    store: Store,
) -> None:
    async def run() -> None:
        async with BotHarness(store) as h:
            svc = h.app.svc
            clock = Clock()
            svc.drills.clock = clock
            code = svc.create_invite("admin", None)
            await h.say(1, f"/start {code}")
            await h.say(1, "/newteam Alpha")
            admin = svc.actor(svc.store.user_by_external("telegram", "1").id)  # type: ignore[union-attr]
            team = svc.team_named("Alpha")
            for chat in (3, 4):
                invite = svc.create_invite("trainee", team, admin)
                await h.say(chat, f"/start {invite}", lang="zh")
            plan = svc.library.drills["618-warmup"]
            drill, _, members = svc.plan_drill(admin, plan.id, teams=[team], seed=3)
            assert len(members) == 2
            h.app._sweep()  # what the bot's sweeper does within seconds
            await h.idle()
            # the trainee is told (the bot's own clock may bring C1 right after)
            told = [text for text in h.api.texts(3) if f"演练 #{drill.id}" in text]
            assert told and "引用回复" in told[0]
            await svc.drills.tick()  # the first customer of each trainee arrives at T0
            clock.now = T0 + 3  # and the second two seconds later
            await svc.drills.tick()
            h.app._sweep()
            await h.idle()
            customers = _customer_messages(h, 3)
            assert set(customers) == {"C1", "C2"}  # a labelled message from each

            unsure = await h.say(3, GOOD, lang="zh")  # two are waiting: which one?
            assert len(unsure) == 1 and "C1、C2" in unsure[0] and "引用回复" in unsure[0]
            assert all(c.first_reply_at is None for c in svc.store.drill_customers(drill.id))

            clock.now = T0 + 20
            answered = await h.say(3, GOOD, lang="zh", reply_to=customers["C2"])
            assert answered and answered[-1].startswith("【C2 · ")  # C2 answers, labelled
            mine = {c.label: c for c in svc.store.drill_customers(drill.id, user_id=members[0].id)}
            assert mine["C2"].first_reply_at == T0 + 20 and mine["C1"].first_reply_at is None

            board = await h.say(4, "/leaderboard", lang="zh")
            assert f"演练 #{drill.id}" in board[0] and "进行中" in board[0]

            clock.now = T0 + plan.patience("easy") + plan.patience("normal")  # C1 gave up
            await svc.drills.tick()
            h.app._sweep()
            await h.idle()
            gone = await h.say(3, GOOD, lang="zh", reply_to=customers["C1"])
            assert gone == ["客户 C1 已经离开了。"]

    asyncio.run(run())


def test_a_telegram_drill_of_twenty_trainees_with_three_customers_each(store: Store) -> None:
    async def run() -> None:
        async with BotHarness(store) as h:
            svc = h.app.svc
            clock = Clock()
            svc.drills.clock = clock
            team = svc.create_team("Alpha")
            chats = list(range(100, 120))
            for chat in chats:
                await h.say(chat, f"/start {svc.create_invite('trainee', team)}", lang="zh")
            drill, load, members = svc.plan_drill(None, "double11-peak", teams=[team], seed=9)
            assert len(members) == 20 and load.fits_telegram(20)
            for second in (0, 2, 4):  # everyone's hand fills: C1, C2, C3
                clock.now = T0 + second
                await svc.drills.tick()
            h.app._sweep()
            await h.idle()
            for chat in chats:
                assert set(_customer_messages(h, chat)) == {"C1", "C2", "C3"}, chat
            clock.now = T0 + 15
            for chat in chats:  # each answers their second customer by quoting them
                c2 = _customer_messages(h, chat)["C2"]
                said = await h.say(chat, GOOD, lang="zh", reply_to=c2)
                assert said and said[-1].startswith("【C2 · "), said
            report = svc.drill_report(svc.actor(members[0].id), drill.id)
            assert len(report.trainees) == 20
            assert all(s.first_response_mean_s == 13.0 for s in report.trainees)  # C2 came at 2 s
            assert len(svc.store.drill_customers(drill.id, ("open",))) == 60

    asyncio.run(run())


def test_a_mentor_plans_a_drill_with_slash_drill_and_is_warned_when_one_bot_is_not_enough(
    store: Store,
) -> None:
    async def run() -> None:
        async with BotHarness(store) as h:
            svc = h.app.svc
            svc.drills.clock = Clock()
            team = svc.create_team("Alpha")
            await h.say(2, f"/start {svc.create_invite('mentor', team)}")
            for chat in (3, 4):
                await h.say(chat, f"/start {svc.create_invite('trainee', team)}", lang="zh")
            usage = await h.say(2, "/drill")
            assert "Usage: /drill PRESET team=NAME" in usage[0] and "double11-peak" in usage[0]
            said = await h.say(2, "/drill double11-peak team=Alpha minutes=10")
            assert "Drill #1 planned: 2 trainee(s)" in said[0] and "Warning" not in said[0]
            drill = svc.store.drill(1)
            assert drill is not None and drill.ends_at - drill.starts_at == 600
            h.app._sweep()
            await h.idle()
            # the trainees are told (the drill's clock may have brought C1 already)
            assert any("演练 #1" in text for text in h.api.texts(3))
            refused = await h.say(3, "/drill double11-peak team=Alpha", lang="zh")
            # refused (the bot's own drill clock may bring trainee 3's C1 meanwhile)
            assert any("导师" in text for text in refused) and svc.store.drill(2) is None
            bad = await h.say(2, "/drill double11-peak team=Alpha concurrency=9")
            assert "out of range" in bad[0]

    asyncio.run(run())
