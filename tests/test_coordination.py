"""Coordination of trainer processes: leases, shared GCRA rate limits and pub/sub.

The Redis tests use the server on 127.0.0.1:6379 with a fresh key prefix each, or start
their own ``redis-server`` on a free port when they kill and restart it. The local
implementation runs the same tests on a simulated clock. Nothing here asserts how long
anything took: waits are loops with generous deadlines, and rate-limit reservations are
checked against clock readings taken around each call.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from redis.asyncio import Redis

from bot.coordination import (
    CLOCK_TOLERANCE,
    Coordinator,
    Leader,
    LocalCoordinator,
    RedisCoordinator,
    Subscription,
    coordinator,
)
from tests.fakeclock import FakeTime

REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
WAIT_S = 15.0
"""Longest wait for anything that is expected to happen."""
EPS = 0.005
"""Slack for comparing the Redis server's clock with this process's monotonic clock."""


async def settle() -> None:
    """Let ready tasks run."""
    for _ in range(50):
        await asyncio.sleep(0)


async def eventually(check: Callable[[], Any], what: str, pause: Callable[[float], Awaitable[Any]]):
    """Poll ``check`` (sync or async) until it is true; fail after ``WAIT_S`` of real time."""
    deadline = time.monotonic() + WAIT_S
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await pause(0.05)


async def drop_keys(prefix: str, url: str = REDIS_URL) -> None:
    client = Redis.from_url(url, decode_responses=True)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


class Env(Protocol):
    """Coordinators sharing one state, and the clock their rate limits are timed by."""

    kind: str

    async def coordinator(self) -> Coordinator: ...

    async def now(self) -> float: ...

    async def pause(self, seconds: float) -> None: ...

    def leader(self, coord: Coordinator, name: str, holder: str, ttl_s: float) -> Leader: ...

    async def close(self) -> None: ...


class LocalEnv:
    """One process alone: every "coordinator" is the same in-memory one, on a fake clock."""

    kind = "local"

    def __init__(self) -> None:
        self.time = FakeTime()
        self.coord = LocalCoordinator(clock=self.time.clock)

    async def coordinator(self) -> Coordinator:
        return self.coord

    async def now(self) -> float:
        return self.time.now

    async def pause(self, seconds: float) -> None:
        await self.time.advance(seconds)

    def leader(self, coord: Coordinator, name: str, holder: str, ttl_s: float) -> Leader:
        return Leader(coord, name, holder, ttl_s, clock=self.time.clock, sleep=self.time.sleep)

    async def close(self) -> None:
        await self.coord.close()


class RedisEnv:
    """Separate RedisCoordinators (as in separate processes) on 6379 under a fresh prefix."""

    kind = "redis"

    def __init__(self) -> None:
        self.prefix = f"test-coordination:{uuid.uuid4().hex}:"
        self.direct = Redis.from_url(REDIS_URL, decode_responses=True)
        self.coords: list[RedisCoordinator] = []

    async def coordinator(self) -> Coordinator:
        coord = RedisCoordinator(REDIS_URL, self.prefix)
        self.coords.append(coord)
        assert await coord.ping()
        return coord

    async def now(self) -> float:
        seconds, micros = await self.direct.time()
        return seconds + micros / 1e6

    async def pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def leader(self, coord: Coordinator, name: str, holder: str, ttl_s: float) -> Leader:
        return Leader(coord, name, holder, ttl_s)

    async def close(self) -> None:
        for coord in self.coords:
            await coord.close()
        await self.direct.aclose()
        await drop_keys(self.prefix)


@pytest.fixture(params=["local", "redis"])
def run(request: pytest.FixtureRequest) -> Callable[[Callable[[Env], Awaitable[None]]], None]:
    """Run an async test body with a fresh environment of the parametrised kind."""

    def go(body: Callable[[Env], Awaitable[None]]) -> None:
        async def main() -> None:
            env: Env = LocalEnv() if request.param == "local" else RedisEnv()
            try:
                await body(env)
            finally:
                await env.close()

        asyncio.run(main())

    return go


# -- leases -------------------------------------------------------------------------------


def test_lease_is_exclusive_between_processes(run: Any) -> None:
    async def body(env: Env) -> None:
        a, b = await env.coordinator(), await env.coordinator()
        assert await a.holder("jobs") is None
        assert await a.hold("jobs", "A", 30)
        assert not await b.hold("jobs", "B", 30)
        assert await b.holder("jobs") == "A"
        assert await a.hold("jobs", "A", 30)  # renewing our own lease
        assert not await b.release("jobs", "B")  # not B's to release
        assert await b.holder("jobs") == "A"
        assert await b.hold("other", "B", 30)  # leases are independent

    run(body)


def test_release_lets_another_take_over_at_once(run: Any) -> None:
    async def body(env: Env) -> None:
        a, b = await env.coordinator(), await env.coordinator()
        assert await a.hold("jobs", "A", 30)
        assert await a.release("jobs", "A")
        assert await b.hold("jobs", "B", 30)
        assert await a.holder("jobs") == "B"
        assert not await a.release("jobs", "A")  # compare-and-delete: B keeps it
        assert await a.holder("jobs") == "B"
        assert await b.release("jobs", "B")

        leader = env.leader(a, "reminders", "A", ttl_s=30)
        await leader.start()
        assert leader.is_leader
        assert not await b.hold("reminders", "B", 30)
        await leader.stop()
        assert not leader.is_leader
        assert await b.hold("reminders", "B", 30)

    run(body)


def test_count_sees_the_live_leases_of_a_kind_from_every_process(run: Any) -> None:
    async def body(env: Env) -> None:
        a, b = await env.coordinator(), await env.coordinator()
        assert await a.count("process:") == 0
        assert await a.hold("process:A", "A", 0.5)
        assert await b.hold("process:B", "B", 30)
        assert await b.hold("drill-clock:0", "B", 30)  # another kind: not counted
        assert await a.count("process:") == 2 and await b.count("process:") == 2
        assert await b.count("drill-clock:") == 1
        await env.pause(1.0)  # A stopped renewing: its lease expired
        assert await b.count("process:") == 1

    run(body)


def test_takeover_after_the_holder_stops_renewing(run: Any) -> None:
    async def body(env: Env) -> None:
        a, b = await env.coordinator(), await env.coordinator()
        assert await a.hold("jobs", "A", 0.5)  # then "A" dies: no renewal, no release
        follower = env.leader(b, "jobs", "B", ttl_s=0.6)
        await follower.start()
        assert not follower.is_leader
        await eventually(lambda: follower.is_leader, "B takes over", env.pause)
        assert await a.holder("jobs") == "B"
        assert not await a.hold("jobs", "A", 0.5)  # a late renewal does not steal it back
        await follower.stop()
        assert await a.holder("jobs") is None

    run(body)


class Stalling:
    """A coordinator whose lease renewals can be made to hang, like a server gone silent."""

    def __init__(self, inner: Coordinator) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.gate.set()
        self.pending = 0

    async def hold(self, name: str, holder: str, ttl_s: float) -> bool:
        self.pending += 1
        try:
            await self.gate.wait()
            return await self.inner.hold(name, holder, ttl_s)
        finally:
            self.pending -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_leader_stops_leading_at_the_deadline_while_a_renewal_hangs() -> None:
    async def main() -> None:
        fake = FakeTime()
        store = LocalCoordinator(clock=fake.clock)
        stalling = Stalling(store)
        leader = Leader(stalling, "jobs", "A", ttl_s=3.0, clock=fake.clock, sleep=fake.sleep)
        await leader.start()  # lease sent and granted at 1000: leads until 1003 at the latest
        assert leader.is_leader
        stalling.gate.clear()
        await fake.advance(1.0)  # renewal sent at 1001, no answer
        assert stalling.pending == 1
        assert leader.is_leader
        await fake.advance(3.0 * (1 - CLOCK_TOLERANCE) - 1.0 - 0.01)
        assert leader.is_leader  # the lease granted at 1000 is certainly still ours
        await fake.advance(0.02)
        assert stalling.pending == 1  # the renewal still has not answered ...
        assert not leader.is_leader  # ... and the lease may have expired: no longer leading
        await fake.advance(0.1)
        assert await store.hold("jobs", "B", 3.0)  # expired in the store: B takes over
        stalling.gate.set()
        await settle()
        assert stalling.pending == 0
        assert not leader.is_leader  # the late renewal was refused
        assert await store.release("jobs", "B")
        await fake.advance(1.0)
        assert leader.is_leader  # the next renewal takes the free lease

        # A renewal that succeeds only after its deadline does not make it lead.
        stalling.gate.clear()
        await fake.advance(1.0)
        assert stalling.pending == 1
        await fake.advance(3.5)
        assert not leader.is_leader
        stalling.gate.set()
        await settle()
        assert stalling.pending == 0
        assert await store.holder("jobs") == "A"
        assert not leader.is_leader  # granted, but counted from when it was sent
        await fake.advance(1.0)
        assert leader.is_leader
        await leader.stop()
        assert await store.holder("jobs") is None

    asyncio.run(main())


# -- rate limits --------------------------------------------------------------------------


async def reserve(env: Env, coord: Coordinator, key: str, rate: float, burst: int = 1):
    """One ``take`` with the clock read before and after: (before, delay, after)."""
    before = await env.now()
    delay = await coord.take(key, rate, burst)
    after = await env.now()
    assert delay >= 0.0
    return before, delay, after


def assert_gcra_spacing(reservations: list[tuple[float, float, float]], interval: float) -> None:
    """Burst 1: each slot is one interval after the previous one, or now if the key was idle.

    A slot is ``now + delay`` with ``now`` somewhere between the readings around the call, so
    each comparison allows for the width of those readings.
    """
    for (b0, d0, a0), (b1, d1, a1) in itertools.pairwise(reservations):
        slack = (a0 - b0) + (a1 - b1) + EPS
        gap_low, gap_high = (b1 + d1) - (a0 + d0), (a1 + d1) - (b0 + d0)
        assert gap_low >= interval - slack, (gap_low, gap_high, interval)  # never too soon
        assert d1 == 0.0 or gap_high <= interval + slack, (gap_low, gap_high, interval)


def test_take_spaces_reservations_by_the_rate(run: Any) -> None:
    async def body(env: Env) -> None:
        coord = await env.coordinator()
        reservations = [await reserve(env, coord, "token", rate=4.0) for _ in range(8)]
        assert reservations[0][1] == 0.0
        assert_gcra_spacing(reservations, 0.25)
        assert await coord.take("another", rate=4.0) == 0.0  # keys are independent

    run(body)


def test_take_allows_a_burst_then_the_rate(run: Any) -> None:
    async def body(env: Env) -> None:
        coord = await env.coordinator()
        reservations = [await reserve(env, coord, "chat", rate=1.0, burst=3) for _ in range(5)]
        assert [delay for _, delay, _ in reservations[:3]] == [0.0, 0.0, 0.0]
        first_call = reservations[0][0]
        latest_fourth = reservations[3][2] + reservations[3][1]
        latest_fifth = reservations[4][2] + reservations[4][1]
        assert latest_fourth >= first_call + 1.0 - EPS  # the fourth waits out the first interval
        assert latest_fifth >= first_call + 2.0 - EPS

    run(body)


def test_take_is_free_again_after_the_key_was_idle(run: Any) -> None:
    async def body(env: Env) -> None:
        coord = await env.coordinator()
        for _ in range(3):
            await coord.take("chat", rate=20.0)

        async def free() -> bool:
            return await coord.take("chat", rate=20.0) == 0.0

        await eventually(free, "the schedule has drained", lambda _: env.pause(0.2))
        if isinstance(env, RedisEnv):  # the schedule expires once idle (-2: already gone)
            ttl_ms = await env.direct.pttl(f"{env.prefix}rate:chat")
            assert ttl_ms == -2 or 0 < ttl_ms <= 1000 / 20 + 2

    run(body)


def test_two_processes_share_one_budget(run: Any) -> None:
    async def body(env: Env) -> None:
        a, b = await env.coordinator(), await env.coordinator()
        reservations = [
            await reserve(env, coord, "token", rate=2.0) for coord in (a, b, a, b, b, a)
        ]
        assert_gcra_spacing(reservations, 0.5)

    run(body)


def test_take_rejects_nonsense_limits() -> None:
    async def main() -> None:
        coord = LocalCoordinator()
        for rate, burst in ((0.0, 1), (-1.0, 1), (float("inf"), 1), (1.0, 0)):
            with pytest.raises(ValueError):
                await coord.take("k", rate, burst)
        with pytest.raises(ValueError):
            await coord.hold("jobs", "A", 0.0)

    asyncio.run(main())


# -- pub/sub ------------------------------------------------------------------------------


async def next_message(subscription: Subscription) -> str:
    return await asyncio.wait_for(anext(subscription), WAIT_S)


def test_publish_reaches_every_subscriber_of_the_channel(run: Any) -> None:
    async def body(env: Env) -> None:
        a, b = await env.coordinator(), await env.coordinator()
        first = await a.subscribe("news")
        second = await b.subscribe("news")
        sport = await a.subscribe("sport")
        for message in ("one", "two", "three"):
            await b.publish("news", message)
        await a.publish("sport", "goal")
        for subscription in (first, second):
            assert [await next_message(subscription) for _ in range(3)] == ["one", "two", "three"]
        assert await next_message(sport) == "goal"  # the news never reached it

        waiting = asyncio.create_task(anext(second))
        await settle()
        await second.close()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting, WAIT_S)
        await first.close()
        await b.publish("news", "after close")
        assert [message async for message in first] == []
        await a.publish("sport", "still open")
        assert await next_message(sport) == "still open"

    run(body)


# -- Redis away ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_redis_never_raises() -> None:
    async def main() -> None:
        fake = FakeTime()  # times the local fallback (and when Redis is asked again)
        coord = RedisCoordinator(f"redis://127.0.0.1:{free_port()}/0", "nobody:", clock=fake.clock)
        try:
            assert not await coord.ping()
            assert not await coord.hold("jobs", "A", 5)
            assert await coord.holder("jobs") is None
            assert not await coord.release("jobs", "A")
            await coord.publish("news", "dropped")
            subscription = await coord.subscribe("news")
            delays = [await coord.take("token", rate=2.0) for _ in range(3)]
            assert delays == [0.0, 0.5, 1.0]  # still limited, locally
            await subscription.close()
        finally:
            await coord.close()

    asyncio.run(main())


def test_factory_picks_the_implementation() -> None:
    async def main() -> None:
        for url in (None, ""):
            local = coordinator(url)
            assert isinstance(local, LocalCoordinator)
            assert await local.ping()
        shared = coordinator(REDIS_URL, prefix=f"test-coordination:{uuid.uuid4().hex}:")
        assert isinstance(shared, RedisCoordinator)
        assert await shared.ping()
        await shared.close()

    asyncio.run(main())


class _Link:
    """One proxied connection: bytes pass only while ``flowing`` is set."""

    def __init__(self, flowing: bool) -> None:
        self.flowing = asyncio.Event()
        if flowing:
            self.flowing.set()
        self.writers: list[asyncio.StreamWriter] = []


class FreezableProxy:
    """A TCP proxy to Redis that can stop passing bytes while keeping connections open.

    Like a server (or network) that went silent: no reply, no error, no closed connection.
    """

    def __init__(self, port: int) -> None:
        self.target = port
        self._new_flow = True
        self._links: list[_Link] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def freeze(self) -> None:
        """Silence every connection, open or yet to come."""
        self._new_flow = False
        for link in self._links:
            link.flowing.clear()

    def freeze_existing(self) -> None:
        """Silence the open connections for good; new ones work."""
        for link in self._links:
            link.flowing.clear()

    def thaw(self) -> None:
        self._new_flow = True
        for link in self._links:
            link.flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(self._new_flow)
        link.writers.append(writer)
        self._links.append(link)
        try:
            await link.flowing.wait()
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
            link.writers.append(up_writer)
            await asyncio.gather(
                self._pipe(link, reader, up_writer),
                self._pipe(link, up_reader, writer),
                return_exceptions=True,
            )
        finally:
            writer.close()

    async def _pipe(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await reader.read(65536):
                await link.flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def close(self) -> None:
        self._server.close()
        for link in self._links:
            for writer in link.writers:
                writer.close()
            link.flowing.set()
        await settle()


def test_leader_stops_leading_when_redis_stops_answering() -> None:
    async def main() -> None:
        prefix = f"test-coordination:{uuid.uuid4().hex}:"
        proxy = FreezableProxy(6379)
        port = await proxy.start()
        through_proxy = RedisCoordinator(f"redis://127.0.0.1:{port}/0", prefix)
        other = RedisCoordinator(REDIS_URL, prefix)
        leader = Leader(through_proxy, "jobs", "A", ttl_s=1.0)
        try:
            await leader.start()
            assert leader.is_leader
            proxy.freeze()  # A's renewals now hang: no reply, no error
            await eventually(lambda: other.hold("jobs", "B", 30), "B takes over", asyncio.sleep)
            # Redis let B in only after A's last renewal expired, and A knew before that.
            assert not leader.is_leader
            proxy.thaw()
            for _ in range(10):  # answered again, A's renewals are refused while B holds it
                await asyncio.sleep(0.1)
                assert not leader.is_leader
            assert await other.holder("jobs") == "B"
        finally:
            proxy.thaw()
            await leader.stop()
            await through_proxy.close()
            await other.close()
            await proxy.close()
            await drop_keys(prefix)

    asyncio.run(main())


def test_a_leader_stops_even_when_a_renewal_swallows_its_cancellation() -> None:
    renewing = asyncio.Event()

    class Swallowing(LocalCoordinator):
        async def hold(self, name: str, holder: str, ttl_s: float) -> bool:
            if not renewing.is_set() and await self.holder(name) == holder:  # a renewal
                renewing.set()
                # Swallowed, as a client library may do when a cancel meets its timeout.
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(60)
            return await super().hold(name, holder, ttl_s)

    async def main() -> None:
        coord = Swallowing()
        leader = Leader(coord, "jobs", "A", ttl_s=0.3)
        await leader.start()  # takes the lease
        await asyncio.wait_for(renewing.wait(), WAIT_S)  # a renewal hangs ...
        stopping = asyncio.ensure_future(leader.stop())  # ... is cancelled ...
        await asyncio.wait({stopping}, timeout=WAIT_S)  # (waiting cancels nothing)
        assert stopping.done()  # ... and stop returns
        assert not leader.is_leader and await coord.holder("jobs") is None

    asyncio.run(main())


def test_calls_return_while_redis_hangs() -> None:
    async def main() -> None:
        prefix = f"test-coordination:{uuid.uuid4().hex}:"
        proxy = FreezableProxy(6379)
        port = await proxy.start()
        fake = FakeTime()  # times the fallback rate limit and when Redis is asked again
        coord = RedisCoordinator(f"redis://127.0.0.1:{port}/0", prefix, clock=fake.clock)

        async def bounded(call: Awaitable[Any]) -> Any:
            return await asyncio.wait_for(call, WAIT_S)  # the socket timeout ends each wait

        try:
            assert await coord.ping()
            proxy.freeze()
            assert not await bounded(coord.ping())
            # Redis is not asked again until RETRY_AFTER_S has passed: answers come at once.
            assert await bounded(coord.take("token", rate=2.0)) == 0.0
            assert await bounded(coord.take("token", rate=2.0)) == 0.5
            assert not await bounded(coord.hold("jobs", "A", 5))
            await bounded(coord.publish("news", "dropped"))
            await fake.advance(1.0)
            assert not await bounded(coord.hold("jobs", "A", 5))  # asked, timed out
            proxy.thaw()
            await fake.advance(1.0)
            assert await bounded(coord.hold("jobs", "A", 5))
            assert await bounded(coord.ping())
        finally:
            proxy.thaw()
            await coord.close()
            await proxy.close()
            await drop_keys(prefix)

    asyncio.run(main())


def test_subscriber_replaces_a_connection_gone_silent() -> None:
    async def main() -> None:
        prefix = f"test-coordination:{uuid.uuid4().hex}:"
        proxy = FreezableProxy(6379)
        port = await proxy.start()
        listener = RedisCoordinator(f"redis://127.0.0.1:{port}/0", prefix, keepalive_s=0.2)
        sender = RedisCoordinator(REDIS_URL, prefix)
        try:
            subscription = await listener.subscribe("updates")
            await sender.publish("updates", "before")
            assert await next_message(subscription) == "before"
            proxy.freeze_existing()  # the subscriber's connection never hears anything again
            await publish_until_received(sender, subscription)
        finally:
            await listener.close()
            await sender.close()
            await proxy.close()

    asyncio.run(main())


async def publish_until_received(sender: Coordinator, subscription: Subscription) -> None:
    """Publish numbered messages until ``subscription`` gets one (it may be reconnecting)."""
    waiting = asyncio.create_task(anext(subscription))
    count = itertools.count()

    async def received() -> bool:
        if not waiting.done():
            await sender.publish(subscription.channel, f"after-{next(count)}")
            await asyncio.wait({waiting}, timeout=0.1)
        return waiting.done()

    try:
        await eventually(received, "the subscriber gets a message", asyncio.sleep)
    finally:
        waiting.cancel()
    assert waiting.result().startswith("after-")


class RedisServer:
    """A throwaway redis-server on a free port, without persistence, to kill and restart."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.proc is None
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        args += ["no", "--dir", str(self.workdir), "--loglevel", "warning"]
        self.proc = subprocess.Popen(
            [REDIS_SERVER, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    async def ready(self) -> None:
        """Wait until it answers PING."""
        deadline = time.monotonic() + WAIT_S
        while True:
            assert self.proc is not None and self.proc.poll() is None, "redis-server exited"
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                try:
                    writer.write(b"PING\r\n")
                    await writer.drain()
                    if (await reader.readline()).startswith(b"+PONG"):
                        return
                finally:
                    writer.close()
                    await writer.wait_closed()
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no goodbye to the clients, nothing saved."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    if server.proc is not None:
        server.kill()


def test_take_keeps_answering_while_redis_restarts(own_redis: RedisServer) -> None:
    async def main() -> None:
        await own_redis.ready()
        coord = RedisCoordinator(own_redis.url, "t:")
        reservations: list[tuple[float, float, float]] = []

        async def reserve_now() -> None:  # timed on this process's clock, the one callers sleep on
            before = time.monotonic()
            delay = await coord.take("token", rate=2.0)
            reservations.append((before, delay, time.monotonic()))

        try:
            for _ in range(3):
                await reserve_now()
            own_redis.kill()
            for _ in range(3):
                await reserve_now()  # answered by the local fallback
            assert not await coord.ping()
            own_redis.start()
            await own_redis.ready()
            direct = Redis.from_url(own_redis.url)
            try:

                async def back_on_redis() -> bool:
                    await reserve_now()
                    return bool(await direct.exists("t:rate:token"))

                await eventually(back_on_redis, "take() uses Redis again", asyncio.sleep)
            finally:
                await direct.aclose()
            # One schedule throughout: the outage neither reset it nor handed out a slot twice.
            assert_gcra_spacing(reservations, 0.5)
        finally:
            await coord.close()

    asyncio.run(main())


def test_subscriber_receives_again_after_redis_restarts(own_redis: RedisServer) -> None:
    async def main() -> None:
        await own_redis.ready()
        listener = RedisCoordinator(own_redis.url, "t:")
        sender = RedisCoordinator(own_redis.url, "t:")
        try:
            subscription = await listener.subscribe("updates")
            await sender.publish("updates", "before")
            assert await next_message(subscription) == "before"
            own_redis.kill()
            await sender.publish("updates", "lost")  # dropped, not raised
            own_redis.start()
            await own_redis.ready()
            await publish_until_received(sender, subscription)
        finally:
            await listener.close()
            await sender.close()

    asyncio.run(main())


def test_leader_leads_again_after_redis_restarts(own_redis: RedisServer) -> None:
    async def main() -> None:
        await own_redis.ready()
        coord = RedisCoordinator(own_redis.url, "t:")
        leader = Leader(coord, "jobs", "A", ttl_s=0.6)
        try:
            await leader.start()
            assert leader.is_leader
            own_redis.kill()
            await eventually(lambda: not leader.is_leader, "A stops leading", asyncio.sleep)
            assert not await coord.hold("jobs", "A", 0.6)  # cannot prove it: not held
            own_redis.start()
            await own_redis.ready()
            await eventually(lambda: leader.is_leader, "A leads again", asyncio.sleep)
            direct = Redis.from_url(own_redis.url, decode_responses=True)
            try:
                assert await direct.get("t:lease:jobs") == "A"
                await leader.stop()
                assert await direct.get("t:lease:jobs") is None
            finally:
                await direct.aclose()
        finally:
            await leader.stop()
            await coord.close()

    asyncio.run(main())
