"""PostgreSQL driver choice for the store's hot path: psycopg 3 (sync, pool, async) vs asyncpg.

    python bench/bench_pg_driver.py [--dsn URL] [--seconds S] [--trainees N [N ...]] [--runs N]

Creates its own schema (bench_pg_<random>) in the database named by --dsn (default
postgresql://postgres@127.0.0.1:5432/test, or TRAINER_BENCH_PG_DSN; URL form, so that
asyncpg can read it too) and drops it at the end; no other data is touched.

Simulated trainees (asyncio tasks, each on its own session) send replies in a closed loop.
One reply is the store's hot path: one transaction (lock the session row, next turn index,
trainee turn, 4 grade rows in one executemany, customer turn, customer state, 1 outbox row)
followed by one read of the session's turns. A trainee starts a new session every 10
replies, so reads stay session-sized. Variants, each run at every --trainees value:

    a) psycopg sync, one connection, called on the event loop thread (today's sync store);
    b) psycopg sync ConnectionPool (max 4), every call in asyncio.to_thread;
    c) psycopg AsyncConnectionPool (max 4);
    d) asyncpg pool (max 4), only if asyncpg is installed (pip install asyncpg).

Prints one row per variant and concurrency: replies/s; tx p50/p99 (BEGIN..COMMIT with the
connection in hand); call p50/p99 (the whole storage call as the trainee awaits it,
including pool waits and the thread hop); read p50; loop lag p99 (how late a 2 ms timer
on the same event loop fires, i.e. how long other handlers wait); and for (a) the mean
time the event loop is blocked per reply (transaction + read, run on the loop thread);
cpu, the bench process's CPU time per reply (driver overhead; the server's is not counted).
Every variant and concurrency runs --runs (3) times, interleaved; each row is the run with
the median replies/s, and the range of replies/s over the runs is shown. Ends with a
one-line conclusion derived from the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg_pool
from figures import add_runs, figure, load_line, machine_line, runs_of
from psycopg import sql
from psycopg.conninfo import make_conninfo

try:
    import asyncpg
except ImportError:  # optional: only variant (d) needs it
    asyncpg = None

DEFAULT_DSN = os.environ.get("TRAINER_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
POOL_SIZE = 4
REPLIES_PER_SESSION = 10
PROBE_INTERVAL = 0.002
DIMENSIONS = ("empathy", "accuracy", "policy", "tone")

DDL = [
    "CREATE TABLE sessions (id text PRIMARY KEY, customer_state text)",
    "CREATE TABLE turns (id bigserial PRIMARY KEY, session_id text NOT NULL, idx int NOT NULL,"
    " role text, text text, meta text, created_at text, UNIQUE (session_id, idx))",
    "CREATE TABLE grades (id bigserial PRIMARY KEY, session_id text, turn_idx int,"
    " dimension text, data text)",
    "CREATE INDEX ON grades (session_id, turn_idx)",
    "CREATE TABLE outbox (id bigserial PRIMARY KEY, address text, body text, status text)",
    "CREATE INDEX ON outbox (status, address)",
]

# psycopg placeholders; asyncpg gets the same statements with $1, $2, ... (see _dollar).
NEW_SESSION = "INSERT INTO sessions (id, customer_state) VALUES (%s, %s)"
LOCK = "SELECT 1 FROM sessions WHERE id = %s FOR UPDATE"
NEXT_IDX = "SELECT COALESCE(MAX(idx) + 1, 0) FROM turns WHERE session_id = %s"
TURN = (
    "INSERT INTO turns (session_id, idx, role, text, meta, created_at)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
)
GRADE = "INSERT INTO grades (session_id, turn_idx, dimension, data) VALUES (%s, %s, %s, %s)"
STATE = "UPDATE sessions SET customer_state = %s WHERE id = %s"
OUTBOX = "INSERT INTO outbox (address, body, status) VALUES (%s, %s, 'pending')"
READ = "SELECT idx, role, text, meta, created_at FROM turns WHERE session_id = %s ORDER BY idx"

TRAINEE_TEXT = (
    "您好，非常抱歉给您带来不便。我已经为您查询了订单，包裹目前在中转站，预计明天送达。" * 2
)
CUSTOMER_TEXT = "好的，那如果明天还没到怎么办？我已经等了一个星期了，能不能先给我退款？"
META = json.dumps({"latency_ms": 812, "model": "scripted", "tokens": 143})
STATE_JSON = json.dumps({"mood": 0.4, "patience": 3, "facts": ["order 1234"], "memo": "y" * 200})
GRADE_JSON = json.dumps({"score": 0.75, "grader": "rules", "notes": "说明了物流状态" * 8})
OUTBOX_BODY = json.dumps({"kind": "reply", "text": CUSTOMER_TEXT})


def _dollar(statement: str) -> str:
    parts = statement.split("%s")
    return "".join(f"{part}${i}" for i, part in enumerate(parts[:-1], 1)) + parts[-1]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _grade_rows(session_id: str, idx: int) -> list[tuple[Any, ...]]:
    return [(session_id, idx, dimension, GRADE_JSON) for dimension in DIMENSIONS]


@dataclass
class Stats:
    tx: list[float] = field(default_factory=list)
    call: list[float] = field(default_factory=list)
    read: list[float] = field(default_factory=list)
    blocked: list[float] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)
    replies: int = 0
    cpu: float = 0.0  # this process's CPU seconds (all threads) in the measured window


@dataclass
class Row:
    variant: str
    trainees: int
    rps: float
    stats: Stats
    rates: list[float] = field(default_factory=list)
    """replies/s of every run of this variant and concurrency."""


def median_rows(rows: list[Row]) -> list[Row]:
    """One row per variant and concurrency: the run with the median replies/s, all rates."""
    groups: dict[tuple[str, int], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.variant, row.trainees), []).append(row)
    out = []
    for group in groups.values():
        ordered = sorted(group, key=lambda r: r.rps)
        middle = ordered[len(ordered) // 2]
        out.append(Row(middle.variant, middle.trainees, middle.rps, middle.stats,
                       [r.rps for r in group]))  # fmt: skip
    return out


# --- psycopg, sync (variants a and b) ---------------------------------------------------------


def sync_new_session(conn: psycopg.Connection[Any], session_id: str) -> None:
    conn.execute(NEW_SESSION, (session_id, STATE_JSON))


def sync_reply(conn: psycopg.Connection[Any], session_id: str) -> float:
    """One reply transaction; returns its BEGIN..COMMIT time."""
    start = time.perf_counter()
    with conn.transaction():
        conn.execute(LOCK, (session_id,))
        row = conn.execute(NEXT_IDX, (session_id,)).fetchone()
        assert row is not None
        idx = row[0]
        conn.execute(TURN, (session_id, idx, "trainee", TRAINEE_TEXT, META, _now()))
        with conn.cursor() as cur:
            cur.executemany(GRADE, _grade_rows(session_id, idx))
        conn.execute(TURN, (session_id, idx + 1, "customer", CUSTOMER_TEXT, META, _now()))
        conn.execute(STATE, (STATE_JSON, session_id))
        conn.execute(OUTBOX, (f"tg:{session_id}", OUTBOX_BODY))
    return time.perf_counter() - start


def sync_read(conn: psycopg.Connection[Any], session_id: str) -> int:
    return len(conn.execute(READ, (session_id,)).fetchall())


# --- psycopg, async (variant c) ---------------------------------------------------------------


async def apg_new_session(conn: psycopg.AsyncConnection[Any], session_id: str) -> None:
    await conn.execute(NEW_SESSION, (session_id, STATE_JSON))


async def apg_reply(conn: psycopg.AsyncConnection[Any], session_id: str) -> float:
    start = time.perf_counter()
    async with conn.transaction():
        await conn.execute(LOCK, (session_id,))
        cur = await conn.execute(NEXT_IDX, (session_id,))
        row = await cur.fetchone()
        assert row is not None
        idx = row[0]
        await conn.execute(TURN, (session_id, idx, "trainee", TRAINEE_TEXT, META, _now()))
        async with conn.cursor() as grades:
            await grades.executemany(GRADE, _grade_rows(session_id, idx))
        await conn.execute(TURN, (session_id, idx + 1, "customer", CUSTOMER_TEXT, META, _now()))
        await conn.execute(STATE, (STATE_JSON, session_id))
        await conn.execute(OUTBOX, (f"tg:{session_id}", OUTBOX_BODY))
    return time.perf_counter() - start


async def apg_read(conn: psycopg.AsyncConnection[Any], session_id: str) -> int:
    cur = await conn.execute(READ, (session_id,))
    return len(await cur.fetchall())


# --- asyncpg (variant d) ----------------------------------------------------------------------

A_NEW_SESSION, A_LOCK, A_NEXT_IDX, A_TURN, A_GRADE, A_STATE, A_OUTBOX, A_READ = map(
    _dollar, (NEW_SESSION, LOCK, NEXT_IDX, TURN, GRADE, STATE, OUTBOX, READ)
)


async def asyncpg_reply(conn: Any, session_id: str) -> float:
    start = time.perf_counter()
    async with conn.transaction():
        await conn.execute(A_LOCK, session_id)
        idx = await conn.fetchval(A_NEXT_IDX, session_id)
        await conn.execute(A_TURN, session_id, idx, "trainee", TRAINEE_TEXT, META, _now())
        await conn.executemany(A_GRADE, _grade_rows(session_id, idx))
        await conn.execute(A_TURN, session_id, idx + 1, "customer", CUSTOMER_TEXT, META, _now())
        await conn.execute(A_STATE, STATE_JSON, session_id)
        await conn.execute(A_OUTBOX, f"tg:{session_id}", OUTBOX_BODY)
    return time.perf_counter() - start


# --- the driver-independent harness -----------------------------------------------------------


@dataclass
class Backend:
    """The three storage calls of one variant, as the trainee task awaits them."""

    new_session: Callable[[str], Awaitable[None]]
    reply: Callable[[str], Awaitable[float]]  # returns the BEGIN..COMMIT time
    read: Callable[[str], Awaitable[int]]
    blocking: bool = False  # the calls run on the event loop thread


async def probe(stop: asyncio.Event, lags: list[float], measuring: list[bool]) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(PROBE_INTERVAL)
        if measuring[0]:
            lags.append(time.perf_counter() - start - PROBE_INTERVAL)


async def drive(backend: Backend, run: str, trainees: int, seconds: float) -> tuple[float, Stats]:
    """Run the trainees for a warm-up, then ``seconds``; returns (replies/s, stats)."""
    stats = Stats()
    measuring = [False]
    stop = asyncio.Event()

    async def trainee(number: int) -> None:
        replies = 0
        session_id = ""
        while not stop.is_set():
            if replies % REPLIES_PER_SESSION == 0:
                session_id = f"{run}-{number}-{replies // REPLIES_PER_SESSION}"
                await backend.new_session(session_id)
            start = time.perf_counter()
            tx = await backend.reply(session_id)
            mid = time.perf_counter()
            await backend.read(session_id)
            end = time.perf_counter()
            replies += 1
            if measuring[0] and not stop.is_set():
                stats.replies += 1
                stats.tx.append(tx)
                stats.call.append(mid - start)
                stats.read.append(end - mid)
                if backend.blocking:
                    stats.blocked.append(end - start)
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(trainee(n)) for n in range(trainees)]
    tasks.append(asyncio.create_task(probe(stop, stats.lag, measuring)))
    await asyncio.sleep(min(0.5, seconds / 4))  # warm-up: pool connections, prepared statements
    measuring[0] = True
    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.sleep(seconds)
    stop.set()
    elapsed = time.perf_counter() - start
    stats.cpu = time.process_time() - cpu
    await asyncio.gather(*tasks)
    return stats.replies / elapsed, stats


async def run_a(conninfo: str, run: str, trainees: int, seconds: float) -> tuple[float, Stats]:
    with psycopg.connect(conninfo, autocommit=True) as conn:

        async def new_session(session_id: str) -> None:
            sync_new_session(conn, session_id)

        async def reply(session_id: str) -> float:
            return sync_reply(conn, session_id)

        async def read(session_id: str) -> int:
            return sync_read(conn, session_id)

        return await drive(Backend(new_session, reply, read, blocking=True), run, trainees, seconds)


async def run_b(conninfo: str, run: str, trainees: int, seconds: float) -> tuple[float, Stats]:
    kwargs = {"autocommit": True}
    with psycopg_pool.ConnectionPool(
        conninfo, min_size=POOL_SIZE, max_size=POOL_SIZE, kwargs=kwargs, open=True
    ) as pool:
        pool.wait()

        def in_pool(func: Callable[..., Any]) -> Callable[[str], Any]:
            def call(session_id: str) -> Any:
                with pool.connection() as conn:
                    return func(conn, session_id)

            return call

        def threaded(func: Callable[[str], Any]) -> Callable[[str], Awaitable[Any]]:
            async def call(session_id: str) -> Any:
                return await asyncio.to_thread(func, session_id)

            return call

        backend = Backend(
            threaded(in_pool(sync_new_session)),
            threaded(in_pool(sync_reply)),
            threaded(in_pool(sync_read)),
        )
        return await drive(backend, run, trainees, seconds)


async def run_c(conninfo: str, run: str, trainees: int, seconds: float) -> tuple[float, Stats]:
    kwargs = {"autocommit": True}
    async with psycopg_pool.AsyncConnectionPool(
        conninfo, min_size=POOL_SIZE, max_size=POOL_SIZE, kwargs=kwargs, open=False
    ) as pool:
        await pool.wait()

        def in_pool(func: Callable[..., Awaitable[Any]]) -> Callable[[str], Awaitable[Any]]:
            async def call(session_id: str) -> Any:
                async with pool.connection() as conn:
                    return await func(conn, session_id)

            return call

        backend = Backend(in_pool(apg_new_session), in_pool(apg_reply), in_pool(apg_read))
        return await drive(backend, run, trainees, seconds)


async def run_d(
    dsn: str, schema: str, run: str, trainees: int, seconds: float
) -> tuple[float, Stats]:
    assert asyncpg is not None
    pool = await asyncpg.create_pool(
        dsn, min_size=POOL_SIZE, max_size=POOL_SIZE, server_settings={"search_path": schema}
    )
    try:

        async def new_session(session_id: str) -> None:
            async with pool.acquire() as conn:
                await conn.execute(A_NEW_SESSION, session_id, STATE_JSON)

        async def reply(session_id: str) -> float:
            async with pool.acquire() as conn:
                return await asyncpg_reply(conn, session_id)

        async def read(session_id: str) -> int:
            async with pool.acquire() as conn:
                return len(await conn.fetch(A_READ, session_id))

        return await drive(Backend(new_session, reply, read), run, trainees, seconds)
    finally:
        await pool.close()


VARIANTS = {
    "a": "a) psycopg sync, 1 conn, on loop",
    "b": f"b) psycopg pool({POOL_SIZE}) + to_thread",
    "c": f"c) psycopg AsyncConnectionPool({POOL_SIZE})",
    "d": f"d) asyncpg pool({POOL_SIZE})",
}


async def idle_lag(seconds: float) -> float:
    lags: list[float] = []
    stop = asyncio.Event()
    task = asyncio.create_task(probe(stop, lags, [True]))
    await asyncio.sleep(seconds)
    stop.set()
    await task
    return _pct(lags, 0.99)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _ms(value: float) -> str:
    return "-" if value != value else f"{value * 1000:.2f}"


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'variant':<34} {'trainees':>8} {'replies/s':>9} {'range':>11} {'tx p50':>7} {'tx p99':>7} "
        f"{'call p50':>8} {'call p99':>8} {'read p50':>8} {'lag p99':>8} {'blocked':>8} {'cpu':>6}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        s = row.stats
        blocked = statistics.mean(s.blocked) if s.blocked else float("nan")
        cpu = s.cpu / s.replies if s.replies else float("nan")
        spread = figure(row.rates, "", 0).partition(" ")[2] or "-"
        print(
            f"{VARIANTS[row.variant]:<34} {row.trainees:>8} {row.rps:>9.0f} {spread:>11} "
            f"{_ms(_pct(s.tx, 0.5)):>7} {_ms(_pct(s.tx, 0.99)):>7} "
            f"{_ms(_pct(s.call, 0.5)):>8} {_ms(_pct(s.call, 0.99)):>8} "
            f"{_ms(_pct(s.read, 0.5)):>8} {_ms(_pct(s.lag, 0.99)):>8} {_ms(blocked):>8} {_ms(cpu):>6}"
        )
    print(
        "(times in ms; blocked = mean event-loop time blocked per reply, tx + read, variant a;"
        " cpu = this process's CPU time per reply, all threads; PostgreSQL's own CPU not included)"
    )


def conclusion(rows: list[Row]) -> str:
    low, top = min(row.trainees for row in rows), max(row.trainees for row in rows)
    a_low = next(row for row in rows if row.variant == "a" and row.trainees == low)
    at_top = {row.variant: row for row in rows if row.trainees == top}
    best = max((at_top[v] for v in "bc"), key=lambda row: row.rps)
    text = (
        f"Conclusion: sync store on the loop blocks it {statistics.mean(a_low.stats.blocked) * 1000:.1f} ms"
        f" per reply, other handlers wait up to {_pct(at_top['a'].stats.lag, 0.99) * 1000:.0f} ms (p99)"
        f" at {top} trainees, max {max(a_low.rps, at_top['a'].rps):.0f} replies/s;"
        f" best psycopg off the loop: {VARIANTS[best.variant][3:]} {best.rps:.0f} replies/s"
    )
    if "d" not in at_top:
        return text + "; asyncpg not measured."
    gain = at_top["d"].rps / best.rps
    if gain >= 1.5:
        verdict = "large enough to weigh making the store async"
    elif gain >= 1.15:
        verdict = (
            "faster under load but under 1.5x, not worth making every storage call async by itself"
        )
    else:
        verdict = "no material gain, keep the sync psycopg store"
    return text + f"; asyncpg {at_top['d'].rps:.0f} replies/s = {gain:.2f}x: {verdict}."


async def run_all(args: argparse.Namespace, conninfo: str, schema: str) -> list[Row]:
    print(f"idle event-loop lag p99 ({PROBE_INTERVAL * 1000:.0f} ms timer): "
          f"{_ms(await idle_lag(0.5))} ms")  # fmt: skip
    rows = []
    variants = "abcd" if asyncpg is not None else "abc"
    for trainees, _, variant in itertools.product(args.trainees, range(args.runs), variants):
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("TRUNCATE sessions, turns, grades, outbox")
        run = f"{variant}{trainees}"
        if variant == "a":
            rps, stats = await run_a(conninfo, run, trainees, args.seconds)
        elif variant == "b":
            rps, stats = await run_b(conninfo, run, trainees, args.seconds)
        elif variant == "c":
            rps, stats = await run_c(conninfo, run, trainees, args.seconds)
        else:
            rps, stats = await run_d(args.dsn, schema, run, trainees, args.seconds)
        rows.append(Row(variant, trainees, rps, stats))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="PostgreSQL URL (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured time per run")
    parser.add_argument("--trainees", type=int, nargs="+", default=[1, 16],
                        help="concurrency levels (default: 1 16)")  # fmt: skip
    add_runs(parser)
    args = parser.parse_args()
    args.runs = runs_of(args)
    print(machine_line())
    if asyncpg is None:
        print("asyncpg is not installed (pip install asyncpg): measuring psycopg only.")
    schema = f"bench_pg_{secrets.token_hex(4)}"
    conninfo = make_conninfo(args.dsn, options=f"-c search_path={schema}")
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        server = admin.execute("SHOW server_version").fetchone()
        sync_commit = admin.execute("SHOW synchronous_commit").fetchone()
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                for statement in DDL:
                    conn.execute(statement)
            versions = f"psycopg {psycopg.__version__}, psycopg_pool {psycopg_pool.__version__}"
            if asyncpg is not None:
                versions += f", asyncpg {asyncpg.__version__}"
            print(f"PostgreSQL {server[0] if server else '?'} "
                  f"(synchronous_commit={sync_commit[0] if sync_commit else '?'}), {versions}; "
                  f"schema {schema}, {args.seconds:g} s per run")  # fmt: skip
            rows = asyncio.run(run_all(args, conninfo, schema))
        finally:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    rows = median_rows(rows)
    print_table(rows)
    print(conclusion(rows))
    print(load_line())


if __name__ == "__main__":
    main()
