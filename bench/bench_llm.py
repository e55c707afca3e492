"""Turn latency with model-backed roles: what our code adds over the model server's latency.

    python bench/bench_llm.py [--quick] [--sessions N] [--latency S] [--seconds S] [--runs N]
                              [--inline-server] [--sync-every-commit] [--profile]

--sessions (20) concurrent sessions play the replies of the golden transcripts of
``tests/golden/`` (every scenario; Chinese and English; good, mediocre and bad trainees;
normal and hard), coach mode, each starting the next transcript when one ends. The LLM
customer, the LLM judge (one call per judged dimension, three, concurrently) and the
rewriter are all served by the fake OpenAI-compatible server of ``tests/llmapi.py`` with a
fixed --latency (0.2 s) per request; it runs in its own process (``--inline-server``: on the
bench's event loop instead) and answers every call validly on the first try, so neither the
SDK's retry nor the judge's re-ask is triggered. The roles may send every request of every
session at once (5 per session: customer, three judge dimensions, rewriter; at least 64), as
to a server that serves many (vLLM, a hosted API): the figure is what our code adds, not a
queue in front of the server. The sessions start spread over one server latency (as
trainees' replies arrive at different moments) and then reply back to back, with no time to
think: a load of ~70 replies/s, far more than 20 typing trainees make. The store is a
file-backed SQLite database in a temp dir, committed as the Telegram bot and the web app
commit (the wait for the disk off the event loop; ``--sync-every-commit``: every commit
waits on the loop, as the terminal's one session does). Before measuring, the bench warms
the graders up as the servers do and tunes garbage collection as ``trainer`` does.

Turn latency is the wall time of ``Session.reply()``. The calls of one reply run together,
so the ideal is one server latency; overhead = (turn latency - latency) / latency, at p50
and p95. Also shown: a single session (no contention), the same sessions with rules only
and the scripted customer (no model at all), and a bare request through ``LLMClient``
(SDK, HTTP and the fake server's own work: the floor under any turn). Target: overhead at
p50 <= 10 % with --sessions concurrent sessions, judged by the median of --runs (3; 2 with
--quick) runs of every phase; each figure is printed as the median and range of the runs.

Then a single-slot server (the fake decodes one request at a time, like a llama.cpp
server with one slot, and finishes a request whose client gave up): --slot-sessions (4)
sessions with --slot-timeout (3 s), once with 4 requests at once (the default for a
server that reports no slots and was not measured by ``llm check``) and once with
``max_concurrency = 1`` (what a server reporting one slot gets: customer first, then
judge, then rewriter), each
reporting turn latency p50/p95 and how many judged grades the judge decided. The full run
takes about 4 minutes, ``--quick`` about 1. Always exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import itertools
import json
import multiprocessing
import multiprocessing.connection
import pstats
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.content import ScenarioLibrary
from bot.disksync import checkpoints
from bot.engine import Engine
from bot.llm.client import LLMClient, forget_endpoints
from bot.llm.config import RoleSettings
from bot.llm.judge import JUDGED
from bot.llm.roles import Assistants
from bot.storage import Store
from graders import tune_gc, warm_up

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:  # tests/llmapi.py is made to be imported
    sys.path.insert(0, str(ROOT / "tests"))

from figures import add_runs, figure, load_line, machine_line, runs_of, verdict  # noqa: E402
from golden import Case, load_cases  # noqa: E402
from llmapi import FakeLLM  # noqa: E402

API_KEY = "sk-bench-key"
TARGET = 0.10
CALLS_PER_REPLY = 5
"""The most model calls one reply makes at once: customer, three judge dimensions, rewriter."""


# ---------------------------------------------------------------------- the fake model


def _role(request: dict[str, Any]) -> str:
    """Which role a request is for: the customer's prompt holds a draft; the judge asks for
    JSON (a ``response_format``, or the schema in the prompt); the rewriter for plain text."""
    system = request["messages"][0]["content"]
    if "<<<DRAFT" in system:
        return "customer"
    if "response_format" in request or "JSON Schema" in system:
        return "judge"
    return "rewriter"


_DRAFT = re.compile(r"<<<DRAFT \w+>>>\n(.*?)\n<<<END DRAFT", re.S)
_REPLY = re.compile(r"<<<REPLY \w+>>>\n(.*?)\n<<<END REPLY", re.S)


_LINES = itertools.count(1)


def _tag(number: int) -> str:
    """``number`` in letters (no digits: the customer may not invent a number)."""
    letters = ""
    while number:
        number, rest = divmod(number, 26)
        letters += "abcdefghijklmnopqrstuvwxyz"[rest]
    return letters


def answer(request: dict[str, Any]) -> str:
    """A valid answer for any role: the customer says its draft (tagged, so that no two
    chats are the same and the judge's verdict cache, keyed by the whole request, misses
    as with real trainees), the judge gives full marks, the rewriter hands the reply back
    (checked and graded, then not shown)."""
    role = _role(request)
    system = request["messages"][0]["content"]
    if role == "customer":
        found = _DRAFT.search(system)
        return f"{found.group(1) if found else '…'} ({_tag(next(_LINES))})"
    text = "\n".join(str(m.get("content")) for m in request["messages"])
    reply = _REPLY.search(text)
    if role == "rewriter":
        return reply.group(1) if reply else "…"
    verdict = {
        "reasoning": "checked against the rubric",
        "violations": [],  # full marks: the grade is the maximum minus the faults' points
        "summary_zh": "评语",
        "summary_en": "summary",
    }
    return json.dumps(verdict, ensure_ascii=False)


def _server_stats(api: FakeLLM) -> dict[str, Any]:
    calls = api.completions
    stats = {
        "calls": len(calls),
        "roles": Counter(_role(c.body) for c in calls),
        "status": Counter(c.status for c in calls),
        "retries": sum(c.retry_count > 0 for c in calls),
    }
    api.calls.clear()
    return stats


def serve(
    conn: multiprocessing.connection.Connection, latency: float, slots: int | None = None
) -> None:
    """The fake server in a child process: sends its port, answers ``stats``, ``stop``."""

    async def main() -> None:
        async with FakeLLM(
            api_key=API_KEY, latency=latency, raise_responder_errors=False, slots=slots
        ) as api:
            api.responder = answer
            conn.send(api.port)
            loop = asyncio.get_running_loop()
            while (message := await loop.run_in_executor(None, conn.recv)) != "stop":
                conn.send(_server_stats(api) if message == "stats" else None)

    asyncio.run(main())


class Server:
    """The fake server, in a child process or on this event loop."""

    def __init__(self, latency: float, inline: bool, slots: int | None = None) -> None:
        self.latency = latency
        self.inline = inline
        self.slots = slots
        self.api: FakeLLM | None = None
        self.conn: multiprocessing.connection.Connection | None = None
        self.process: Any = None
        self.base_url = ""

    async def start(self) -> None:
        if self.inline:
            self.api = FakeLLM(
                api_key=API_KEY, latency=self.latency, responder=answer, slots=self.slots
            )
            await self.api.start()
            self.base_url = self.api.base_url
            return
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=serve, args=(child, self.latency, self.slots), daemon=True
        )
        self.process.start()
        port = await asyncio.to_thread(self.conn.recv)
        self.base_url = f"http://127.0.0.1:{port}/v1"

    async def stats(self) -> dict[str, Any]:
        if self.api is not None:
            return _server_stats(self.api)
        assert self.conn is not None
        self.conn.send("stats")
        return await asyncio.to_thread(self.conn.recv)  # type: ignore[no-any-return]

    async def stop(self) -> None:
        if self.api is not None:
            await self.api.stop()
        if self.conn is not None:
            self.conn.send("stop")
            await asyncio.to_thread(self.process.join, 10)


# ---------------------------------------------------------------------- the load


@dataclass
class Phase:
    """What one run measured."""

    name: str
    sessions: int
    llm: bool
    latencies: list[float] = field(default_factory=list)  # seconds per reply
    started: int = 0  # sessions started
    session_ids: list[str] = field(default_factory=list)
    unscored: int = 0  # judged grades the judge did not decide
    judged: int = 0
    lags: list[float] = field(default_factory=list)  # event-loop oversleep, seconds
    seconds: float = 0.0
    cpu: float = 0.0  # process CPU seconds over the phase
    server: dict[str, Any] = field(default_factory=dict)


async def _trainee(
    engine: Engine, cases: list[Case], first: int, deadline: float, phase: Phase, start: float
) -> None:
    await asyncio.sleep(start)
    index = first
    kind = "llm" if phase.llm else None
    while time.perf_counter() < deadline:
        case = cases[index % len(cases)]
        index += 1
        session, _ = await engine.start(
            trainee=f"bench-{first}", scenario=case.scenario, lang=case.lang,  # type: ignore[arg-type]
            difficulty=case.difficulty, seed=case.seed, mode="coach",  # type: ignore[arg-type]
            player=kind or "scripted", judge=kind or "rules",
        )  # fmt: skip
        phase.started += 1
        phase.session_ids.append(session.id)
        for reply in case.replies:
            if session.ended or time.perf_counter() >= deadline:
                break
            start = time.perf_counter()
            result = await session.reply(reply)
            phase.latencies.append(time.perf_counter() - start)
            for grade in result.record.grades:
                if phase.llm and grade.dimension in JUDGED and grade.status != "not_applicable":
                    phase.judged += 1
                    phase.unscored += grade.status == "unscored"
        await session.end()


async def _watch_loop(lags: list[float], stop: asyncio.Event, tick: float = 0.005) -> None:
    """Oversleep of a 5 ms timer: how long the loop was busy with something else."""
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(tick)
        lags.append(time.perf_counter() - start - tick)


async def run_phase(
    engine: Engine, cases: list[Case], phase: Phase, seconds: float, server: Server | None
) -> Phase:
    if server is not None:
        await server.stats()  # reset the server's counters
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_loop(phase.lags, stop))
    wall, cpu = time.perf_counter(), time.process_time()
    deadline = wall + seconds
    step = max(1, len(cases) // phase.sessions)
    # Trainees do not all press Enter in the same millisecond: the sessions start spread
    # over one server latency. Started at once they stay in step, every answer of a round
    # arriving together and each waiting for the others' (p95 +50 % instead of +15 %).
    spread = server.latency / phase.sessions if server is not None else 0.0
    await asyncio.gather(
        *(
            _trainee(engine, cases, i * step, deadline, phase, i * spread)
            for i in range(phase.sessions)
        )
    )
    phase.seconds = time.perf_counter() - wall
    phase.cpu = time.process_time() - cpu
    stop.set()
    await watcher
    if server is not None:
        phase.server = await server.stats()
    return phase


async def bare_requests(base_url: str, count: int, slots: int) -> list[float]:
    """Wall time of single requests through ``LLMClient``, one at a time."""
    settings = RoleSettings(base_url=base_url, api_key=API_KEY, model="fake", max_concurrency=slots)
    client = LLMClient(settings)  # the first client of a server sets its slots for all
    messages = [{"role": "system", "content": "x"}, {"role": "user", "content": "hello"}]
    times = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            await client.complete(messages, max_tokens=16)
            times.append(time.perf_counter() - start)
    finally:
        await client.aclose()
    return times


# ---------------------------------------------------------------------- report


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def ms(value: float) -> str:
    return f"{value * 1000:7.1f}"


def phase_figures(phase: Phase, latency: float) -> dict[str, float]:
    """What one run of a phase measured: latencies in ms, overheads in %."""
    values = phase.latencies or [float("nan")]
    p50, p95 = pct(values, 0.5), pct(values, 0.95)
    return {
        "replies": len(phase.latencies),
        "p50": p50 * 1000,
        "p95": p95 * 1000,
        "p99": pct(values, 0.99) * 1000,
        "over p50": (p50 - latency) / latency * 100,
        "over p95": (p95 - latency) / latency * 100,
        "reply/s": len(phase.latencies) / phase.seconds,
        "cpu/rep": phase.cpu / max(len(phase.latencies), 1) * 1000,
        "cpu": phase.cpu / phase.seconds * 100,
        "lag99": pct(phase.lags, 0.99) * 1000,
    }


def print_phases(results: dict[str, list[dict[str, float]]], llm: dict[str, bool]) -> None:
    """One block per phase: each figure's median and range over the runs."""
    for name, runs in results.items():

        def of(key: str, runs: list[dict[str, float]] = runs) -> list[float]:
            return [r[key] for r in runs]

        over = (
            f"; over the latency: p50 {figure(of('over p50'), '%')}, "
            f"p95 {figure(of('over p95'), '%')}"
            if llm[name]
            else ""
        )
        print(f"  {name}: {sum(of('replies')):.0f} replies in {len(runs)} runs")
        print(f"    turn p50 {figure(of('p50'), 'ms')}   p95 {figure(of('p95'), 'ms')}   p99 "
              f"{figure(of('p99'), 'ms')}{over}")  # fmt: skip
        print(f"    {figure(of('reply/s'), '/s')} replies; CPU {figure(of('cpu/rep'), 'ms')} per "
              f"reply, {figure(of('cpu'), '%', 0)} of one core; event-loop lag p99 "
              f"{figure(of('lag99'), 'ms')}")  # fmt: skip


def print_calls(phase: Phase) -> None:
    server = phase.server
    replies = len(phase.latencies)
    if not server or not replies:
        return
    roles: Counter[str] = server["roles"]
    customer = roles["customer"] - phase.started  # each start asks for the opening line
    per = server["calls"] - phase.started
    print(
        f"  {phase.name}: {per / replies:.2f} model calls per reply (customer "
        f"{customer / replies:.2f}, judge {roles['judge'] / replies:.2f}, rewriter "
        f"{roles['rewriter'] / replies:.2f}) + 1 per session start; statuses "
        f"{dict(server['status'])}, SDK retries {server['retries']}, judge grades not "
        f"decided {phase.unscored}/{phase.judged}"
    )


def print_voices(store: Store, phase: Phase) -> None:
    voices: Counter[str] = Counter()
    rewrites: Counter[str] = Counter()
    for session_id in phase.session_ids:
        for turn in store.turns(session_id):
            if "voice" in turn.meta:
                voices[turn.meta["voice"]["fallback"] or "llm"] += 1
            if "rewrite" in turn.meta:
                rewrites[turn.meta["rewrite"]["rejected"] or "shown"] += 1
    print(
        f"  {phase.name}: customer lines {dict(voices)}; rewrites {dict(rewrites)} "
        "(not_better: the fake hands the reply back)"
    )


# ---------------------------------------------------------------------- a single-slot server


async def single_slot(
    library: ScenarioLibrary, cases: list[Case], args: argparse.Namespace, store: Store
) -> list[tuple[int, Phase]]:
    """The same sessions on a server that decodes one request at a time, with 4 requests
    at once (the default for a server that reports no slots) and with one."""
    results = []
    for slots in (4, 1):
        forget_endpoints()
        server = Server(args.latency, args.inline_server, slots=1)
        await server.start()
        settings = RoleSettings(
            base_url=server.base_url,
            api_key=API_KEY,
            model="fake",
            timeout_s=args.slot_timeout,
            max_concurrency=slots,
        )
        roles = Assistants(
            LLMClient(settings, "customer"),
            LLMClient(settings, "judge"),
            LLMClient(settings, "rewriter"),
        )
        phase = Phase(f"max_concurrency {slots}", args.slot_sessions, True)
        try:
            await run_phase(Engine(store, library, roles), cases, phase, args.slot_seconds, server)
        finally:
            await roles.aclose()
            await server.stop()
        results.append((slots, phase))
    return results


def print_single_slot(results: list[tuple[int, Phase]], args: argparse.Namespace) -> None:
    print()
    print(
        f"single-slot server: one request decoded at a time, {args.latency * 1000:.0f} ms each "
        f"(a reply asks up to 5: customer, 3 judge dimensions, rewrite); {args.slot_sessions} "
        f"sessions, timeout_s {args.slot_timeout:g}; median (range) of {args.runs} runs"
    )
    for slots in sorted({slots for slots, _ in results}, reverse=True):
        phases = [phase for n, phase in results if n == slots]
        p50 = [pct(p.latencies or [0.0], 0.5) * 1000 for p in phases]
        p95 = [pct(p.latencies or [0.0], 0.95) * 1000 for p in phases]
        judged = sum(p.judged for p in phases)
        decided = judged - sum(p.unscored for p in phases)
        print(
            f"  max_concurrency {slots}: {sum(len(p.latencies) for p in phases)} replies, turn "
            f"p50 {figure(p50, 'ms')}, p95 {figure(p95, 'ms')}; the judge decided "
            f"{decided} of {judged} judged grades"
        )


# ---------------------------------------------------------------------- main


async def bench(args: argparse.Namespace) -> None:
    library = ScenarioLibrary.load()
    cases = load_cases()
    warm_up(library.scenarios.values())  # as `trainer serve` does before it serves
    tune_gc()  # as `trainer` does before grading
    server = Server(args.latency, args.inline_server)
    await server.start()
    # A server that serves many requests at once (vLLM, a hosted API): what our code adds,
    # not a queue in front of it (the default of 4 at once is for servers not known better).
    slots = max(64, CALLS_PER_REPLY * args.sessions)
    settings = RoleSettings(
        base_url=server.base_url, api_key=API_KEY, model="fake", timeout_s=10,
        max_concurrency=slots,
    )  # fmt: skip
    assistants = Assistants(
        customer=LLMClient(settings), judge=LLMClient(settings), rewriter=LLMClient(settings)
    )
    results: dict[str, list[dict[str, float]]] = {}
    llm: dict[str, bool] = {}
    last: list[Phase] = []
    profiler = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "bench.db")
        checkpointing = None
        if not args.sync_every_commit:  # as the Telegram bot and the web app commit
            store.sync_at_inbox()
            store.checkpoint_aside()
            checkpointing = asyncio.create_task(checkpoints(store.checkpoint))
        llm_engine = Engine(store, library, assistants)
        rules_engine = Engine(store, library)
        try:
            bare = await bare_requests(server.base_url, 10 if args.quick else 30, slots)
            # warm up: jieba, opencc, prompt templates, connections, the structured mode
            await run_phase(llm_engine, cases, Phase("warm-up", args.sessions, True), 2, server)
            await run_phase(rules_engine, cases, Phase("warm-up", args.sessions, False), 1, None)
            for run in range(args.runs):
                one = Phase("llm, 1 session", 1, True)
                await run_phase(llm_engine, cases, one, args.one_seconds, server)
                many = Phase(f"llm, {args.sessions} sessions", args.sessions, True)
                if profiler is not None and run == args.runs - 1:
                    profiler.enable()
                await run_phase(llm_engine, cases, many, args.seconds, server)
                if profiler is not None and run == args.runs - 1:
                    profiler.disable()
                rules = Phase(f"rules, {args.sessions} sessions", args.sessions, False)
                await run_phase(rules_engine, cases, rules, args.rules_seconds, None)
                for phase in (one, many, rules):
                    results.setdefault(phase.name, []).append(phase_figures(phase, args.latency))
                    llm[phase.name] = phase.llm
                last = [one, many, rules]
            commits = (
                "every commit waits for the disk on the event loop"
                if args.sync_every_commit
                else "commits wait for the disk off the event loop, as the servers' do"
            )
            print(
                f"{args.sessions} concurrent coach-mode sessions, golden replies (zh and en), "
                f"file-backed SQLite store ({commits}); fake server latency "
                f"{args.latency * 1000:.0f} ms per request "
                f"({'on the bench loop' if args.inline_server else 'own process'}), "
                f"{slots} requests at once; {args.runs} runs of each phase: median (range)"
            )
            print(
                f"  bare request through LLMClient, one at a time: p50 {ms(pct(bare, 0.5))} ms"
                f"  ({(pct(bare, 0.5) - args.latency) * 1000:+.1f} ms over the latency: SDK, "
                "HTTP and the fake server)"
            )
            print_phases(results, llm)
            print("  (CPU: this process's; lag: how late a 5 ms timer on the event loop fired)")
            print()
            print("the last run:")
            for phase in last:
                print_calls(phase)
            for phase in last[:2]:
                print_voices(store, phase)
            slot_results = []
            for _ in range(args.runs):
                slot_results += await single_slot(library, cases, args, store)
            print_single_slot(slot_results, args)
        finally:
            if checkpointing is not None:
                checkpointing.cancel()
            await assistants.aclose()
            await server.stop()
            store.close()
    print()
    print("targets:")
    values = [r["over p50"] for r in results[f"llm, {args.sessions} sessions"] if r["replies"]]
    print(
        f"  overhead at p50 with {args.sessions} sessions {figure(values, '%')} "
        f"(target <= {TARGET * 100:.0f} %): {verdict(values, lambda v: v <= TARGET * 100)}"
    )
    if profiler is not None:
        print()
        print(f"profile of the last {args.sessions}-session run (top 20 by own time, cumulative):")
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(20)
        stats.sort_stats("cumulative").print_stats(
            r"bot/|graders/|openai/_base_client|httpx2/_client", 30
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about a minute)")
    parser.add_argument("--sessions", type=int, default=20, help="concurrent sessions")
    parser.add_argument("--latency", type=float, default=0.2, help="server seconds per request")
    parser.add_argument("--seconds", type=float, help="length of the N-session LLM run")
    parser.add_argument(
        "--inline-server", action="store_true", help="fake server on the bench's event loop"
    )
    parser.add_argument(
        "--sync-every-commit",
        action="store_true",
        help="every commit waits for the disk on the event loop (the terminal's setting); "
        "default: as the Telegram bot and the web app commit",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the N-session run")
    parser.add_argument(
        "--slot-sessions", type=int, default=4, help="sessions on the single-slot server"
    )
    parser.add_argument(
        "--slot-timeout", type=float, default=3.0, help="timeout_s on the single-slot server"
    )
    parser.add_argument("--slot-seconds", type=float, help="length of each single-slot run")
    add_runs(parser, quick=2)
    args = parser.parse_args()
    args.sessions = max(1, args.sessions)
    args.runs = runs_of(args, quick=2)
    if args.seconds is None:
        args.seconds = 5.0 if args.quick else 20.0
    args.one_seconds = 2.0 if args.quick else 5.0
    args.rules_seconds = 2.0 if args.quick else 5.0
    if args.slot_seconds is None:
        args.slot_seconds = 4.0 if args.quick else 10.0
    print(machine_line(), flush=True)
    asyncio.run(bench(args))
    print(load_line())


if __name__ == "__main__":
    main()
