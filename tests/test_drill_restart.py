"""A drill server killed mid-drill, on each channel, ends exactly where an unbroken run does.

One team of 20 trainees, 3 customers each at once (the Double 11 peak preset). The real
server (`trainer serve telegram` against the fake Bot API, `trainer serve web` over HTTP)
runs under libfaketime (Debian's ``faketime``): its clock is a file the test writes, so
customers arrive, nudge and leave exactly when the test says while everything else in the
process runs as in production. Trainees answer through the channel on a fixed schedule.
Mid-drill the server gets SIGKILL and stays down for 150 drill seconds, past the drill's
end: restarted, it applies everything that came due meanwhile (departures, the end).

The same drill with the same replies at the same times, run in-process without a crash on
a copy of the starting database, is the reference: every customer's state and transcript,
the leaderboard and the number of grades must be equal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import aiohttp
import pytest
from botapi import FakeBotAPI
from tgharness import bot_env, trainer
from yarl import URL

from bot.content import ScenarioLibrary
from bot.drill.report import standings
from bot.drill.runner import DrillRefused, DrillRunner
from bot.engine import Engine
from bot.service import token_digest
from bot.storage import Store, UserRow
from bot.web.app import COOKIE
from tests.test_drill import GOOD, T0, Clock, members, state
from tests.test_telegram_drill import LABELLED

FAKETIME = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))), None)
TRAINEES = 20
MINUTES = 6
STEP_S = 5
CRASH_S = 300
DOWN_S = 150
REPLIES = (
    [(30, i, "C1") for i in range(10)]
    + [(95, i, "C2") for i in range(10, TRAINEES)]
    + [(200, i, "C3") for i in range(0, TRAINEES, 2)]
    + [(280, i, "C1") for i in range(1, TRAINEES, 3)]
)
"""(drill second, trainee, customer): who answers whom, and when."""
SECONDS = list(range(0, MINUTES * 60 + 2 * STEP_S, STEP_S))


def _prepared(library: ScenarioLibrary, path: Path) -> tuple[list[UserRow], int]:
    """A store with the team's drill planned at T0, and a copy of it for the reference."""
    store = Store.open(path)
    users = members(store, TRAINEES)
    runner = DrillRunner(store, library, Engine(store, library), clock=Clock())
    drill = runner.plan(library.drills["double11-peak"].model_copy(update={"minutes": MINUTES}),
                        users, starts_at=T0, seed=11)  # fmt: skip
    with contextlib.closing(sqlite3.connect(path.with_suffix(".ref.db"))) as copy:
        store.backend.db.conn.backup(copy)
    store.close()
    return users, drill


async def _reference(
    library: ScenarioLibrary, path: Path, users: list[UserRow], drill: int
) -> tuple[object, ...]:
    """The drill run unbroken in-process, with the same replies at the same times."""
    store = Store.open(path)
    if store.backend.dialect == "sqlite":  # a copy thrown away after: no waiting for the disk
        store.backend.execute("PRAGMA synchronous=OFF")
    clock = Clock()
    runner = DrillRunner(store, library, Engine(store, library), clock=clock)
    for second in SECONDS:
        clock.now = T0 + second
        await runner.tick()
        for at, who, label in REPLIES:
            if at == second:
                with contextlib.suppress(DrillRefused):  # gone: refused on the channel too
                    await runner.reply(users[who], drill, label, GOOD)
    try:
        return _outcome(store, drill)
    finally:
        store.close()


def _outcome(store: Store, drill: int) -> tuple[object, ...]:
    """What must be equal: customers and transcripts, the leaderboard, the grades."""
    row = store.drill(drill)
    assert row is not None and row.status == "ended"
    board = standings(store, row)
    grades = store.backend.fetchone("SELECT count(*) FROM grades")[0]
    leaderboard = [(s.name, s.score, s.handled, s.abandoned, s.red_lines) for s in board.trainees]
    return state(store, drill), leaderboard, grades


class FakeTime:
    """The server's wall clock: a file libfaketime reads on every call."""

    def __init__(self, folder: Path) -> None:
        assert FAKETIME is not None, (
            "libfaketime is missing: install Debian's faketime (python3 dev.py test does)"
        )
        self.file = folder / "clock"
        self.set(T0 - 1)

    def set(self, at: float) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))
        partial = self.file.with_suffix(".new")
        partial.write_text(stamp + "\n")
        partial.replace(self.file)  # never a half-written time

    def env(self) -> dict[str, str]:
        return {
            "LD_PRELOAD": str(FAKETIME),
            "FAKETIME_TIMESTAMP_FILE": str(self.file),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # timeouts and the event loop run as usual
            "TZ": "UTC",
        }


QUICK_CLOCK = {"bot.drill.runner.CLOCK_S": 0.02}
"""The server moves its drills on every 20 ms, not every 200: each step of a test waits
for its next pass, and nothing it asserts depends on how often that comes."""


async def _logged(
    folder: Path,
    *args: str,
    env: dict[str, str],
    constants: Mapping[str, float] | None = None,
) -> asyncio.subprocess.Process:
    """A ``trainer`` process writing its output to ``server.log`` in ``folder``."""
    with (folder / "server.log").open("ab") as log:
        return await asyncio.create_subprocess_exec(
            *trainer(constants),
            *args,
            env=env,
            cwd=str(folder),
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )


def _count(db: Path, sql: str, *params: object) -> int:
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
        return int(con.execute(sql, params).fetchone()[0])


async def _settled(db: Path, drill: int, second: float, *, outbox: bool) -> None:
    """Wait until the server applied everything due by drill time ``second`` (and sent it)."""
    now = T0 + second
    deadline = time.monotonic() + 120
    while True:
        due = _count(
            db,
            "SELECT count(*) FROM drill_customers WHERE drill_id = ? AND next_at <= ?",
            drill,
            now,
        )
        ended = _count(db, "SELECT count(*) FROM drills WHERE id = ? AND status = 'ended'", drill)
        pending = (
            _count(db, "SELECT count(*) FROM outbox WHERE status = 'pending'") if outbox else 0
        )
        if not due and not pending and (ended or now < T0 + MINUTES * 60):
            return
        assert time.monotonic() < deadline, f"at {second} s: {due} due, {pending} unsent"
        await asyncio.sleep(0.01)


async def _drive(
    db: Path,
    drill: int,
    clock: FakeTime,
    spawn: Callable[[], Awaitable[asyncio.subprocess.Process]],
    answer: Callable[[int, str, int], Awaitable[None]],
    *,
    outbox: bool,
) -> tuple[object, ...]:
    """Move the server's clock step by step, answer on schedule, kill it mid-way.

    Returns the drill's outcome once it ended.
    """
    proc = await spawn()
    try:
        for second in SECONDS:
            if CRASH_S < second < CRASH_S + DOWN_S:
                continue  # down: nothing runs, customers go on waiting
            before = _count(db, "SELECT count(*) FROM drill_events")
            clock.set(T0 + second)
            if second == CRASH_S:
                deadline = time.monotonic() + 120
                while _count(db, "SELECT count(*) FROM drill_events") == before:
                    assert time.monotonic() < deadline, "nothing came due at the crash"
                    await asyncio.sleep(0.01)
                proc.kill()  # kill -9 while it applies what came due
                await proc.wait()
                clock.set(T0 + CRASH_S + DOWN_S)
                proc = await spawn()
                continue
            await _settled(db, drill, second, outbox=outbox)
            for at, who, label in REPLIES:
                if at == second:
                    await answer(who, label, second)
        await _settled(db, drill, SECONDS[-1], outbox=outbox)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 120)
    said = (db.parent / "server.log").read_text(errors="replace")
    assert "Traceback" not in said and "failed" not in said, said[-3000:]
    store = Store.open(db)
    try:
        return _outcome(store, drill)
    finally:
        store.close()


@pytest.mark.slow
def test_a_telegram_server_killed_mid_drill_ends_where_an_unbroken_run_does(
    library: ScenarioLibrary, tmp_path: Path
) -> None:
    db = tmp_path / "bot.db"
    users, drill = _prepared(library, db)
    clock = FakeTime(tmp_path)

    async def run() -> tuple[object, ...]:
        async with FakeBotAPI() as api:
            for user in users:
                api.user(int(user.chat_id or 0), lang="zh")

            async def spawn() -> asyncio.subprocess.Process:
                return await _logged(
                    tmp_path,
                    "serve",
                    "telegram",
                    env={**bot_env(api, db), **clock.env()},
                    constants=QUICK_CLOCK,
                )

            async def answer(who: int, label: str, second: int) -> None:
                chat = int(users[who].chat_id or 0)
                quoted = max(
                    (
                        message_id
                        for message_id, message in api.messages.get(chat, {}).items()
                        if (found := LABELLED.match(message.get("text") or ""))
                        and found.group(1) == label
                    ),
                    default=None,
                )
                assert quoted is not None, f"{label} never wrote to {chat}"
                before = len(api.texts(chat))
                name = users[who].name  # as the account knows it (Telegram renames it)
                api.message(chat, GOOD, lang="zh", first_name=name, reply_to=quoted)
                await api.wait_texts(chat, before + 1, timeout=120)  # answered or refused

            return await _drive(db, drill, clock, spawn, answer, outbox=True)

    crashed = asyncio.run(run())
    assert crashed == asyncio.run(_reference(library, db.with_suffix(".ref.db"), users, drill))
    customers = crashed[0]
    assert isinstance(customers, list)
    assert any(row[2] == "abandoned" for row in customers)  # the outage made some leave


@pytest.mark.slow
def test_a_web_server_killed_mid_drill_ends_where_an_unbroken_run_does(
    library: ScenarioLibrary, tmp_path: Path
) -> None:
    db = tmp_path / "web.db"
    users, drill = _prepared(library, db)
    store = Store.open(db)
    tokens = [secrets.token_urlsafe(32) for _ in users]  # each trainee's browser, signed in
    for user, token in zip(users, tokens, strict=True):
        store.add_device(user.id, token_digest(token), "test")
    store.close()
    clock = FakeTime(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}"

    async def run() -> tuple[object, ...]:
        async def spawn() -> asyncio.subprocess.Process:
            log = tmp_path / "server.log"
            start = log.stat().st_size if log.exists() else 0
            proc = await _logged(
                tmp_path, "--db", str(db), "serve", "web", "--port", str(port),
                env={**os.environ, **clock.env()}, constants=QUICK_CLOCK,
            )  # fmt: skip
            deadline = time.monotonic() + 120
            while "Web app on" not in log.read_text(errors="replace")[start:]:
                assert proc.returncode is None and time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.02)
            return proc

        browsers = []
        for token in tokens:
            jar = aiohttp.CookieJar(unsafe=True)
            jar.update_cookies({COOKIE: token}, URL(base))
            browsers.append(aiohttp.ClientSession(cookie_jar=jar))
        try:

            async def answer(who: int, label: str, second: int) -> None:
                http = browsers[who]
                async with http.get(f"{base}/") as home:  # its forms carry the form token
                    page = await home.text()
                found = re.search(r'name="csrf" value="([^"]+)"', page)
                assert home.status == 200 and found, page[:300]
                form = {
                    "csrf": found.group(1),
                    "label": label,
                    "text": GOOD,
                    "ref": f"{who}{label}{second}",
                }
                async with http.post(
                    f"{base}/drills/{drill}/reply",
                    data=form,
                    headers={"Origin": base, "Accept": "application/json"},
                ) as sent:
                    assert sent.status in (200, 400), await sent.text()  # 400: gone

            return await _drive(db, drill, clock, spawn, answer, outbox=False)
        finally:
            for http in browsers:
                await http.close()

    crashed = asyncio.run(run())
    assert crashed == asyncio.run(_reference(library, db.with_suffix(".ref.db"), users, drill))


def test_every_scheduled_reply_falls_in_the_drill_while_the_server_is_up() -> None:
    for at, _, _ in REPLIES:
        assert at in SECONDS and at < MINUTES * 60, at
        assert not CRASH_S <= at <= CRASH_S + DOWN_S, at
