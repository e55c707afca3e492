"""Scorecard charts drawn in worker processes, so an event loop never waits on them.

matplotlib holds the GIL while it draws, so a thread would still stall every chat of a
bot for the whole drawing. Any adapter can use :class:`ChartRenderer`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from bot.charts import scorecard_chart

log = logging.getLogger("trainer.charts")


def _worker_init(parent: int) -> None:
    """Leave Ctrl-C and SIGTERM to the bot, and exit as soon as the bot is gone.

    The bot shuts its workers down when it stops; after a ``kill -9`` an orphaned worker
    would live on and keep the bot's stdout and stderr open.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def _ready() -> bool:
    return True


class ChartRenderer:
    """Draws scorecard charts in ``processes`` worker processes (0: in a thread).

    A worker that dies is replaced; if the new one fails too, the chart is drawn in a thread.
    """

    def __init__(self, processes: int):
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(os.getpid(),),
            )
        return self._pool

    async def render(self, *args: Any, **kwargs: Any) -> bytes:
        """A PNG from :func:`bot.charts.scorecard_chart` with these arguments."""
        call = functools.partial(scorecard_chart, *args, **kwargs)
        if self.processes <= 0:
            return await asyncio.to_thread(call)
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            pool = self._executor()
            try:
                return await loop.run_in_executor(pool, call)
            except BrokenProcessPool:
                self._discard(pool)
                log.warning("a chart worker died (attempt %d); starting a new one", attempt)
        log.warning("chart workers keep failing; drawing this chart in a thread")
        return await asyncio.to_thread(call)

    @property
    def pids(self) -> list[int]:
        """Process ids of the running workers."""
        pool = self._pool
        processes = getattr(pool, "_processes", None) or {}
        return [p.pid for p in processes.values() if p.pid is not None]

    def warm_up(self) -> None:
        """Start the workers now (importing matplotlib takes a while), not at the first chart."""
        if self.processes > 0:
            self._executor().submit(_ready)

    def close(self) -> None:
        """Stop the workers (charts in progress are abandoned)."""
        if self._pool is not None:
            self._discard(self._pool)

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        # Only the broken pool: another chart may already run on its replacement.
        if self._pool is pool:
            self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)
