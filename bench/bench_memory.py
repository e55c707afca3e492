"""Memory and start-up of `trainer serve telegram --workers N`, and of the short commands.

    python bench/bench_memory.py [--workers 2] [--runs 3]

Starts the real bot (long polling, SQLite file) against the fake Bot API of
``tests/botapi.py`` on 127.0.0.1, times the first /start from the moment the process
starts, then has one trainee in each worker's chats play a reply and end the session
(so each worker has graded and a chart was drawn), and sums the memory of the whole
process tree: PSS (each shared page counted once, split between its processes) and RSS.
It lists the last run's processes (the front, the zygote the workers are forked from, the
workers, the chart process) with their PSS, RSS and private memory. Then times `trainer scenarios list` and `trainer grade` on a Chinese chat. Each figure is
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


def _memory_kb(pid: int) -> dict[str, int]:
    """PSS, RSS and private (dirty and clean) memory of one process in kB (0 if it is gone)."""
    found = dict.fromkeys(("Pss", "Rss", "Private_Dirty", "Private_Clean"), 0)
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key = line.split(":")[0]
            if key in found:
                found[key] = int(line.split()[1])
    except OSError:
        pass
    return found


def _stat(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _roles(root: int, pids: list[int], workers: int) -> dict[int, str]:
    """What each process of the tree is.

    The zygote's children are the workers, forked at start, then the chart process.
    """
    roles = {root: "front (trainer serve telegram)"}
    parents = {pid: int(_stat(pid)[1]) for pid in pids if pid != root}
    forked = sorted((p for p in pids if parents.get(p) not in (None, root)),
                    key=lambda p: int(_stat(p)[19]))  # by start time  # fmt: skip
    for pid in pids:
        if parents.get(pid) == root:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            roles[pid] = "zygote" if b"bot.telegram.workers" in command else "chart process"
    for i, pid in enumerate(forked):
        roles[pid] = f"worker {i} (forked)" if i < workers else "chart process (forked)"
    return roles


Row = tuple[int, str, dict[str, int]]
"""A process of the tree: its id, what it is, its memory (:func:`_memory_kb`)."""


async def _bot_run(workers: int, folder: Path) -> tuple[float, list[Row]]:
    """First /start after (s), and the processes of the tree with their memory."""
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
            roles = _roles(proc.pid, pids, workers)
            return first, [(pid, roles[pid], _memory_kb(pid)) for pid in pids]
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
        rows: list[Row] = []
        for _ in range(args.runs):
            first, rows = asyncio.run(_bot_run(args.workers, folder))
            firsts.append(first)
            psses.append(sum(m["Pss"] for _, _, m in rows) / 1024)
            rsses.append(sum(m["Rss"] for _, _, m in rows) / 1024)
        count = len(rows)
        verdict = "OK" if statistics.median(psses) <= TARGET_MB else "MISS"
        print(f"serve telegram --workers {args.workers} ({count} processes after a session "
              f"per worker, charts included):")  # fmt: skip
        print(f"  memory PSS {_figure(psses, 'MB', 0)}   (target <= {TARGET_MB} MB)  {verdict}")
        print(f"  memory RSS {_figure(rsses, 'MB', 0)}   (shared pages counted in each)")
        print(f"  first /start answered {_figure(firsts, 's')} after the process started")
        print("  the last run's processes (MB; private: pages no other process of the tree maps):")
        for pid, role, memory in rows:
            private = memory["Private_Dirty"] + memory["Private_Clean"]
            print(f"    {pid:>8}  PSS {memory['Pss'] / 1024:5.0f}  RSS {memory['Rss'] / 1024:5.0f}  "
                  f"private {private / 1024:5.0f}  {role}")  # fmt: skip
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
