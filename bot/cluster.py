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
import uuid
from collections.abc import Callable

from bot.coordination import Coordinator, Leader, coordinator

log = logging.getLogger(__name__)

LEASE_S = 3.0
"""How long a lease outlives its last renewal: a dead process's drill clock moves to
another within this (renewals come every third of it)."""
CHANGES = "drill-changes"
"""The channel announcing whose drill customers changed (a user id per message)."""


class Cluster:
    """Where this process stands among the trainer processes (see the module docstring)."""

    def __init__(self, redis_url: str | None, database: str | None = None) -> None:
        """Join the processes of ``database`` (``Store.location``) on ``redis_url``.

        Processes of another database on the same Redis keep out of the way.
        """
        self.shared = bool(redis_url)
        self.me = uuid.uuid4().hex[:12]
        space = hashlib.sha256((database or "").encode()).hexdigest()[:12]
        self.coordinator: Coordinator = coordinator(redis_url or None, f"trainer:{space}:")
        self._alive = Leader(self.coordinator, f"process:{self.me}", self.me, LEASE_S)
        self._clock = Leader(self.coordinator, "drill-clock", self.me, LEASE_S)
        self._tasks: set[asyncio.Task[None]] = set()
        self._listening: asyncio.Task[None] | None = None

    async def start(self, heard: Callable[[int], None] | None = None) -> None:
        """Take this process's lease, stand for the drill clock, listen for changes.

        ``heard(user_id)`` is called when another process changed a trainee's customers.
        """
        await self._alive.start()
        await self._clock.start()
        if self.shared and heard is not None:
            subscription = await self.coordinator.subscribe(CHANGES)

            async def listen() -> None:
                async for message in subscription:
                    with contextlib.suppress(ValueError):
                        heard(int(message))

            self._listening = asyncio.create_task(listen())

    def leading(self) -> bool:
        """Whether this process moves the drills on now."""
        return not self.shared or self._clock.is_leader

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
        """Tell the other processes that this trainee's drill customers changed."""
        if not self.shared:
            return
        task = asyncio.get_running_loop().create_task(
            self.coordinator.publish(CHANGES, str(user_id))
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def ready(self) -> bool:
        """Whether Redis answers (always, for a process alone)."""
        return not self.shared or await self.coordinator.ping()

    async def stop(self) -> None:
        """Give up the leases (another process takes the clock at once) and close."""
        if self._listening is not None:
            self._listening.cancel()
            await asyncio.gather(self._listening, return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._clock.stop()
        await self._alive.stop()
        await self.coordinator.close()
