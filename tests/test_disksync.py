"""Waiting for the disk off the event loop: group commit and the periodic checkpoint."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from bot.disksync import DiskSync, checkpoints


def test_callers_arriving_during_an_fsync_share_the_next_one() -> None:
    async def main() -> None:
        started = threading.Event()
        release = threading.Event()
        calls: list[int] = []

        def sync() -> None:  # in a thread: the first one is held until released
            calls.append(len(calls))
            started.set()
            if len(calls) == 1:
                release.wait(timeout=60)

        disk = DiskSync(sync)
        first = asyncio.create_task(disk.wait())
        await asyncio.to_thread(started.wait, 60)
        later = [asyncio.create_task(disk.wait()) for _ in range(5)]
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(first, *later)
        assert calls == [0, 1]  # one fsync for the first, one shared by the five after it

    asyncio.run(main())


def test_a_failed_fsync_reaches_its_callers_and_the_next_one_runs() -> None:
    async def main() -> None:
        results = iter([OSError("disk full"), None])

        def sync() -> None:
            error = next(results)
            if error is not None:
                raise error

        disk = DiskSync(sync)
        with pytest.raises(OSError, match="disk full"):
            await disk.wait()
        await disk.wait()  # nothing acknowledged before; this one succeeds

    asyncio.run(main())


def test_checkpoints_run_in_a_thread_survive_a_failure_and_stop_when_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        threads: list[threading.Thread] = []
        third = asyncio.Event()
        loop = asyncio.get_running_loop()

        def checkpoint() -> None:
            threads.append(threading.current_thread())
            if len(threads) == 1:
                raise OSError("disk full")
            if len(threads) == 3:
                loop.call_soon_threadsafe(third.set)

        task = asyncio.create_task(checkpoints(checkpoint, every=0.001))
        await asyncio.wait_for(third.wait(), timeout=60)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
        assert threading.main_thread() not in threads

    with caplog.at_level(logging.ERROR, logger="bot.disksync"):
        asyncio.run(main())
    assert "checkpointing the database failed" in caplog.text
