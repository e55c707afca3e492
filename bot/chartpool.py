"""Scorecard charts drawn in worker processes, so an event loop never waits on them.

matplotlib holds the GIL while it draws, so a thread would still stall every chat of a
bot for the whole drawing. Any adapter can use :class:`ChartRenderer`.

The workers are plain child processes (``python -m bot.chartpool``), or, for the worker
processes of a Telegram bot, one process they share, forked from their zygote with
matplotlib loaded already (:mod:`bot.forkserver`). The event loop itself speaks to them
over their input and output: a request is a length-prefixed pickle of the chart's
arguments, an answer a status byte and the PNG (or the pickled error). No helper thread
sits in between, as it would with ``ProcessPoolExecutor``: such threads need the GIL from
a busy event loop for every hand-over, which under load made each chart wait tens of
milliseconds, and the charts queued up for seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import pickle
import signal
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO, Protocol

from bot.forkserver import FRAME

log = logging.getLogger("trainer.charts")

IDLE_S = 300.0
"""Chart processes with nothing to draw for this long are stopped (started again when needed)."""


def _draw(*args: Any, **kwargs: Any) -> bytes:
    """:func:`bot.charts.scorecard_chart`; matplotlib is loaded only where charts are drawn."""
    from bot.charts import scorecard_chart

    return scorecard_chart(*args, **kwargs)


_SIZE = FRAME  # a request is framed as a shared chart process reads it
_OK, _ERROR = b"K", b"E"


class ChartWorkerDied(RuntimeError):
    """The worker process exited before it answered."""


class _Input(Protocol):
    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class ChartProcess(Protocol):
    """What the renderer needs of a chart process.

    An :class:`asyncio.subprocess.Process`, or a :class:`bot.forkserver.Forked`.
    """

    @property
    def pid(self) -> int:
        """Its process id."""

    @property
    def stdin(self) -> _Input | None:
        """Where requests go; closing it asks the process to exit."""

    @property
    def stdout(self) -> asyncio.StreamReader | None:
        """Where answers come from; it ends when the process exited."""

    def kill(self) -> None:
        """Kill it (:class:`ProcessLookupError` or nothing if it is gone)."""

    async def wait(self) -> object:
        """Wait until it exited."""


async def start_process() -> ChartProcess:
    """A new chart process: ``python -m bot.chartpool``."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.chartpool",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


class _Worker:
    """One chart process and the answers it still owes, in request order."""

    def __init__(self, proc: ChartProcess):
        self.proc = proc
        self.waiting: deque[asyncio.Future[bytes]] = deque()
        self.dead = False
        self.reading = asyncio.create_task(self._read())

    async def ask(self, request: bytes) -> bytes:
        assert self.proc.stdin is not None
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.waiting.append(answer)
        self.proc.stdin.write(_SIZE.pack(len(request)) + request)
        return await answer

    async def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            while True:
                head = await stdout.readexactly(1 + _SIZE.size)
                body = await stdout.readexactly(_SIZE.unpack(head[1:])[0])
                answer = self.waiting.popleft()
                if answer.cancelled():
                    continue  # the caller gave up; the order stays intact
                if head[:1] == _OK:
                    answer.set_result(body)
                else:
                    answer.set_exception(pickle.loads(body))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the process is gone
        finally:
            self.dead = True
            while self.waiting:
                answer = self.waiting.popleft()
                if not answer.done():
                    answer.set_exception(ChartWorkerDied("the chart worker exited"))

    async def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # end of input: the worker exits
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()  # charts in progress are abandoned (nothing if it has exited)
        await self.proc.wait()
        self.reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reading


class ChartRenderer:
    """Draws scorecard charts in ``processes`` worker processes (0: in a thread).

    The workers start with the first chart and stop after :data:`IDLE_S` without one, so
    a bot between sessions keeps no chart process. A worker that dies is replaced;
    if the new one fails too, or none can be started, the chart is drawn in a thread.
    ``start`` starts a worker (:func:`start_process` by default).
    """

    def __init__(
        self,
        processes: int,
        idle_s: float = IDLE_S,
        start: Callable[[], Awaitable[ChartProcess]] = start_process,
    ):
        self.processes = processes
        self.idle_s = idle_s
        self.start = start
        self._workers: list[_Worker] = []
        self._spawning: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False

    async def _spawn(self) -> None:
        while len(self._workers) < self.processes:
            proc = await self.start()
            # Appended to the list as it is now: `_ready` may have replaced it meanwhile.
            self._workers.append(_Worker(proc))

    async def _ready(self) -> list[_Worker]:
        self._workers = [w for w in self._workers if not w.dead]
        if len(self._workers) < self.processes:
            if self._spawning is None or self._spawning.done():
                self._spawning = asyncio.create_task(self._spawn())
            await self._spawning
        return self._workers

    async def render(self, *args: Any, **kwargs: Any) -> bytes:
        """A PNG from :func:`bot.charts.scorecard_chart` with these arguments."""
        if self.processes <= 0:
            return await asyncio.to_thread(functools.partial(_draw, *args, **kwargs))
        request = pickle.dumps((args, kwargs))
        try:
            for attempt in (1, 2):
                if self._closed:  # stopping: no new workers
                    break
                try:
                    workers = await self._ready()
                except OSError as exc:
                    log.warning("cannot start a chart worker (%s)", exc)
                    break
                worker = min(workers, key=lambda w: len(w.waiting))  # the least busy
                try:
                    return await worker.ask(request)
                except ChartWorkerDied:
                    log.warning("a chart worker died (attempt %d); starting a new one", attempt)
        finally:
            self._rest_later()
        if not self._closed:
            log.warning("chart workers keep failing; drawing this chart in a thread")
        return await asyncio.to_thread(functools.partial(_draw, *args, **kwargs))

    def _rest_later(self) -> None:
        """Stop the workers once :attr:`idle_s` passed without a chart."""
        if self._closed:
            return
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(self.idle_s, self._rest)

    def _rest(self) -> None:
        self._idle = None
        if any(w.waiting for w in self._workers):  # still drawing: look again later
            self._rest_later()
            return
        workers, self._workers = self._workers, []
        task = asyncio.get_running_loop().create_task(self._close(workers))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    @staticmethod
    async def _close(workers: list[_Worker]) -> None:
        await asyncio.gather(*(w.close() for w in workers))

    @property
    def pids(self) -> list[int]:
        """Process ids of the running workers."""
        return [w.proc.pid for w in self._workers if not w.dead]

    async def close(self) -> None:
        """Stop the workers (charts in progress are abandoned)."""
        self._closed = True
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._spawning is not None:
            with contextlib.suppress(Exception):
                await self._spawning
        workers, self._workers = self._workers, []
        await asyncio.gather(self._close(workers), *self._retiring)


# ------------------------------------------------------------------------ the worker side


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if data is not None and len(data) == size else None


def answer(request: bytes) -> bytes:
    """The answer to one request (a pickle of the chart's arguments): status, size, body."""
    args, kwargs = pickle.loads(request)
    try:
        status, body = _OK, _draw(*args, **kwargs)
    except Exception as exc:  # the caller gets the error; the worker goes on
        try:
            status, body = _ERROR, pickle.dumps(exc)
        except Exception:
            status, body = _ERROR, pickle.dumps(RuntimeError(repr(exc)))
    return status + _SIZE.pack(len(body)) + body


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """Answer chart requests until end of input (the bot stopped, or was killed)."""
    while True:
        head = _read_exactly(stdin, _SIZE.size)
        if head is None:
            return
        request = _read_exactly(stdin, _SIZE.unpack(head)[0])
        if request is None:
            return
        stdout.write(answer(request))
        stdout.flush()


def warm_up() -> None:
    """Load matplotlib and the fonts of both languages, by drawing a chart in each.

    For a zygote (:mod:`bot.forkserver`): the chart process forked from it shares it all.
    """
    for lang in ("zh", "en"):
        _draw(
            [({"zh": "共情", "en": "Empathy"}, 1.0, 2.0)],
            [50.0],
            title={"zh": "预热", "en": "Warm-up"},
            lang=lang,
        )


if __name__ == "__main__":
    # Ctrl-C and SIGTERM are the bot's to handle; it ends the workers by closing the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The answers get the real stdout to themselves; anything a library prints goes to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, answers)
