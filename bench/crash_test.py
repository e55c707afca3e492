"""Crash test: `kill -9` the Telegram bot again and again while trainees practise.

    python bench/crash_test.py [--trainees 50] [--kills 10] [--workers 0] [--transport both]
                               [--seed 1]

Runs the real ``trainer serve telegram`` process (charts in their own process, as in
production) against the fake Bot API of ``tests/botapi.py`` on 127.0.0.1 and a database
file in a temp dir. Each simulated trainee opens a session (/start, /practice, scenario,
difficulty, mode: coach and exam alternate), sends two replies and ends the session with
/end or, one in four, with an insult (a red line that ends it). Meanwhile the bot is
killed with SIGKILL ``--kills`` times at random moments (every 1-4 s) and restarted at
once. Then the trainees finish, the bot is stopped with SIGTERM and the figures are read
from the fake server (what arrived) and the database (what was owed):

  acknowledged   updates the bot confirmed (polling: offset passed; webhook: answered 200)
  stored once    acknowledged updates found in the inbox (its key keeps each one once)
  results owed   openings (briefing and first line), answers to replies, scorecards
  delivered      of those, how many arrived (must be 100 %)
  duplicates     messages that arrived more often than they were owed

``--transport both`` (default) runs long polling, then a webhook. Exits 1 when a result
was lost or an update was acknowledged but not stored. Takes a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sqlite3
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from botapi import FakeBotAPI  # noqa: E402
from tgharness import TRAINER  # noqa: E402

REPLIES = [
    "Hello Ms. Wang, I'm so sorry the kettle arrived cracked. Could you send me the order "
    "number and a photo of the crack? I'll sort it out now.",
    "Thank you, it was clearly damaged in transit. We can send a new kettle within 48 hours, "
    "or refund the full ¥299 to your Alipay within 1-3 business days. Which do you prefer?",
]
INSULT = "Stop whining, you idiot. It's your own fault, deal with it."
WAIT_S = 90.0
"""How long a trainee waits for an answer (a restart takes seconds on a loaded machine)."""
SECRET = "crash-test-secret"


@dataclass
class Run:
    """One transport's run: the fake server, the bot process and what was acknowledged."""

    api: FakeBotAPI
    db: Path
    webhook: bool
    workers: int
    port: int = 0
    proc: asyncio.subprocess.Process | None = None
    acknowledged: set[int] = field(default_factory=set)
    kills: int = 0

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELEGRAM_")}
        env.update(
            TELEGRAM_BOT_TOKEN=self.api.token,
            TELEGRAM_API_BASE=self.api.base_url,
            TELEGRAM_CHAT_RATE="0",
            TELEGRAM_GLOBAL_RATE="0",
            TRAINER_DB=str(self.db),
        )
        args = ["serve", "telegram", "--workers", str(self.workers)]
        if self.webhook:
            env["TELEGRAM_WEBHOOK_SECRET"] = SECRET
            url = f"http://127.0.0.1:{self.port}/telegram/webhook"
            args += ["--webhook-url", url, "--port", str(self.port)]
        self.proc = await asyncio.create_subprocess_exec(
            *TRAINER,
            *args,
            env=env,
            cwd=str(self.db.parent),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # kill -9 takes its workers and chart process too
        )

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.kills += 1

    async def send(self, update_id: int) -> None:
        """Hand an update to the bot: queued for polling, or POSTed until answered 200."""
        if not self.webhook:
            return  # the fake server queued it; the bot fetches it
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while loop.time() < deadline:
            try:
                if (
                    self.api.webhook_url
                    and await self.api.post_to_webhook(self.api.updates[update_id]) == 200
                ):
                    self.acknowledged.add(update_id)
                    return
            except OSError:
                pass  # the bot is down: Telegram retries too
            await asyncio.sleep(0.5)


async def trainee(run: Run, user: int, mode: str, insult: bool) -> None:
    api = run.api

    async def step(update_id: int, wait_for: str) -> None:
        before = sum(wait_for in t for t in api.texts(user))
        await run.send(update_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while sum(wait_for in t for t in api.texts(user)) <= before:
            if loop.time() > deadline:
                return  # late: the figures will say whether it ever came
            await asyncio.sleep(0.1)

    await step(api.message(user, "/start"), "")
    await step(api.message(user, "/practice"), "")
    for data in ("p:s:damaged-kettle:::0", "p:d:damaged-kettle:normal::0"):
        await step(api.callback(user, data, message_id=1), "")
    await step(api.callback(user, f"p:m:damaged-kettle:normal:{mode}:0", message_id=1), "Briefing")
    for reply in REPLIES:
        await step(api.message(user, reply), "👤")
    await step(api.message(user, INSULT if insult else "/end"), "📊")


async def one_run(transport: str, trainees: int, kills: int, workers: int, seed: int) -> bool:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        async with FakeBotAPI() as api:
            run = Run(api, Path(tmp) / "bot.db", transport == "webhook", workers)
            if run.webhook:
                import socket

                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    run.port = s.getsockname()[1]
            await run.start()
            users = [
                asyncio.create_task(trainee(run, 1000 + i, ("coach", "exam")[i % 2], i % 4 == 3))
                for i in range(trainees)
            ]
            for _ in range(kills):
                await asyncio.sleep(rng.uniform(1.0, 4.0))
                run.kill()
                assert run.proc is not None
                await run.proc.wait()
                await run.start()
            await asyncio.gather(*users)
            await asyncio.sleep(3.0)  # what a late restart still owes
            assert run.proc is not None
            run.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(run.proc.wait(), 120)
            if not run.webhook:
                pending = {p.update_id for p in api._pending}
                run.acknowledged = set(api.updates) - pending
            return report(transport, run)


def report(transport: str, run: Run) -> bool:
    db = sqlite3.connect(str(run.db))
    stored = {int(r[0]) for r in db.execute("SELECT update_id FROM updates")}
    sessions = db.execute(
        "SELECT s.id, u.chat_id, s.status FROM sessions s JOIN users u"
        " ON u.trainee_id = s.trainee_id"
    )
    owed: Counter[tuple[int, str]] = Counter()
    for sid, chat, status in sessions.fetchall():
        owed[int(chat), "Briefing"] += 1
        answered = db.execute(
            "SELECT COUNT(*) FROM turns WHERE session_id = ? AND role = 'customer' AND idx > 0",
            [sid],
        ).fetchone()[0]
        owed[int(chat), "👤"] += answered
        owed[int(chat), "📊"] += status == "ended"
    arrived: Counter[tuple[int, str]] = Counter()
    for chat in {c for c, _ in owed}:
        for text in run.api.texts(chat):
            if "Briefing" in text:
                arrived[chat, "Briefing"] += 1
            elif text.startswith("📊"):
                arrived[chat, "📊"] += 1
            elif "👤" in text:
                arrived[chat, "👤"] += 1
    delivered = sum(min(n, arrived[key]) for key, n in owed.items())
    duplicates = sum(max(0, arrived[key] - owed[key]) for key in arrived)
    total = sum(owed.values())
    outbox = dict(db.execute("SELECT status, COUNT(*) FROM outbox GROUP BY status").fetchall())
    db.close()
    missing = run.acknowledged - stored
    print(f"{transport}: {run.kills} kill -9, workers {run.workers}")
    print(f"  acknowledged updates  {len(run.acknowledged)}")
    print(
        f"  stored once           {len(run.acknowledged) - len(missing)} (missing {len(missing)})"
    )
    print(f"  results owed          {total}")
    print(f"  results delivered     {delivered} ({100 * delivered / max(total, 1):.1f} %)")
    print(f"  duplicates sent       {duplicates}")
    print(f"  outbox                {outbox}")
    return not missing and delivered == total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trainees", type=int, default=50)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--transport", choices=["polling", "webhook", "both"], default="both")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    transports = ["polling", "webhook"] if args.transport == "both" else [args.transport]
    ok = True
    for transport in transports:
        ok &= asyncio.run(one_run(transport, args.trainees, args.kills, args.workers, args.seed))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
