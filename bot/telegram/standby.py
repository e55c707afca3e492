"""One process at a time answers a bot; the others stand by and take over when it stops.

A token has one update stream, so several ``trainer serve telegram`` processes (on several
machines, sharing one database and one Redis) cannot all poll it. The one holding the
bot's lease answers; a standby takes the lease within :data:`LEASE_S` and :data:`ASK_S`
of the answering process's death and resumes what it left in the inbox. While Redis cannot
be reached the answering process carries on (nobody else can take the lease either); it stops
answering only once Redis names another holder, e.g. after it was frozen past its lease.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable

from bot.coordination import Coordinator

log = logging.getLogger("trainer.telegram")

LEASE_S = 10.0
"""How long the lease outlives the answering process's last renewal (every third of it)."""
ASK_S = 1.0
"""How often a standby asks for the lease: it takes over at most this long after it ran out."""


class BotLease:
    """The lease on answering one bot, as seen from this process."""

    def __init__(
        self,
        shared: Coordinator,
        bot_id: str,
        *,
        ttl_s: float | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.name = f"telegram-bot:{bot_id}"
        self.me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.ttl_s = LEASE_S if ttl_s is None else ttl_s  # read now: tests shorten it
        self._shared = shared
        self._sleep = sleep

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this process holds the lease (True) or ``stop`` is set (False)."""
        said = False
        while not stop.is_set():
            if await self._shared.hold(self.name, self.me, self.ttl_s):
                return True
            if not said:
                holder = await self._shared.holder(self.name)
                log.info(
                    "standing by: %s answers this bot; this process takes over within %.0f s "
                    "of its stop",
                    holder or "another process (Redis cannot be reached to say which)",
                    self.ttl_s + ASK_S,
                )
                said = True
            await self._pause(stop, min(ASK_S, self.ttl_s / 3))
        return False

    async def keep(self, done: asyncio.Event, lost: asyncio.Event) -> None:
        """Renew the lease until ``done`` is set, or set ``lost`` once another process has it.

        A renewal that fails for another reason (e.g. a bug) counts as lost too: answering
        on without renewals would let a standby answer alongside.
        """
        try:
            while not done.is_set():
                await self._pause(done, self.ttl_s / 3)
                if done.is_set() or await self._shared.hold(self.name, self.me, self.ttl_s):
                    continue
                holder = await self._shared.holder(self.name)
                if holder is not None and holder != self.me:
                    log.warning("%s answers this bot now: this process stops answering", holder)
                    lost.set()
                    return
                # Redis is away: nobody can take the lease over meanwhile, so carry on.
        except Exception as exc:
            log.error("could not renew the lease on the bot (%s): stopping answering", exc)
            lost.set()

    async def release(self) -> None:
        """Give the lease up (a standby takes over at once)."""
        await self._shared.release(self.name, self.me)

    async def _pause(self, stop: asyncio.Event, seconds: float) -> None:
        waits = [
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self._sleep(seconds)),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
