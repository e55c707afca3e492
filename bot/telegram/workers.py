"""Worker processes behind one bot: a front that stores, workers that answer.

One Python process answers on one core. With ``workers = N`` (N >= 1) the process Telegram
talks to (webhook or long polling) becomes the *front*: it stores each update in the inbox,
as a single process does, acknowledges it, and hands it to worker ``chat id mod N`` over a
pipe. Each worker is a full bot without its own intake: the dispatcher, the engine, the
sender and a chart process. All updates of a chat go to the same worker, in order, so a
chat's live session and its per-chat send limit stay in one process; the global limit is
shared out evenly (each worker sends at most ``global_rate / N``). One worker already takes
the intake (and its fsyncs) off the answering core; more add throughput, up to one per core.

The workers share the store's SQLite file (WAL; a writer takes the lock up front and waits
for the others). A worker that dies stops the whole bot: its unfinished updates are still
in the inbox and are processed at the next start, so let a supervisor (systemd, Docker)
restart it.

Run as ``python -m bot.telegram.workers``: the first line on stdin is the worker's
:class:`WorkerSpec` (JSON, with the token, so it never shows in a process list), each
further line an update ``<update_id> <payload JSON>``, and ``stop`` asks it to finish what
it has and exit. The end of input without ``stop`` means the front died: the worker drops
its work in flight at once (those updates stay in the inbox for the next start, which must
not find them still running here). The worker writes ``ready`` to stdout once it can take
updates, and its send counters when it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.llm.client import LLMClient
from bot.llm.config import RoleSettings
from bot.llm.roles import Assistants
from bot.telegram.throttle import ThrottleStats

if TYPE_CHECKING:
    from bot.telegram.app import TelegramConfig

log = logging.getLogger("trainer.telegram.workers")

READY = b"ready\n"
STATS = b"stats "
STOP = b"stop\n"
START_TIMEOUT = 120.0
"""Seconds a worker may take to start (imports, word model, chart process)."""


class WorkerError(RuntimeError):
    """A worker could not start, or died while the bot was running."""


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs to run its share of the bot."""

    index: int
    of: int
    """How many workers the pool has (a worker delivers to the chats it answers)."""
    config: dict[str, Any]
    """The :class:`~bot.telegram.app.TelegramConfig` fields, global rate already shared out."""
    db: str
    scenarios: str
    llm: dict[str, dict[str, Any]]
    """Role name to :class:`~bot.llm.config.RoleSettings` fields, for configured roles."""
    log_level: int = logging.INFO


def worker_of(chat: int, workers: int) -> int:
    """The worker that processes a chat's updates."""
    return chat % workers


def _assistant_settings(assistants: Assistants | None) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    if assistants is None:
        return found
    for role in ("customer", "judge", "rewriter"):
        client: LLMClient | None = getattr(assistants, role)
        if client is not None:
            found[role] = asdict(client.settings)
    return found


class WorkerPool:
    """The front's side: starts the workers, routes updates to them, stops them."""

    def __init__(
        self,
        config: TelegramConfig,
        *,
        db: Path | str,
        scenarios: Path,
        assistants: Assistants | None = None,
    ):
        if config.workers < 1:
            raise ValueError("a worker pool needs at least one worker")
        share = None if config.global_rate is None else config.global_rate / config.workers
        if config.redis_url:  # the workers count their sends together: each may use it all
            share = config.global_rate
        worker_config = replace(config, workers=0, global_rate=share, webhook_url=None)
        self.specs = [
            WorkerSpec(
                index=i,
                of=config.workers,
                config=asdict(worker_config),
                db=str(db),
                scenarios=str(scenarios),
                llm=_assistant_settings(assistants),
                log_level=logging.getLogger().getEffectiveLevel(),
            )
            for i in range(config.workers)
        ]
        self._procs: list[asyncio.subprocess.Process] = []
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False
        self.stats: list[ThrottleStats] = []
        """Each worker's send counters, reported when it stopped."""
        self.failed = asyncio.Event()
        """Set when a worker exits while the bot runs (the bot should stop)."""
        self.failure = ""

    @property
    def size(self) -> int:
        """How many workers there are."""
        return len(self.specs)

    def pids(self) -> list[int]:
        """The workers' process ids."""
        return [p.pid for p in self._procs]

    async def start(self) -> None:
        """Start every worker and wait until each is ready."""
        try:
            for spec in self.specs:
                self._procs.append(await self._spawn(spec))
            await asyncio.gather(
                *(
                    self._ready(spec, proc)
                    for spec, proc in zip(self.specs, self._procs, strict=True)
                )
            )
        except BaseException:
            await self._kill()
            raise
        self._watchers = [asyncio.create_task(self._watch(i)) for i in range(self.size)]

    async def _spawn(self, spec: WorkerSpec) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.telegram.workers",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(asdict(spec)).encode() + b"\n")
        return proc

    async def _ready(self, spec: WorkerSpec, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        stdout = proc.stdout

        async def ready_line() -> bytes:
            while True:  # anything a library printed before is skipped
                line = await stdout.readline()
                if not line or line == READY:
                    return line

        try:
            line = await asyncio.wait_for(ready_line(), START_TIMEOUT)
        except TimeoutError:
            raise WorkerError(
                f"telegram worker {spec.index} did not start within {START_TIMEOUT:.0f} s"
            ) from None
        if line != READY:
            code = await proc.wait()
            raise WorkerError(
                f"telegram worker {spec.index} failed to start (exit code {code}); "
                "its error is in the log above"
            )

    async def _watch(self, index: int) -> None:
        code = await self._procs[index].wait()
        if not self._stopping:
            self.failure = (
                f"telegram worker {index} exited unexpectedly (exit code {code}); stopping. "
                "Its unfinished updates stay in the inbox and are processed at the next start."
            )
            log.error("%s", self.failure)
            self.failed.set()

    def forward(self, chat: int, update_id: int, payload: str) -> None:
        """Hand a stored update (its JSON, one line) to the worker of its chat."""
        proc = self._procs[worker_of(chat, self.size)]
        if proc.stdin is None or proc.stdin.is_closing() or proc.returncode is not None:
            return  # a dead worker stops the bot; the update waits in the inbox
        proc.stdin.write(b"%d %s\n" % (update_id, payload.encode()))

    async def stop(self, grace: float) -> None:
        """Let each worker finish what it has (up to ``grace`` s), then end them.

        With no grace they are killed at once: what they had stays in the inbox.
        """
        self._stopping = True
        for proc in self._procs:
            if grace > 0 and proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.write(STOP)  # finish in-flight work, then exit
                proc.stdin.close()
        if grace <= 0:
            await self._kill()
        waiting = [asyncio.create_task(self._finish(p)) for p in self._procs]
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=grace + 10.0)
            if late:
                log.warning("%d worker(s) did not stop in time; killing them", len(late))
                await self._kill()
                await asyncio.gather(*late, return_exceptions=True)
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)

    async def _finish(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            if line.startswith(STATS):
                self.stats.append(ThrottleStats(**json.loads(line[len(STATS) :])))
        await proc.wait()

    def total_stats(self) -> ThrottleStats:
        """The send counters of all workers added up (complete once they stopped)."""
        total = ThrottleStats()
        for found in self.stats:
            for name, value in asdict(found).items():
                setattr(total, name, getattr(total, name) + value)
        return total

    async def _kill(self) -> None:
        for proc in self._procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


# ------------------------------------------------------------------------ the worker side


def _assistants(spec: WorkerSpec) -> Assistants | None:
    if not spec.llm:
        return None
    clients = {role: LLMClient(RoleSettings(**fields), role) for role, fields in spec.llm.items()}
    return Assistants(**clients)


async def _read_stdin() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    return reader


async def run_worker() -> None:
    """A worker's life: read its spec, start, process updates until end of input."""
    from bot.content import ScenarioLibrary
    from bot.storage import Store
    from bot.telegram.app import TelegramApp, TelegramConfig, protect_logs

    # Our stdout carries the lines for the front; what a library prints goes to stderr.
    to_front = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    reader = await _read_stdin()
    spec = WorkerSpec(**json.loads(await reader.readline()))
    logging.basicConfig(
        level=spec.log_level,
        format=f"%(asctime)s %(levelname)s %(name)s[w{spec.index}]: %(message)s",
    )
    config = TelegramConfig(**spec.config)
    protect_logs(config.token)
    store = Store.open(spec.db)
    assistants = _assistants(spec)
    library = ScenarioLibrary.load(Path(spec.scenarios))
    app = TelegramApp(config, store, library, assistants=assistants)
    app.shard = (spec.index, spec.of)
    stopping = False

    def halt() -> None:
        nonlocal stopping
        stopping = True
        reader.feed_eof()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # Ctrl-C reaches the whole process group
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, halt)
    try:
        await app.start(worker=True)
        to_front.write(READY)
        to_front.flush()
        while not stopping:
            line = await reader.readline()
            if stopping or line == STOP:
                break  # a signal, or the front asks: finish what is in flight
            if not line.endswith(b"\n"):
                log.warning(
                    "the front is gone; dropping the updates in flight (they stay in the "
                    "inbox for the next start)"
                )
                app.config = replace(app.config, grace_seconds=0.0)
                break
            update_id, _, payload = line.partition(b" ")
            app.take(int(update_id), json.loads(payload))
    finally:
        await app.stop()
        if assistants is not None:
            await assistants.aclose()
        store.close()
    to_front.write(STATS + json.dumps(asdict(app.throttle.stats)).encode() + b"\n")
    to_front.flush()


if __name__ == "__main__":
    asyncio.run(run_worker())
