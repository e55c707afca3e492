"""Telegram bot under load, webhook and long polling: the trainer bot against an echo bot.

    python bench/bench_telegram.py [--quick] [--workers N] [--trainees N] [--open-trainees N]
                                   [--rate R] [--seconds S] [--backlog N] [--stub-chart]
                                   [--db sqlite|postgresql|URL] [--runs N]

Runs the real bot (``bot.telegram.app.TelegramApp``, webhook mode, real aiogram and aiohttp)
against the fake Bot API of ``tests/botapi.py`` on 127.0.0.1, with a file-backed store in a
temp dir (WAL; fsync at the inbox, as in production), or with --db postgresql a new schema
on the local PostgreSQL server (see bench/benchdb.py). Simulated trainees play the golden
transcripts of ``tests/golden/`` (every scenario; Chinese and English; good, mediocre and bad
trainees; normal and hard) in coach mode, replies cycled: each reply is answered by one bot
message; when the customer resolves or leaves, the chart and scorecard follow and the
trainee's next message starts a new session (one more trainee message, answered by the
briefing). Turn latency runs from POSTing a reply's update to the webhook until the fake
server receives the bot's answering sendMessage; only reply turns are in the latency figures.

Phases (limits off: neither the bot nor the fake server limits sends):
  1 user        one trainee at a time: the service time of a turn, no queueing
  closed loop   --trainees (50) trainees each send their next message as soon as the previous
                one was answered: maximum throughput
  open loop     --rate (200) trainee messages/s offered, spread over --open-trainees (200)
                trainees: each sends every open-trainees/rate s (1 s), staggered, never before
                its previous answer (a slot that comes while it waits is skipped and counted)
  limits on     bot and fake server at 30 sends/s overall and 1/s per chat (the bot restarted
                on the same store): an open loop at --limited-rate (15) messages/s, then a
                burst: --backlog (200) trainees each send a reply at once. The sustained rate
                counts sends from the first one until fewer than 30 messages await an answer.
  polling       the same bot restarted in long-polling mode (getUpdates, 25 s timeout, as in
                production), limits off: one trainee at a time, then --trainees trainees in a
                closed loop; latency runs from queueing an update at the fake server until the
                answer. Every message must be answered (an update once waited ~40 s).
  echo bot      a bare aiogram Dispatcher whose one handler answers ``message.text``, served by
                aiogram's SimpleRequestHandler on 127.0.0.1 with the same secret, registered
                with the same fake server (setWebhook) and driven by the same loops

Targets (limits off): closed-loop throughput >= 0.5x the echo bot's, and reply p99 <= 50 ms at
200 trainee messages/s. (Limits on): sends >= 90 % of the global limit while a backlog
exists, and 0 unhandled 429s. The bot runs with ``--workers`` (2) worker processes behind its
front, as ``trainer serve telegram --workers`` does; the front, the fake server and the load
generator share one event loop, so the fake server's own cost is part of every figure, and
the cpu column adds the workers' CPU to this process's. ``--workers 0`` runs the whole bot
in that loop. Each bot process draws its scorecard charts in one chart process, as in
production. ``--stub-chart`` (with ``--workers 0``) is a diagnostic: the chart is replaced
by a ready PNG (in a thread) to show what the rest costs.
Every phase runs --runs (3; 2 with --quick) times; each figure is the median and range of
the runs, and each target is judged by the median (and says in how many runs it was met).
The full run takes about 5 minutes, ``--quick`` about 1.5. Always exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import statistics
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiogram import Bot, Dispatcher, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import Message
from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application
from aiohttp import web

import bot.chartpool
from bot.charts import scorecard_chart
from bot.storage import Store

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:  # tests/tgharness.py is made to be imported
    sys.path.insert(0, str(ROOT / "tests"))

from benchdb import CHOICES_HELP, database  # noqa: E402
from botapi import SEND_METHODS, Call, FakeBotAPI  # noqa: E402
from figures import add_runs, figure, load_line, machine_line, runs_of, verdict  # noqa: E402
from golden import Case, load_cases  # noqa: E402
from tgharness import BotHarness  # noqa: E402

BRIEFING = "📋"  # in the message that opens a session (both languages)
GLOBAL_RATE = 30.0
CHAT_RATE = 1.0
ECHO_PATH = "/echo/webhook"


class BenchAPI(FakeBotAPI):
    """The fake Bot API, also handing every successful send to the chat's simulated user.

    A per-chat queue is far cheaper than ``wait_for``/``wait_texts`` (which rescan the calls
    on every answer) and keeps the load generator's own cost low on the shared loop.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inbox: dict[int, asyncio.Queue[Call]] = {}
        self.send_times: list[float] = []

    def _answer(self, call: Call, outcome: Any) -> web.Response:
        response = super()._answer(call, outcome)
        if call.status == 200 and call.method in SEND_METHODS:
            self.send_times.append(call.at)
            queue = self.inbox.get(call.chat_id) if call.chat_id is not None else None
            if queue is not None:
                queue.put_nowait(call)
        return response


@dataclass
class Run:
    """What one load phase measured."""

    name: str
    users: int
    start: float
    end: float
    offered: float | None = None  # messages/s (open loop)
    latencies: list[float] = field(default_factory=list)  # reply turns, seconds
    lags: list[float] = field(default_factory=list)  # open loop: left late by (seconds)
    posted: int = 0  # trainee messages POSTed to the webhook
    answered: int = 0  # ...answered before the window closed
    replies: int = 0  # reply turns answered before the window closed
    sessions: int = 0  # sessions started (after one ended)
    endings: int = 0  # replies that ended their session (chart, scorecard follow)
    missing: int = 0  # messages never answered (timed out)
    skipped: int = 0  # open loop: slots dropped because the previous answer had not come
    sends: int = 0  # bot sends received by the fake server in the window
    cpu: float = 0.0  # process CPU / wall time, from the start until all answers came
    cpu_here: float = 0.0  # ...of the bench process alone (with worker processes)
    last_answer: float = 0.0
    post_times: list[float] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)  # (posted, answered)

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def answer(self, t0: float, at: float, *, reply: bool) -> None:
        self.last_answer = max(self.last_answer, at)
        self.spans.append((t0, at))
        if reply:
            self.latencies.append(at - t0)
        if at <= self.end:
            self.answered += 1
            self.replies += reply


class User(ABC):
    """One simulated Telegram user chatting with the bot under test."""

    def __init__(self, api: BenchAPI, uid: int, lang: str, timeout: float) -> None:
        self.api = api
        self.uid = uid
        self.lang = lang
        self.timeout = timeout
        self.queue: asyncio.Queue[Call] = asyncio.Queue()
        api.inbox[uid] = self.queue
        self.broken = False
        self.polling = False
        """The bot long-polls: an update is queued for getUpdates instead of POSTed."""

    async def post_message(self, text: str) -> float:
        t0 = time.monotonic()
        await self._post(self.api.message(self.uid, text, lang=self.lang))
        return t0

    async def post_callback(self, data: str) -> float:
        t0 = time.monotonic()
        await self._post(self.api.callback(self.uid, data, lang=self.lang))
        return t0

    async def _post(self, update_id: int) -> None:
        if self.polling:  # queued by the fake server: the bot's long poll takes it
            return
        status = await self.api.post_to_webhook(self.api.updates[update_id])
        if status != 200:
            raise RuntimeError(f"webhook answered {status}")

    async def next_send(self, method: str | None = "sendMessage") -> Call:
        while True:
            call = await asyncio.wait_for(self.queue.get(), self.timeout)
            if method is None or call.method == method:
                return call

    @abstractmethod
    async def turn(self, run: Run) -> None:
        """Send the next message and wait for its answer."""

    async def reply(self, run: Run, text: str) -> bool:
        """Post a reply and wait for its answer; False (and this user broken) if none came."""
        run.posted += 1
        t0 = await self.post_message(text)
        run.post_times.append(t0)
        try:
            answer = await self.next_send()
        except TimeoutError:
            self.fail(run)
            return False
        run.answer(t0, answer.at, reply=True)
        return True

    def fail(self, run: Run) -> None:
        """An answer never came: count it and stop this user."""
        run.missing += 1
        self.broken = True


class EchoUser(User):
    def __init__(self, api: BenchAPI, uid: int, case: Case, timeout: float) -> None:
        super().__init__(api, uid, case.lang, timeout)
        self.replies = case.replies
        self.k = uid

    async def turn(self, run: Run) -> None:
        text = self.replies[self.k % len(self.replies)]
        self.k += 1
        await self.reply(run, text)


class Trainee(User):
    """Plays its golden transcript in coach mode, session after session."""

    def __init__(
        self, api: BenchAPI, harness: BotHarness, uid: int, case: Case, timeout: float
    ) -> None:
        super().__init__(api, uid, case.lang, timeout)
        self.harness = harness
        self.case = case
        self.name = f"telegram:{uid}"
        self.k = 0
        self.needs_session = True

    async def setup(self) -> None:
        await self.post_message("/start")
        await self.next_send()
        await self.begin(None)

    async def begin(self, run: Run | None) -> None:
        """Start a session: one callback, answered by the message with the briefing.

        Whatever the previous session still sends (chart, scorecard) comes first.
        """
        c = self.case
        if run is not None:
            run.posted += 1
        t0 = await self.post_callback(f"p:m:{c.scenario}:{c.difficulty}:coach:0")
        if run is not None:
            run.post_times.append(t0)
        while True:
            call = await self.next_send(None)
            if call.method == "sendMessage" and BRIEFING in (call.text or ""):
                break
        self.k = 0
        self.needs_session = False
        if run is not None:
            run.sessions += 1
            run.answer(t0, call.at, reply=False)

    async def turn(self, run: Run) -> None:
        if self.needs_session:
            try:
                await self.begin(run)
            except TimeoutError:
                self.fail(run)
            return
        text = self.case.replies[self.k % len(self.case.replies)]
        self.k += 1
        if not await self.reply(run, text):
            return
        # The session is stored as ended before the answer is sent (by whichever process).
        self.needs_session = self.harness.store.active_session(self.name) is None
        run.endings += self.needs_session


# ---------------------------------------------------------------------------------- loads


WORKER_PIDS: list[int] = []
"""The bot's worker processes, when it runs with several (their CPU counts too)."""


def _cpu() -> tuple[float, float]:
    """CPU seconds of this process and of the bot's worker processes."""
    here = total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for pid in WORKER_PIDS:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total, here


def _begin_phase() -> tuple[float, float]:
    """Collect garbage left by earlier phases (the fake server keeps every call), then
    return the CPU time so far."""
    gc.collect()
    return _cpu()


def _window(api: BenchAPI, run: Run, cpu0: tuple[float, float]) -> Run:
    wall = max(time.monotonic() - run.start, 1e-9)
    total, here = _cpu()
    run.cpu, run.cpu_here = (total - cpu0[0]) / wall, (here - cpu0[1]) / wall
    run.sends = sum(1 for at in api.send_times if run.start <= at <= run.end)
    return run


async def closed_loop(api: BenchAPI, users: list[User], seconds: float, name: str) -> Run:
    cpu0 = _begin_phase()
    start = time.monotonic()
    run = Run(name, len(users), start, start + seconds)

    async def drive(user: User) -> None:
        while time.monotonic() < run.end and not user.broken:
            await user.turn(run)

    await asyncio.gather(*(drive(u) for u in users))
    return _window(api, run, cpu0)


async def open_loop(
    api: BenchAPI, users: list[User], rate: float, seconds: float, name: str
) -> Run:
    cpu0 = _begin_phase()
    start = time.monotonic() + 0.05
    run = Run(name, len(users), start, start + seconds, offered=rate)
    period = len(users) / rate

    async def drive(i: int, user: User) -> None:
        due = start + i / rate
        while due < run.end and not user.broken:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            run.lags.append(time.monotonic() - due)
            await user.turn(run)
            due += period
            # A trainee answered too late for its next slots drops them (counted) rather
            # than sending them back to back: the phase stays bounded when overloaded.
            while due < min(time.monotonic() - period, run.end):
                run.skipped += 1
                due += period

    await asyncio.gather(*(drive(i, u) for i, u in enumerate(users)))
    return _window(api, run, cpu0)


async def backlog(api: BenchAPI, trainees: list[Trainee], replies: int, name: str) -> Run:
    cpu0 = _begin_phase()
    start = time.monotonic()
    run = Run(name, len(trainees), start, float("inf"))

    async def drive(t: Trainee) -> None:
        for _ in range(replies):
            if not t.broken:
                await t.turn(run)

    await asyncio.gather(*(drive(t) for t in trainees))
    run.end = run.last_answer  # the burst lasts until the last message is answered
    return _window(api, run, cpu0)


def backlog_window(run: Run, depth: float) -> tuple[float, float]:
    """When at least ``depth`` trainee messages were waiting for their answer.

    With ``depth`` = the global limit, that is at least one second of sends at the limit
    still to go; the tail where a few chats wait only for their per-chat limit is left out.
    """
    events = sorted([(t, 1) for t in run.post_times] + [(at, -1) for _, at in run.spans])
    pending = 0
    start = end = float("nan")
    for at, step in events:
        was = pending
        pending += step
        if was < depth <= pending and start != start:  # nan: not started yet
            start = at
        if pending < depth <= was:
            end = at
    return start, end


# ---------------------------------------------------------------------------------- echo bot


@contextlib.asynccontextmanager
async def echo_bot(api: BenchAPI, secret: str) -> Any:
    """A bare aiogram echo bot on a webhook, registered with ``api``."""
    bot = Bot(api.token, session=AiohttpSession(api=TelegramAPIServer.from_base(api.base_url)))
    dp = Dispatcher()
    router = Router()

    @router.message()
    async def echo(message: Message) -> None:
        await message.answer(message.text or "?")

    dp.include_router(router)
    app = web.Application()
    SimpleRequestHandler(dispatcher=dp, bot=bot, secret_token=secret).register(app, ECHO_PATH)
    setup_application(app, dp, bot=bot)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    await bot.set_webhook(f"http://127.0.0.1:{port}{ECHO_PATH}", secret_token=secret)
    try:
        yield bot
    finally:
        await bot.delete_webhook()
        await runner.cleanup()  # closes the bot's session (setup_application)


# ---------------------------------------------------------------------------------- report


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile in ms (nan when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * q + 0.5) - 1))] * 1000


def report(runs: list[Run]) -> str:
    """A phase's line: each figure's median and range over its runs."""
    first = runs[0]
    offered = f"{first.offered:.0f}/s offered" if first.offered else "as fast as answered"
    if first.name.startswith("backlog"):
        offered = f"{first.posted} at once"
    lat = [r.latencies for r in runs]
    return (
        f"  {first.name} ({first.users} users, {offered}): "
        f"{figure([r.answered / r.seconds for r in runs], '/s', 0)} messages answered, "
        f"{figure([r.sends / r.seconds for r in runs], '/s', 0)} sends; reply p50 "
        f"{figure([pct(x, 0.5) for x in lat], 'ms')}, p95 {figure([pct(x, 0.95) for x in lat], 'ms')}, "
        f"p99 {figure([pct(x, 0.99) for x in lat], 'ms')}, max "
        f"{figure([max(x, default=0.0) * 1000 for x in lat], 'ms')}; cpu "
        f"{figure([r.cpu * 100 for r in runs], '%', 0)}"
        + (f"; {sum(r.missing for r in runs)} unanswered" if any(r.missing for r in runs) else "")
    )


def note_open(run: Run) -> str:
    late = sum(1 for x in run.lags if x > 0.010)
    return (
        f"  {run.name}: {run.posted} messages sent, {run.skipped} slots skipped (answer "
        f"still pending), {late} sent >10 ms late (lag p99 {pct(run.lags, 0.99):.0f} ms), "
        f"{run.sessions} new sessions, {run.missing} unanswered"
    )


def chart_cost() -> float:
    """Seconds to render one scorecard chart (what each ending session costs a worker)."""
    dims = [({"zh": f"维度{i}", "en": f"Dimension {i}"}, 3.0 * i, 10.0) for i in range(1, 6)]
    title = {"zh": "运输途中损坏：水壶到手就裂了", "en": "Damaged in transit"}
    times = []
    for i in range(6):
        t = time.perf_counter()
        scorecard_chart(dims, [55.0, 70.0, 82.5], title=title, lang="zh" if i % 2 else "en")
        times.append(time.perf_counter() - t)
    return sorted(times[1:])[2]


def stub_charts() -> None:
    """Diagnostic: replace the chart renderer with a ready PNG (not the production path)."""
    png = scorecard_chart(
        [({"zh": "甲", "en": "A"}, 1.0, 2.0)], [50.0], title={"en": "x"}, lang="en"
    )
    bot.chartpool.scorecard_chart = lambda *a, **k: png  # drawn in a thread (see below)


# ---------------------------------------------------------------------------------- main


async def started(h: BotHarness) -> None:
    """(Re)start the bot and note its worker processes."""
    app = await h.start_bot()
    WORKER_PIDS[:] = app.pool.pids() if app.pool is not None else []


async def switch(h: BotHarness, trainees: list[Trainee], *, polling: bool, limits: bool) -> None:
    """Restart the bot on the same store: long polling or webhook, limits on or off."""
    await asyncio.gather(*(x.begin(None) for x in trainees if x.needs_session))
    await h.idle(timeout=120)
    if h.app is not None and h.webhook:
        await h.app.bot.delete_webhook(drop_pending_updates=True)  # POSTed already
    await h.stop_bot()
    rates = (GLOBAL_RATE, CHAT_RATE) if limits else (None, None)
    h.config_overrides.update(global_rate=rates[0], chat_rate=rates[1])
    h.config_overrides["poll_timeout"] = 25  # production's long poll (the harness: 1 s)
    h.api.global_rate, h.api.chat_rate = rates
    h.webhook = not polling
    for x in trainees:
        x.polling = polling
    await started(h)
    await asyncio.sleep(1.1)  # no chat sent to within the last second


@dataclass
class Limited:
    """One run of the limits-on phases and what the burst's sends showed."""

    opened: Run
    burst: Run
    first_send: float
    sustained: float
    violations: int


async def limits_on(
    api: BenchAPI, h: BotHarness, trainees: list[Trainee], args: argparse.Namespace
) -> Limited:
    """An open loop at half the send limit, then a burst: every trainee replies at once."""
    violations0 = api.limit_violations
    opened = await open_loop(
        api,
        list(trainees[: args.open_trainees]),
        args.limited_rate,
        args.seconds,
        "trainer open loop (on)",
    )
    await h.idle(timeout=120)  # pending charts, scorecards (per-chat limited)
    await asyncio.gather(*(x.begin(None) for x in trainees if x.needs_session))
    await h.idle(timeout=120)
    sends0 = len(api.send_times)
    burst = await backlog(api, trainees[: args.backlog], args.backlog_replies, "backlog burst (on)")
    await h.idle(timeout=120)
    backlog_from, backlog_to = backlog_window(burst, GLOBAL_RATE)
    # Sends queue up once the first replies are processed: count from the first send.
    first_send = min(
        (at for at in api.send_times[sends0:] if at >= burst.start), default=float("nan")
    )
    backlog_from = max(backlog_from, first_send)
    sends = sum(1 for at in api.send_times[sends0:] if backlog_from <= at <= backlog_to)
    span = backlog_to - backlog_from
    return Limited(
        opened,
        burst,
        first_send - burst.start,
        sends / span if span > 0 else 0.0,
        api.limit_violations - violations0,
    )


async def bench(args: argparse.Namespace) -> None:
    logging.getLogger("trainer").setLevel(logging.ERROR)
    cases = load_cases()
    chart_s = chart_cost()
    if args.stub_chart:
        stub_charts()
    n_trainees = max(args.trainees, args.open_trainees, args.backlog)
    if args.stub_chart:
        print("DIAGNOSTIC RUN: the scorecard chart is stubbed (not the production path)")
    print(
        "Telegram bot: real bot (TelegramApp, aiogram + aiohttp) vs fake Bot API on 127.0.0.1, "
        "through its webhook, then long polling"
    )
    print(
        "  store: file-backed SQLite in a temp dir (WAL, fsync at the inbox), as in production; "
        f"{len(cases)} golden transcripts (zh/en, good/mediocre/bad), coach mode"
    )
    if args.workers > 0:
        print(
            f"  bot: {args.workers} worker process(es) answer; the front (webhook, inbox, routing "
            f"by chat) shares one event loop with the fake server and the load generator "
            f"({os.cpu_count()} CPUs here); cpu = this process + the workers"
        )
    else:
        print(
            f"  bot, fake server and load generator share one event loop ({os.cpu_count()} "
            "CPUs here): the fake server's own cost is part of every latency and rate"
        )
    phases: dict[str, list[Run]] = {}
    limited: list[Limited] = []

    def keep(run: Run) -> Run:
        phases.setdefault(run.name, []).append(run)
        return run

    with tempfile.TemporaryDirectory() as tmp, database(args.db, Path(tmp)) as db:
        store = Store.open(db)
        print(f"  store: {store.url.split('?')[0]}; {args.runs} runs of every phase")
        async with BenchAPI() as api:
            h = BotHarness(
                store,
                webhook=True,
                api=api,
                global_rate=None,
                chat_rate=None,
                # as in production: one worker process draws the charts (the stub: a thread)
                chart_processes=0 if args.stub_chart else 1,
                workers=args.workers,
            )
            await started(h)
            trainees = [
                Trainee(api, h, 10_001 + i, cases[i % len(cases)], args.timeout)
                for i in range(n_trainees)
            ]
            t = time.monotonic()
            await asyncio.gather(*(x.setup() for x in trainees))
            print(
                f"  setup: {n_trainees} trainees sent /start and started a session in "
                f"{time.monotonic() - t:.1f} s"
            )
            await closed_loop(api, list(trainees), args.warmup, "warm-up")  # jieba, caches

            for _ in range(args.runs):
                # one trainee at a time: the service time of a turn, without queueing
                keep(await closed_loop(api, trainees[:1], args.warmup / 2, "trainer 1 user (off)"))
                closed = list(trainees[: args.trainees])
                keep(await closed_loop(api, closed, args.seconds, "trainer closed loop (off)"))
                opened = list(trainees[: args.open_trainees])
                keep(await open_loop(api, opened, args.rate, args.seconds, "trainer open loop (off)"))  # fmt: skip

            # long polling: the same store, the bot restarted, limits off
            await switch(h, trainees, polling=True, limits=False)
            await closed_loop(api, list(trainees), args.warmup, "polling warm-up")  # new workers
            for _ in range(args.runs):
                keep(await closed_loop(api, trainees[:1], args.warmup / 2, "polling 1 user (off)"))
                closed = list(trainees[: args.trainees])
                keep(await closed_loop(api, closed, args.seconds, "polling closed loop (off)"))

            # limits on: webhook again, the fake server enforcing the limits
            await switch(h, trainees, polling=False, limits=True)
            assert h.app is not None
            app = h.app
            for x in trainees:
                x.timeout = max(args.timeout, 4 * len(trainees) * args.backlog_replies / 30)
            for _ in range(args.runs):
                done = await limits_on(api, h, trainees, args)
                keep(done.opened)
                keep(done.burst)
                limited.append(done)
            errors = store.inbox_failures()
            failed = (len(errors), sum("RetryAfter" in e or "429" in e for e in errors))
            await h.stop_bot()
            stats = app.pool.total_stats() if app.pool is not None else app.throttle.stats
            api.global_rate = api.chat_rate = None

            # the echo bot through the same fake server and loops
            async with echo_bot(api, h.secret):
                echoes: list[User] = [
                    EchoUser(api, 900_001 + i, cases[i % len(cases)], args.timeout)
                    for i in range(max(args.trainees, args.open_trainees))
                ]
                await closed_loop(api, echoes, args.warmup / 2, "echo warm-up")
                for _ in range(args.runs):
                    keep(await closed_loop(api, echoes[:1], args.warmup / 2, "echo 1 user"))
                    closed_echo = echoes[: args.trainees]
                    keep(await closed_loop(api, closed_echo, args.seconds, "echo closed loop"))
                    keep(await open_loop(api, echoes[: args.open_trainees], args.rate, args.seconds, "echo open loop"))  # fmt: skip
        store.close()

    print()
    print("phases, median (range) of the runs; latency = reply turns only:")
    for runs in phases.values():
        print(report(runs))
    if args.workers > 0:
        here = [r.cpu_here * 100 for r in phases["trainer closed loop (off)"]]
        print(
            "  cpu of the bench process alone (fake server, load generator, the bot's front) in "
            f"the closed loop: {figure(here, '%', 0)}"
        )
    for name in ("trainer open loop (off)", "trainer open loop (on)", "echo open loop"):
        print(note_open(phases[name][-1]) + " (the last run)")
    trainer_runs = [r for name in phases if name.startswith(("trainer", "backlog")) for r in phases[name]]  # fmt: skip
    ended = sum(r.endings for r in trainer_runs)
    replies = sum(r.posted - r.sessions for r in trainer_runs)
    print(
        f"  trainer: {ended} of {replies} replies ended their session ({ended / max(replies, 1):.0%}"
        f"); each ending renders a chart PNG in the chart worker process ({chart_s * 1000:.0f} ms "
        "here), sends it and the scorecard; the trainee's next message starts a new session"
        + (" [charts STUBBED: diagnostic run]" if args.stub_chart else "")
    )

    bursts = [d.burst for d in limited]
    sustained = [d.sustained for d in limited]
    missing = [d.burst.missing + d.opened.missing for d in limited]
    print()
    print(
        f"limits on ({GLOBAL_RATE:.0f}/s global, {CHAT_RATE:.0f}/s per chat, both sides): "
        f"backlog of {bursts[0].posted} messages from {bursts[0].users} trainees, "
        f"{len(bursts)} runs"
    )
    print(
        f"  first send {figure([d.first_send for d in limited], 's', 2)} after the burst; until "
        f"fewer than {GLOBAL_RATE:.0f} messages awaited their answer, "
        f"{figure([v / GLOBAL_RATE * 100 for v in sustained], '%', 0)} of the global limit; all "
        f"answered {figure([b.seconds for b in bursts], 's')} after the burst"
    )
    rendering = (
        "charts stubbed, nothing rendered"
        if args.stub_chart
        else f"~{statistics.median(b.endings for b in bursts) * chart_s:.1f} s of chart rendering"
        " in the worker process"
    )
    print(f"  {figure([b.endings for b in bursts], '', 0)} of the burst's replies ended a session: {rendering}")  # fmt: skip
    served = sum(d.violations for d in limited)
    print(
        f"  429s served by the fake: {served}; retried by the throttle: {stats.retried_429}; "
        f"sends failed (any error, after the throttle's retries): {stats.failed} (e.g. a 400 for "
        f"removing a keyboard the message does not have); updates failed: {failed[0]} ({int(failed[1] or 0)} by RetryAfter); "
        f"messages unanswered: {sum(missing)}; token wait {stats.waited_s:.0f} s in total "
        "(all runs)"
    )

    def rate(run: Run) -> float:
        return run.answered / run.seconds

    ratios = [
        rate(t) / rate(e)
        for t, e in zip(
            phases["trainer closed loop (off)"], phases["echo closed loop"], strict=True
        )
    ]
    opened_runs = phases["trainer open loop (off)"]
    p99s = [pct(r.latencies, 0.99) for r in opened_runs]
    kept_up = [
        pct(r.latencies, 0.99) if rate(r) >= 0.95 * args.rate else float("inf") for r in opened_runs
    ]
    # 429s not retried, updates failed by one, messages never answered, over all runs
    unhandled = max(0, served - stats.retried_429) + int(failed[1] or 0) + sum(missing)
    polled = list(
        zip(phases["polling 1 user (off)"], phases["polling closed loop (off)"], strict=True)
    )
    print()
    print("targets (median of the runs, and in how many runs):")
    print(
        f"  throughput vs echo bot (limits off)  {figure(ratios, 'x', 2)} "
        f"({figure([rate(r) for r in phases['trainer closed loop (off)']], '/s', 0)} vs "
        f"{figure([rate(r) for r in phases['echo closed loop']], '/s', 0)})   target >= 0.5x   "
        f"{verdict(ratios, lambda v: v >= 0.5)}"
    )
    print(
        f"  p99 at {args.rate:.0f} msgs/s (limits off)        {figure(p99s, 'ms')} (answered "
        f"{figure([rate(r) for r in opened_runs], '/s', 0)})   target <= 50 ms, all offered "
        f"answered   {verdict(kept_up, lambda v: v <= 50)}"
    )
    print(
        f"  sends with a backlog (limits on)     {figure([v / GLOBAL_RATE * 100 for v in sustained], '%', 0)} "
        f"of {GLOBAL_RATE:.0f}/s   target >= 90 %   {verdict(sustained, lambda v: v >= 0.9 * GLOBAL_RATE)}"
    )  # fmt: skip
    print(
        f"  unhandled 429s (limits on)           {unhandled} in {len(limited)} runs (429s not "
        f"retried, updates failed by RetryAfter, messages unanswered)   target 0   "
        f"{'met' if unhandled == 0 else 'NOT met'}"
    )
    unanswered = [one.missing + many.missing for one, many in polled]
    slowest = [max(one.latencies + many.latencies, default=0.0) * 1000 for one, many in polled]
    print(
        f"  long polling: messages unanswered    {sum(unanswered)}; slowest answer "
        f"{figure(slowest, 'ms', 0)}   target: every message answered   "
        f"{verdict(unanswered, lambda v: v == 0)}"
    )


def main() -> None:
    started = time.monotonic()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (~1.5 minutes)")
    parser.add_argument(
        "--trainees", type=int, help="closed-loop concurrency, trainer and echo (default 50)"
    )
    parser.add_argument(
        "--open-trainees",
        type=int,
        help="trainees sharing the open-loop rate (default 200: one message/s each at 200/s)",
    )
    parser.add_argument(
        "--rate", type=float, default=200.0, help="open loop, trainee messages/s (limits off)"
    )
    parser.add_argument(
        "--limited-rate",
        type=float,
        default=15.0,
        help="open loop with the limits on, trainee messages/s (half the 30/s send limit)",
    )
    parser.add_argument("--seconds", type=float, help="length of each measured phase (10)")
    parser.add_argument("--backlog", type=int, help="trainees in the limits-on burst (200)")
    parser.add_argument(
        "--backlog-replies",
        type=int,
        help="replies each burst trainee sends, one after the other (1)",
    )
    parser.add_argument("--timeout", type=float, default=20.0, help="per answer, seconds")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="bot worker processes behind the front (default 2: one per core here); 0 runs "
        "the whole bot in the bench process",
    )
    parser.add_argument("--db", default="sqlite", help=CHOICES_HELP)
    add_runs(parser, quick=2)
    parser.add_argument(
        "--stub-chart",
        action="store_true",
        help="diagnostic: a ready PNG instead of rendering the scorecard chart",
    )
    args = parser.parse_args()
    if args.stub_chart and args.workers > 0:
        parser.error("--stub-chart works in one process only: add --workers 0")
    quick = {"trainees": 50, "open_trainees": 100, "seconds": 1.0, "backlog": 60}
    full = {"trainees": 50, "open_trainees": 200, "seconds": 10.0, "backlog": 200}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.backlog_replies is None:
        args.backlog_replies = 1
    args.warmup = 1.0 if args.quick else 2.0
    args.runs = runs_of(args, quick=2)
    print(machine_line(), flush=True)
    asyncio.run(bench(args))
    print(f"(run took {time.monotonic() - started:.0f} s; {load_line()})")


if __name__ == "__main__":
    main()
