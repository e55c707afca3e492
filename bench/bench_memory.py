"""Memory and start-up of `trainer serve telegram --workers N`, and of the short commands.

    python bench/bench_memory.py [--workers 2] [--runs 3]

Starts the real bot (long polling, SQLite file) against the fake Bot API of
``tests/botapi.py`` on 127.0.0.1, times the first /start from the moment the process
starts, then has one trainee in each worker's chats play a reply and end the session
(so each worker has graded and a chart was drawn), and sums the memory of the whole
process tree: PSS (each shared page counted once, split between its processes) and RSS.
Then times `trainer scenarios list` and `trainer grade` on a Chinese chat. Each figure is
the median (and range) of the runs; the target is a tree of at most 400 MB with 2 workers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:  # tests/botapi.py is made to be imported
    sys.path.insert(0, str(ROOT / "tests"))

from botapi import FakeBotAPI  # noqa: E402
from procs import descendants  # noqa: E402
from tgharness import TRAINER, bot_env  # noqa: E402

from bot.telegram.workers import worker_of  # noqa: E402

REPLY = "王女士您好，水壶到手就裂了，真的很抱歉。麻烦发一下订单号和照片，我马上为您处理。"
TARGET_MB = 400


def _memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process in kB (0, 0 if it is gone)."""
    found = {"Pss:": 0, "Rss:": 0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key = line.split(":")[0] + ":"
            if key in found:
                found[key] = int(line.split()[1])
    except OSError:
        pass
    return found["Pss:"], found["Rss:"]


async def _bot_run(workers: int, folder: Path) -> tuple[float, int, int, int]:
    """First /start after (s), tree PSS and RSS (kB), and the number of processes."""
    async with FakeBotAPI() as api:
        db = folder / f"bot-{time.monotonic_ns()}.db"
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *TRAINER, "serve", "telegram", "--workers", str(workers),
            env=bot_env(api, db), cwd=str(folder),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            chats = sorted({next(c for c in range(100, 200) if worker_of(c, max(workers, 1)) == w)
                            for w in range(max(workers, 1))})  # fmt: skip
            api.message(chats[0], "/start")
            await api.wait_texts(chats[0], 1, timeout=300)
            first = time.monotonic() - started
            for chat in chats:
                before = len(api.texts(chat))
                if chat != chats[0]:
                    api.message(chat, "/start")
                    await api.wait_texts(chat, before + 1, timeout=300)
                api.callback(chat, "p:m:damaged-kettle:normal:coach:0")
                await api.wait_texts(chat, len(api.texts(chat)) + 1, timeout=300)
                api.message(chat, REPLY)
                await api.wait_texts(chat, len(api.texts(chat)) + 1, timeout=300)
                api.message(chat, "/end")
                await api.wait_for(lambda c, chat=chat: c.chat_id == chat and bool(
                    c.method == "sendPhoto"), timeout=300)  # fmt: skip
            await asyncio.sleep(1.0)
            pids = [proc.pid, *descendants(proc.pid)]
            pss = rss = 0
            for pid in pids:
                p, r = _memory_kb(pid)
                pss, rss = pss + p, rss + r
            return first, pss, rss, len(pids)
        finally:
            proc.terminate()
            await proc.wait()


def _command_s(*args: str, folder: Path) -> float:
    started = time.monotonic()
    subprocess.run([*TRAINER, *args], cwd=folder, check=True, capture_output=True, timeout=300)
    return time.monotonic() - started


def _figure(values: list[float], unit: str, digits: int = 1) -> str:
    median = statistics.median(values)
    return f"{median:.{digits}f} {unit} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load {load:.2f} at start; {args.runs} runs each")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        firsts, psses, rsses = [], [], []
        count = 0
        for _ in range(args.runs):
            first, pss, rss, count = asyncio.run(_bot_run(args.workers, folder))
            firsts.append(first)
            psses.append(pss / 1024)
            rsses.append(rss / 1024)
        verdict = "OK" if statistics.median(psses) <= TARGET_MB else "MISS"
        print(f"serve telegram --workers {args.workers} ({count} processes after a session "
              f"per worker, charts included):")  # fmt: skip
        print(f"  memory PSS {_figure(psses, 'MB', 0)}   (target <= {TARGET_MB} MB)  {verdict}")
        print(f"  memory RSS {_figure(rsses, 'MB', 0)}   (shared pages counted in each)")
        print(f"  first /start answered {_figure(firsts, 's')} after the process started")
        chat = folder / "chat.json"
        chat.write_text(json.dumps({
            "language": "zh", "scenario": "damaged-kettle",
            "turns": [{"role": "customer", "text": "水壶裂了！"},
                      {"role": "trainee", "text": REPLY}],
        }, ensure_ascii=False), encoding="utf-8")  # fmt: skip
        listing = [_command_s("scenarios", "list", folder=folder) for _ in range(args.runs)]
        grading = [_command_s("grade", str(chat), folder=folder) for _ in range(args.runs)]
        print(f"trainer scenarios list {_figure(listing, 's', 2)}")
        print(f"trainer grade (one Chinese chat) {_figure(grading, 's', 2)}")


if __name__ == "__main__":
    main()
