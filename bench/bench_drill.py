"""A festival drill under load, compressed in time: many simulated trainees, 3 customers each.

    python bench/bench_drill.py [--quick] [--trainees N] [--minutes M] [--scale S]
                                [--chart FILE]

Runs the drill engine the way `trainer serve web` runs it. That means a file-backed store,
commits that do not wait for the disk (one fsync in a thread before an answer counts as
given), the WAL checkpointed in a thread, and the drill clock ticking. Everything runs in
one process. The trainees are simulated in the same event loop. Every 6-20 s of drill time,
each one answers whichever of their customers has waited longest. The replies come from
the golden transcripts: good, mediocre and bad trainees, in both languages. Drill time runs
--scale times faster than the wall clock. The preset is Double 11 midnight peak: 3
customers at once, and a surge of 3x for the first 10 minutes (shortened with --minutes).

Prints:
- replies/s and reply latency p50/p99 (wall time, grading and the customer's answer
  included);
- the scheduler's lag: how late each arrival, nudge and departure was applied, in wall
  seconds;
- the SQLite write-lock wait, the CPU and peak RSS of the process, and the replies lost
  (sent but not stored: the target is 0);
- the Telegram load the plan would bring, and the report's headline figures.

Targets: lag p99 <= 1 s, RSS < 1 GB, 0 lost replies. This is the engine and the store
without HTTP: the web's own cost per message is measured by bench_web.py. The full run
(2,000 trainees, 5 drill minutes in real time) takes about six minutes; --quick (200
trainees, 2 drill minutes at --scale 4) about 40 s. Always exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from golden import load_cases  # noqa: E402

from bot.charts import drill_chart  # noqa: E402
from bot.content import ScenarioLibrary  # noqa: E402
from bot.disksync import DiskSync, checkpoints  # noqa: E402
from bot.drill.report import standings  # noqa: E402
from bot.drill.runner import CLOCK_S, DrillRunner, run_clock  # noqa: E402
from bot.engine import Engine, ReplyRejected  # noqa: E402
from bot.service import Actor, Invalid, Training  # noqa: E402
from bot.storage import Store  # noqa: E402
from graders import tune_gc  # noqa: E402

T0 = 1_794_355_200.0  # 2026-11-11 00:00 UTC


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Lock:
    """Times every wait for SQLite's write lock (BEGIN IMMEDIATE)."""

    def __init__(self, store: Store) -> None:
        self.waits: list[float] = []
        begin = store._begin_immediate

        def timed(*args: object, **kwargs: object) -> None:
            started = time.perf_counter()
            begin(*args, **kwargs)  # type: ignore[arg-type]
            self.waits.append(time.perf_counter() - started)

        store._begin_immediate = timed  # type: ignore[method-assign]


async def _trainee(
    svc: Training,
    disk: DiskSync,
    actor: Actor,
    drill_id: int,
    replies: tuple[str, ...],
    scale: float,
    end: float,
    seen: dict[str, list[float]],
) -> None:
    rng = random.Random(actor.id)
    number = 0
    while svc.drills.clock() < end:
        await asyncio.sleep(rng.uniform(6, 20) / scale)
        waiting = [c for c in svc.drill_waiting(actor, drill_id) if c.waiting_since is not None]
        if not waiting:
            continue
        customer = min(waiting, key=lambda c: c.waiting_since or 0.0)
        text = replies[number % len(replies)]
        number += 1
        started = time.perf_counter()
        try:
            result = await svc.drill_reply(
                actor, drill_id, customer.label, text, ref=f"bench:{actor.id}:{number}"
            )
        except (Invalid, ReplyRejected):
            seen["gone"].append(0.0)  # left meanwhile, or the drill ended
            continue
        await disk.wait()  # as the web app does before it shows the answer
        if result is not None:
            seen["latency"].append(time.perf_counter() - started)


async def _run(args: argparse.Namespace, db: Path) -> None:
    library = ScenarioLibrary.load()
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
    plan = library.drills["double11-peak"]
    drill, need, _ = svc.plan_drill(
        None, plan.id, teams=[team], minutes=args.minutes, seed=11, starts_at=clock()
    )
    scheduled = len(store.drill_customers(drill.id))
    print(
        f"drill: {args.trainees} trainees x {plan.concurrency} customers at once, "
        f"{args.minutes:g} drill minutes at x{args.scale:g} ({args.minutes * 60 / args.scale:.0f} s "
        f"wall), {scheduled} customers scheduled; surge x{plan.surge.factor:g} for "  # type: ignore[union-attr]
        f"{plan.surge.minutes:g} min",  # type: ignore[union-attr]
        flush=True,
    )
    print(
        f"Telegram load of this plan: ~{need.messages_per_s:.0f} msg/s at its busiest; one bot "
        f"carries ~{need.telegram_trainees} trainees ({'fits' if need.fits_telegram(args.trainees) else 'does NOT fit: run it on the web, or split it across bots'})",
        flush=True,
    )
    tune_gc()
    disk = DiskSync(store.sync_wal)
    cases = load_cases()
    seen: dict[str, list[float]] = {"latency": [], "gone": []}
    cpu0 = time.process_time()
    wall0 = time.monotonic()
    ticking = asyncio.create_task(run_clock(svc.drills, every=CLOCK_S / args.scale))
    copying = asyncio.create_task(checkpoints(store.checkpoint))
    await asyncio.gather(
        *(
            _trainee(
                svc,
                disk,
                actor,
                drill.id,
                cases[i % len(cases)].replies,
                args.scale,
                drill.ends_at,
                seen,
            )
            for i, actor in enumerate(actors)
        )
    )
    while store.drill(drill.id).status != "ended":  # type: ignore[union-attr]
        await asyncio.sleep(0.1)
    wall = time.monotonic() - wall0
    cpu = time.process_time() - cpu0
    for task in (ticking, copying):
        task.cancel()
    await asyncio.gather(ticking, copying, return_exceptions=True)
    lags = [lag / args.scale for lag in store.drill_lags(drill.id)]
    stored = store.db.execute(
        "SELECT count(*) FROM turns t JOIN sessions s ON s.id = t.session_id"
        " WHERE s.drill_customer_id IS NOT NULL AND t.role = 'trainee'"
    ).fetchone()[0]
    answered = len(seen["latency"])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lat = seen["latency"]
    print(
        f"replies: {answered} answered ({answered / wall:.0f}/s), {len(seen['gone'])} to customers "
        f"already gone; latency p50 {_pct(lat, 0.5) * 1000:.1f} ms, p99 {_pct(lat, 0.99) * 1000:.1f} ms"
    )
    print(
        f"scheduler lag over {len(lags)} events: p50 {_pct(lags, 0.5):.3f} s, p99 "
        f"{_pct(lags, 0.99):.3f} s, max {max(lags, default=0):.3f} s   (target p99 <= 1 s)"
    )
    waits = lock.waits
    print(
        f"write lock: {len(waits)} transactions, wait p99 {_pct(waits, 0.99) * 1000:.2f} ms, "
        f"max {max(waits, default=0) * 1000:.1f} ms; CPU {cpu:.0f} s over {wall:.0f} s wall "
        f"({cpu / wall:.2f} cores); peak RSS {rss:.0f} MiB   (target < 1024)"
    )
    print(f"lost replies: {answered - stored if stored < answered else 0} (stored {stored})")
    report = standings(store, store.drill(drill.id))  # type: ignore[arg-type]
    team_figures = report.team
    print(
        f"report: {team_figures.arrived} customers arrived, {team_figures.handled} handled, "
        f"{team_figures.abandoned} abandoned ({team_figures.abandon_rate:.0%}); first response "
        f"mean {team_figures.first_response_mean_s} s, p90 {team_figures.first_response_p90_s} s; "
        f"score {team_figures.score}; {sum(1 for s in report.trainees if s.passed)} of "
        f"{len(report.trainees)} passed"
    )
    if args.chart:
        rows = [(s.name, s.score, s.first_response_mean_s) for s in report.trainees[:12]]
        Path(args.chart).write_bytes(
            drill_chart(
                rows,
                title=plan.title.zh + "（前 12 名）",
                lang="zh",
                pass_mark=plan.pass_.min_average,
                first_response_s=plan.first_response_s,
            )
        )
        print(f"chart of the first 12: {args.chart}")
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 trainees, 2 minutes at x4")
    parser.add_argument("--trainees", type=int, default=None)
    parser.add_argument("--minutes", type=float, default=None, help="drill minutes")
    parser.add_argument("--scale", type=float, default=None, help="drill seconds per wall second")
    parser.add_argument("--chart", default=None, help="write the standings chart (PNG) here")
    args = parser.parse_args()
    args.trainees = args.trainees or (200 if args.quick else 2000)
    args.minutes = args.minutes or (2.0 if args.quick else 5.0)
    args.scale = args.scale or (4.0 if args.quick else 1.0)
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_run(args, Path(tmp) / "drill.db"))


if __name__ == "__main__":
    main()
