"""Two trainer processes on one PostgreSQL database and one Redis: one dies mid-drill.

Both run ``trainer serve web --db postgresql://... --redis redis://...`` under libfaketime
(as in test_drill_restart: the drill's clock is a file the test writes). One team of 20
trainees, 3 customers each; trainees answer over HTTP, each reply going to one process or
the other. The two share the drill clock's parts out (each moves on half the trainees'
customers). Mid-drill, while they apply what came due, one gets SIGKILL. The other must
carry on: it takes the dead one's parts of the clock over, and the drill ends exactly as
the same drill run unbroken in-process (on a copy of the starting database): every
customer's state and transcript, the leaderboard, the number of grades. That the parts
move within 5 s is checked on a fake clock (wall time on a loaded machine proves nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import socket
import time
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from bot.cluster import Cluster
from bot.content import ScenarioLibrary
from bot.coordination import LocalCoordinator
from bot.drill.runner import DrillRunner
from bot.engine import Engine
from bot.service import token_digest
from bot.storage import Store, UserRow
from bot.storage.copy import copy_history
from bot.web.app import COOKIE
from tests.databases import PgSchemas
from tests.fakeclock import FakeTime as VirtualClock
from tests.test_drill import GOOD, T0, Clock, members
from tests.test_drill_restart import (
    MINUTES,
    QUICK_CLOCK,
    REPLIES,
    SECONDS,
    TRAINEES,
    FakeTime,
    _logged,
    _outcome,
    _reference,
)

CRASH_S = 300
REDIS = "redis://127.0.0.1:6379/0"


def _prepared(
    library: ScenarioLibrary, url: str, copy: str
) -> tuple[list[UserRow], int, list[str]]:
    """The team's drill planned at T0, the trainees' browsers signed in, and a copy."""
    store = Store.open(url)
    users = members(store, TRAINEES)
    runner = DrillRunner(store, library, Engine(store, library), clock=Clock())
    drill = runner.plan(library.drills["double11-peak"].model_copy(update={"minutes": MINUTES}),
                        users, starts_at=T0, seed=11)  # fmt: skip
    tokens = [secrets.token_urlsafe(32) for _ in users]
    for user, token in zip(users, tokens, strict=True):
        store.add_device(user.id, token_digest(token), "test")
    reference = Store.open(copy)
    copy_history(store, reference)
    reference.close()
    store.close()
    return users, drill, tokens


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
def test_the_other_process_takes_the_drill_over_when_one_is_killed(
    library: ScenarioLibrary, pg_schemas: PgSchemas, tmp_path: Path
) -> None:
    url, copy = pg_schemas.new_url(), pg_schemas.new_url()
    users, drill, tokens = _prepared(library, url, copy)
    clock = FakeTime(tmp_path)
    ports = [_free_port(), _free_port()]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    watch = Store.open(url)

    def count(sql: str, *params: object) -> int:
        row = watch.backend.fetchone(sql, params)
        return int(row[0]) if row else 0

    async def spawn(n: int) -> asyncio.subprocess.Process:
        folder = tmp_path / f"p{n}"
        folder.mkdir(exist_ok=True)
        proc = await _logged(
            folder, "--db", url, "serve", "web", "--port", str(ports[n]), "--redis", REDIS,
            env={**os.environ, **clock.env()}, constants=QUICK_CLOCK,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while "Web app on" not in (folder / "server.log").read_text(errors="replace"):
            assert proc.returncode is None and time.monotonic() < deadline
            await asyncio.sleep(0.02)
        return proc

    async def readiness(http: aiohttp.ClientSession, n: int) -> dict[str, object]:
        async with http.get(f"{bases[n]}/readyz") as answer:
            found: dict[str, object] = await answer.json()
            return found

    async def settled(second: int) -> None:
        now = T0 + second
        deadline = time.monotonic() + 120
        while True:
            due = count(
                "SELECT count(*) FROM drill_customers WHERE drill_id = ? AND next_at <= ?",
                drill,
                now,
            )
            ended = count("SELECT count(*) FROM drills WHERE id = ? AND status = 'ended'", drill)
            if not due and (ended or now < T0 + MINUTES * 60):
                return
            assert time.monotonic() < deadline, f"at {second} s: {due} due"
            await asyncio.sleep(0.01)

    async def run() -> tuple[tuple[object, ...], float]:
        procs = list(await asyncio.gather(spawn(0), spawn(1)))  # started side by side
        browsers = []
        for token in tokens:
            jar = aiohttp.CookieJar(unsafe=True)
            for base in bases:
                jar.update_cookies({COOKIE: token}, URL(base))
            browsers.append(aiohttp.ClientSession(cookie_jar=jar))
        http = aiohttp.ClientSession()
        took = -1.0
        try:
            deadline = time.monotonic() + 60
            while True:  # the two share the drill clock's parts out evenly
                parts = [(await readiness(http, n))["clock_parts"] for n in (0, 1)]
                # Started side by side, they may be seen halfway through sharing out (the
                # two are asked one after the other): wait for each part held by one.
                if parts[0] and parts[1] and sorted(parts[0] + parts[1]) == list(range(8)):  # type: ignore[operator]
                    break
                assert time.monotonic() < deadline, parts
                await asyncio.sleep(0.1)
            leader = 0
            alive = [0, 1]

            async def answer(who: int, label: str, second: int) -> None:
                n = alive[(who + second // 5) % len(alive)]  # the replies go to both
                base = bases[n]
                async with browsers[who].get(f"{base}/") as home:
                    page = await home.text()
                found = re.search(r'name="csrf" value="([^"]+)"', page)
                assert home.status == 200 and found, page[:300]
                form = {"csrf": found.group(1), "label": label, "text": GOOD,
                        "ref": f"{who}{label}{second}"}  # fmt: skip
                async with browsers[who].post(
                    f"{base}/drills/{drill}/reply",
                    data=form,
                    headers={"Origin": base, "Accept": "application/json"},
                ) as sent:
                    assert sent.status in (200, 400), await sent.text()  # 400: gone

            for second in SECONDS:
                before = count("SELECT count(*) FROM drill_events")
                clock.set(T0 + second)
                if second == CRASH_S:
                    deadline = time.monotonic() + 120
                    while count("SELECT count(*) FROM drill_events") == before:
                        assert time.monotonic() < deadline, "nothing came due at the crash"
                        await asyncio.sleep(0.01)
                    procs[leader].kill()  # kill -9 while the two apply what came due
                    killed_at = time.monotonic()
                    await procs[leader].wait()
                    alive = [1 - leader]
                    while (await readiness(http, alive[0]))["clock_parts"] != list(range(8)):
                        assert time.monotonic() - killed_at < 120, "no process took over"
                        await asyncio.sleep(0.05)
                    took = time.monotonic() - killed_at
                await settled(second)
                for at, who, label in REPLIES:
                    if at == second:
                        await answer(who, label, second)
            await settled(SECONDS[-1])
        finally:
            await http.close()
            for browser in browsers:
                await browser.close()
            for proc in procs:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                    await asyncio.wait_for(proc.wait(), 120)
        for n in (0, 1):
            said = (tmp_path / f"p{n}" / "server.log").read_text(errors="replace")
            assert "Traceback" not in said and "failed" not in said, said[-3000:]
        return _outcome(watch, drill), took

    try:
        crashed, took = asyncio.run(run())
    finally:
        watch.close()
    assert took >= 0  # it took over (how soon, on a loaded machine: the fake-clock test)
    assert crashed == asyncio.run(_reference(library, copy, users, drill))
    with contextlib.closing(Store.open(url)) as store:  # nothing graded twice, none lost
        unanswered = store.backend.fetchone(
            "SELECT count(*) FROM turns t WHERE t.role = 'trainee' AND NOT EXISTS (SELECT 1"
            " FROM turns a WHERE a.session_id = t.session_id AND a.idx = t.idx + 1)"
        )
        assert unanswered == (0,)
        by = store.backend.json_field("meta", "by")
        answering = store.backend.fetchone(
            f"SELECT count(DISTINCT {by}) FROM turns WHERE role = 'trainee'"
        )
        assert answering == (2,)  # both processes answered replies of the one drill


def test_the_drill_clock_parts_are_shared_out_evenly_and_move_when_a_process_goes() -> None:
    """Three processes on one Redis: 3, 3 and 2 parts; two stop: the last holds all 8."""

    async def main() -> None:
        space = f"test-db-{secrets.token_hex(6)}"  # processes of one database only
        first = Cluster(REDIS, space)
        await first.start()
        assert first.part() == (8, frozenset(range(8)))  # alone: the whole clock
        others = [Cluster(REDIS, space), Cluster(REDIS, space)]
        for other in others:
            await other.start()
        clusters = [first, *others]
        try:
            deadline = time.monotonic() + 30
            while sorted(len(_mine(c)) for c in clusters) != [2, 3, 3]:
                assert time.monotonic() < deadline, [_mine(c) for c in clusters]
                await asyncio.sleep(0.1)
            assert set().union(*(_mine(c) for c in clusters)) == set(range(8))  # each once
            await first.stop()
            await others[0].stop()
            deadline = time.monotonic() + 30
            while _mine(others[1]) != frozenset(range(8)):
                assert time.monotonic() < deadline, _mine(others[1])
                await asyncio.sleep(0.1)
        finally:
            for cluster in others[1:]:
                await cluster.stop()

    asyncio.run(main())


def _mine(cluster: Cluster) -> frozenset[int]:
    part = cluster.part()
    assert part is not None
    return part[1]


def test_a_dead_process_s_parts_of_the_drill_clock_move_within_5_s() -> None:
    """On a fake clock: two processes share the parts; one dies without a word."""

    async def main() -> None:
        clock = VirtualClock()
        shared = LocalCoordinator(clock=clock.clock)
        a, b = (Cluster(None, shared=shared, clock=clock.clock, sleep=clock.sleep) for _ in "ab")
        await a.start()
        await b.start()
        await clock.advance(3.0)  # a few balancing rounds
        assert len(_mine(a)) == len(_mine(b)) == 4
        for task in (a._balancing, a._alive._task):  # a dies: no renewal, no release
            assert task is not None
            task.cancel()
        await clock.advance(5.0)
        assert _mine(b) == frozenset(range(8))
        await b.stop()

    asyncio.run(main())
