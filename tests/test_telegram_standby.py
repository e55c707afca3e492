"""Several `trainer serve telegram` processes for one bot: one answers, the others stand by.

The lease itself is tested on a fake clock; two real processes on one PostgreSQL database
and the real Redis are killed and stopped in turn against the fake Bot API.
"""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

import pytest
from botapi import FakeBotAPI
from redis import Redis
from tgharness import bot_env, trainer

from bot.coordination import LocalCoordinator
from bot.storage import Store
from bot.telegram.app import _while_held
from bot.telegram.standby import BotLease
from tests.databases import PgSchemas
from tests.fakeclock import FakeTime
from tests.test_telegram import KETTLE_EN

REDIS = "redis://127.0.0.1:6379/0"
SHORT_LEASE = {"bot.telegram.standby.LEASE_S": 3.0}
"""The bot's lease outlives a killed process by 3 s, not 10: the standby waits that long.
The web processes' lease is as short in production (``bot.cluster.LEASE_S``)."""


class RedisAway(LocalCoordinator):
    """A coordinator that cannot be reached until ``back`` is set."""

    def __init__(self, shared: LocalCoordinator) -> None:
        super().__init__()
        self.shared = shared
        self.back = False

    async def hold(self, name: str, holder: str, ttl_s: float) -> bool:
        return self.back and await self.shared.hold(name, holder, ttl_s)

    async def holder(self, name: str) -> str | None:
        return await self.shared.holder(name) if self.back else None


def test_a_standby_takes_over_within_the_lease_once_the_answering_process_dies() -> None:
    async def main() -> None:
        clock = FakeTime()
        shared = LocalCoordinator(clock=clock.clock)
        a, b = (BotLease(shared, "42", sleep=clock.sleep) for _ in "ab")
        never = asyncio.Event()
        assert await a.acquire(never)
        keeping = asyncio.create_task(a.keep(never, asyncio.Event()))
        taking = asyncio.create_task(b.acquire(never))
        await clock.advance(60.0)  # a renews: b waits however long it takes
        assert not taking.done() and await shared.holder(a.name) == a.me
        keeping.cancel()  # a dies without a word
        await clock.advance(a.ttl_s + 1.0)
        assert taking.done() and taking.result()
        assert await shared.holder(b.name) == b.me

    asyncio.run(main())


def test_a_released_lease_is_taken_over_at_once_and_a_stopped_standby_gives_up() -> None:
    async def main() -> None:
        clock = FakeTime()
        shared = LocalCoordinator(clock=clock.clock)
        a, b = (BotLease(shared, "42", sleep=clock.sleep) for _ in "ab")
        stop_b = asyncio.Event()
        assert await a.acquire(asyncio.Event())
        taking = asyncio.create_task(b.acquire(stop_b))
        await clock.advance(2.0)
        await a.release()
        await clock.advance(1.0)
        assert taking.result()
        c = BotLease(shared, "42", sleep=clock.sleep)
        stop_c = asyncio.Event()
        waiting = asyncio.create_task(c.acquire(stop_c))
        await clock.advance(5.0)
        stop_c.set()  # SIGTERM to a standby
        await clock.advance(0.0)
        assert waiting.result() is False
        assert await shared.holder(c.name) == b.me

    asyncio.run(main())


def test_the_answering_process_carries_on_while_redis_is_away_and_yields_to_a_new_holder() -> None:
    async def main() -> None:
        clock = FakeTime()
        shared = LocalCoordinator(clock=clock.clock)
        flaky = RedisAway(shared)
        flaky.back = True
        a = BotLease(flaky, "42", sleep=clock.sleep)
        assert await a.acquire(asyncio.Event())
        lost = asyncio.Event()
        keeping = asyncio.create_task(a.keep(asyncio.Event(), lost))
        flaky.back = False  # nobody can take the lease: a answers on
        await clock.advance(120.0)
        assert not keeping.done()
        b = BotLease(shared, "42", sleep=clock.sleep)  # b reached Redis after a's lease ran out
        assert await b.acquire(asyncio.Event())
        b_keeping = asyncio.create_task(b.keep(asyncio.Event(), asyncio.Event()))
        await clock.advance(30.0)
        assert not keeping.done() and not lost.is_set()  # a cannot see it yet
        flaky.back = True
        await clock.advance(a.ttl_s)
        assert keeping.done() and lost.is_set()
        assert await shared.holder(a.name) == b.me
        b_keeping.cancel()

    asyncio.run(main())


class Broken(LocalCoordinator):
    """A coordinator whose renewals fail with an error of its own."""

    async def hold(self, name: str, holder: str, ttl_s: float) -> bool:
        if getattr(self, "broken", False):
            raise RuntimeError("a bug")
        return await super().hold(name, holder, ttl_s)


def test_a_renewal_that_fails_with_an_error_counts_as_lost() -> None:
    async def main() -> None:
        clock = FakeTime()
        shared = Broken(clock=clock.clock)
        a = BotLease(shared, "42", sleep=clock.sleep)
        assert await a.acquire(asyncio.Event())
        lost = asyncio.Event()
        keeping = asyncio.create_task(a.keep(asyncio.Event(), lost))
        shared.broken = True  # type: ignore[attr-defined]
        await clock.advance(a.ttl_s)
        assert keeping.done() and lost.is_set()

    asyncio.run(main())


def test_the_lease_is_renewed_while_a_stopping_process_finishes_its_updates() -> None:
    """SIGTERM starts a drain (up to 20 s by default): no standby may take over during it."""

    async def main() -> None:
        clock = FakeTime()
        shared = LocalCoordinator(clock=clock.clock)
        a, b = (BotLease(shared, "42", sleep=clock.sleep) for _ in "ab")
        stop = asyncio.Event()
        assert await a.acquire(asyncio.Event())
        drained = asyncio.Event()

        async def answer(until: asyncio.Event, lost: asyncio.Event) -> None:
            await until.wait()
            await clock.sleep(30.0)  # the updates in flight take long to finish
            drained.set()

        answering = asyncio.create_task(_while_held(a, stop, answer))
        taking = asyncio.create_task(b.acquire(asyncio.Event()))
        await clock.advance(5.0)
        stop.set()
        await clock.advance(29.0)
        assert not drained.is_set() and not taking.done()
        await clock.advance(2.0)
        assert drained.is_set() and answering.result() is True  # stopped, not lost
        await a.release()  # as serve() does next
        await clock.advance(1.0)
        assert taking.result()

    asyncio.run(main())


class Logged:
    """A trainer process whose log lines are read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reading = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.lines.append(line.decode(errors="replace"))

    async def said(self, words: str, times: int = 1, timeout: float = 120.0) -> None:
        """Wait until the log has ``words`` on ``times`` lines."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while sum(words in line for line in self.lines) < times:
            assert self.proc.returncode is None or self._reading.done(), self.log
            if loop.time() > deadline or (self._reading.done() and self.proc.returncode):
                raise AssertionError(f"never said {words!r}:\n{self.log}")
            await asyncio.sleep(0.05)

    @property
    def log(self) -> str:
        return "".join(self.lines)[-4000:]

    async def finish(self) -> int:
        await asyncio.wait_for(self.proc.wait(), 120)
        await self._reading
        return int(self.proc.returncode or 0)


@pytest.mark.slow
def test_two_bot_processes_one_killed_one_stopped_every_reply_answered_once(
    pg_schemas: PgSchemas, tmp_path: Path
) -> None:
    """kill -9 of the answering process mid-session: the standby takes over and answers
    the reply waiting for it; the killed one, restarted, stands by and takes over at once
    when the other is stopped with SIGTERM."""
    url = pg_schemas.new_url()
    bot_id = random.randrange(10**8, 10**9)  # a lease of its own in Redis
    token = f"{bot_id}:STANDBY-TEST"
    redis = Redis.from_url(REDIS, decode_responses=True)

    async def run() -> None:
        async with FakeBotAPI(token) as api:
            env = bot_env(api, tmp_path / "unused.db")
            env.update(TRAINER_DB=url, TRAINER_REDIS_URL=REDIS)

            async def spawn() -> Logged:
                proc = await asyncio.create_subprocess_exec(
                    *trainer(SHORT_LEASE),
                    "serve",
                    "telegram",
                    env=env,
                    cwd=str(tmp_path),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                )
                return Logged(proc)

            a = await spawn()
            await a.said("this process answers the bot")
            await a.said("started")
            b = await spawn()
            await b.said("standing by")
            api.message(50, "/start")
            await api.wait_texts(50, 1, timeout=120)
            api.callback(50, "p:m:damaged-kettle:normal:coach:0")
            await api.wait_texts(50, 2, timeout=120)
            before = len(api.texts(50))
            api.message(50, KETTLE_EN[0])
            await api.wait_texts(50, before + 1, timeout=120)
            api.message(50, KETTLE_EN[1])  # a may be answering it when it dies
            a.proc.kill()
            assert await a.finish() == -signal.SIGKILL
            await b.said("this process answers the bot")
            await api.wait_for(lambda c: "Grades for reply #2" in (c.text or ""), timeout=120)

            a = await spawn()  # back as the standby
            await a.said("standing by")
            b.proc.send_signal(signal.SIGTERM)
            assert await b.finish() == 0, b.log
            # b gave the lease up on its way out: a need not wait for it to run out
            holder = redis.get(f"trainer:telegram-bot:{bot_id}")
            assert holder is None or f":{a.proc.pid}:" in holder, (holder, b.log)
            await a.said("this process answers the bot")
            await a.said("started")
            api.message(50, "/end")
            await api.wait_for(lambda c: "Scorecard" in (c.text or ""), timeout=120)
            a.proc.send_signal(signal.SIGTERM)
            assert await a.finish() == 0, a.log
            for process in (a, b):
                assert "Traceback" not in process.log, process.log
                assert api.token not in process.log

            assert any("Grades for reply #2" in text for text in api.texts(50))

        store = Store.open(url)
        try:
            (session,) = store.sessions()
            replies = [t.idx for t in store.turns(session.id) if t.role == "trainee"]
            assert len(replies) == 2
            grades = store.grades(session.id)
            assert len(grades[replies[0]]) == len(grades[replies[1]]) > 0  # graded once each
            assert session.status == "ended"
        finally:
            store.close()

    asyncio.run(run())
