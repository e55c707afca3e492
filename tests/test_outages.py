"""PostgreSQL and Redis going away and coming back while the trainer runs.

On servers of the test's own (so stopping them touches no other test). A reply an outage
of the database cuts off is either refused with a clear message (nothing of it stored) or
kept and answered once the database is back; it is never half stored, never graded twice,
and the trainer is never restarted for it. Live updates between processes come back with
Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import re
import secrets
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from aiohttp.test_utils import TestServer
from tgharness import BotHarness
from yarl import URL

from bot.cluster import Cluster
from bot.content import ScenarioLibrary
from bot.drill.runner import DrillRunner
from bot.engine import Engine
from bot.service import Training, token_digest
from bot.storage import Store, StoreUnavailable
from bot.storage.backends import PostgresBackend
from bot.storage.breaker import RETRY_S
from bot.web.app import COOKIE, WebApp
from tests.databases import PgSchemas, PrivatePostgres
from tests.fakeclock import FakeTime
from tests.test_coordination import RedisServer
from tests.test_drill import GOOD, T0, solo
from tests.test_drill_restart import _logged
from tests.test_telegram import KETTLE_EN


def _answered_once(store: Store, session_id: str) -> list[str]:
    """The session's roles in order; asserts every reply has its grades, once."""
    turns = store.turns(session_id)
    grades = store.grades(session_id)
    for turn in turns:
        if turn.role == "trainee":
            dimensions = [g.dimension for g in grades.get(turn.idx, [])]
            assert dimensions and len(dimensions) == len(set(dimensions)), (turn.idx, grades)
    return [t.role for t in turns]


async def _answering_again(store: Store) -> None:
    """Wait until the store answers again (it tries the database in the background)."""
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(StoreUnavailable):
            if store.ping():
                return
        assert time.monotonic() < deadline, "the store never answered again"
        await asyncio.sleep(0.1)


QUICK_REFUSAL = {"bot.storage.backends.BUSY_TIMEOUT_S": 2.0}
"""How long a server waits for a database connection before it refuses (5 s in production).

While the database is down every request waits that long; 2 s is libpq's shortest connect
timeout, and a connection to a database that is up comes in milliseconds."""


@pytest.fixture(scope="module")
def _server() -> Iterator[PrivatePostgres]:
    """One private server for the module's tests (making one takes seconds)."""
    server = PrivatePostgres()
    server.start()
    yield server
    server.close()


class OwnDatabase:
    """A database of the test's own on the private server, which it may stop and start."""

    def __init__(self, server: PrivatePostgres, name: str) -> None:
        self.server = server
        self.url = f"{server.url.rsplit('/', 1)[0]}/{name}"

    def stop(self, mode: str = "fast") -> None:
        """Stop the whole server (``immediate``: as a crash would)."""
        self.server.stop(mode)

    def start(self) -> None:
        """Start the server again and wait until it takes connections."""
        self.server.start()


@pytest.fixture
def postgres(_server: PrivatePostgres, monkeypatch: pytest.MonkeyPatch) -> OwnDatabase:
    """A new database on the module's server, running (a test before may have left it down)."""
    try:
        admin = psycopg.connect(_server.url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError:
        _server.start()
        admin = psycopg.connect(_server.url, autocommit=True, connect_timeout=5)
    name = f"outage_{secrets.token_hex(4)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    for constant, value in QUICK_REFUSAL.items():  # stores the test opens here
        module, attribute = constant.rsplit(".", 1)
        monkeypatch.setattr(importlib.import_module(module), attribute, value)
    return OwnDatabase(_server, name)


def test_a_reply_cut_off_by_a_database_restart_is_answered_once_it_is_back(
    library: ScenarioLibrary, postgres: OwnDatabase
) -> None:
    store = Store.open(postgres.url)
    svc = Training(store, library, Engine(store, library), platform="web")
    actor = svc.register("7", name="Ann", lang="en")

    async def run() -> None:
        session, _ = await svc.start_practice(actor, "damaged-kettle")
        await svc.reply(session, KETTLE_EN[0], ref="r1", postbox=None)
        speak = session._speak

        async def cut(*args: Any) -> Any:  # the server dies while the answer is written
            spoken = await speak(*args)
            postgres.stop("immediate")
            return spoken

        session._speak = cut  # type: ignore[method-assign]
        with pytest.raises(StoreUnavailable):
            await svc.reply(session, KETTLE_EN[1], ref="r2", postbox=None)
        postgres.start()
        await _answering_again(store)
        again, pending = await svc.session_for(actor)  # read afresh from the store
        assert again is not None and again is not session and pending is not None
        assert await svc.reply(again, KETTLE_EN[1], ref="r2", postbox=None) is None  # kept
        roles = _answered_once(store, session.id)
        assert roles == ["customer", "trainee", "customer", "trainee", "customer"]

    try:
        asyncio.run(run())
    finally:
        store.close()


def _asking(backend: PostgresBackend, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads that ask the backend's pool for a connection, in order."""
    pool = backend.pool
    getconn = pool.getconn
    asked: list[str] = []

    def counted(timeout: float | None = None) -> Any:
        asked.append(threading.current_thread().name)
        return getconn(timeout)

    monkeypatch.setattr(pool, "getconn", counted)
    return asked


def test_while_the_database_is_down_the_store_refuses_at_once_and_tries_it_once_per_interval(
    postgres: OwnDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the call that finds it down waits; then one probe per interval, in a thread."""
    store = Store.open(postgres.url)
    backend = store.backend
    assert isinstance(backend, PostgresBackend)
    clock = FakeTime()
    backend.breaker.clock = clock.clock
    asked = _asking(backend, monkeypatch)
    me = threading.current_thread().name

    def refused() -> None:
        with pytest.raises(StoreUnavailable):
            store.ping()

    try:
        postgres.stop("immediate")
        refused()  # this call waited for a connection and found the database down
        asked.clear()
        for _ in range(10):
            refused()
        with pytest.raises(StoreUnavailable), store.transaction():
            pass
        assert asked == []  # nobody waits for the database within the interval
        clock.now += RETRY_S
        for _ in range(10):  # the first starts one probe; all are refused meanwhile
            refused()
        backend.breaker.wait()
        refused()  # the probe found it still down: the next is an interval away
        assert asked == ["store-probe"]
        postgres.start()
        refused()
        assert asked == ["store-probe"]
        deadline = time.monotonic() + 60
        while True:  # back once a probe gets a connection (the pool reconnects meanwhile)
            clock.now += RETRY_S
            with contextlib.suppress(StoreUnavailable):
                store.ping()
            backend.breaker.wait()
            with contextlib.suppress(StoreUnavailable):
                if store.ping():
                    break
            assert time.monotonic() < deadline, "the store never answered again"
        assert set(asked[:-1]) == {"store-probe"} and asked[-1] == me  # probes until then
    finally:
        store.close()


def test_closing_while_the_database_is_down_releases_the_pool_and_logs_the_writes_lost(
    postgres: OwnDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """A server shutting down during an outage: its deferred writes cannot be flushed.

    The pool, its threads and the breaker's probe are released all the same, and an error
    line says how many writes of which kind were lost.
    """
    before = set(threading.enumerate())
    store = Store.open(postgres.url)
    backend = store.backend
    assert isinstance(backend, PostgresBackend)
    clock = FakeTime()
    backend.breaker.clock = clock.clock
    store.remember_verdict("key", "answer", "model")
    store.inbox_done(1, 7, defer=True)
    store.inbox_done(1, 8, defer=True)
    postgres.stop("immediate")
    with pytest.raises(StoreUnavailable):
        store.ping()  # finds it down
    clock.now += RETRY_S
    with pytest.raises(StoreUnavailable):
        store.ping()  # starts a probe, which waits for a connection
    with caplog.at_level(logging.ERROR, logger="bot.storage"):
        store.close()
    assert backend.pool.closed
    assert [t.name for t in threading.enumerate() if t not in before] == []
    (said,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "3 deferred writes lost (updates: 2, judge_cache: 1)" in said, said
    assert "cannot be reached" in said, said


@pytest.mark.slow
def test_the_web_app_refuses_while_the_database_is_down_and_carries_on_after(
    postgres: OwnDatabase, tmp_path: Path
) -> None:
    store = Store.open(postgres.url)
    user = store.upsert_user("web", "ann", name="Ann", lang="en")
    token = secrets.token_urlsafe(32)
    store.add_device(user.id, token_digest(token), "test")
    store.close()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}"

    async def run() -> None:
        proc = await _logged(
            tmp_path,
            "--db",
            postgres.url,
            "serve",
            "web",
            "--port",
            str(port),
            env=dict(os.environ),
            constants=QUICK_REFUSAL,
        )
        deadline = time.monotonic() + 120
        while "Web app on" not in (tmp_path / "server.log").read_text(errors="replace"):
            assert proc.returncode is None and time.monotonic() < deadline
            await asyncio.sleep(0.05)
        jar = aiohttp.CookieJar(unsafe=True)
        jar.update_cookies({COOKIE: token}, URL(base))
        http = aiohttp.ClientSession(cookie_jar=jar, headers={"Accept-Language": "en"})

        async def form(path: str, **fields: str) -> tuple[int, str]:
            async with http.get(f"{base}/") as home:
                found = re.search(r'name="csrf" value="([^"]+)"', await home.text())
            assert found
            async with http.post(
                f"{base}{path}", data={"csrf": found.group(1), **fields},
                headers={"Origin": base},
            ) as answer:  # fmt: skip
                return answer.status, await answer.text()

        try:
            status, _ = await form("/practice", scenario="damaged-kettle", mode="coach")
            assert status == 200
            look = Store.open(postgres.url)
            try:
                (session_id,) = [s.id for s in look.sessions()]
            finally:
                look.close()
            path = f"/practice/{session_id}/reply"
            assert (await form(path, text=KETTLE_EN[0], ref="r1"))[0] == 200

            postgres.stop("immediate")
            async with http.get(f"{base}/readyz") as ready:
                assert ready.status == 503 and (await ready.json())["database"] is False
            async with http.post(f"{base}{path}", data={"text": "x"}) as refused:
                said = await refused.text()
                assert refused.status == 503 and "database cannot be reached" in said
            postgres.start()
            deadline = time.monotonic() + 60
            while True:  # ready again once its pool reconnected (as a load balancer sees it)
                async with http.get(f"{base}/readyz") as ready:
                    if ready.status == 200:
                        break
                assert time.monotonic() < deadline, "never ready again"
                await asyncio.sleep(0.2)
            status, page = await form(path, text=KETTLE_EN[1], ref="r2")
            assert status == 200 and KETTLE_EN[1][:40] in page  # the chat shows it, answered
        finally:
            await http.close()
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 120)
        check = Store.open(postgres.url)
        try:
            roles = _answered_once(check, session_id)
            assert roles == ["customer", "trainee", "customer", "trainee", "customer"]
        finally:
            check.close()
        said = (tmp_path / "server.log").read_text(errors="replace")
        assert "Traceback" not in said, said[-3000:]

    asyncio.run(run())


def test_a_statement_that_fails_on_a_server_that_answers_refuses_nothing_after_it(
    pg_schemas: PgSchemas,
) -> None:
    """A cancelled statement is unavailable too (503), but the server is there: no breaker."""
    store = Store.open(pg_schemas.new_url())
    try:
        with pytest.raises(StoreUnavailable, match="statement timeout"), store.transaction() as tx:
            tx.execute("SET LOCAL statement_timeout = 50")
            tx.fetchone("SELECT pg_sleep(5)")
        assert store.ping()
    finally:
        store.close()


def test_while_the_database_is_down_pages_are_refused_without_waiting_for_it(
    library: ScenarioLibrary, postgres: OwnDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a request found the database down, the event loop waits for it no more.

    Many pages at once, liveness and readiness all answer (503 for what needs the
    database) without a request asking the connection pool on the loop, and pages are
    served again by themselves once the database is back.
    """
    store = Store.open(postgres.url)
    svc = Training(store, library, Engine(store, library), platform="web")
    user = store.upsert_user("web", "ann", name="Ann", lang="en")
    token = secrets.token_urlsafe(32)
    store.add_device(user.id, token_digest(token), "test")
    assert isinstance(store.backend, PostgresBackend)
    asked = _asking(store.backend, monkeypatch)

    async def run() -> None:
        server = TestServer(WebApp(svc).app, host="127.0.0.1")
        await server.start_server()
        jar = aiohttp.CookieJar(unsafe=True)
        jar.update_cookies({COOKIE: token}, server.make_url("/"))
        http = aiohttp.ClientSession(cookie_jar=jar, headers={"Accept-Language": "en"})

        async def get(path: str) -> tuple[int, str, str | None]:
            async with http.get(server.make_url(path)) as answer:
                return answer.status, await answer.text(), answer.headers.get("Retry-After")

        try:
            assert (await get("/"))[0] == 200
            postgres.stop("immediate")
            status, page, retry = await get("/")  # finds the database down
            assert status == 503 and "database cannot be reached" in page and retry
            asked.clear()
            *pages, alive, ready = await asyncio.gather(
                *(get("/") for _ in range(8)), get("/healthz"), get("/readyz")
            )
            assert all(s == 503 and "database cannot be reached" in p and r for s, p, r in pages)
            assert alive[0] == 200 and ready[0] == 503
            on_the_loop = [t for t in asked if t == threading.current_thread().name]
            assert not on_the_loop, f"{len(on_the_loop)} requests waited for the database"
            postgres.start()
            deadline = time.monotonic() + 60
            while (await get("/"))[0] != 200:  # tried again in the background meanwhile
                assert time.monotonic() < deadline, "pages never came back"
                await asyncio.sleep(0.2)
            assert (await get("/readyz"))[0] == 200
        finally:
            await http.close()
            await server.close()

    try:
        asyncio.run(run())
    finally:
        store.close()


def test_while_the_database_is_down_the_telegram_bot_refuses_updates_without_waiting_for_it(
    postgres: OwnDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Webhook calls are refused (Telegram sends them again) without a wait on the loop.

    Once the database is back, each update sent again is taken and answered once.
    """
    store = Store.open(postgres.url)
    assert isinstance(store.backend, PostgresBackend)
    asked = _asking(store.backend, monkeypatch)

    async def run() -> None:
        async with BotHarness(store, webhook=True) as h:
            await h.say(31, "/start")
            sent = len(h.api.texts(31))
            postgres.stop("immediate")
            updates = [h.api.message(31, "/help") for _ in range(9)]
            assert await h.deliver(updates[0]) == 500  # found the database down
            asked.clear()
            assert await asyncio.gather(*(h.deliver(u) for u in updates[1:])) == [500] * 8
            on_the_loop = [t for t in asked if t == threading.current_thread().name]
            assert not on_the_loop, f"{len(on_the_loop)} calls waited for the database"
            postgres.start()
            deadline = time.monotonic() + 60
            for update in updates:  # as Telegram sends them again, in order
                while await h.deliver(update) != 200:
                    assert time.monotonic() < deadline, "the bot never took updates again"
                    await asyncio.sleep(0.2)
            await h.idle()
            assert len(h.api.texts(31)) == sent + 9  # each answered once

    try:
        asyncio.run(run())
    finally:
        store.close()


def test_live_updates_between_processes_outlive_a_redis_restart(
    library: ScenarioLibrary, pg_schemas: PgSchemas, tmp_path: Path
) -> None:
    """Process A shows a trainee's workspace; the trainee's replies reach process B.

    Each reply B takes in wakes A's workspace through Redis, before and after Redis is
    killed and started again, with neither process restarted.
    """
    redis = RedisServer(tmp_path)
    redis.start()
    url = pg_schemas.new_url()
    first = Store.open(url)
    clock, _, me, drill, _ = solo(library, first, seed=5)
    second = Store.open(url)

    async def main() -> None:
        await redis.ready()
        sides = []
        for store in (first, second):
            cluster = Cluster(redis.url, url)
            runner = DrillRunner(store, library, Engine(store, library, peers=cluster), clock=clock)
            runner.announce = cluster.announce
            await cluster.start(heard=runner.heard)
            sides.append((cluster, runner))
        a, b = (runner for _, runner in sides)
        try:
            clock.now = T0 + 1
            await b.tick()  # the first customer arrives

            async def woken_by_a_reply(at: float, within: float) -> None:
                with a.watch(me.id) as changed:
                    clock.now = T0 + at
                    await b.reply(me, drill, "C1", GOOD)
                    await asyncio.wait_for(changed.wait(), within)  # through Redis

            await woken_by_a_reply(5, 30)
            redis.kill()
            redis.start()
            await redis.ready()
            deadline, at = time.monotonic() + 30, 10
            while True:  # the subscriber is back once a message gets through
                try:
                    await woken_by_a_reply(at, 2)
                    break
                except TimeoutError:
                    assert time.monotonic() < deadline, "live updates never came back"
                    at += 1
        finally:
            for cluster, _ in sides:
                await cluster.stop()

    try:
        asyncio.run(main())
    finally:
        first.close()
        second.close()
        if redis.proc is not None:
            redis.kill()
