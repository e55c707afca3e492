"""Worker processes behind one bot: a front that stores, workers that answer.

One Python process answers on one core. With ``workers = N`` (N >= 1) the process Telegram
talks to (webhook or long polling) becomes the *front*: it stores each update in the inbox,
as a single process does, acknowledges it, and hands it to worker ``chat id mod N`` over a
Unix socket. Each worker is a full bot without its own intake: the dispatcher, the engine
and the sender. All updates of a chat go to the same worker, in order, so a chat's live
session and its per-chat send limit stay in one process; the global limit is shared out
evenly (each worker sends at most ``global_rate / N``). One worker already takes the
intake (and its fsyncs) off the answering core; more add throughput, up to one per core.

The workers are forked from one *zygote* (:mod:`bot.forkserver`): a process the front
starts as ``python -m bot.telegram.workers``, which imports the bot (and the openai SDK if
models are configured), loads the word model and the scenarios, plays a short session in
each language and builds the Bot API types a worker uses, all once, and then only forks, with no event loop, thread, socket or database
connection of its own. What it loaded stays shared between it and the workers
(copy-on-write) instead of being loaded again by each. Each worker opens its own database
connection, event loop and Bot API session after the fork. Scorecard charts are drawn by
one chart process for all workers, forked from the zygote when the first chart is asked
for (the zygote loads matplotlib then) and ended when no worker has drawn one for 5
minutes (:mod:`bot.chartpool`).

The workers share the store's SQLite file (WAL; a writer takes the lock up front and waits
for the others). A worker that dies stops the whole bot, and so does the zygote: the
unfinished updates are still in the inbox and are processed at the next start, so let a
supervisor (systemd, Docker) restart it.

A worker's first line from the front is its :class:`WorkerSpec` (JSON, with the token, so
it never shows in a process list), each further line an update ``<update_id> <payload
JSON>``, and ``stop`` asks it to finish what it has and exit. The end of input without
``stop`` means the front died: the worker drops its work in flight at once (those updates
stay in the inbox for the next start, which must not find them still running here). The
worker writes ``ready`` once it can take updates, and its send counters when it exits.

``owed <chat id>`` goes both ways: a worker that stored messages for a chat of another
worker (a notice) tells the front, and the front, which stores the drill clock's lines
and owns no chat, tells the chat's worker, which then delivers them at once. The periodic
sweep (``sweep_seconds``) is the safety net for a wake-up lost with a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot import forkserver
from bot.llm.client import LLMClient
from bot.llm.config import RoleSettings
from bot.llm.roles import Assistants
from bot.telegram.throttle import ThrottleStats
from graders import tune_gc

if TYPE_CHECKING:
    from bot.content import ScenarioLibrary
    from bot.i18n import Lang
    from bot.telegram.app import TelegramConfig

log = logging.getLogger("trainer.telegram.workers")

READY = b"ready\n"
STATS = b"stats "
STOP = b"stop\n"
OWED = b"owed "
"""``owed <chat id>``: another process stored messages for that chat (see the module)."""
START_TIMEOUT = 120.0
"""Seconds the zygote may take to load the bot, and then each worker to start."""
INPUT_LIMIT = 64 * 1024 * 1024
"""Longest line a worker reads (an update)."""


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
    """The front's side: starts the zygote and the workers, routes updates, stops them."""

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
        self.scenarios = Path(scenarios)
        self.specs = [
            WorkerSpec(
                index=i,
                of=config.workers,
                config=asdict(worker_config),
                db=str(db),
                llm=_assistant_settings(assistants),
                log_level=logging.getLogger().getEffectiveLevel(),
            )
            for i in range(config.workers)
        ]
        self.zygote: asyncio.subprocess.Process | None = None
        """The process the workers are forked from."""
        self._folder: str | None = None
        self._procs: list[forkserver.Forked] = []
        self._codes: dict[int, asyncio.Future[int | None]] = {}
        self._reports: asyncio.Task[None] | None = None
        self._watchers: list[asyncio.Task[None]] = []
        self._listeners: list[asyncio.Task[None]] = []
        """Each worker's output read, from its ``ready`` until it ends."""
        self._stopping = False
        self.stats: list[ThrottleStats] = []
        """Each worker's send counters, reported when it stopped."""
        self.failed = asyncio.Event()
        """Set when a worker or the zygote exits while the bot runs (the bot should stop)."""
        self.failure = ""

    @property
    def size(self) -> int:
        """How many workers there are."""
        return len(self.specs)

    def pids(self) -> list[int]:
        """The workers' process ids."""
        return [p.pid for p in self._procs]

    async def start(self) -> None:
        """Start the zygote, fork every worker from it and wait until each is ready."""
        try:
            path = await self._start_zygote()
            for spec in self.specs:
                self._procs.append(await self._fork(path, spec))
            await asyncio.gather(
                *(
                    self._ready(spec, proc)
                    for spec, proc in zip(self.specs, self._procs, strict=True)
                )
            )
        except BaseException:
            await self._kill()
            raise
        self._listeners = [asyncio.create_task(self._listen(proc)) for proc in self._procs]
        self._watchers = [asyncio.create_task(self._watch(i)) for i in range(self.size)]
        self._watchers.append(asyncio.create_task(self._watch_zygote()))

    async def _start_zygote(self) -> str:
        """Start the zygote; the path of its socket once it has loaded the bot."""
        self._folder = tempfile.mkdtemp(prefix="cs-trainer-")  # only this user may enter
        path = os.path.join(self._folder, "zygote")
        self.zygote = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.telegram.workers",
            path,
            str(self.scenarios),
            str(logging.getLogger().getEffectiveLevel()),
            *(["models"] if self.specs[0].llm else []),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},  # no thread alive at a fork
        )
        assert self.zygote.stdout is not None
        line = await self._first_line(self.zygote.stdout, "the telegram workers' zygote")
        if line != READY:
            code = await self.zygote.wait()
            raise WorkerError(
                f"the telegram workers' zygote (the process that loads the bot once for all "
                f"workers) failed to start (exit code {code}); its error is in the log above"
            )
        self._reports = asyncio.create_task(self._read_reports(self.zygote.stdout))
        return path

    async def _read_reports(self, reports: asyncio.StreamReader) -> None:
        """Note the exit codes the zygote reports, until it is gone."""
        async for line in reports:
            fields = line.split()
            if len(fields) == 3 and fields[0] == b"exit":
                found = self._code(int(fields[1]))
                if not found.done():
                    found.set_result(int(fields[2]))
        for found in self._codes.values():  # no more reports: codes not given are unknown
            if not found.done():
                found.set_result(None)

    def _code(self, pid: int) -> asyncio.Future[int | None]:
        found = self._codes.get(pid)
        if found is None:
            found = self._codes[pid] = asyncio.get_running_loop().create_future()
            if self._reports is not None and self._reports.done():
                found.set_result(None)
        return found

    async def _fork(self, path: str, spec: WorkerSpec) -> forkserver.Forked:
        try:
            proc = await forkserver.fork(path, "worker")
        except forkserver.ForkError as exc:
            raise WorkerError(f"telegram worker {spec.index} could not be started: {exc}") from None
        self._code(proc.pid)
        proc.stdin.write(json.dumps(asdict(spec)).encode() + b"\n")
        return proc

    @staticmethod
    async def _first_line(stream: asyncio.StreamReader, name: str) -> bytes:
        """``ready``, or what ended the wait for it (an empty line: the process is gone)."""

        async def ready_line() -> bytes:
            while True:  # anything a library printed before is skipped
                line = await stream.readline()
                if not line or line == READY:
                    return line

        try:
            return await asyncio.wait_for(ready_line(), START_TIMEOUT)
        except TimeoutError:
            raise WorkerError(f"{name} did not start within {START_TIMEOUT:.0f} s") from None

    async def _ready(self, spec: WorkerSpec, proc: forkserver.Forked) -> None:
        line = await self._first_line(proc.stdout, f"telegram worker {spec.index}")
        if line != READY:
            code = await self._exit_code(proc)
            raise WorkerError(
                f"telegram worker {spec.index} failed to start (exit code {code}); "
                "its error is in the log above"
            )

    async def _exit_code(self, proc: forkserver.Forked) -> int | None:
        """Wait until a worker exited; its exit code (None if the zygote could not say)."""
        await proc.wait()
        return await self._code(proc.pid)

    async def _watch(self, index: int) -> None:
        code = await self._exit_code(self._procs[index])
        if not self._stopping:
            self._fail(
                f"telegram worker {index} exited unexpectedly (exit code {code}); stopping. "
                "Its unfinished updates stay in the inbox and are processed at the next start."
            )

    async def _watch_zygote(self) -> None:
        assert self.zygote is not None
        code = await self.zygote.wait()
        if not self._stopping:
            self._fail(
                f"the telegram workers' zygote (the process they are forked from) exited "
                f"unexpectedly (exit code {code}); stopping. Unfinished updates stay in the "
                "inbox and are processed at the next start."
            )

    def _fail(self, failure: str) -> None:
        if not self.failed.is_set():
            self.failure = failure
            log.error("%s", failure)
            self.failed.set()

    def forward(self, chat: int, update_id: int, payload: str) -> None:
        """Hand a stored update (its JSON, one line) to the worker of its chat."""
        self._tell(chat, b"%d %s\n" % (update_id, payload.encode()))

    def wake(self, chat: int) -> None:
        """Tell the worker of a chat that another process stored messages owed to it."""
        self._tell(chat, b"%s%d\n" % (OWED, chat))

    def _tell(self, chat: int, line: bytes) -> None:
        proc = self._procs[worker_of(chat, self.size)]
        if proc.stdin.is_closing() or proc.ended():
            return  # a dead worker stops the bot; what it was told is in the store
        proc.stdin.write(line)

    async def stop(self, grace: float) -> None:
        """Let each worker finish what it has (up to ``grace`` s), then end them.

        With no grace they are killed at once: what they had stays in the inbox.
        """
        self._stopping = True
        for proc in self._procs:
            if grace > 0 and not proc.stdin.is_closing():
                proc.stdin.write(STOP)  # finish in-flight work, then exit
                proc.stdin.close()
        if grace <= 0:
            await self._kill()
        waiting = self._listeners or [asyncio.create_task(self._listen(p)) for p in self._procs]
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=grace + 10.0)
            if late:
                log.warning("%d worker(s) did not stop in time; killing them", len(late))
                await self._kill()
                await asyncio.gather(*late, return_exceptions=True)
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        await self._end_zygote()

    async def _listen(self, proc: forkserver.Forked) -> None:
        """Pass on a worker's wake-ups and keep its send counters, until it has ended."""
        async for line in proc.stdout:
            if line.startswith(OWED):
                self.wake(int(line[len(OWED) :]))
            elif line.startswith(STATS):
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
        """Kill the workers and the zygote at once."""
        self._stopping = True
        for proc in self._procs:
            proc.kill()
        await asyncio.gather(*(proc.wait() for proc in self._procs))
        if self.zygote is not None:  # its chart process exits with the workers' connections
            with contextlib.suppress(ProcessLookupError):
                self.zygote.kill()
        await self._end_zygote()

    async def _end_zygote(self) -> None:
        """Close the zygote's input: it exits once its children have (killed if it lingers)."""
        zygote = self.zygote
        if zygote is not None:
            self._stopping = True
            if zygote.stdin is not None:
                zygote.stdin.close()
            try:
                await asyncio.wait_for(zygote.wait(), forkserver.CHILDREN_GRACE_S + 10.0)
            except TimeoutError:
                log.warning("the telegram workers' zygote did not exit; killing it")
                with contextlib.suppress(ProcessLookupError):
                    zygote.kill()
                await zygote.wait()
            if self._reports is not None:
                await self._reports
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


# ------------------------------------------------------------------------ the zygote side


def _assistants(spec: WorkerSpec) -> Assistants | None:
    if not spec.llm:
        return None
    clients = {role: LLMClient(RoleSettings(**fields), role) for role, fields in spec.llm.items()}
    return Assistants(**clients)


REHEARSAL: dict[Lang, str] = {
    "zh": "您好，非常抱歉，麻烦发一下订单号和照片，我马上为您处理。",
    "en": "Sorry about that, please send your order number and a photo, I will sort it out.",
}
"""The replies the zygote grades before it forks (see :func:`_load`)."""


def _load(scenarios: Path, models: bool) -> ScenarioLibrary:
    """Import and load what every worker and chart process needs, before any is forked.

    Besides the modules, the word model and the scenarios, that is what a session loads
    on its first use (the clause model, caches, compiled patterns): the zygote plays a
    short session in each language on a database in memory. It also builds the Bot API
    types every worker uses from its first update on (aiogram's types are built when
    first used, see :mod:`bot.telegram`), and imports the openai SDK if the workers use
    ``models``.
    """
    from aiogram import methods, types

    from bot.content import ScenarioLibrary
    from graders import warm_up as warm_up_graders

    for module in ("bot.storage", "bot.telegram.app", *(["openai"] if models else [])):
        importlib.import_module(module)  # what a worker runs
    for model in (
        types.Update,
        types.InlineKeyboardMarkup,
        types.InlineKeyboardButton,
        methods.SendMessage,
        methods.SendPhoto,
        methods.EditMessageReplyMarkup,
    ):
        model.model_rebuild()
    library = ScenarioLibrary.load(scenarios)
    warm_up_graders(library.scenarios.values())
    try:
        asyncio.run(_rehearse(library))
    except Exception:  # only a warm-up: each worker loads what it lacks when it needs it
        log.warning("the zygote's warm-up session failed", exc_info=True)
    return library


async def _rehearse(library: ScenarioLibrary) -> None:
    from bot.engine import Engine
    from bot.storage import Store

    store = Store.open(None)
    try:
        engine = Engine(store, library)
        for lang, reply in REHEARSAL.items() if library.ids() else ():
            session, _ = await engine.start(trainee="warm-up", scenario=library.ids()[0], lang=lang)
            await session.reply(reply)
            await session.end()
    finally:
        store.close()


def run_zygote(path: str, scenarios: Path, log_level: int, models: bool) -> None:
    """The zygote's life: load the bot, then fork workers and chart processes on request.

    Ctrl-C and SIGTERM are the front's to handle: the zygote ends with the end of its
    input, once its children have exited.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    control_in, control_out = forkserver.take_stdio()
    logging.basicConfig(
        level=log_level, format="%(asctime)s %(levelname)s %(name)s[zygote]: %(message)s"
    )
    library = _load(scenarios, models)
    tune_gc()  # the workers inherit the graders' collection pacing
    worker: forkserver.Entry = partial(_worker, library, path)
    forkserver.serve(path, {"worker": worker}, {"chart": _charts}, control_in, control_out)


def _charts() -> forkserver.Handler:
    """What the chart process needs: matplotlib, its fonts and its layouts, drawn once."""
    from bot.chartpool import answer, warm_up

    warm_up()
    return answer


def _worker(library: ScenarioLibrary, zygote: str, conn: socket.socket) -> None:
    asyncio.run(run_worker(conn, library, zygote))


async def run_worker(conn: socket.socket, library: ScenarioLibrary, zygote: str) -> None:
    """A worker's life: read its spec, start, process updates until end of input."""
    from bot.chartpool import ChartRenderer
    from bot.storage import Store
    from bot.telegram.app import TelegramApp, TelegramConfig, protect_logs

    reader, to_front = await asyncio.open_unix_connection(sock=conn, limit=INPUT_LIMIT)
    spec = WorkerSpec(**json.loads(await reader.readline()))
    logging.basicConfig(
        level=spec.log_level,
        format=f"%(asctime)s %(levelname)s %(name)s[w{spec.index}]: %(message)s",
        force=True,  # not the zygote's
    )
    config = TelegramConfig(**spec.config)
    protect_logs(config.token)
    store = Store.open(spec.db)
    assistants = _assistants(spec)
    app = TelegramApp(config, store, library, assistants=assistants)
    app.charts = ChartRenderer(
        config.chart_processes, start=partial(forkserver.fork, zygote, "chart")
    )
    app.shard = (spec.index, spec.of)

    def relay(chat: int) -> None:  # the front tells the chat's worker
        if not to_front.is_closing():
            to_front.write(b"%s%d\n" % (OWED, chat))

    app.relay = relay
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
        await to_front.drain()
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
            if line.startswith(OWED):
                app.owed(int(line[len(OWED) :]))
                continue
            update_id, _, payload = line.partition(b" ")
            app.take(int(update_id), json.loads(payload))
    finally:
        await app.stop()
        if assistants is not None:
            await assistants.aclose()
        store.close()
    with contextlib.suppress(ConnectionError):  # (the front may be gone)
        to_front.write(STATS + json.dumps(asdict(app.throttle.stats)).encode() + b"\n")
        await to_front.drain()
    to_front.close()


if __name__ == "__main__":
    run_zygote(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4:] == ["models"])
