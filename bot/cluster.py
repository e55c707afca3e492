"""One trainer process among several sharing a database, agreeing through Redis.

Without a Redis URL the process is alone and everything here is local: it leads the
drill clock, and a reply left unanswered was left by a process that died. With one,
each process holds a lease on its own name while it runs (so the others can tell a
reply it is still answering from one a crash cut off), one process at a time holds the
drill clock's lease (another takes over within :data:`LEASE_S` of its death), and a
change to a trainee's drill customers is announced to every process, so the one holding
the trainee's workspace socket pushes it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from bot.coordination import CLOCK_TOLERANCE, Coordinator, Leader, coordinator

log = logging.getLogger(__name__)

LEASE_S = 3.0
"""How long a lease outlives its last renewal: a dead process's part of the drill clock
moves to the others within this (renewals come every third of it)."""
SHARDS = 8
"""The drill clock's parts: trainee ``u`` belongs to part ``u % SHARDS``; the processes
share the parts out evenly, so a big drill is moved on by all of them."""
CHANGES = "drill-changes"
"""The channel announcing whose drill customers changed (user ids, comma-separated)."""
GATHER_S = 0.05
"""Changes announced together: a workspace elsewhere is pushed at most this much later."""


class Cluster:
    """Where this process stands among the trainer processes (see the module docstring)."""

    def __init__(
        self,
        redis_url: str | None,
        database: str | None = None,
        *,
        shared: Coordinator | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        """Join the processes of ``database`` (``Store.installation()``) on ``redis_url``.

        Processes of another database on the same Redis keep out of the way; processes
        reaching one database by different addresses still meet. ``shared`` is a
        coordinator to use instead (tests: several "processes" on one in-memory one, on a
        fake ``clock`` and ``sleep``).
        """
        self.shared = bool(redis_url) or shared is not None
        self.me = uuid.uuid4().hex[:12]
        space = hashlib.sha256((database or "").encode()).hexdigest()[:12]
        self.coordinator: Coordinator = shared or coordinator(
            redis_url or None, f"trainer:{space}:"
        )
        self._clock = clock
        self._sleep = sleep
        self._alive = Leader(
            self.coordinator, f"process:{self.me}", self.me, LEASE_S, clock=clock, sleep=sleep
        )
        self._held: dict[int, float] = {}
        """The drill clock's parts this process holds, each until when (monotonic)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed: set[int] = set()
        """Trainees whose changes are still to be announced."""
        self._listening: asyncio.Task[None] | None = None
        self._balancing: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self, heard: Callable[[int], None] | None = None) -> None:
        """Take this process's lease, stand for the drill clock, listen for changes.

        ``heard(user_id)`` is called when another process changed a trainee's customers.
        """
        await self._alive.start()
        if self.shared:
            await self._balance()
            self._balancing = asyncio.create_task(self._keep_balancing())
        if self.shared and heard is not None:
            subscription = await self.coordinator.subscribe(CHANGES)

            async def listen() -> None:
                async for message in subscription:
                    for user_id in message.split(","):
                        with contextlib.suppress(ValueError):
                            heard(int(user_id))

            self._listening = asyncio.create_task(listen())

    def part(self) -> tuple[int, frozenset[int]] | None:
        """The parts of the drill clock this process moves on now, as (parts, mine).

        None when it is alone: then it moves every drill on.
        """
        if not self.shared:
            return None
        now = self._clock()
        return SHARDS, frozenset(k for k, until in self._held.items() if now < until)

    def leading(self) -> bool:
        """Whether this process moves any part of the drills on now."""
        mine = self.part()
        return mine is None or bool(mine[1])

    async def _balance(self) -> None:
        """Renew the parts held, then give up or take parts towards an even share."""
        alive = await self.coordinator.count("process:") or 1
        fair = -(-SHARDS // alive)
        for k in sorted(self._held):
            sent = self._clock()
            if await self.coordinator.hold(f"drill-clock:{k}", self.me, LEASE_S):
                self._held[k] = sent + LEASE_S * (1 - CLOCK_TOLERANCE)
            else:
                del self._held[k]
        for k in sorted(self._held)[fair:]:  # a process joined: make room for it
            del self._held[k]
            await self.coordinator.release(f"drill-clock:{k}", self.me)
        for k in range(SHARDS):
            if len(self._held) >= fair:
                break
            sent = self._clock()
            if k not in self._held and await self.coordinator.hold(
                f"drill-clock:{k}", self.me, LEASE_S
            ):
                self._held[k] = sent + LEASE_S * (1 - CLOCK_TOLERANCE)

    async def _keep_balancing(self) -> None:
        # Until stopped: a cancellation a Redis call swallowed must not keep it going.
        while not self._stopping:
            await self._sleep(LEASE_S / 3)
            try:
                await self._balance()
            except Exception:  # a bug: logged; the parts held expire, others take them
                log.exception("sharing out the drill clock failed")

    async def alive(self, process: str) -> bool:
        """Whether ``process`` still holds its lease (unknown while Redis is away: yes)."""
        if process == self.me:
            return True
        if not self.shared:
            return False
        holder = await self.coordinator.holder(f"process:{process}")
        if holder is None and not await self.coordinator.ping():
            return True  # cannot tell: never answer a reply another process may be answering
        return holder == process

    def announce(self, user_id: int) -> None:
        """Tell the other processes that this trainee's drill customers changed.

        The changes of :data:`GATHER_S` go out together, as one message of user ids.
        """
        if not self.shared:
            return
        if not self._changed:
            task = asyncio.get_running_loop().create_task(self._publish_soon())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._changed.add(user_id)

    async def _publish_soon(self) -> None:
        await asyncio.sleep(GATHER_S)
        changed, self._changed = self._changed, set()
        await self.coordinator.publish(CHANGES, ",".join(map(str, sorted(changed))))

    async def ready(self) -> bool:
        """Whether Redis answers (always, for a process alone)."""
        return not self.shared or await self.coordinator.ping()

    async def stop(self) -> None:
        """Give up the leases (another process takes the clock at once) and close."""
        self._stopping = True
        if self._listening is not None:
            self._listening.cancel()
            await asyncio.gather(self._listening, return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._balancing is not None:
            self._balancing.cancel()
            await asyncio.gather(self._balancing, return_exceptions=True)
        for k in list(self._held):  # the others take them over at once
            del self._held[k]
            await self.coordinator.release(f"drill-clock:{k}", self.me)
        await self._alive.stop()
        await self.coordinator.close()
