"""Scorecard charts drawn in worker processes: same image, and a dead worker is replaced."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image
from procs import alive

from bot.chartpool import ChartProcess, ChartRenderer, start_process
from bot.charts import scorecard_chart

DIMS = [
    ({"zh": "共情", "en": "Empathy"}, 8.0, 10.0),
    ({"zh": "准确", "en": "Accuracy"}, None, 10.0),
]
ARGS = (DIMS, [55.0, 70.0, 82.5])
ROOT = Path(__file__).resolve().parent.parent
KW = {"title": {"zh": "水壶", "en": "Kettle"}, "lang": "en"}


def image(png: bytes) -> tuple[tuple[int, int], str, bytes]:
    """A PNG's size, mode and pixels: deflate may pack the same pixels differently
    (ISA-L picks its code path by CPU), so charts are compared decoded."""
    with Image.open(io.BytesIO(png)) as decoded:
        return decoded.size, decoded.mode, decoded.tobytes()


def test_a_worker_draws_the_same_chart_and_a_killed_worker_is_replaced() -> None:
    async def run() -> None:
        renderer = ChartRenderer(1)
        try:
            png = await renderer.render(*ARGS, **KW)
            assert image(png) == image(scorecard_chart(*ARGS, **KW))
            [pid] = renderer.pids
            assert pid != os.getpid()

            os.kill(pid, signal.SIGKILL)
            other = await renderer.render(DIMS, [40.0], **KW)
            assert image(other) == image(scorecard_chart(DIMS, [40.0], **KW))
            assert renderer.pids and pid not in renderer.pids
        finally:
            await renderer.close()
        assert renderer.pids == []

    asyncio.run(run())


def test_a_chart_asked_for_while_a_process_starts_loses_no_process() -> None:
    async def run() -> None:
        started: list[ChartProcess] = []
        starting, go_on = asyncio.Event(), asyncio.Event()

        async def start() -> ChartProcess:
            starting.set()
            await go_on.wait()
            proc = await start_process()
            started.append(proc)
            return proc

        renderer = ChartRenderer(2, start=start)
        try:
            first = asyncio.create_task(renderer.render(DIMS, [10.0], **KW))
            await starting.wait()  # the first process is on its way ...
            second = asyncio.create_task(renderer.render(DIMS, [20.0], **KW))
            await asyncio.sleep(0.1)  # ... when the second chart is asked for
            go_on.set()
            for task, value in ((first, 10.0), (second, 20.0)):
                assert image(await task) == image(scorecard_chart(DIMS, [value], **KW))
            assert sorted(renderer.pids) == sorted(proc.pid for proc in started)  # none lost
        finally:
            await renderer.close()
        for proc in started:
            for _ in range(1200):  # 60 s: a generous bound for a loaded machine
                if not alive(proc.pid):
                    break
                await asyncio.sleep(0.05)
            assert not alive(proc.pid)  # each one stopped with the renderer

    asyncio.run(run())


def test_workers_start_with_the_first_chart_and_stop_when_idle() -> None:
    async def run() -> None:
        renderer = ChartRenderer(1, idle_s=0.5)
        try:
            assert renderer.pids == []  # nothing drawn yet: no process
            assert image(await renderer.render(*ARGS, **KW)) == image(scorecard_chart(*ARGS, **KW))
            [pid] = renderer.pids
            for _ in range(1200):  # 60 s: a generous bound for a loaded machine
                if not renderer.pids:
                    break
                await asyncio.sleep(0.05)
            assert renderer.pids == []
            for _ in range(1200):
                if not alive(pid):
                    break
                await asyncio.sleep(0.05)
            assert not alive(pid)  # stopped, not orphaned
            drawn = await renderer.render(DIMS, [40.0], **KW)
            assert image(drawn) == image(scorecard_chart(DIMS, [40.0], **KW))
            assert renderer.pids and pid not in renderer.pids
        finally:
            await renderer.close()

    asyncio.run(run())


def test_loading_the_bot_loads_no_matplotlib_or_openai() -> None:
    """Charts are drawn in their own processes and models are optional: neither library
    is loaded by the Telegram bot or the web app until used."""
    probe = (
        "import sys, bot.telegram.app, bot.telegram.workers, bot.web.app; "
        "print(sorted(m for m in ('matplotlib', 'openai') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=300, check=True)  # fmt: skip
    assert done.stdout.strip() == "[]"


def test_charts_in_a_thread_when_no_processes_are_wanted() -> None:
    async def run() -> None:
        renderer = ChartRenderer(0)
        assert image(await renderer.render(*ARGS, **KW)) == image(scorecard_chart(*ARGS, **KW))
        assert renderer.pids == []

    asyncio.run(run())


def test_workers_exit_when_the_bot_is_killed(tmp_path: Path) -> None:
    """After a kill -9 an orphaned worker would hold the bot's stdout and stderr open."""
    script = (
        "import asyncio, sys\n"
        "from bot.chartpool import ChartRenderer\n"
        "async def main():\n"
        "    r = ChartRenderer(1)\n"
        "    await r.render([({'en': 'A'}, 1.0, 2.0)], [50.0], title={'en': 'x'}, lang='en')\n"
        "    print(r.pids[0], flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=ROOT, text=True
    ) as bot:
        assert bot.stdout is not None
        worker = int(bot.stdout.readline())
        os.kill(bot.pid, signal.SIGKILL)
        bot.wait(10)
        deadline = time.monotonic() + 10
        while alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(worker)
        assert bot.stdout.read() == ""  # EOF: nobody holds the pipe any more
