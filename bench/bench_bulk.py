"""Bulk QC: wall time of `trainer grade` on 1,000 transcripts of 10 replies, on one core.

    python bench/bench_bulk.py [--transcripts N] [--replies R] [--runs N]

Builds a JSONL file of chats from the golden transcripts' replies (every scenario, both
languages, good and bad trainees, so most replies repeat as stock lines do in real
chats; one in three is made unique), then runs the real command in a child process pinned
to one core and times it from start to exit, start-up included, --runs (3) times: the
median and range. Target: under 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from figures import add_runs, figure, load_line, machine_line, runs_of, verdict
from golden import load_cases

TARGET_S = 30.0
CUSTOMER = {"zh": "然后呢？快点！", "en": "And? Hurry up!"}


def corpus(path: Path, transcripts: int, replies: int, seed: int) -> int:
    """Write ``transcripts`` chats of ``replies`` trainee replies; returns the reply count."""
    rng = random.Random(seed)
    cases = load_cases()
    total = 0
    with path.open("w", encoding="utf-8") as out:
        for n in range(transcripts):
            case = rng.choice(cases)
            turns = [{"role": "customer", "text": CUSTOMER[case.lang]}]
            for i in range(replies):
                text = case.replies[i % len(case.replies)]
                if rng.random() < 1 / 3:
                    text = f"{text} ({n}-{i})"  # a new text: no cache can answer it
                turns += [
                    {"role": "trainee", "text": text},
                    {"role": "customer", "text": CUSTOMER[case.lang]},
                ]
                total += 1
            chat = {
                "id": f"chat-{n}",
                "agent": f"agent-{n % 25}",
                "language": case.lang,
                "scenario": case.scenario,
                "turns": turns,
            }
            out.write(json.dumps(chat, ensure_ascii=False) + "\n")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transcripts", type=int, default=1000)
    parser.add_argument("--replies", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    add_runs(parser)
    args = parser.parse_args()
    print(machine_line())
    trainer = Path(sys.executable).with_name("trainer")
    walls = []
    with tempfile.TemporaryDirectory() as tmp:
        chats = Path(tmp) / "chats.jsonl"
        replies = corpus(chats, args.transcripts, args.replies, args.seed)
        core = min(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None

        def pin() -> None:
            if core is not None:
                os.sched_setaffinity(0, {core})

        for _ in range(runs_of(args)):
            started = time.perf_counter()
            subprocess.run(
                [str(trainer), "grade", str(chats), "--by", "agent", "--format", "csv",
                 "-o", str(Path(tmp) / "out.csv")],
                check=True, preexec_fn=pin, capture_output=True,
            )  # fmt: skip
            walls.append(time.perf_counter() - started)
    print(
        f"bulk QC, {args.transcripts} transcripts x {args.replies} replies ({replies} replies), "
        f"one core, {len(walls)} runs: median (range)"
    )
    print(f"  trainer grade, start-up included: {figure(walls, 's')}   target < {TARGET_S:g} s: "
          f"{verdict(walls, lambda s: s < TARGET_S)}")  # fmt: skip
    print(f"  {figure([replies / wall for wall in walls], '/s', 0)} replies end to end")
    print(load_line())


if __name__ == "__main__":
    main()
