"""A drill server killed mid-drill, on each channel, ends exactly where an unbroken run does.

One team of 20 trainees, 3 customers each at once (the Double 11 peak preset). The real
server (`trainer serve telegram` against the fake Bot API, `trainer serve web` over HTTP)
runs under libfaketime (Debian's ``faketime``): its clock is a file the test writes, so
customers arrive, nudge and leave exactly when the test says while everything else in the
process runs as in production. Trainees answer through the channel on a fixed schedule.
Mid-drill the server gets SIGKILL while it applies what came due, and is restarted:

- ``down-past-the-end``: down for 150 drill seconds, past the drill's end; restarted, it
  applies everything that came due meanwhile (departures, the end).
- ``back-mid-drill``: down for 45 drill seconds, back 195 s into the 6-minute drill; it
  catches up, then customers go on arriving, nudging and leaving, and the trainees go on
  answering through the channel until the end.

Replies sent while the server is down get what a real trainee gets. In Telegram the Bot
API keeps the messages, and the restarted server fetches them and answers each one then,
on its own clock (the server does not use the message's date). On the web the post fails
to connect, and the page keeps the text and its reference (``drill.js``), so the trainee
sends it again once the server is back. Either way the reply counts when the restarted
server takes it in, which is what the reference does (:meth:`Outage.taken`).

The same drill with the same replies at the same times, run in-process without a crash on
a copy of the starting database, is the reference: each reply is graded once if it takes
it and not at all if it refuses it, and every customer's state and transcript, the
leaderboard and the number of grades must be equal.
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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
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

FAKETIME = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))), None)
"""libfaketime's thread-safe build: the plain one shares its parse of the clock file between
threads unlocked, so a server thread now and then read the real time (an event applied
before it was due, a reply refused as after the drill)."""
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


Reply = tuple[int, int, str]
"""(drill second, trainee, customer): who sends an answer to whom, and when."""


@dataclass(frozen=True)
class Outage:
    """When the server is killed, how long it stays down, and who answers whom when."""

    crash_s: int
    down_s: int
    replies: tuple[Reply, ...]

    @property
    def back_s(self) -> int:
        return self.crash_s + self.down_s

    def down(self, second: int) -> bool:
        return self.crash_s < second < self.back_s

    def taken(self) -> list[Reply]:
        """The replies as the server takes them in: one sent while it is down, once back."""
        return [(self.back_s if self.down(at) else at, who, n) for at, who, n in self.replies]


def _each(second: int, trainees: range, customers: str) -> list[Reply]:
    """At ``second``, each of ``trainees`` answers their customer named in ``customers``."""
    labels = customers.split()
    assert len(labels) == len(trainees)
    return [(second, who, label) for who, label in zip(trainees, labels, strict=True)]


PAST_THE_END = Outage(CRASH_S, DOWN_S, tuple(REPLIES))
BACK_MID_DRILL = Outage(
    150,
    45,
    (
        *[(30, i, "C1") for i in range(10)],
        *[(45, i, "C2") for i in range(10, TRAINEES)],
        *[(95, i, "C2") for i in range(10)],
        *[(100, i, "C1") for i in range(10, TRAINEES)],
        # while the server is down (all these customers wrote before the crash)
        *_each(165, range(0, TRAINEES, 2), "C2 C2 C2 C5 C5 C1 C6 C1 C1 C6"),
        *_each(180, range(1, TRAINEES, 2), "C6 C6 C5 C6 C2 C1 C6 C4 C1 C1"),
        # after the restart
        *_each(210, range(0, TRAINEES, 2), "C7 C9 C7 C7 C5 C7 C6 C1 C8 C6"),
        *_each(240, range(1, TRAINEES, 2), "C11 C7 C5 C7 C2 C7 C6 C8 C8 C9"),
        *_each(280, range(0, TRAINEES, 2), "C8 C12 C10 C9 C9 C7 C8 C9 C11 C6"),
        *_each(320, range(1, TRAINEES, 2), "C15 C12 C9 C11 C5 C7 C13 C9 C13 C13"),
        *[(340, i, "C1") for i in range(0, TRAINEES, 5)],
    ),
)
"""Back 195 s into the drill; the replies answer customers still there, and some gone."""
OUTAGES = {"down-past-the-end": PAST_THE_END, "back-mid-drill": BACK_MID_DRILL}


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
    return (await _replay(library, path, users, drill, REPLIES))[0]


async def _replay(
    library: ScenarioLibrary,
    path: Path,
    users: list[UserRow],
    drill: int,
    replies: Sequence[Reply],
) -> tuple[tuple[object, ...], list[bool]]:
    """:func:`_reference`, and whether each reply was taken (False: refused)."""
    store = Store.open(path)
    if store.backend.dialect == "sqlite":  # a copy thrown away after: no waiting for the disk
        store.backend.execute("PRAGMA synchronous=OFF")
    clock = Clock()
    runner = DrillRunner(store, library, Engine(store, library), clock=clock)
    taken = [False] * len(replies)
    for second in SECONDS:
        clock.now = T0 + second
        await runner.tick()
        for n, (at, who, label) in enumerate(replies):
            if at == second:
                with contextlib.suppress(DrillRefused):  # gone: refused on the channel too
                    await runner.reply(users[who], drill, label, GOOD)
                    taken[n] = True
    try:
        return _outcome(store, drill), taken
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


Send = Callable[[int, str, int], Awaitable[None]]
"""A trainee (index) answers a customer (label) at a drill second, through the channel."""


async def _drive(
    db: Path,
    drill: int,
    clock: FakeTime,
    outage: Outage,
    spawn: Callable[[], Awaitable[asyncio.subprocess.Process]],
    answer: Send,
    *,
    hold: Send,
    resume: Callable[[], Awaitable[None]],
    outbox: bool,
) -> tuple[object, ...]:
    """Move the server's clock step by step, answer on schedule, kill it mid-way.

    ``answer`` sends a reply while the server runs and returns once it was answered or
    refused; ``hold`` sends one while it is down; ``resume``, once it is back, returns
    when what was sent meanwhile has been answered. Returns the drill's outcome.
    """
    proc = await spawn()
    try:
        for second in SECONDS:
            due = [(who, label) for at, who, label in outage.replies if at == second]
            if outage.down(second):  # nothing runs, customers go on waiting
                for who, label in due:
                    await hold(who, label, second)
                continue
            if second == outage.back_s:
                proc = await spawn()  # its clock already says so
            before = _count(db, "SELECT count(*) FROM drill_events")
            clock.set(T0 + second)
            if second == outage.crash_s:
                deadline = time.monotonic() + 120
                while _count(db, "SELECT count(*) FROM drill_events") == before:
                    assert time.monotonic() < deadline, "nothing came due at the crash"
                    await asyncio.sleep(0.01)
                proc.kill()  # kill -9 while it applies what came due
                await proc.wait()
                clock.set(T0 + outage.back_s)
                continue
            await _settled(db, drill, second, outbox=outbox)
            if second == outage.back_s:
                await resume()
                await _settled(db, drill, second, outbox=outbox)
            for who, label in due:
                await answer(who, label, second)
        if proc.returncode is not None:  # down past the drill's end
            proc = await spawn()
        await _settled(db, drill, SECONDS[-1], outbox=outbox)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 120)
    said = (db.parent / "server.log").read_text(errors="replace")
    assert "Traceback" not in said and "failed" not in said, said[-3000:]
    latest = T0 + max(SECONDS[-1], outage.back_s)
    odd = "SELECT count(*) FROM drill_events WHERE done_at < due_at - 0.001 OR done_at > ?"
    assert not _count(db, odd, latest), "the server read a time the test never set"
    store = Store.open(db)
    try:
        return _outcome(store, drill)
    finally:
        store.close()


def _graded(db: Path) -> dict[str, int]:
    """How many trainee turns each incoming message's reference has."""
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
        rows = con.execute(
            "SELECT json_extract(meta, '$.ref'), count(*) FROM turns"
            " WHERE role = 'trainee' GROUP BY 1"
        ).fetchall()
    return {str(ref): int(count) for ref, count in rows if ref is not None}


async def _compared(
    library: ScenarioLibrary,
    db: Path,
    users: list[UserRow],
    drill: int,
    outage: Outage,
    crashed: tuple[object, ...],
    refs: Mapping[Reply, str],
    said: Mapping[Reply, str],
) -> None:
    """The crashed run ends as the reference does, and the schedule tested what it says.

    ``refs`` is the reference each reply reached the server with; ``said``, what the
    channel answered it (if the test knows).
    """
    reference, taken = await _replay(
        library, db.with_suffix(".ref.db"), users, drill, outage.taken()
    )
    graded = _graded(db)
    wrong = {
        reply: (graded.get(refs[reply], 0), int(ok), said.get(reply, ""))
        for reply, ok in zip(outage.replies, taken, strict=True)
        if graded.get(refs[reply], 0) != ok
    }
    assert not wrong, f"reply: (times graded, in the reference, what it got): {wrong}"
    assert crashed == reference
    customers = crashed[0]
    assert isinstance(customers, list)
    assert any(row[2] == "abandoned" for row in customers)  # the outage made some leave
    if outage.back_s < MINUTES * 60:  # replies sent while down, and after, were graded
        sent = [at for at, _, _ in outage.replies]
        down = [ok for at, ok in zip(sent, taken, strict=True) if outage.down(at)]
        after = [ok for at, ok in zip(sent, taken, strict=True) if at > outage.back_s]
        assert any(down) and any(after), (down, after)
        assert not all(down) and not all(after), (down, after)  # and some came too late


@pytest.mark.slow
@pytest.mark.parametrize("outage", OUTAGES.values(), ids=OUTAGES.keys())
def test_a_telegram_server_killed_mid_drill_ends_where_an_unbroken_run_does(
    library: ScenarioLibrary, tmp_path: Path, outage: Outage
) -> None:
    db = tmp_path / "bot.db"
    users, drill = _prepared(library, db)
    clock = FakeTime(tmp_path)
    refs: dict[Reply, str] = {}  # each reply's update id
    said: dict[Reply, str] = {}  # what the chat got after it (sent while up)

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

            def send(who: int, label: str, second: int) -> int:
                """The trainee quotes the customer's latest message; the update's id."""
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
                name = users[who].name  # as the account knows it (Telegram renames it)
                update = api.message(chat, GOOD, lang="zh", first_name=name, reply_to=quoted)
                refs[second, who, label] = str(update)
                return update

            async def answer(who: int, label: str, second: int) -> None:
                chat = int(users[who].chat_id or 0)
                before = len(api.texts(chat))
                send(who, label, second)
                texts = await api.wait_texts(chat, before + 1, timeout=120)  # answered or refused
                said[second, who, label] = " | ".join(texts[before:])

            held: list[int] = []

            async def hold(who: int, label: str, second: int) -> None:
                held.append(send(who, label, second))  # the Bot API keeps it till asked

            async def resume() -> None:
                """Wait until each was processed (its answer or refusal sent)."""
                marks = ", ".join("?" * len(held))
                done = f"SELECT count(*) FROM updates WHERE update_id IN ({marks}) AND status = ?"
                deadline = time.monotonic() + 120
                while (answered := _count(db, done, *held, "done")) < len(held):
                    assert time.monotonic() < deadline, (
                        f"{answered} of {len(held)} replies sent while down answered, "
                        f"{api.pending_updates} updates left at the Bot API"
                    )
                    await asyncio.sleep(0.01)

            return await _drive(
                db, drill, clock, outage, spawn, answer, hold=hold, resume=resume, outbox=True
            )

    crashed = asyncio.run(run())
    asyncio.run(_compared(library, db, users, drill, outage, crashed, refs, said))


@pytest.mark.slow
@pytest.mark.parametrize("outage", OUTAGES.values(), ids=OUTAGES.keys())
def test_a_web_server_killed_mid_drill_ends_where_an_unbroken_run_does(
    library: ScenarioLibrary, tmp_path: Path, outage: Outage
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
    refs: dict[Reply, str] = {}  # each reply's form reference, as the server stores it
    said: dict[Reply, str] = {}  # the last answer to each

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
        pages: dict[int, str] = {}  # each trainee's form token, from the page they have open
        unsent: list[tuple[Reply, dict[str, str]]] = []
        try:

            def form(who: int, label: str, second: int) -> dict[str, str]:
                ref = f"{who}.{label}.{second}"
                refs[second, who, label] = "web:" + ref  # as the server stores it
                return {"csrf": pages[who], "label": label, "text": GOOD, "ref": ref}

            async def post(reply: Reply, sending: dict[str, str]) -> None:
                async with browsers[reply[1]].post(
                    f"{base}/drills/{drill}/reply",
                    data=sending,
                    headers={"Origin": base, "Accept": "application/json"},
                ) as sent:
                    said[reply] = f"{sent.status} {await sent.text()}"
                    assert sent.status in (200, 400), said[reply]  # 400: gone

            async def answer(who: int, label: str, second: int) -> None:
                async with browsers[who].get(f"{base}/") as home:  # its forms carry the token
                    page = await home.text()
                found = re.search(r'name="csrf" value="([^"]+)"', page)
                assert home.status == 200 and found, page[:300]
                pages[who] = found.group(1)
                await post((second, who, label), form(who, label, second))

            async def hold(who: int, label: str, second: int) -> None:
                assert who in pages, f"trainee {who} never had the page open"
                sending = form(who, label, second)
                with pytest.raises(aiohttp.ClientError):  # the page says it did not go
                    await post((second, who, label), sending)
                unsent.append(((second, who, label), sending))

            async def resume() -> None:
                for reply, sending in unsent:  # sent again, the same reference
                    await post(reply, sending)

            return await _drive(
                db, drill, clock, outage, spawn, answer, hold=hold, resume=resume, outbox=False
            )
        finally:
            for http in browsers:
                await http.close()

    crashed = asyncio.run(run())
    asyncio.run(_compared(library, db, users, drill, outage, crashed, refs, said))


@pytest.mark.parametrize("outage", OUTAGES.values(), ids=OUTAGES.keys())
def test_every_scheduled_reply_falls_in_the_drill(outage: Outage) -> None:
    """Sent while the server is up, or taken in once it is back before the drill's end.

    One reply per trainee at a second: the order of a trainee's replies is then the same
    in the reference as on the channel.
    """
    assert outage.crash_s in SECONDS and outage.crash_s < outage.back_s
    assert outage.back_s in SECONDS or outage.back_s > SECONDS[-1]  # restarted on a step
    taken = outage.taken()
    for (at, _, _), (when, _, _) in zip(outage.replies, taken, strict=True):
        assert at in SECONDS and at < MINUTES * 60, at
        assert at not in (outage.crash_s, outage.back_s), at
        assert when < MINUTES * 60, at  # not while down past the drill's end
    assert len({(when, who) for when, who, _ in taken}) == len(taken)
