"""Festival drills in the engine: the plan, the schedule, waiting customers, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.content import ContentError, ScenarioLibrary
from bot.drill.plan import DrillPlan, load, schedule
from bot.drill.report import standings, to_csv
from bot.drill.runner import DrillRefused, DrillRunner
from bot.engine import Engine
from bot.storage import DrillCustomerRow, StaleDrill, Store, UserRow

T0 = 1_794_355_200.0  # 2026-11-11 00:00 UTC: Double 11
GOOD = "您好，非常抱歉让您久等了！麻烦发一下订单号和照片，我马上为您处理。"


class Clock:
    """A fake clock the runner reads."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def members(store: Store, count: int, *, chat: bool = True) -> list[UserRow]:
    return [
        store.upsert_user(
            "telegram",
            str(500 + i),
            name=f"学员{i}",
            lang="zh",
            chat_id=str(500 + i) if chat else None,
        )
        for i in range(count)
    ]


def quiet(library: ScenarioLibrary, **changes: object) -> DrillPlan:
    """The 618 preset, changed: a steady plan whose numbers the tests can follow."""
    return library.drills["618-warmup"].model_copy(update=changes)


def solo(
    library: ScenarioLibrary, store: Store, seed: int, **changes: object
) -> tuple[Clock, DrillRunner, UserRow, int, DrillPlan]:
    """One trainee's drill from the 618 preset, changed, on a fake clock."""
    clock = Clock()
    runner = DrillRunner(store, library, Engine(store, library), clock=clock)
    plan = quiet(library, **changes)
    (me,) = members(store, 1)
    return clock, runner, me, runner.plan(plan, [me], starts_at=T0, seed=seed), plan


def state(store: Store, drill: int) -> list[tuple[object, ...]]:
    """Everything about a drill's customers that a restart must keep exactly."""
    rows = store.drill_customers(drill)
    return [
        (
            c.trainee,
            c.number,
            c.status,
            c.opened_at,
            c.first_reply_at,
            c.waiting_since,
            c.nudged,
            c.nudges,
            c.ended_at,
            c.outcome,
            c.next_at,
            c.score100,
            tuple(t.text for t in store.turns(c.session_id)) if c.session_id else (),
        )
        for c in rows
    ]


def test_the_presets_load_and_a_schedule_depends_only_on_the_seed_and_the_trainee(
    library: ScenarioLibrary,
) -> None:
    peak = library.drills["double11-peak"]
    one = schedule(peak, ["a", "b"], seed=3)
    assert one == schedule(peak, ["a", "b"], seed=3)
    assert one != schedule(peak, ["a", "b"], seed=4)
    alone = [x for x in schedule(peak, ["a"], seed=3)]
    assert alone == [x for x in one if x.trainee == "a"]  # b changes nothing of a's
    first = [x.at_s for x in one if x.trainee == "a"][: peak.concurrency]
    assert first == [0.0, 2.0, 4.0]  # a full hand at once, a message a second apart
    assert {x.scenario for x in one} <= set(peak.scenarios)
    assert {x.difficulty for x in one} <= set(peak.difficulties)


def test_a_surge_brings_customers_faster_while_it_lasts(library: ScenarioLibrary) -> None:
    peak = library.drills["double11-peak"].model_copy(update={"minutes": 60})
    assert peak.surge is not None
    arrivals = schedule(peak, [f"t{i}" for i in range(200)], seed=1)
    surge_s = peak.surge.minutes * 60
    during = sum(1 for a in arrivals if peak.concurrency * 2 < a.at_s < surge_s)
    after = sum(1 for a in arrivals if surge_s <= a.at_s < 2 * surge_s)
    assert during > 2 * after  # ×3 in the plan; random, but 200 trainees make it plain


def test_the_telegram_load_of_a_plan_is_computed_and_compared_with_one_bot(
    library: ScenarioLibrary,
) -> None:
    peak = library.drills["double11-peak"]
    small, big = load(peak, 20), load(peak, 1000)
    assert big.messages_per_s == pytest.approx(50 * small.messages_per_s)
    assert small.fits_telegram(20) and not big.fits_telegram(1000)
    assert big.telegram_trainees * big.per_trainee <= 0.8 * 30  # with room to spare
    coach = load(peak.model_copy(update={"mode": "coach"}), 20)
    assert coach.messages_per_s > small.messages_per_s  # feedback is a message too


def test_a_preset_with_an_unknown_key_or_scenario_is_refused_with_file_and_key(
    tmp_path: Path,
) -> None:
    root = tmp_path / "scenarios"
    shutil.copytree(ScenarioLibrary.load().root, root)
    preset = root / "drills" / "618-warmup.yaml"
    text = preset.read_text(encoding="utf-8")
    preset.write_text(text.replace("concurrency: 2", "concurrency: 2\nconcurency: 3"), "utf-8")
    (root / "drills" / "other.yaml").write_text(
        text.replace("id: 618-warmup", "id: other").replace("damaged-kettle:", "no-such-case:"),
        "utf-8",
    )
    with pytest.raises(ContentError) as raised:
        ScenarioLibrary.load(root)
    problems = {(p.file, p.key, p.problem) for p in raised.value.problems}
    assert ("scenarios/drills/618-warmup.yaml", "concurency", "unknown key") in problems
    assert any(
        f == "scenarios/drills/other.yaml" and k == "scenarios.no-such-case" for f, k, _ in problems
    )


def test_an_unanswered_customer_nudges_grows_angrier_and_leaves_at_their_patience(
    library: ScenarioLibrary, store: Store
) -> None:
    clock, runner, me, drill, plan = solo(
        library, store, 2, concurrency=1, customers_per_hour=1, difficulties={"normal": 1}
    )
    patience = plan.patience("normal")  # 180 s, two nudges: at 60 s and 120 s

    async def main() -> None:
        await runner.tick()
        (first,) = store.drill_customers(drill, ("open",))
        assert first.label == "C1" and first.waiting_since == T0
        clock.now = T0 + patience / 3 + 0.5
        await runner.tick()
        nudged = store.drill_customers(drill, ("open",))[0]
        assert nudged.nudged == 1
        assert store.turns(first.session_id)[-1].text == "在吗？"  # type: ignore[arg-type]
        row = store.session(first.session_id)  # type: ignore[arg-type]
        assert row is not None and row.customer_state is not None
        assert row.customer_state["anger"] > library.get(first.scenario_id).profiles["normal"].anger
        clock.now = T0 + patience + 1
        await runner.tick()
        gone = store.drill_customer(first.id)
        assert gone is not None and (gone.status, gone.outcome) == ("abandoned", "abandoned")
        assert gone.ended_at == T0 + patience and gone.nudges == 2  # at its time, not now
        ended = store.session(first.session_id)  # type: ignore[arg-type]
        assert ended is not None and ended.outcome == "abandoned" and ended.passed is False
        with pytest.raises(DrillRefused, match="has gone"):
            await runner.reply(me, drill, "C1", GOOD)

    asyncio.run(main())


def test_a_reply_resets_the_wait_and_a_repeat_of_it_is_answered_once(
    library: ScenarioLibrary, store: Store
) -> None:
    clock, runner, me, drill, _ = solo(
        library, store, 2, concurrency=1, customers_per_hour=1, difficulties={"normal": 1}
    )

    async def main() -> None:
        await runner.tick()
        clock.now = T0 + 50
        result = await runner.reply(me, drill, "c1", GOOD, ref="u1")
        assert result is not None and result.customer_text
        assert await runner.reply(me, drill, "C1", GOOD, ref="u1") is None  # sent again
        (row,) = store.drill_customers(drill, ("open",))
        assert row.first_reply_at == T0 + 50 and row.waiting_since == T0 + 50
        trainee_turns = [t for t in store.turns(row.session_id) if t.role == "trainee"]  # type: ignore[arg-type]
        assert len(trainee_turns) == 1 and trainee_turns[0].latency_s == 50
        clock.now = T0 + 50 + 170  # under the patience counted from the answer
        await runner.tick()
        assert store.drill_customer(row.id).status == "open"  # type: ignore[union-attr]

    asyncio.run(main())


def test_customers_beyond_a_full_hand_queue_and_open_when_a_hand_is_free(
    library: ScenarioLibrary, store: Store
) -> None:
    clock, runner, me, drill, _ = solo(
        library, store, 9, concurrency=2, customers_per_hour=240, difficulties={"easy": 1}
    )
    third = store.drill_customers(drill)[2]

    async def main() -> None:
        clock.now = third.due_at + 1
        await runner.tick()
        assert [c.status for c in store.drill_customers(drill)[:3]] == ["open", "open", "queued"]
        queued = store.drill_customer(third.id)
        assert queued is not None and queued.session_id is None  # the trainee cannot see it yet
        await runner.reply(me, drill, "C1", "你是不是傻？")  # an insult ends the conversation
        opened = store.drill_customer(third.id)
        assert opened is not None and opened.status == "open"
        assert opened.opened_at == clock.now and opened.waiting_since == third.due_at
        clock.now += 5
        await runner.reply(me, drill, "C3", GOOD)
        answered = store.drill_customer(third.id)
        assert answered is not None and answered.first_reply_at == clock.now  # from arrival

    asyncio.run(main())


def test_a_drill_killed_mid_way_resumes_exactly_where_an_unbroken_one_is(
    library: ScenarioLibrary, tmp_path: Path
) -> None:
    """Two drills with the same plan, seed and replies: one ticks every second; the other
    is abandoned mid-way like a killed process (no close) and a new process catches up."""
    plan = library.drills["double11-peak"].model_copy(update={"minutes": 6})

    async def drive(
        path: Path, *, crash_at: float | None, from_m011: bool = False
    ) -> list[tuple[object, ...]]:
        store = Store.open(path)
        users = members(store, 20)  # one team: 20 trainees, 3 customers each at once
        clock = Clock()
        runner = DrillRunner(store, library, Engine(store, library), clock=clock)
        drill = runner.plan(plan, users, starts_at=T0, seed=11)
        replies = {T0 + 40: (0, "C1"), T0 + 95: (1, "C2"), T0 + 200: (2, "C1")}
        down = (crash_at - 150, crash_at) if crash_at is not None else (0.0, 0.0)
        second = 0.0
        while second <= plan.minutes * 60 + 5:
            clock.now = T0 + second
            if crash_at is not None and second == crash_at:
                if from_m011:  # restarted by a newer version: next_at as m012 fills it in
                    store.backend.db.execute(
                        "UPDATE drill_customers SET next_at = CASE status WHEN 'due' THEN"
                        " due_at WHEN 'queued' THEN waiting_since WHEN 'open' THEN"
                        " waiting_since END"
                    )
                    store.backend.db.conn.commit()
                store = Store.open(path)  # the old connection is dropped as by kill -9
                runner = DrillRunner(store, library, Engine(store, library), clock=clock)
            if down[0] < second < down[1]:
                second += 1
                continue  # the crashed one is down for 150 s: no ticks, no replies
            await runner.tick()
            if clock.now in replies:
                who, label = replies[clock.now]
                with contextlib.suppress(DrillRefused):  # gone: alike in both runs
                    await runner.reply(users[who], drill, label, GOOD)
            second += 1
        assert store.drill(drill).status == "ended"  # type: ignore[union-attr]
        return state(store, drill)

    steady = asyncio.run(drive(tmp_path / "steady.db", crash_at=None))
    crashed = asyncio.run(drive(tmp_path / "crashed.db", crash_at=350))
    assert crashed == steady
    upgraded = asyncio.run(drive(tmp_path / "upgraded.db", crash_at=350, from_m011=True))
    assert upgraded == steady
    assert any(row[2] == "abandoned" for row in steady)  # the outage made customers leave


def test_a_workspace_asking_for_a_conversation_that_just_ended_gets_none(
    library: ScenarioLibrary, store: Store
) -> None:
    _, runner, me, drill, _ = solo(library, store, 9, concurrency=2)

    async def main() -> None:
        await runner.tick()
        (seen,) = store.drill_customers(drill, ("open",))
        live = await runner.conversation(seen)
        assert live is not None and not live.ended
        await runner.reply(me, drill, "C1", "你是不是傻？")  # ends it while the page renders
        assert await runner.conversation(seen) is None  # the row it read said "open"

    asyncio.run(main())


class Killed(BaseException):
    """The process dies here (nothing after it runs, nothing is closed)."""


def _dies_on_reply(write: Any) -> Any:
    """The runner's write, dying when it would record a reply on the drill's row."""

    def written(
        plan: DrillPlan, row: DrillCustomerRow, changes: dict[str, object], **kw: Any
    ) -> Any:
        if "replies" in changes:
            raise Killed
        return write(plan, row, changes, **kw)

    return written


@pytest.mark.parametrize("cut", ["before the answer", "before the row"])
def test_a_reply_cut_off_by_a_crash_counts_once_at_the_time_it_was_sent(
    library: ScenarioLibrary, tmp_path: Path, cut: str
) -> None:
    """A crash inside a reply: after the stored reply and before the customer's answer,
    or after the answer and before the drill's row. The trainee's channel sends the
    reply again (same reference) after the restart. The drill must end as if the reply
    had gone through once, at its time."""
    plan = library.drills["double11-peak"].model_copy(update={"minutes": 4})
    cut_at, back_at = T0 + 40, T0 + 60

    async def drive(path: Path, *, crash: bool, stale: bool = False) -> list[tuple[object, ...]]:
        store = Store.open(path)
        users = members(store, 3)
        clock = Clock()
        runner = DrillRunner(store, library, Engine(store, library), clock=clock)
        drill = runner.plan(plan, users, starts_at=T0, seed=5)
        for second in range(0, plan.minutes * 60 + 2):
            clock.now = T0 + second
            if crash and clock.now == back_at:  # restarted: a new process on the same file
                store = Store.open(path)
                runner = DrillRunner(store, library, Engine(store, library), clock=clock)
                if cut == "before the answer":  # the channel re-sends before the clock runs
                    assert await runner.reply(users[0], drill, "C1", GOOD, ref="u1") is None
            if crash and cut_at < clock.now < back_at:
                continue  # down
            await runner.tick()
            if clock.now == cut_at:
                if crash:

                    def die(*args: Any, **kwargs: Any) -> None:
                        raise Killed

                    if cut == "before the answer":
                        store.add_answer = die  # type: ignore[method-assign]
                    else:
                        runner._write = _dies_on_reply(runner._write)  # type: ignore[method-assign]
                    with pytest.raises(Killed):
                        await runner.reply(users[0], drill, "C1", GOOD, ref="u1")
                else:
                    await runner.reply(users[0], drill, "C1", GOOD, ref="u1")
            if crash and clock.now == back_at and cut == "before the row":
                assert await runner.reply(users[0], drill, "C1", GOOD, ref="u1") is None
        return state(store, drill)

    steady = asyncio.run(drive(tmp_path / "steady.db", crash=False))
    crashed = asyncio.run(drive(tmp_path / "crashed.db", crash=True))
    assert crashed == steady
    answered = steady[0]
    assert answered[4] == cut_at and GOOD in answered[-1]  # first reply at 40 s, said once


def _stale_once(store: Store) -> Callable[..., None]:
    """``update_drill_customer`` that raises StaleDrill the first time, then is itself."""
    update = store.update_drill_customer

    def changed_elsewhere(*args: Any, **kwargs: Any) -> None:
        store.update_drill_customer = update  # type: ignore[method-assign]
        raise StaleDrill("changed meanwhile")

    return changed_elsewhere


def test_a_crash_between_a_departure_and_opening_the_next_in_the_queue_opens_it_on_time(
    library: ScenarioLibrary, tmp_path: Path
) -> None:
    """One customer at a time and a queue behind: the first leaves, and the process dies
    before the next one opens. After the restart the next one opens when the first left."""
    plan = quiet(library, minutes=6, concurrency=1, customers_per_hour=240)

    async def drive(path: Path, *, crash: bool, stale: bool = False) -> list[tuple[object, ...]]:
        store = Store.open(path)
        (me,) = members(store, 1)
        clock = Clock()
        runner = DrillRunner(store, library, Engine(store, library), clock=clock)
        drill = runner.plan(plan, [me], starts_at=T0, seed=3)
        opened = runner._open
        died = []

        async def dies_when_filling(*args: Any, **kwargs: Any) -> DrillCustomerRow:
            if kwargs.get("arrival") is None and len(args) == 3:  # the queue moving up
                died.append(clock.now)
                raise Killed
            return await opened(*args, **kwargs)

        if crash:
            runner._open = dies_when_filling  # type: ignore[method-assign]
        second = 0
        while second <= plan.minutes * 60 + 2:
            clock.now = T0 + second
            try:
                await runner.tick()
            except Killed:  # restarted 30 s later on the same file
                second += 30
                store = Store.open(path)
                runner = DrillRunner(store, library, Engine(store, library), clock=clock)
                if stale:  # the repair's first write finds another process changed it
                    store.update_drill_customer = _stale_once(store)  # type: ignore[method-assign]
                continue
            second += 1
        assert died or not crash
        return state(store, drill)

    steady = asyncio.run(drive(tmp_path / "steady.db", crash=False))
    assert asyncio.run(drive(tmp_path / "crashed.db", crash=True)) == steady
    # the repair tried again on the next pass instead of failing the clock
    assert asyncio.run(drive(tmp_path / "stale.db", crash=True, stale=True)) == steady


def test_at_the_end_conversations_close_the_queue_goes_and_telegram_trainees_got_labels(
    library: ScenarioLibrary, store: Store
) -> None:
    clock, runner, me, drill, plan = solo(
        library, store, 4, minutes=2, concurrency=1, customers_per_hour=120
    )

    async def main() -> None:
        await runner.tick()
        clock.now = T0 + 30
        await runner.reply(me, drill, "C1", GOOD)
        clock.now = T0 + plan.minutes * 60 + 1
        await runner.tick()

    asyncio.run(main())
    rows: list[DrillCustomerRow] = store.drill_customers(drill)
    assert store.drill(drill).status == "ended"  # type: ignore[union-attr]
    assert all(r.status in ("done", "abandoned") for r in rows if r.status != "due")
    first = rows[0]
    assert (first.status, first.outcome) == ("done", "drill_ended")
    texts = [m.body["text"] for m in store.outbox_pending(f"telegram:{me.chat_id}")]
    assert texts and all(t.startswith("【C1 · ") for t in texts[:2])


def test_the_leaderboard_and_report_rank_judge_and_compare_with_the_last_drill(
    library: ScenarioLibrary, store: Store
) -> None:
    clock = Clock()
    runner = DrillRunner(store, library, Engine(store, library), clock=clock)
    plan = quiet(library, minutes=4, concurrency=2, customers_per_hour=60)
    keen, idle = members(store, 2)

    async def play(drill: int, start: float) -> None:
        for second in range(0, plan.minutes * 60 + 2, 4):
            clock.now = start + second
            await runner.tick()
            for row in store.drill_customers(drill, ("open",), user_id=keen.id):
                if row.waiting_since is not None and clock.now - row.waiting_since >= 4:
                    await runner.reply(keen, drill, row.label, GOOD)

    first = runner.plan(plan, [keen, idle], starts_at=T0, seed=21)
    asyncio.run(play(first, T0))
    drill = store.drill(first)
    assert drill is not None and drill.status == "ended"
    report = standings(store, drill)
    assert [s.name for s in report.trainees] == ["学员0", "学员1"]  # the one who answered first
    best, worst = report.trainees
    assert best.handled > 0 and best.abandoned == 0 and best.first_response_p90_s is not None
    assert best.first_response_p90_s <= plan.pass_.max_first_response_p90_s
    assert worst.handled == 0 and worst.abandoned > 0 and worst.passed is False
    assert any("abandonment" in r["en"] for r in worst.reasons)
    assert report.team.arrived == best.arrived + worst.arrived
    assert report.previous is None
    assert best.assessment is not None and 0 < best.assessment <= 100  # the company's rubric
    assert worst.assessment is None  # said nothing: nothing to assess, not a guessed 0
    rows = store.drill_customers(first)
    answered = [r for r in rows if r.replies]
    assert answered and all(r.score100 is not None for r in answered)
    assert all(r.score100 is None for r in rows if not r.replies)
    lines = to_csv(report).splitlines()
    assert lines[0].startswith("trainee,arrived,handled") and len(lines) == 4
    assert ",score,assessment100," in lines[0]
    assert lines[-1].startswith("(all),")
    second = runner.plan(plan, [keen], starts_at=T0 + 3600, seed=22)
    asyncio.run(play(second, T0 + 3600))
    again = standings(store, store.drill(second))  # type: ignore[arg-type]
    assert again.previous is not None and again.previous.arrived == report.team.arrived


def test_two_processes_moving_one_drill_never_apply_an_event_twice(
    library: ScenarioLibrary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runner that read the drill just before another process moved it (two servers on
    one database) writes nothing: no second session, nudge or arrival."""
    path = tmp_path / "drill.db"
    first, second = Store.open(path), Store.open(path)
    clock = Clock()
    one = DrillRunner(first, library, Engine(first, library), clock=clock)
    two = DrillRunner(second, library, Engine(second, library), clock=clock)
    plan = quiet(library, concurrency=2, customers_per_hour=120)
    drill = one.plan(plan, members(first, 3), starts_at=T0, seed=8)

    async def main() -> None:
        read = second.drill_customers
        for seconds in (0, 70, 130, 200):
            clock.now = T0 + seconds
            before = read(drill, ("due", "queued", "open"), due_by=clock.now)
            await one.tick()

            def as_before(
                drill_id: int,
                statuses: tuple[str, ...] | None = None,
                before: list[DrillCustomerRow] = before,
                **kw: Any,
            ) -> list[DrillCustomerRow]:
                stale = statuses == ("due", "queued", "open") and "due_by" in kw
                return before if stale else read(drill_id, statuses, **kw)

            monkeypatch.setattr(second, "drill_customers", as_before)
            await two.tick()  # works from what it read before `one` moved the drill on
            monkeypatch.setattr(second, "drill_customers", read)
            await two.tick()  # and from fresh rows: nothing is left to do

    asyncio.run(main())
    events = first.backend.db.execute(
        "SELECT customer_id, kind, due_at, count(*) FROM drill_events WHERE drill_id = ?"
        " AND kind != 'nudge' GROUP BY customer_id, kind, due_at HAVING count(*) > 1",
        [drill],
    ).fetchall()
    assert events == []  # (missed nudges may share a time: counted below)
    logged = dict(
        first.backend.db.execute(
            "SELECT customer_id, count(*) FROM drill_events WHERE drill_id = ? AND kind = 'nudge'"
            " GROUP BY customer_id",
            [drill],
        ).fetchall()
    )
    assert logged == {c.id: c.nudges for c in first.drill_customers(drill) if c.nudges}
    opened = [c for c in first.drill_customers(drill) if c.session_id is not None]
    sessions = first.backend.db.execute(
        "SELECT count(*) FROM sessions WHERE drill_customer_id IS NOT NULL"
    ).fetchone()[0]
    assert opened and sessions == len(opened)
    nudges = sum(c.nudges for c in opened)
    lines = first.backend.db.execute(
        "SELECT count(*) FROM turns WHERE meta LIKE '%\"drill\": true%'"
    ).fetchone()[0]
    assert nudges > 0 and lines == nudges
    first.close()
    second.close()
