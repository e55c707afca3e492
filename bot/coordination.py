"""How several identical trainer processes agree on things: leases, shared rate limits, pub/sub.

``coordinator(url)`` returns a ``RedisCoordinator`` for a Redis URL (several processes on
several machines share its state) or a ``LocalCoordinator`` for None (one process alone,
the same interface in memory), so callers never ask whether Redis is there.

- **Leases** elect a leader with takeover: ``hold`` takes or extends a lease for ``ttl_s``
  seconds; a holder that dies stops renewing and another takes over after the ttl.
  ``Leader`` renews one in a task and says whether this process may act as the leader.
- **Rate limits** are shared GCRA schedules: ``take`` reserves the next send slot for a key
  and returns how long to wait for it (e.g. Telegram's 30 messages/s per bot token and
  1 message/s per chat, across every process using the token).
- **Pub/sub** routes live updates between processes, best-effort: a message published while
  a subscriber is disconnected is lost, so receivers also refresh periodically.

Redis failing or restarting never raises into the caller: ``take`` falls back to the same
GCRA in memory (at the full rate, so a lone process stays within the limit) and returns to
Redis when it answers again; ``hold`` and ``release`` report False (leadership that cannot
be proven is not claimed); ``publish`` logs and drops; subscribers reconnect with backoff
(at most ``RECONNECT_CAP_S`` apart). After a failure Redis is asked again at most every
``RETRY_AFTER_S``; meanwhile the fallbacks answer at once. Needs a Redis 5+ server (its
scripts call ``TIME`` before writing); Redis Cluster is not supported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, Self, TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

Clock = Callable[[], float]
"""A monotonic clock in seconds."""
Sleep = Callable[[float], Awaitable[object]]
"""An awaitable sleep in seconds."""

T = TypeVar("T")

TIMEOUT_S = 1.0
"""Socket connect and read timeout towards Redis: how soon a dead or hung server is noticed."""
RETRY_AFTER_S = 0.5
"""After a failed Redis call, the fallbacks answer alone for this long before Redis is retried."""
RECONNECT_CAP_S = 1.0
"""Longest wait between a subscriber's reconnection attempts."""
SUBSCRIBER_QUEUE = 1000
"""Messages a subscriber buffers; beyond that the oldest one is dropped."""
KEEPALIVE_S = 5.0
"""A subscriber's connection silent this long is sent a PING; silent twice as long, replaced."""
CLOCK_TOLERANCE = 0.01
"""``Leader`` stops leading this fraction of the ttl early, for clocks running at other rates."""

# KEYS[1] lease; ARGV holder, ttl in ms. Takes a free lease or extends our own; 1 if held.
_HOLD = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] lease; ARGV holder. Compare-and-delete: 1 if it was ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS[1] schedule (theoretical arrival time in µs of the server clock). ARGV: interval µs,
# tolerance µs ((burst - 1) intervals), floor µs (how far ahead of now the caller's own
# reservations already reach, e.g. from its fallback while Redis was away). Reserves the next
# slot; returns {delay until it in µs, how far ahead of now the schedule now reaches in µs}.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now, now + tonumber(ARGV[3]))
local delay = math.max(0, tat - tolerance - now)
local ahead = tat + interval - now
redis.call('SET', KEYS[1], string.format('%.0f', now + ahead), 'PX', math.ceil(ahead / 1000) + 1)
return {math.floor(delay), math.floor(ahead)}
"""


class Coordinator(Protocol):
    """What trainer processes agree on; ``LocalCoordinator`` and ``RedisCoordinator`` do it."""

    async def hold(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take lease ``name`` for ``ttl_s`` seconds if free or already ``holder``'s (extending it).

        False if someone else holds it, or if it cannot be proven (Redis unreachable).
        """
        ...

    async def release(self, name: str, holder: str) -> bool:
        """Give up lease ``name`` if ``holder`` has it; whether it was released."""
        ...

    async def holder(self, name: str) -> str | None:
        """Who holds lease ``name``; None if nobody does or it cannot be known."""
        ...

    async def count(self, prefix: str) -> int | None:
        """How many leases whose names start with ``prefix`` are held; None if unknown."""
        ...

    async def take(self, key: str, rate: float, burst: int = 1) -> float:
        """Reserve a send under the limit ``rate`` per second for ``key``; seconds to wait.

        0.0 means send now. The slot is the caller's either way: it sleeps the returned delay,
        then sends. Up to ``burst`` sends may go at once after the key has been idle.
        """
        ...

    async def publish(self, channel: str, message: str) -> None:
        """Send ``message`` to the current subscribers of ``channel``, best-effort."""
        ...

    async def subscribe(self, channel: str) -> Subscription:
        """Receive the messages published on ``channel`` from now on."""
        ...

    async def ping(self) -> bool:
        """Whether the shared state answers (always True for the local one)."""
        ...

    async def close(self) -> None:
        """Close the subscriptions and connections."""
        ...


def coordinator(url: str | None, prefix: str = "trainer:") -> Coordinator:
    """A ``RedisCoordinator`` for a Redis URL, or a ``LocalCoordinator`` for None or ""."""
    return RedisCoordinator(url, prefix) if url else LocalCoordinator()


class Subscription:
    """The messages of one channel in arrival order: ``async for message in subscription``.

    Iteration ends when the subscription is closed. Also an async context manager that
    closes it.
    """

    def __init__(self, channel: str, maxsize: int = SUBSCRIBER_QUEUE) -> None:
        self.channel = channel
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize)
        self._closed = False
        self._warned_full = False
        self._on_close: Callable[[], Awaitable[None]] | None = None

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called."""
        return self._closed

    def _deliver(self, message: str) -> None:
        if self._closed:
            return
        if self._queue.full():
            self._queue.get_nowait()
            if not self._warned_full:
                log.warning("subscriber of %r is too slow: dropping old messages", self.channel)
                self._warned_full = True
        self._queue.put_nowait(message)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> str:
        if self._closed:
            raise StopAsyncIteration
        message = await self._queue.get()
        if message is None or self._closed:
            raise StopAsyncIteration
        return message

    async def close(self) -> None:
        """Stop receiving; a consumer waiting for a message stops iterating."""
        if self._closed:
            return
        self._closed = True
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)  # wakes a consumer waiting in __anext__
        if self._on_close is not None:
            await self._on_close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _check_rate(rate: float, burst: int) -> None:
    if not rate > 0 or math.isinf(rate):
        raise ValueError(f"rate must be positive and finite, got {rate!r}")
    if burst < 1:
        raise ValueError(f"burst must be >= 1, got {burst!r}")


def _check_ttl(ttl_s: float) -> None:
    if not ttl_s > 0 or math.isinf(ttl_s):
        raise ValueError(f"ttl_s must be positive and finite, got {ttl_s!r}")


class _Gcra:
    """GCRA schedules in memory: per key, the theoretical arrival time (``tat``) on ``clock``."""

    _MIN_PRUNE = 1024

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}
        self._prune_at = self._MIN_PRUNE

    def take(self, key: str, rate: float, burst: int) -> float:
        """Reserve the next slot of ``key``; seconds until it."""
        interval = 1.0 / rate
        now = self._clock()
        tat = max(self._tat.get(key, now), now)
        self._set(key, tat + interval, now)
        return max(0.0, tat - (burst - 1) * interval - now)

    def ahead(self, key: str, now: float) -> float:
        """How far past ``now`` the reservations of ``key`` reach (0.0 when idle)."""
        return max(0.0, self._tat.get(key, now) - now)

    def observe(self, key: str, tat: float) -> None:
        """Record that reservations of ``key`` made elsewhere reach ``tat``."""
        self._set(key, max(self._tat.get(key, tat), tat), self._clock())

    def _set(self, key: str, tat: float, now: float) -> None:
        self._tat[key] = tat
        if len(self._tat) >= self._prune_at:  # amortised: idle keys are as good as absent
            self._tat = {k: v for k, v in self._tat.items() if v > now}
            self._prune_at = max(self._MIN_PRUNE, 2 * len(self._tat))


class LocalCoordinator:
    """One process alone: leases, rate limits and pub/sub in memory, same semantics as Redis.

    Leases expire after their ttl on ``clock`` like Redis ones, so a ``Leader`` whose task
    died is replaced the same way.
    """

    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._leases: dict[str, tuple[str, float]] = {}
        self._gcra = _Gcra(clock)
        self._subscribers: dict[str, set[Subscription]] = {}

    def _current(self, name: str) -> str | None:
        lease = self._leases.get(name)
        if lease is None:
            return None
        if lease[1] <= self._clock():
            del self._leases[name]
            return None
        return lease[0]

    async def hold(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take lease ``name`` for ``ttl_s`` seconds if free or already ``holder``'s."""
        _check_ttl(ttl_s)
        if self._current(name) not in (None, holder):
            return False
        self._leases[name] = (holder, self._clock() + ttl_s)
        return True

    async def release(self, name: str, holder: str) -> bool:
        """Give up lease ``name`` if ``holder`` has it; whether it was released."""
        if self._current(name) != holder:
            return False
        del self._leases[name]
        return True

    async def holder(self, name: str) -> str | None:
        """Who holds lease ``name``, or None."""
        return self._current(name)

    async def count(self, prefix: str) -> int | None:
        """How many leases whose names start with ``prefix`` are held."""
        return sum(
            1 for name in list(self._leases) if name.startswith(prefix) and self._current(name)
        )

    async def take(self, key: str, rate: float, burst: int = 1) -> float:
        """Reserve a send under ``rate`` per second for ``key``; seconds to wait for it."""
        _check_rate(rate, burst)
        return self._gcra.take(key, rate, burst)

    async def publish(self, channel: str, message: str) -> None:
        """Hand ``message`` to every current subscriber of ``channel``."""
        for subscription in list(self._subscribers.get(channel, ())):
            subscription._deliver(message)

    async def subscribe(self, channel: str) -> Subscription:
        """Receive the messages published on ``channel`` from now on."""
        subscription = Subscription(channel)
        self._subscribers.setdefault(channel, set()).add(subscription)

        async def forget() -> None:
            subscribers = self._subscribers.get(channel)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscribers[channel]

        subscription._on_close = forget
        return subscription

    async def ping(self) -> bool:
        """Always True: the state is in this process."""
        return True

    async def close(self) -> None:
        """Close every subscription."""
        for subscribers in list(self._subscribers.values()):
            for subscription in list(subscribers):
                await subscription.close()


class _Unavailable(Exception):
    """Redis did not answer (now, or recently enough that it is not asked yet)."""


class RedisCoordinator:
    """Processes sharing one Redis: leases, GCRA rate limits and pub/sub, with fallbacks.

    Every key and channel name gets ``prefix``, so several deployments (or tests) can share
    a server. ``timeout_s`` bounds connecting and each reply; ``keepalive_s`` is how long a
    subscriber's connection may stay silent before it is checked (see ``KEEPALIVE_S``), which
    notices a server that vanished without closing the connection. ``clock`` (monotonic)
    times the fallback rate limits and when Redis is asked again.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "trainer:",
        *,
        timeout_s: float = TIMEOUT_S,
        keepalive_s: float = KEEPALIVE_S,
        clock: Clock = time.monotonic,
    ) -> None:
        self.prefix = prefix
        self._clock = clock
        self._keepalive_s = keepalive_s
        # No retries inside redis-py: a script re-sent after a lost reply could run twice, and
        # the pool already replaces connections that died while idle (e.g. a server restart).
        self._redis: Redis = Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._hold_script = self._redis.register_script(_HOLD)
        self._release_script = self._redis.register_script(_RELEASE)
        self._gcra_script = self._redis.register_script(_GCRA)
        self._fallback = _Gcra(clock)
        self._down = False
        self._retry_at = -math.inf
        self._subscriptions: set[Subscription] = set()

    # -- availability ---------------------------------------------------------------------

    def _went_down(self, error: BaseException) -> None:
        self._retry_at = self._clock() + RETRY_AFTER_S
        if not self._down:
            self._down = True
            log.warning(
                "Redis unreachable (%s: %s): leases are not held, rate limits are local, "
                "live updates are dropped until it answers again",
                type(error).__name__,
                error,
            )

    def _came_back(self) -> None:
        if self._down:
            self._down = False
            self._retry_at = -math.inf
            log.warning("Redis answers again: shared leases, rate limits and updates resume")

    async def _call(self, request: Callable[[], Awaitable[T]]) -> T:
        """Run ``request`` against Redis, or raise ``_Unavailable`` without waiting long.

        While Redis is down, one caller per ``RETRY_AFTER_S`` probes it; the others get
        ``_Unavailable`` at once instead of each waiting for a timeout.
        """
        if self._down:
            now = self._clock()
            if now < self._retry_at:
                raise _Unavailable
            self._retry_at = now + RETRY_AFTER_S
        try:
            result = await request()
        except (RedisError, OSError) as error:
            self._went_down(error)
            raise _Unavailable from error
        self._came_back()
        return result

    async def ping(self) -> bool:
        """Whether Redis answers now (always asks it, even during an outage)."""
        try:
            await cast("Awaitable[bool]", self._redis.ping())  # typed as sync-or-async
        except (RedisError, OSError) as error:
            self._went_down(error)
            return False
        self._came_back()
        return True

    # -- leases ---------------------------------------------------------------------------

    def _lease_key(self, name: str) -> str:
        return f"{self.prefix}lease:{name}"

    async def hold(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take lease ``name`` for ``ttl_s`` seconds if free or already ``holder``'s.

        False if someone else holds it or Redis does not answer.
        """
        _check_ttl(ttl_s)
        ttl_ms = max(1, math.ceil(ttl_s * 1000))
        try:
            held = await self._call(
                lambda: self._hold_script(keys=[self._lease_key(name)], args=[holder, ttl_ms])
            )
        except _Unavailable:
            return False
        return bool(held)

    async def release(self, name: str, holder: str) -> bool:
        """Give up lease ``name`` if ``holder`` has it; False if not ours or Redis is away.

        A lease that could not be released expires after its ttl.
        """
        try:
            released = await self._call(
                lambda: self._release_script(keys=[self._lease_key(name)], args=[holder])
            )
        except _Unavailable:
            return False
        return bool(released)

    async def holder(self, name: str) -> str | None:
        """Who holds lease ``name``; None if nobody does or Redis does not answer."""
        try:
            current: str | None = await self._call(lambda: self._redis.get(self._lease_key(name)))
        except _Unavailable:
            return None
        return current

    async def count(self, prefix: str) -> int | None:
        """How many leases whose names start with ``prefix`` are held; None if unknown.

        A SCAN of the lease keys: meant for a handful of processes, not thousands of keys.
        """
        pattern = (
            self._lease_key(prefix).replace("[", "\\[").replace("?", "\\?").replace("*", "\\*")
            + "*"
        )

        async def scan() -> int:
            return sum([1 async for _ in self._redis.scan_iter(match=pattern, count=500)])

        try:
            return await self._call(scan)
        except _Unavailable:
            return None

    # -- rate limits ----------------------------------------------------------------------

    async def take(self, key: str, rate: float, burst: int = 1) -> float:
        """Reserve a send under ``rate`` per second for ``key``, shared by every process.

        Returns the seconds to wait for the slot, timed by the Redis server's clock. While
        Redis is away the same schedule continues in memory; the reservations made there
        are carried back to Redis when it answers, so they are not handed out twice.
        """
        _check_rate(rate, burst)
        interval_us = 1e6 / rate
        sent = self._clock()
        floor_us = round(self._fallback.ahead(key, sent) * 1e6)
        try:
            delay_us, ahead_us = await self._call(
                lambda: self._gcra_script(
                    keys=[f"{self.prefix}rate:{key}"],
                    args=[repr(interval_us), repr((burst - 1) * interval_us), floor_us],
                )
            )
        except _Unavailable:
            return self._fallback.take(key, rate, burst)
        # Measured from when the request was sent, the mirror never runs ahead of Redis.
        self._fallback.observe(key, sent + int(ahead_us) / 1e6)
        return int(delay_us) / 1e6

    # -- pub/sub --------------------------------------------------------------------------

    def _channel(self, channel: str) -> str:
        return f"{self.prefix}chan:{channel}"

    async def publish(self, channel: str, message: str) -> None:
        """Publish ``message`` on ``channel``; dropped (and logged) if Redis is away."""
        try:
            await self._call(lambda: self._redis.publish(self._channel(channel), message))
        except _Unavailable:
            log.debug("Redis away: dropped a message on %r", channel)

    async def subscribe(self, channel: str) -> Subscription:
        """Receive the messages published on ``channel`` from now on, in any process.

        Returns once subscribed (or after a first failed attempt; it keeps retrying in the
        background). After a disconnection it resubscribes and receives what is published
        from then on; messages published in between are lost.
        """
        subscription = Subscription(channel)
        ready, stopped = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(
            self._receive(subscription, ready, stopped), name=f"coordination-subscriber:{channel}"
        )

        async def stop() -> None:
            self._subscriptions.discard(subscription)
            stopped.set()  # ends the loops even if a Redis call swallows the cancellation
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        subscription._on_close = stop
        self._subscriptions.add(subscription)
        await ready.wait()
        return subscription

    async def _receive(
        self, subscription: Subscription, ready: asyncio.Event, stopped: asyncio.Event
    ) -> None:
        """Keep ``subscription`` subscribed and fed, reconnecting with capped backoff.

        Until ``stopped``, not only until cancelled: a cancellation that arrives as a
        read's timeout expires can be lost inside the client library (a stop then hung).
        """
        backoff = 0.05
        failing = False
        while not stopped.is_set():
            pubsub: PubSub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel(subscription.channel))
                if failing:
                    log.warning("resubscribed to %r", subscription.channel)
                failing = False
                backoff = 0.05
                ready.set()
                await self._pump(pubsub, subscription, stopped)
            except (RedisError, OSError) as error:
                if not failing:
                    log.warning(
                        "subscription to %r lost (%s: %s); reconnecting",
                        subscription.channel,
                        type(error).__name__,
                        error,
                    )
                failing = True
            except Exception:  # a bug must not end live updates for good either
                log.exception("subscription to %r failed; reconnecting", subscription.channel)
                failing = True
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                ready.set()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_CAP_S)

    async def _pump(
        self, pubsub: PubSub, subscription: Subscription, stopped: asyncio.Event
    ) -> None:
        """Deliver messages until stopped, or the connection fails or stays silent after a PING."""
        heard = pinged = self._clock()
        poll_s = min(1.0, self._keepalive_s / 2)
        while not stopped.is_set():
            message: dict[str, Any] | None = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=poll_s
            )
            now = self._clock()
            if message is not None:
                heard = now
                if message["type"] == "message":
                    subscription._deliver(message["data"])
            elif now - heard > 2 * self._keepalive_s:
                raise RedisConnectionError("no reply to PING on the subscriber connection")
            elif now - heard > self._keepalive_s and pinged <= heard:
                await pubsub.ping()
                pinged = now

    async def close(self) -> None:
        """Close the subscriptions and the connection pool."""
        for subscription in list(self._subscriptions):
            await subscription.close()
        await self._redis.aclose()


class Leader:
    """Holds a lease in a background task, renewing it every ``ttl_s / 3`` seconds.

    ``is_leader`` is True only while a renewal has succeeded within ``ttl_s`` seconds, counted
    from when that renewal was *sent* on ``clock``: the lease cannot have expired for the other
    processes before that, so this process never believes it leads after someone else may
    have taken over (the deadline comes ``CLOCK_TOLERANCE`` of the ttl early, for clocks that
    run at slightly different rates). A renewal that fails, or that hangs past the deadline,
    ends leadership; a later successful one restores it.

        leader = Leader(coord, "reminders", instance_id, ttl_s=3.0)
        await leader.start()
        ...
        if leader.is_leader:
            ...
        await leader.stop()
    """

    def __init__(
        self,
        coord: Coordinator,
        name: str,
        holder: str,
        ttl_s: float = 3.0,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        _check_ttl(ttl_s)
        self.name = name
        self.holder = holder
        self.ttl_s = ttl_s
        self._coord = coord
        self._clock = clock
        self._sleep = sleep
        self._deadline: float | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def is_leader(self) -> bool:
        """Whether this process holds the lease for certain right now."""
        return self._deadline is not None and self._clock() < self._deadline

    async def start(self) -> None:
        """Try to take the lease once, then keep trying and renewing in a task."""
        if self._task is not None:
            return
        await self._attempt()
        self._task = asyncio.create_task(self._run(), name=f"leader:{self.name}")

    async def stop(self) -> None:
        """Stop renewing and release the lease if it is ours."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._deadline = None
        try:
            await self._coord.release(self.name, self.holder)
        except Exception:
            log.exception("releasing lease %r failed; it expires after its ttl", self.name)

    async def _attempt(self) -> None:
        sent = self._clock()
        try:
            held = await self._coord.hold(self.name, self.holder, self.ttl_s)
        except Exception:
            log.exception("renewing lease %r failed", self.name)
            held = False
        was = self.is_leader
        self._deadline = sent + self.ttl_s * (1 - CLOCK_TOLERANCE) if held else None
        if was != self.is_leader:
            log.info("%s %s lease %r", self.holder, "took" if held else "lost", self.name)

    async def _run(self) -> None:
        # Until stopped: a cancellation a Redis call swallowed must not keep it renewing.
        me = asyncio.current_task()
        while self._task is me:
            await self._sleep(self.ttl_s / 3)
            if self._task is me:
                await self._attempt()
