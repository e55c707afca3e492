"""Wall time of whole scripted sessions: every turn graded, stored in SQLite (WAL, FULL sync).

    python bench/bench_session.py [--runs N]

Plays every golden transcript in tests/golden/ (all scenarios, both languages, good,
mediocre and bad trainees) against the scripted customer with a file-backed store, once per
run (--runs, 3), and prints per-session time: the mean, p95 and slowest session of each
run, as the median and range of the runs. Target: a full session well under a second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from figures import add_runs, figure, load_line, machine_line, runs_of, verdict

from bot.content import ScenarioLibrary
from bot.engine import Engine
from bot.storage import Store

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden"


async def play(engine: Engine, case: dict) -> int:  # type: ignore[type-arg]
    session, _ = await engine.start(
        trainee="bench", scenario=case["scenario"], lang=case["language"],
        difficulty=case["difficulty"], seed=case["seed"],
    )  # fmt: skip
    turns = 0
    for reply in case["replies"]:
        if session.ended:
            break
        await session.reply(reply)
        turns += 1
    await session.end()
    return turns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_runs(parser)
    args = parser.parse_args()
    print(machine_line())
    library = ScenarioLibrary.load()
    cases = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(GOLDEN.glob("*.json"))]
    means, p95s, slowest = [], [], []
    replies = 0
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "bench.db")
        engine = Engine(store, library)
        for case in cases[:2] + [c for c in cases if c["language"] == "zh"][:1]:
            asyncio.run(play(engine, case))  # warm up: loads the jieba dictionary once
        for _ in range(runs_of(args)):
            times = []
            for case in cases:
                start = time.perf_counter()
                replies += asyncio.run(play(engine, case))
                times.append((time.perf_counter() - start) * 1000)
            ordered = sorted(times)
            means.append(statistics.mean(times))
            p95s.append(ordered[int(len(ordered) * 0.95) - 1])
            slowest.append(ordered[-1])
        store.close()
    print(f"{len(cases)} scripted sessions per run ({replies // len(means)} graded replies), "
          f"file-backed SQLite store, {len(means)} runs: median (range)")  # fmt: skip
    print(f"  per session: mean {figure(means, 'ms')}   p95 {figure(p95s, 'ms')}")
    print(f"  slowest session {figure(slowest, 'ms')}   target well under 1 s: "
          f"{verdict(slowest, lambda ms: ms < 1000)}")  # fmt: skip
    print(load_line())


if __name__ == "__main__":
    main()
