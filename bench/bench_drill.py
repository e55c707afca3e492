"""A festival drill under load: many simulated trainees, 3 customers each, on a channel.

    python bench/bench_drill.py [--channel web|telegram|engine] [--quick] [--trainees N]
                                [--minutes M] [--scale S] [--chart FILE]
                                [--db sqlite|postgresql|URL] [--processes N] [--compare]
                                [--runs N]

The preset is Double 11 midnight peak: 3 customers at once per trainee, and arrivals 3x
faster for the first 10 minutes (the drill is shortened to --minutes). Every 6-20 s each
simulated trainee answers whichever of their customers has waited longest, with replies
from the golden transcripts (good, mediocre and bad trainees, both languages).

Channels:
  web       (default) `trainer serve web` as child processes, as its users run it (one
            process and a file-backed store by default; --processes N share --db through
            Redis, each trainee on process i mod N as a load balancer spreads them). The trainees are simulated in this process, each
            signed in with its cookie and on the drill workspace's WebSocket over loopback:
            the server pushes the workspace whenever one of their customers writes, arrives
            or leaves, and replies go out on the socket. Drill time is the wall clock.
  telegram  the real bot (TelegramApp: aiogram, webhook) against the fake Bot API of
            tests/botapi.py on 127.0.0.1, both enforcing Telegram's limits (30 sends/s,
            1/s per chat), with as many trainees as one bot carries for this plan
            (``load()``; --trainees overrides). A trainee answers by quoting the customer's
            labelled message. Drill time is the wall clock.
  engine    no channel: the drill runner and the store in this process, drill time --scale
            times faster than the wall clock. Adds the SQLite write-lock wait.

Prints replies/s and reply latency p50/p99 (sent until the server took it, graded and
answered: the socket's "done"; on Telegram until the customer's next labelled message
arrives, which includes its wait behind the 1/s per-chat limit), the
scheduler's lag (how late each arrival, nudge and departure was applied, from the store's
event log), the server's CPU and peak RSS, the replies lost (answered but not stored) and,
on Telegram, the 429s and how long owed messages waited in the outbox.

--compare runs the web drill four times (one process on SQLite, two on SQLite, two and
four on PostgreSQL) and prints messages/s (replies answered plus workspaces pushed),
replies/s, reply p99, scheduler lag p99 and the servers' cores for each.

Every drill runs --runs (3; 2 with --quick) times, each on a fresh database; each run prints
its report, and a summary gives the median and range of the runs' figures, the targets
judged by the median.

Targets: lag p99 <= 1 s, RSS < 1 GB, 0 lost replies, 0 unhandled 429s. The full web run
(2,000 trainees, 5 drill minutes) takes about 6 minutes, --quick (200 trainees, 1 minute)
about 1.5; the Telegram run about as long as its drill. Always exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench_telegram import CHAT_RATE, GLOBAL_RATE, BenchAPI  # noqa: E402
from bench_web import Server, _free_port, _sign_in  # noqa: E402
from benchdb import CHOICES_HELP, database  # noqa: E402
from figures import add_runs, figure, load_line, machine_line, runs_of, verdict  # noqa: E402
from golden import load_cases  # noqa: E402
from tgharness import BotHarness  # noqa: E402

from bot.charts import drill_chart  # noqa: E402
from bot.content import ScenarioLibrary  # noqa: E402
from bot.disksync import DiskSync, checkpoints  # noqa: E402
from bot.drill.plan import DrillPlan, load  # noqa: E402
from bot.drill.report import standings  # noqa: E402
from bot.drill.runner import CLOCK_S, LABEL, DrillRunner, run_clock  # noqa: E402
from bot.engine import Engine, ReplyRejected  # noqa: E402
from bot.service import Actor, Invalid, Training  # noqa: E402
from bot.storage import DrillRow, Store  # noqa: E402
from bot.web.app import COOKIE  # noqa: E402
from graders import tune_gc  # noqa: E402

T0 = 1_794_355_200.0  # 2026-11-11 00:00 UTC
PRESET = "double11-peak"
REFUSED = ("已经离开", "没有正在等你回复", "没有在进行")
"""Words of the bot's refusals of a reply (bot/drill/runner.py)."""
OPENING_S = 10.0
"""Every trainee's first customers come in the drill's first seconds (a full hand)."""


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Seen:
    """What the simulated trainees saw."""

    latencies: list[float] = field(default_factory=list)
    gone: int = 0
    """Replies to a customer who had left meanwhile (or after the end)."""
    missing: int = 0
    """Replies never answered."""
    pushes: int = 0
    sent: int = 0
    """Replies sent (Telegram: each must be stored or refused)."""


def _replies(i: int) -> tuple[str, ...]:
    cases = load_cases()
    return cases[i % len(cases)].replies


class Lock:
    """Times every wait for SQLite's write lock (BEGIN IMMEDIATE)."""

    def __init__(self, store: Store) -> None:
        self.waits: list[float] = []
        backend = store.backend
        begin = getattr(backend, "_begin_immediate", None)
        if begin is None:  # PostgreSQL: no database-wide write lock to wait for
            return

        def timed(*args: object, **kwargs: object) -> None:
            started = time.perf_counter()
            begin(*args, **kwargs)
            self.waits.append(time.perf_counter() - started)

        backend._begin_immediate = timed  # type: ignore[attr-defined]


def _plan_line(plan: DrillPlan, trainees: int, minutes: float, scheduled: int) -> None:
    need = load(plan, trainees)
    surge = plan.surge
    print(
        f"drill: {trainees} trainees x {plan.concurrency} customers at once, {minutes:g} drill "
        f"minutes, {scheduled} customers scheduled"
        + (f"; surge x{surge.factor:g} for {surge.minutes:g} min" if surge else ""),
        flush=True,
    )
    print(
        f"Telegram load of this plan: ~{need.messages_per_s:.0f} msg/s at its busiest; one bot "
        f"carries ~{need.telegram_trainees} trainees "
        f"({'fits' if need.fits_telegram(trainees) else 'does NOT fit: run it on the web, or split it across bots'})",
        flush=True,
    )


def _figures(store: Store, drill_id: int, seen: Seen, scale: float = 1.0) -> dict[str, float]:
    """Latency, lag and lost replies, from what the trainees saw and the store holds.

    Returns replies/s, reply p99 (s) and scheduler lag p99 (s) for a comparison table.
    """
    lags = [lag / scale for lag in store.drill_lags(drill_id)]
    stored = store.drill_reply_count(drill_id)
    lat = seen.latencies
    answered = len(lat)
    drill = store.drill(drill_id)
    assert drill is not None
    wall = (drill.ends_at - drill.starts_at) / scale
    print(
        f"replies: {answered} answered ({answered / wall:.0f}/s), {seen.gone} to customers "
        f"already gone, {seen.missing} never answered; latency p50 {_pct(lat, 0.5) * 1000:.1f} "
        f"ms, p99 {_pct(lat, 0.99) * 1000:.1f} ms"
    )
    late = sum(1 for lag in lags if lag > 1)
    print(
        f"scheduler lag over {len(lags)} events: p50 {_pct(lags, 0.5):.3f} s, p99 "
        f"{_pct(lags, 0.99):.3f} s, max {max(lags, default=0):.3f} s, {late} later than 1 s"
        "   (target p99 <= 1 s)"
    )
    events = store.drill_event_lags(drill_id)
    opening = [lag for due, lag in events if due < drill.starts_at + OPENING_S]
    later = [lag for due, lag in events if due >= drill.starts_at + OPENING_S]
    for name, rows in ((f"the first {OPENING_S:g} s", opening), ("after them", later)):
        part = [lag / scale for lag in rows]
        print(
            f"  {name}: {len(part)} events, lag p50 {_pct(part, 0.5):.3f} s, p99 "
            f"{_pct(part, 0.99):.3f} s, max {max(part, default=0):.3f} s"
        )
    if seen.sent:  # Telegram: sent = stored + refused (that customer had gone)
        lost = seen.sent - stored - seen.gone
        print(
            f"lost replies: {lost} ({seen.sent} sent, {stored} stored, {seen.gone} refused)"
            "   (target 0)"
        )
    else:  # web: each "done" was stored before it was sent
        lost = max(0, answered - stored)
        print(f"lost replies: {lost} (stored {stored})   (target 0)")
    return {
        "replies/s": answered / wall,
        "messages/s": (answered + seen.pushes) / wall,
        "reply p99 s": _pct(lat, 0.99),
        "lag p99 s": _pct(lags, 0.99),
        "lost": lost,
    }


def _report(store: Store, drill: DrillRow, chart: str | None, plan: DrillPlan) -> None:
    report = standings(store, drill)
    team = report.team
    print(
        f"report: {team.arrived} customers arrived, {team.handled} handled, {team.abandoned} "
        f"abandoned ({team.abandon_rate:.0%}); first response mean {team.first_response_mean_s} "
        f"s, p90 {team.first_response_p90_s} s; score {team.score}; "
        f"{sum(1 for s in report.trainees if s.passed)} of {len(report.trainees)} passed"
    )
    if chart:
        rows = [(s.name, s.score, s.first_response_mean_s) for s in report.trainees[:12]]
        Path(chart).write_bytes(
            drill_chart(
                rows,
                title=plan.title.zh + "（前 12 名）",
                lang="zh",
                pass_mark=plan.pass_.min_average,
                first_response_s=plan.first_response_s,
            )
        )
        print(f"chart of the first 12: {chart}")


async def _ended(store: Store, drill_id: int, timeout: float = 600) -> DrillRow:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        drill = store.drill(drill_id)
        if drill is not None and drill.status == "ended":
            return drill
        await asyncio.sleep(0.2)
    raise SystemExit(f"drill {drill_id} did not end within {timeout:g} s of its end")


# ------------------------------------------------------------------------------------ web


class DeskTrainee:
    """One signed-in browser on the drill workspace's WebSocket."""

    def __init__(self, number: int, token: str, replies: tuple[str, ...]) -> None:
        self.number = number
        self.token = token
        self.replies = replies
        self.customers: list[dict[str, Any]] = []
        self.shown_at = 0.0
        self.sent: dict[str, float] = {}
        self.socket: aiohttp.ClientWebSocketResponse | None = None

    async def connect(self, http: aiohttp.ClientSession, base: str, drill_id: int) -> None:
        headers = {"Cookie": f"{COOKIE}={self.token}", "Origin": base}
        self.socket = await http.ws_connect(
            f"{base}/drills/{drill_id}/desk/live", headers=headers, heartbeat=None
        )
        await self.socket.send_json({"type": "show", "c": ""})

    async def read(self, seen: Seen) -> None:
        assert self.socket is not None
        async for message in self.socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if data["type"] == "desk":
                seen.pushes += 1
                self.customers, self.shown_at = data["customers"], time.monotonic()
            elif data["type"] == "done":
                seen.latencies.append(time.monotonic() - self.sent.pop(data["ref"]))
            elif data["type"] == "rejected":
                self.sent.pop(data["ref"], None)
                seen.gone += 1

    async def play(self, until: float) -> None:
        assert self.socket is not None
        rng = random.Random(self.number)
        number = 0
        while time.time() < until:
            await asyncio.sleep(rng.uniform(6, 20))
            waiting = [c for c in self.customers if c["waited"] is not None]
            if not waiting or time.time() >= until:
                continue
            customer = max(waiting, key=lambda c: c["waited"])
            number += 1
            ref = f"b{self.number}.{number}"
            self.sent[ref] = time.monotonic()
            text = self.replies[number % len(self.replies)]
            await self.socket.send_json(
                {"type": "reply", "label": customer["label"], "text": text, "ref": ref}
            )
            customer["waited"] = None  # answered: wait for the next push


async def _web(args: argparse.Namespace, db: str) -> dict[str, float]:
    library = ScenarioLibrary.load()
    plan = library.drills[PRESET]
    tokens = _sign_in(db, args.trainees)
    store = Store.open(db)
    svc = Training(store, library, Engine(store, library), platform="web")
    team = store.team_by_name("Bench")
    assert team is not None
    redis = args.redis if args.processes > 1 else None
    ports = [_free_port() for _ in range(args.processes)]
    servers = [Server(db, port, None, redis) for port in ports]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    trainees = [DeskTrainee(i, token, _replies(i)) for i, token in enumerate(tokens)]
    seen = Seen()
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    try:
        margin = 5 + args.trainees / 100  # to connect every socket before the first customer
        drill, _, _ = svc.plan_drill(
            None,
            PRESET,
            teams=[team],
            minutes=args.minutes,
            seed=11,
            starts_at=time.time() + margin,
        )
        _plan_line(plan, args.trainees, args.minutes, len(store.drill_customers(drill.id)))
        began = time.monotonic()
        gate = asyncio.Semaphore(100)

        async def connect(trainee: DeskTrainee) -> None:
            async with gate:  # trainee i on process i mod N, as a load balancer spreads them
                await trainee.connect(http, bases[trainee.number % len(bases)], drill.id)

        await asyncio.gather(*(connect(t) for t in trainees))
        print(
            f"web: {args.trainees} workspaces on WebSockets to {len(servers)} process(es) on "
            f"{store.url.split('?')[0]}{' with Redis' if redis else ''} in "
            f"{time.monotonic() - began:.1f} s; the drill starts "
            f"{drill.starts_at - time.time():.1f} s later",
            flush=True,
        )
        readers = [asyncio.create_task(t.read(seen)) for t in trainees]
        await asyncio.sleep(max(0.0, drill.starts_at - time.time()))
        cpu0, wall0 = sum(s.cpu_seconds() for s in servers), time.monotonic()
        await asyncio.gather(*(t.play(drill.ends_at) for t in trainees))
        ended = await _ended(store, drill.id)
        cpu, wall = sum(s.cpu_seconds() for s in servers) - cpu0, time.monotonic() - wall0
        await asyncio.sleep(2)  # the last answers
        seen.missing = sum(len(t.sent) for t in trainees)
        for trainee in trainees:
            if trainee.socket is not None:
                await trainee.socket.close()
        await asyncio.gather(*readers, return_exceptions=True)
        figures = _figures(store, drill.id, seen)
        rss = max(s.peak_rss_mib() for s in servers)
        print(
            f"servers: CPU {cpu:.0f} s over {wall:.0f} s wall ({cpu / wall:.2f} cores); peak RSS "
            f"{rss:.0f} MiB per process   (target < 1024); {seen.pushes} workspaces pushed "
            f"({seen.pushes / wall:.0f}/s)"
        )
        _report(store, ended, args.chart, plan)
        return {**figures, "cores": cpu / wall, "rss MiB": rss}
    finally:
        await http.close()
        for server in servers:
            server.stop()
        store.close()


COMPARED = (("sqlite", 1), ("sqlite", 2), ("postgresql", 2), ("postgresql", 4))
"""The web setups --compare runs: (database, processes)."""


async def _compare(args: argparse.Namespace) -> None:
    rows = []
    for kind, processes in COMPARED:
        args.processes = processes
        runs = []
        for run in range(args.runs):
            print(f"\n=== {processes} process(es) on {kind}, run {run + 1} ===", flush=True)
            with tempfile.TemporaryDirectory() as tmp, database(kind, Path(tmp)) as db:
                runs.append(await _web(args, db))
        rows.append((kind, processes, runs))
    print(f"\n{args.trainees} trainees, {args.minutes:g} drill minutes, {os.cpu_count()} CPUs, "
          f"{args.runs} runs each: median (range)")  # fmt: skip
    for kind, processes, runs in rows:

        def of(key: str, scale: float = 1.0, runs: list[dict[str, float]] = runs) -> list[float]:
            return [r[key] * scale for r in runs]

        print(
            f"  {kind:<11} {processes} process(es): {figure(of('messages/s'), '/s', 0)} messages, "
            f"{figure(of('replies/s'), '/s', 1)} replies, reply p99 "
            f"{figure(of('reply p99 s', 1000), 'ms', 0)}, lag p99 {figure(of('lag p99 s'), 's', 2)}, "
            f"servers {figure(of('cores'), 'cores', 2)}"
        )


def _summary(runs: list[dict[str, float]]) -> None:
    """The median and range of every run's figures, and the targets."""

    def of(key: str, scale: float = 1.0) -> list[float]:
        return [r[key] * scale for r in runs]

    print(f"\nsummary of {len(runs)} runs: median (range)")
    print(f"  replies {figure(of('replies/s'), '/s', 1)}; reply p99 "
          f"{figure(of('reply p99 s', 1000), 'ms', 0)}; lag p99 {figure(of('lag p99 s'), 's', 2)}; "
          f"CPU {figure(of('cores'), 'cores', 2)}; peak RSS {figure(of('rss MiB'), 'MiB', 0)}")  # fmt: skip
    print(f"  targets: lag p99 <= 1 s {verdict(of('lag p99 s'), lambda s: s <= 1)}; RSS < 1 GB "
          f"{verdict(of('rss MiB'), lambda mib: mib < 1024)}; 0 lost replies "
          f"{verdict(of('lost'), lambda n: n == 0)}"
          + (f"; 0 unhandled 429s {verdict(of('unhandled 429s'), lambda n: n == 0)}"
             if "unhandled 429s" in runs[0] else ""))  # fmt: skip


# ------------------------------------------------------------------------------- telegram


class ChatTrainee:
    """One Telegram user: reads the labelled customers' messages, answers by quoting."""

    def __init__(self, api: BenchAPI, uid: int, replies: tuple[str, ...], seen: Seen) -> None:
        self.seen = seen
        self.api = api
        self.uid = uid
        self.replies = replies
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        api.inbox[uid] = self.queue
        self.waiting: dict[str, tuple[float, int]] = {}
        """Per label: since when the customer waits, and their last message's id."""
        self.sent: dict[str, float] = {}

    async def read(self, seen: Seen) -> None:
        while True:
            call = await self.queue.get()
            text = call.text or ""
            if any(words in text for words in REFUSED):  # that customer had gone
                seen.gone += 1
                continue
            found = LABEL.match(text)
            if found is None:
                continue
            label = found.group(1)
            if label in self.sent:
                seen.latencies.append(call.at - self.sent.pop(label))
            since = self.waiting.get(label, (call.at, 0))[0]
            self.waiting[label] = (since, call.message_id)

    async def play(self, until: float) -> None:
        rng = random.Random(self.uid)
        number = 0
        while time.time() < until:
            await asyncio.sleep(rng.uniform(6, 20))
            if not self.waiting or time.time() >= until:
                continue
            label = min(self.waiting, key=lambda k: self.waiting[k][0])
            _, message_id = self.waiting.pop(label)
            number += 1
            text = self.replies[number % len(self.replies)]
            update = self.api.message(self.uid, text, lang="zh", reply_to=message_id)
            self.sent[label] = time.monotonic()
            self.seen.sent += 1
            await self.api.post_to_webhook(self.api.updates[update])


async def _telegram(args: argparse.Namespace, db: str) -> dict[str, float]:
    logging.getLogger("trainer").setLevel(logging.ERROR)
    library = ScenarioLibrary.load()
    plan = library.drills[PRESET]
    trainees = args.trainees or load(plan, 1).telegram_trainees
    store = Store.open(db)
    svc = Training(store, library, Engine(store, library), platform="telegram")
    team = svc.create_team("Peak")
    invite = svc.create_invite("trainee", team, uses=trainees)
    uids = [10_001 + i for i in range(trainees)]
    for i, uid in enumerate(uids):
        svc.join(svc.register(str(uid), name=f"T{i:04d}", lang="zh", chat_id=str(uid)), invite)
    seen = Seen()
    async with BenchAPI() as api:
        for uid in uids:
            api.user(uid, lang="zh")
        api.global_rate, api.chat_rate = GLOBAL_RATE, CHAT_RATE
        harness = BotHarness(
            store,
            webhook=True,
            api=api,
            global_rate=GLOBAL_RATE,
            chat_rate=CHAT_RATE,
            chart_processes=0,
            workers=0,  # a drill's messages are sent by the process that runs its clock
        )
        app = await harness.start_bot()
        drill, _, _ = app.svc.plan_drill(
            None, PRESET, teams=[team], minutes=args.minutes, seed=11, starts_at=time.time() + 2
        )
        _plan_line(plan, trainees, args.minutes, len(store.drill_customers(drill.id)))
        chats = [ChatTrainee(api, uid, _replies(i), seen) for i, uid in enumerate(uids)]
        readers = [asyncio.create_task(c.read(seen)) for c in chats]
        cpu0, wall0 = time.process_time(), time.monotonic()
        sends0 = len(api.send_times)
        await asyncio.gather(*(c.play(drill.ends_at) for c in chats))
        ended = await _ended(store, drill.id)
        await harness.idle(timeout=300)
        while store.outbox_counts().get("pending", 0):
            await asyncio.sleep(0.5)  # the last owed messages, at the limits
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        seen.missing = 0  # a labelled answer is not told apart from a nudge: see "lost"
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        violations = api.limit_violations
        stats = app.throttle.stats
        sends = len(api.send_times) - sends0
        await harness.stop_bot()
    figures = _figures(store, drill.id, seen)
    failed = sum("RetryAfter" in e or "429" in e for e in store.inbox_failures())
    during: list[float] = []
    at_end: list[float] = []
    for made, sent in store.outbox_deliveries():
        created = dt.datetime.fromisoformat(made)
        wait = (dt.datetime.fromisoformat(sent) - created).total_seconds()
        (during if created.timestamp() < ended.ends_at else at_end).append(wait)
    print(
        f"Telegram: {sends} sends ({sends / wall:.1f}/s, limit {GLOBAL_RATE:.0f}/s); outbox wait "
        f"during the drill p50 {_pct(during, 0.5):.2f} s, p99 {_pct(during, 0.99):.2f} s; of the "
        f"{len(at_end)} closing lines p99 {_pct(at_end, 0.99):.2f} s; 429s served by the fake "
        f"{violations}, retried {stats.retried_429}; unhandled 429s: {stats.failed + failed} "
        "(target 0)"
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"this process (bot, fake server, trainees): CPU {cpu:.0f} s over {wall:.0f} s wall "
        f"({cpu / wall:.2f} cores); peak RSS {rss:.0f} MiB"
    )
    _report(store, ended, args.chart, plan)
    store.close()
    unhandled = stats.failed + failed
    return {**figures, "cores": cpu / wall, "rss MiB": rss, "unhandled 429s": unhandled}


# --------------------------------------------------------------------------------- engine


async def _engine_trainee(
    svc: Training,
    disk: DiskSync,
    actor: Actor,
    drill_id: int,
    replies: tuple[str, ...],
    scale: float,
    end: float,
    seen: Seen,
) -> None:
    rng = random.Random(actor.id)
    number = 0
    while svc.drills.clock() < end:
        await asyncio.sleep(rng.uniform(6, 20) / scale)
        waiting = [c for c in svc.drill_waiting(actor, drill_id) if c.waiting_since is not None]
        if not waiting:
            continue
        customer = min(waiting, key=lambda c: c.waiting_since or 0.0)
        number += 1
        started = time.perf_counter()
        try:
            result = await svc.drill_reply(
                actor,
                drill_id,
                customer.label,
                replies[number % len(replies)],
                ref=f"bench:{actor.id}:{number}",
            )
        except (Invalid, ReplyRejected):
            seen.gone += 1  # left meanwhile, or the drill ended
            continue
        await disk.wait()  # as the web app does before it shows the answer
        if result is not None:
            seen.latencies.append(time.perf_counter() - started)


async def _engine(args: argparse.Namespace, db: str) -> dict[str, float]:
    library = ScenarioLibrary.load()
    plan = library.drills[PRESET]
    store = Store.open(db)
    store.sync_at_inbox()
    store.checkpoint_aside()
    lock = Lock(store)
    started_wall = time.monotonic()

    def clock() -> float:
        return T0 + (time.monotonic() - started_wall) * args.scale

    svc = Training(store, library, Engine(store, library), platform="web")
    svc.drills = DrillRunner(store, library, svc.engine, clock=clock)
    team = svc.create_team("Peak")
    invite = svc.create_invite("trainee", team, uses=args.trainees)
    actors = []
    for n in range(args.trainees):
        user = svc.register(str(10_000 + n), name=f"T{n:04d}", lang="zh")
        svc.join(user, invite)
        actors.append(svc.actor(user.id))
    drill, _, _ = svc.plan_drill(
        None, PRESET, teams=[team], minutes=args.minutes, seed=11, starts_at=clock()
    )
    _plan_line(plan, args.trainees, args.minutes, len(store.drill_customers(drill.id)))
    print(f"engine: drill time x{args.scale:g} the wall clock", flush=True)
    tune_gc()
    disk = DiskSync(store.sync_wal)
    seen = Seen()
    cpu0, wall0 = time.process_time(), time.monotonic()
    ticking = asyncio.create_task(run_clock(svc.drills, every=CLOCK_S / args.scale))
    copying = asyncio.create_task(checkpoints(store.checkpoint))
    await asyncio.gather(
        *(
            _engine_trainee(
                svc, disk, actor, drill.id, _replies(i), args.scale, drill.ends_at, seen
            )
            for i, actor in enumerate(actors)
        )
    )
    ended = await _ended(store, drill.id)
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    for task in (ticking, copying):
        task.cancel()
    await asyncio.gather(ticking, copying, return_exceptions=True)
    figures = _figures(store, drill.id, seen, args.scale)
    waits = lock.waits
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"write lock: {len(waits)} transactions, wait p99 {_pct(waits, 0.99) * 1000:.2f} ms, "
        f"max {max(waits, default=0) * 1000:.1f} ms; CPU {cpu:.0f} s over {wall:.0f} s wall "
        f"({cpu / wall:.2f} cores); peak RSS {rss:.0f} MiB   (target < 1024)"
    )
    _report(store, ended, args.chart, plan)
    store.close()
    return {**figures, "cores": cpu / wall, "rss MiB": rss}


CHANNELS: dict[str, Callable[[argparse.Namespace, str], Any]] = {
    "web": _web,
    "telegram": _telegram,
    "engine": _engine,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channel", choices=sorted(CHANNELS), default="web")
    parser.add_argument("--quick", action="store_true", help="200 trainees, 1 drill minute")
    parser.add_argument("--trainees", type=int, default=None)
    parser.add_argument("--minutes", type=float, default=None, help="drill minutes")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="engine: drill seconds per wall second"
    )
    parser.add_argument("--chart", default=None, help="write the standings chart (PNG) here")
    parser.add_argument("--db", default="sqlite", help=CHOICES_HELP)
    parser.add_argument(
        "--processes", type=int, default=1, help="web: trainer processes sharing the database"
    )
    parser.add_argument(
        "--redis",
        default="redis://127.0.0.1:6379/0",
        help="web: the Redis several processes share (default: the local one)",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="web: one SQLite process, two on SQLite, two and four on PostgreSQL; a table",
    )
    add_runs(parser, quick=2)
    args = parser.parse_args()
    args.runs = runs_of(args, quick=2)
    if args.channel != "telegram":
        args.trainees = args.trainees or (200 if args.quick else 2000)
    args.minutes = args.minutes or (1.0 if args.quick else 5.0)
    print(machine_line(), flush=True)
    if args.compare:
        asyncio.run(_compare(args))
        print(load_line())
        return
    runs = []
    for run in range(args.runs):
        print(f"\n=== run {run + 1} of {args.runs} ===", flush=True)
        with tempfile.TemporaryDirectory() as tmp, database(args.db, Path(tmp)) as db:
            runs.append(asyncio.run(CHANNELS[args.channel](args, db)))
    _summary(runs)
    print(load_line())


if __name__ == "__main__":
    main()
