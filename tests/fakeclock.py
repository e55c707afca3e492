"""Simulated clocks for asyncio tests: time moves only when the test (or idleness) moves it.

Throughput, spacing and deadlines are then the code's own, whatever else the machine runs.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Any


class VirtualTime:
    """A clock that moves only when every task is waiting on it: simulated, never measured.

    Throughput and spacing are then the throttle's own, whatever else the machine runs.
    """

    SETTLE = 50
    """Loop turns given to ready tasks before the clock jumps to the next wake-up."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def clock(self) -> float:
        """The simulated time."""
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Wait until the simulated clock reaches now + ``seconds``."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0.0), next(self._order), future))
        await future

    def run(self, work: Any) -> Any:
        """Run a coroutine to the end in simulated time."""

        async def drive() -> Any:
            task = asyncio.ensure_future(work)
            while True:
                for _ in range(self.SETTLE):
                    await asyncio.sleep(0)
                if task.done():
                    return task.result()
                assert self._sleepers, "nothing runs and nothing waits: a deadlock"
                when, _, future = heapq.heappop(self._sleepers)
                self.now = max(self.now, when)
                future.set_result(None)

        return asyncio.run(drive())


class FakeTime(VirtualTime):
    """A virtual clock the test moves by hand (:meth:`advance`), starting at 1000 s."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0

    async def advance(self, seconds: float) -> None:
        """Move the clock forward, waking each sleeper at its own time on the way."""
        target = self.now + seconds
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            at, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, at)
            if not future.done():
                future.set_result(None)
            await self.settle()
        self.now = target
        await self.settle()

    async def settle(self) -> None:
        """Give ready tasks their turns before time moves on."""
        for _ in range(self.SETTLE):
            await asyncio.sleep(0)
