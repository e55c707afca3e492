"""The web app's live chat under load: WebSocket trainees against `trainer serve web`.

    python bench/bench_web.py [--quick] [--trainees N] [--open-trainees N] [--rate R]
                              [--seconds S] [--runs N]

Starts the web app as its users do (``trainer --db FILE serve web``, one process, a
file-backed store in a temp dir) and drives simulated trainees from this process over
loopback: each is signed in (an invite used through the service, its cookie set), starts a
coach session with the page's form and then replies over the practice page's WebSocket,
playing its golden transcript (``tests/golden/``: every scenario, zh and en, good, mediocre
and bad trainees) with replies cycled. A reply's latency runs from sending it on the socket
until the new turns come back (graded, answered and rendered). When a session ends, the
trainee starts the next one with the form (not counted as a reply).

Phases:
  1 user        one trainee at a time: the service time of a reply, no queueing
  closed loop   --trainees (50) trainees each send the next reply as soon as the last one
                was answered: maximum throughput
  open loop     --rate (200) replies/s offered, spread over --open-trainees (200) trainees,
                each sending every open-trainees/rate s, staggered, never before its
                previous answer (a slot that comes while it waits is skipped and counted)

Each phase runs --runs (3; 2 with --quick) times, each run on a new server and database;
prints messages/s, reply p50/p95/p99 and the server's CPU per phase as the median and range
of the runs, and the server's peak RSS. Targets (judged by the median):
closed-loop throughput at least the Telegram path's on this machine (run
bench_telegram.py the same day: this machine's speed varies from day to day), and reply
p99 <= 50 ms at 200 messages/s. The full run takes about a minute, --quick about 25 s. Always exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from figures import add_runs, figure, load_line, machine_line, runs_of, verdict  # noqa: E402
from golden import Case, load_cases  # noqa: E402

from bot.content import ScenarioLibrary  # noqa: E402
from bot.engine import Engine  # noqa: E402
from bot.service import Training  # noqa: E402
from bot.storage import Store  # noqa: E402
from bot.web.app import COOKIE  # noqa: E402


@dataclass
class Run:
    """What one phase measured."""

    name: str
    start: float = 0.0
    end: float = 0.0
    latencies: list[float] = field(default_factory=list)
    answered: int = 0
    sessions: int = 0
    skipped: int = 0
    missing: int = 0


class Server:
    """`trainer serve web` as a child process, with its CPU and memory read from /proc."""

    def __init__(
        self, db: Path | str, port: int, profile: str | None, redis: str | None = None
    ) -> None:
        trainer = Path(sys.executable).with_name("trainer")
        command = [str(trainer), "--db", str(db), "serve", "web", "--port", str(port)]
        if redis:
            command += ["--redis", redis]
        if profile:
            command = [sys.executable, "-m", "cProfile", "-o", profile, *command]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        if "Web app on" not in first:
            raise SystemExit(f"the web app did not start: {first!r}")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)  # as Ctrl-C: a profile is written
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Trainee:
    """One signed-in browser playing its golden transcript over the live chat."""

    def __init__(self, base: str, token: str, case: Case, timeout: float) -> None:
        self.base = base
        self.case = case
        self.timeout = timeout
        jar = aiohttp.CookieJar(unsafe=True)
        jar.update_cookies({COOKIE: token}, aiohttp.client.URL(base))
        self.http = aiohttp.ClientSession(cookie_jar=jar)
        self.socket: aiohttp.ClientWebSocketResponse | None = None
        self.path = ""
        self.ended = True
        self.needs_session = False
        self.last = 0
        self.k = 0

    async def begin(self, run: Run | None) -> None:
        """Start a coach session with the home page's form and open its live chat."""
        if self.socket is not None:
            await self.socket.close()
        async with self.http.get(f"{self.base}/") as home:
            page = await home.text()
        found = re.search(r'name="csrf" value="([^"]+)"', page)
        assert found, page[:500]
        csrf, origin = found.group(1), {"Origin": self.base}
        if not self.ended:  # the transcript ran out before the customer left: end it
            end = f"{self.base}{self.path}/end"
            async with self.http.post(end, data={"csrf": csrf}, headers=origin) as ended:
                await ended.read()
        form = {"csrf": csrf, "scenario": self.case.scenario, "mode": "coach"}
        form["difficulty"] = self.case.difficulty
        async with self.http.post(f"{self.base}/practice", data=form, headers=origin) as started:
            path = started.url.path
            page = await started.text()
        if not path.startswith("/practice/"):
            raise SystemExit(f"could not start a session: {page[:300]}")
        self.path, self.ended = path, False
        shown = re.findall(r'data-idx="(\d+)"', page)
        self.last = int(shown[-1]) if shown else 0
        self.socket = await self.http.ws_connect(f"{self.base}{path}/live", headers=origin)
        self.k = 0
        if run is not None and time.monotonic() <= run.end:
            run.sessions += 1

    async def reply(self, run: Run) -> None:
        """Send the next reply and wait for its answer (a new session if it ended)."""
        assert self.socket is not None
        text = self.case.replies[self.k % len(self.case.replies)]
        self.k += 1
        ref = secrets.token_urlsafe(9)
        t0 = time.monotonic()
        await self.socket.send_str(
            json.dumps({"type": "reply", "ref": ref, "text": text, "after": self.last})
        )
        try:
            answer = json.loads(await self.socket.receive_str(timeout=self.timeout))
        except (TimeoutError, TypeError):
            run.missing += 1
            self.needs_session = True
            return
        at = time.monotonic()
        run.latencies.append(at - t0)
        if at <= run.end:
            run.answered += 1
        if answer["type"] == "turns":
            self.last = answer["last"]
        self.ended = answer["type"] == "ended"
        self.needs_session = self.ended or self.k >= len(self.case.replies)

    async def turn(self, run: Run) -> None:
        """The trainee's next message: a reply, or the start of the next session."""
        if self.needs_session:
            await self.begin(run)
            self.needs_session = False
        else:
            await self.reply(run)

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close()
        await self.http.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _sign_in(db: Path | str, count: int) -> list[str]:
    """``count`` trainee accounts of one team, signed in: their browsers' cookies."""
    library = ScenarioLibrary.load()
    store = Store.open(db)
    svc = Training(store, library, Engine(store, library), platform="web")
    code = svc.create_invite("trainee", svc.create_team("Bench"), uses=10_000)
    tokens = [svc.sign_in(code, name=f"t{i}", lang="zh", device="bench")[1] for i in range(count)]
    store.close()
    return tokens


async def _closed(trainees: list[Trainee], seconds: float, run: Run) -> None:
    async def loop(t: Trainee) -> None:
        while time.monotonic() < run.end:
            await t.turn(run)

    run.start = time.monotonic()
    run.end = run.start + seconds
    await asyncio.gather(*(loop(t) for t in trainees))


async def _open(trainees: list[Trainee], rate: float, seconds: float, run: Run) -> None:
    period = len(trainees) / rate

    async def loop(t: Trainee, offset: float) -> None:
        slot = run.start + offset
        while slot < run.end:
            await asyncio.sleep(max(0.0, slot - time.monotonic()))
            await t.turn(run)
            slot += period
            while slot < time.monotonic():  # missed while waiting for the answer
                run.skipped += 1
                slot += period

    run.start = time.monotonic()
    run.end = run.start + seconds
    await asyncio.gather(*(loop(t, i * period / len(trainees)) for i, t in enumerate(trainees)))


def _figures(run: Run, server: Server, cpu0: float) -> dict[str, float]:
    """One run of a phase: its rates, latencies (ms) and the server's cores."""
    ordered = sorted(run.latencies)

    def pct(q: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    wall = max(run.end, time.monotonic()) - run.start
    return {
        "replies/s": run.answered / (run.end - run.start),
        "messages/s": (run.answered + run.sessions) / (run.end - run.start),
        "p50": pct(0.5),
        "p95": pct(0.95),
        "p99": pct(0.99),
        "skipped": run.skipped,
        "missing": run.missing,
        "cores": (server.cpu_seconds() - cpu0) / wall,
    }


def _report(name: str, runs: list[dict[str, float]]) -> None:
    def of(key: str) -> list[float]:
        return [r[key] for r in runs]

    print(
        f"{name:<12} {figure(of('messages/s'), '/s', 0)} messages ({figure(of('replies/s'), '/s', 0)} "
        f"replies)   p50 {figure(of('p50'), 'ms')}   p95 {figure(of('p95'), 'ms')}   p99 "
        f"{figure(of('p99'), 'ms')}   server {figure(of('cores'), 'cores', 2)}   skipped "
        f"{sum(of('skipped')):.0f}, missing {sum(of('missing')):.0f} in all runs",
        flush=True,
    )


async def _one_run(
    args: argparse.Namespace, base: str, tokens: list[str], server: Server
) -> dict[str, dict[str, float]]:
    """Every phase once, on a server that has seen nothing before: figures by phase."""
    cases = load_cases()
    trainees = [
        Trainee(base, token, cases[i % len(cases)], timeout=30.0) for i, token in enumerate(tokens)
    ]
    results: dict[str, dict[str, float]] = {}
    try:
        await asyncio.gather(*(t.begin(None) for t in trainees))
        for name, group, phase in (
            ("1 user", trainees[:1], lambda g, r: _closed(g, args.seconds / 2, r)),
            ("closed loop", trainees[: args.trainees], lambda g, r: _closed(g, args.seconds, r)),
            (
                "open loop",
                trainees[: args.open_trainees],
                lambda g, r: _open(g, args.rate, args.seconds, r),
            ),
        ):
            run = Run(name)
            cpu0 = server.cpu_seconds()
            await phase(group, run)
            results[name] = _figures(run, server, cpu0)
    finally:
        await asyncio.gather(*(t.close() for t in trainees))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter phases")
    parser.add_argument("--trainees", type=int, default=50)
    parser.add_argument("--open-trainees", type=int, default=200)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--profile", metavar="FILE", help="run the server under cProfile")
    add_runs(parser, quick=2)
    args = parser.parse_args()
    args.seconds = args.seconds or (6.0 if args.quick else 15.0)
    args.runs = runs_of(args, quick=2)
    print(machine_line(), flush=True)
    count = max(args.trainees, args.open_trainees)
    print(
        f"web app: one process, {count} signed-in trainees, {args.seconds:g} s per phase, "
        f"{args.runs} runs, each on a new server and database: median (range)",
        flush=True,
    )
    results: dict[str, list[dict[str, float]]] = {}
    peak = 0.0
    for _ in range(args.runs):  # a run leaves sessions behind: the next starts afresh
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "bench.db"
            tokens = _sign_in(db, count)
            port = _free_port()
            server = Server(db, port, args.profile)
            try:
                found = asyncio.run(_one_run(args, f"http://127.0.0.1:{port}", tokens, server))
                peak = max(peak, server.peak_rss_mib())
            finally:
                server.stop()
        for name, figures in found.items():
            results.setdefault(name, []).append(figures)
    for name, runs in results.items():
        _report(name, runs)
    p99s = [r["p99"] for r in results["open loop"]]
    print(f"peak RSS of the server {peak:.0f} MiB")
    print(f"targets: p99 at {args.rate:.0f} messages/s <= 50 ms: {verdict(p99s, lambda ms: ms <= 50)}; "
          "closed-loop throughput >= the Telegram path's: compare with bench_telegram.py run "
          "the same day")  # fmt: skip
    print(load_line())


if __name__ == "__main__":
    main()
