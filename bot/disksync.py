"""Group commit: one fsync at a time, shared by every caller waiting for the disk."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)
CHECKPOINT_S = 1.0
"""How often a server copies its WAL into the database file (in a thread)."""


class DiskSync:
    """Waits for the disk on behalf of many callers with one fsync at a time.

    A caller that commits and then awaits :meth:`wait` is covered by the next fsync to
    start; callers arriving while one runs share the one after it (group commit). The
    fsync runs in a thread, so the event loop keeps answering meanwhile.
    """

    def __init__(self, sync: Callable[[], None]):
        self._sync = sync
        self._next: asyncio.Future[None] | None = None
        self._running = False
        self._task: asyncio.Task[None] | None = None

    async def wait(self) -> None:
        """Return once everything committed before the call is on the disk."""
        waiting = self._next
        if waiting is None:
            waiting = self._next = asyncio.get_running_loop().create_future()
            if not self._running:
                self._start()
        await asyncio.shield(waiting)

    def _start(self) -> None:
        assert self._next is not None
        waiting, self._next = self._next, None
        self._running = True
        self._task = asyncio.create_task(self._run(waiting))

    async def _run(self, waiting: asyncio.Future[None]) -> None:
        try:
            await asyncio.to_thread(self._sync)
        except BaseException as exc:  # the callers get the error; nothing is acknowledged
            waiting.set_exception(exc)
        else:
            waiting.set_result(None)
        finally:
            self._running = False
            if self._next is not None:
                self._start()


async def checkpoints(checkpoint: Callable[[], None], every: float = CHECKPOINT_S) -> None:
    """Run ``checkpoint`` in a thread every ``every`` seconds until cancelled.

    A failed checkpoint (a full disk) is logged and tried again next time: the commits
    stay in the WAL meanwhile, as safe as before.
    """
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.to_thread(checkpoint)
        except Exception:
            log.exception("checkpointing the database failed; trying again in %g s", every)
