"""Drills through the service: who may plan and see them, notices, replies, channels' words."""

from __future__ import annotations

import asyncio

import pytest

from bot import notices
from bot.content import ScenarioLibrary
from bot.drill.runner import DrillRunner
from bot.engine import Engine
from bot.service import Forbidden, Invalid, NotFound, Training
from bot.storage import Store
from bot.telegram import texts as telegram_texts
from bot.web import texts as web_texts
from tests.test_drill import GOOD, T0, Clock
from tests.test_service import World, make_world


@pytest.fixture
def world(library: ScenarioLibrary, store: Store) -> World:
    w = make_world(library, store)
    clock = Clock()
    w.svc.drills = DrillRunner(w.store, library, w.svc.engine, clock=clock)
    return w


def test_a_mentor_plans_a_drill_of_their_team_and_only_of_it(world: World) -> None:
    svc = world.svc
    drill, load, members = svc.plan_drill(world.mentor_a, "double11-peak", teams=[world.team_a])
    assert {m.id for m in members} == {world.a1.id, world.a2.id}
    assert drill.status == "planned" and drill.starts_at == T0
    assert load.messages_per_s == pytest.approx(load.per_trainee * 2)
    assert svc.store.drill_users(drill.id) == {world.a1.id, world.a2.id}
    for who in (world.mentor_b, world.a1, world.stranger):
        with pytest.raises(Forbidden):
            svc.plan_drill(who, "double11-peak", teams=[world.team_a])
    with pytest.raises(NotFound, match="618-warmup"):
        svc.plan_drill(world.mentor_a, "no-such-drill", teams=[world.team_a])
    with pytest.raises(Invalid, match="concurrency"):
        svc.plan_drill(world.mentor_a, "double11-peak", teams=[world.team_a], concurrency=9)
    with pytest.raises(Invalid, match="passed"):
        svc.plan_drill(world.mentor_a, "double11-peak", teams=[world.team_a], starts_at=T0 - 3600)


def test_participants_are_told_in_their_channel_and_words(world: World) -> None:
    svc = world.svc
    drill, _, _ = svc.plan_drill(world.mentor_a, "618-warmup", teams=[world.team_a], ref="u9")
    (row,) = svc.store.outbox_pending(f"{notices.TELEGRAM}{world.a1.user.chat_id}")
    assert row.kind == notices.KIND and row.body["key"] == "drill_planned"
    said = telegram_texts.notice(row.body, svc.store, svc.library)
    assert f"#{drill.id}" in said and "618 warm-up" in said and "reply to that message" in said
    web_body = {**row.body, "lang": "zh"}
    text, link = web_texts.notice(web_body, svc.store, svc.library)
    assert "618 预热演练" in text and link == f"/drills/{drill.id}"
    assert svc.store.outbox_pending(f"{notices.TELEGRAM}{world.b1.user.chat_id}") == []


def test_a_drill_is_seen_by_its_trainees_their_mentors_and_admins_only(world: World) -> None:
    svc = world.svc
    drill, _, _ = svc.plan_drill(world.mentor_a, "618-warmup", teams=[world.team_a])
    for who in (world.a1, world.mentor_a, world.admin):
        assert svc.drill(who, drill.id).id == drill.id
    for who in (world.b1, world.mentor_b, world.stranger):
        with pytest.raises(NotFound):
            svc.drill(who, drill.id)
        with pytest.raises(NotFound):
            svc.drill_report(who, drill.id)
    assert svc.my_drill(world.a1) is not None and svc.my_drill(world.b1) is None


def test_a_trainee_answers_their_drill_customer_through_the_service(world: World) -> None:
    svc = world.svc
    drill, _, _ = svc.plan_drill(world.mentor_a, "618-warmup", teams=[world.team_a])

    async def main() -> None:
        await svc.drills.tick()
        result = await svc.drill_reply(world.a1, drill.id, "C1", GOOD, ref="m1")
        assert result is not None and result.customer_text
        with pytest.raises(Invalid, match="No customer C9"):
            await svc.drill_reply(world.a1, drill.id, "C9", GOOD)
        with pytest.raises(NotFound):
            await svc.drill_reply(world.b1, drill.id, "C1", GOOD)
        with pytest.raises(Forbidden):  # the mentor watches; only trainees answer
            await svc.drill_reply(world.mentor_a, drill.id, "C1", GOOD)

    asyncio.run(main())
    report = svc.drill_report(world.mentor_a, drill.id)
    assert report.trainees[0].name == "Alice"  # the only one who answered


def test_a_drill_session_is_not_the_trainees_practice_session(
    library: ScenarioLibrary, store: Store
) -> None:
    svc = Training(store, library, Engine(store, library))
    clock = Clock()
    svc.drills = DrillRunner(store, library, svc.engine, clock=clock)
    admin = svc.register("1", name="Ada", lang="en", chat_id="1")
    svc.join(admin, svc.create_invite("admin", None))
    admin = svc.actor(admin.id)
    team = svc.create_team("Alpha", admin)
    me = svc.register("10", name="Alice", lang="en", chat_id="10")
    svc.join(me, svc.create_invite("trainee", team, admin))
    me = svc.actor(me.id)
    drill, _, _ = svc.plan_drill(admin, "618-warmup", teams=[team])
    asyncio.run(svc.drills.tick())
    assert store.drill_customers(drill.id, ("open",))
    assert svc.active_session(me) is None  # free to practise alone meanwhile


def test_the_follow_up_plan_trains_the_weakest_clauses_and_is_assigned_in_one_go(
    world: World,
) -> None:
    svc = world.svc
    drill, _, _ = svc.plan_drill(world.mentor_a, "618-warmup", teams=[world.team_a], minutes=2)
    rude = "加我微信私聊，给您转50元，麻烦给个五星好评。"  # an off-platform red line

    async def main() -> None:
        await svc.drills.tick()
        svc.drills.clock.now = T0 + 10  # type: ignore[attr-defined]
        await svc.drill_reply(world.a1, drill.id, "C1", rude)
        svc.drills.clock.now = T0 + 200  # type: ignore[attr-defined]
        await svc.drills.tick()

    asyncio.run(main())
    plans = dict(
        (s.name, (s, scenarios))
        for s, scenarios in svc.drill_follow_ups(svc.drill_report(world.mentor_a, drill.id))
    )
    standing, scenarios = plans["Alice"]
    weak = {clause for clause, _ in standing.clauses[:3]}
    assert weak and scenarios
    for sid in scenarios:
        assert weak & set(svc.library.get(sid).applicable_clauses)
    with pytest.raises(Forbidden):
        svc.assign_follow_ups(world.a1, drill.id)
    made = svc.assign_follow_ups(world.mentor_a, drill.id)
    assert {a.scenario_id for a in made if a.user_id == world.a1.id} == set(scenarios)
    assert all(a.user_id in (world.a1.id, world.a2.id) for a in made)
