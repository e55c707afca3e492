"""Wall time of whole scripted sessions: every turn graded, stored in SQLite (WAL, FULL sync).

    python bench/bench_session.py [--rounds N]

Plays every golden transcript in tests/golden/ (all scenarios, both languages, good,
mediocre and bad trainees) against the scripted customer with a file-backed store, and
prints per-session time. Target: a full session well under a second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

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
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    library = ScenarioLibrary.load()
    cases = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(GOLDEN.glob("*.json"))]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "bench.db")
        engine = Engine(store, library)
        for case in cases[:2] + [c for c in cases if c["language"] == "zh"][:1]:
            asyncio.run(play(engine, case))  # warm up: loads the jieba dictionary once
        times, replies = [], 0
        for _ in range(args.rounds):
            for case in cases:
                start = time.perf_counter()
                replies += asyncio.run(play(engine, case))
                times.append(time.perf_counter() - start)
        store.close()
    ordered = sorted(times)
    print(f"{len(times)} scripted sessions ({replies} graded replies), file-backed SQLite store")
    print(f"  per session: mean {statistics.mean(times) * 1000:.1f} ms   "
          f"p95 {ordered[int(len(ordered) * 0.95) - 1] * 1000:.1f} ms   max {ordered[-1] * 1000:.1f} ms "
          f"(target: well under 1 s) {'OK' if ordered[-1] < 1 else 'MISS'}")  # fmt: skip


if __name__ == "__main__":
    main()
