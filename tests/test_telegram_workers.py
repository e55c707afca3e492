"""Worker processes behind one front: the real bot, real processes, the fake Bot API."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from pathlib import Path

import pytest
from botapi import FakeBotAPI
from procs import alive, descendants
from test_telegram import KETTLE_EN, KETTLE_ZH
from tgharness import BotHarness, serve_process

from bot.config import ConfigError, telegram_config
from bot.content import ScenarioLibrary
from bot.storage import Store
from bot.telegram.app import TelegramConfig, serve
from bot.telegram.workers import WorkerError, WorkerPool, worker_of

BOT_ID = 123456  # the fake server's bot


async def _session(h: BotHarness, user: int, lang: str, replies: list[str]) -> list[str]:
    await h.say(user, "/start", lang=lang)
    opening = await h.press(user, "p:m:damaged-kettle:normal:coach:0", lang=lang)
    answers = list(opening)
    for reply in replies:
        answers += await h.say(user, reply, lang=lang)
    return answers


def test_two_workers_answer_their_own_chats_in_order(shared_db: str) -> None:
    """Chats of both workers get the same conversation as with one process; a burst of
    replies in one chat is answered in order; a re-delivered update is processed once."""
    store = Store.open(shared_db)

    async def run() -> None:
        async with BotHarness(store, webhook=True, workers=2) as h:
            assert h.app is not None and h.app.pool is not None
            pids = h.app.pool.pids()
            assert len(set(pids)) == 2 and os.getpid() not in pids
            zh, en = 40, 41  # one chat for each worker
            assert {worker_of(zh, 2), worker_of(en, 2)} == {0, 1}
            answers = await asyncio.gather(
                _session(h, zh, "zh", KETTLE_ZH[:1]), _session(h, en, "en", KETTLE_EN[:1])
            )
            assert "第 1 条回复的评分" in answers[0][-1] and "王女士" in answers[0][-1]
            assert "Grades for reply #1" in answers[1][-1]

            # three replies posted back to back: answered one after the other, in order
            burst = ["好的", "请稍等，我查一下订单", "已经为您登记了"]
            ids = [h.api.message(zh, text, lang="zh") for text in burst]
            for update_id in ids:
                assert await h.deliver(update_id) == 200
            await h.idle(timeout=20)
            texts = h.api.texts(zh)
            numbers = [int(n) for t in texts for n in _reply_numbers(t)]
            assert numbers == sorted(numbers) and numbers[-3:] == [2, 3, 4]

            again = ids[0]
            before = len(h.api.texts(zh))
            assert await h.deliver(again) == 200  # Telegram re-delivers
            await h.idle(timeout=20)
            assert len(h.api.texts(zh)) == before
        assert store.inbox_backlog(BOT_ID) == 0
        turns = store.backend.fetchone("SELECT COUNT(*) FROM turns WHERE role = 'trainee'")
        assert turns == (2 + 3,)

    asyncio.run(run())
    store.close()


def _reply_numbers(text: str) -> list[str]:
    return re.findall(r"第 (\d+) 条回复的评分", text)


def test_a_dead_worker_stops_the_bot_and_its_updates_wait_in_the_inbox(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "bot.db")

    async def run() -> None:
        async with FakeBotAPI() as api:
            h = BotHarness(store, webhook=True, api=api, workers=1)
            app = await h.start_bot()
            assert app.pool is not None
            await h.say(60, "/start")
            (pid,) = app.pool.pids()
            os.kill(pid, signal.SIGKILL)
            await asyncio.wait_for(app.pool.failed.wait(), 10)
            assert "inbox" in app.pool.failure and "exit code -9" in app.pool.failure
            # Still taking updates in until it stops: they are stored, not lost.
            update_id = api.message(60, "/help")
            assert await h.deliver(update_id) == 200
            assert store.inbox_status(BOT_ID, update_id) == "received"
            await h.stop_bot()
            await h.start_bot()  # the next start answers it
            await h.idle(timeout=20)
            assert store.inbox_status(BOT_ID, update_id) == "done"
            assert "/practice" in api.texts(60)[-1]
            await h.stop_bot()

    asyncio.run(run())
    store.close()


def test_polling_front_with_a_worker_and_the_global_limit_shared_out(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "bot.db")
    config = TelegramConfig(token="t", global_rate=30.0, chat_rate=1.0, workers=2)
    pool = WorkerPool(config, db=tmp_path / "bot.db", scenarios=tmp_path)
    assert [s.config["global_rate"] for s in pool.specs] == [15.0, 15.0]
    assert {s.config["chat_rate"] for s in pool.specs} == {1.0}
    assert {s.config["workers"] for s in pool.specs} == {0}  # a worker has no workers

    async def run() -> None:
        async with BotHarness(store, workers=1) as h:  # long polling
            answers = await _session(h, 70, "en", KETTLE_EN)
            assert "Grades for reply #2" in "\n".join(answers)
            if not h.api.sent(70, ["sendPhoto"]):  # still going: end it
                await h.say(70, "/end")
            (photo,) = h.api.sent(70, ["sendPhoto"])  # the chart, drawn in the worker
            assert next(iter(photo.files.values())).startswith(b"\x89PNG")
            assert "Scorecard" in h.api.texts(70)[-1]

    asyncio.run(run())
    store.close()


def test_workers_need_a_database_file_and_a_count_of_zero_or_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = Store.open(None)
    with pytest.raises(WorkerError, match="database file"):
        asyncio.run(serve(TelegramConfig(token="t", workers=1), memory, ScenarioLibrary.load()))
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:abc")
    monkeypatch.setenv("TELEGRAM_WORKERS", "-1")
    with pytest.raises(ConfigError, match=r"TELEGRAM_WORKERS.*0 or more"):
        telegram_config(None)
    monkeypatch.setenv("TELEGRAM_WORKERS", "2")
    assert telegram_config(None).workers == 2
    assert telegram_config(None, workers=0).workers == 0


def test_serve_with_a_worker_survives_kill_9_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """`trainer serve telegram --workers 1`, killed hard: its worker notices and exits;
    the restarted bot goes on with the session. SIGTERM reaches the front only; it stops
    its worker, which finishes first, and nothing is left running."""

    async def run() -> None:
        async with FakeBotAPI() as api:

            async def spawn() -> asyncio.subprocess.Process:
                return await serve_process(api, tmp_path / "bot.db", "--workers", "1")

            proc = await spawn()
            api.message(80, "/start")
            await api.wait_texts(80, 1, timeout=60)
            api.callback(80, "p:m:damaged-kettle:normal:coach:0")
            await api.wait_texts(80, 2, timeout=30)
            workers = descendants(proc.pid)
            assert workers  # the worker (and its chart process)
            proc.kill()  # kill -9 the front
            await proc.communicate()
            for _ in range(100):
                if not [pid for pid in workers if alive(pid)]:
                    break
                await asyncio.sleep(0.1)
            assert not [pid for pid in workers if alive(pid)]

            proc = await spawn()
            api.message(80, KETTLE_EN[0])
            await api.wait_for(lambda c: "Grades for reply #1" in (c.text or ""), timeout=60)
            workers = descendants(proc.pid)
            proc.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(proc.communicate(), 60)
            log = stderr.decode()
            assert proc.returncode == 0, log[-2000:]
            assert "with 1 worker process\n" in log and "[w0]" in log
            assert api.token not in log
            assert not [pid for pid in workers if alive(pid)]
            store = Store.open(tmp_path / "bot.db")
            assert store.inbox_backlog(BOT_ID) == 0
            (session,) = store.sessions()
            assert [t.role for t in store.turns(session.id)].count("trainee") == 1
            store.close()

    asyncio.run(run())


def test_a_notice_for_a_chat_of_another_worker_is_delivered_by_that_worker(
    shared_db: str,
) -> None:
    """The mentor's worker stores the assignment notice and wakes the trainee's worker
    through the front, which sends it at once: no sweep comes within the test."""
    from test_telegram import _team

    store = Store.open(shared_db)

    async def run() -> None:
        async with BotHarness(store, webhook=True, workers=2, sweep_seconds=3600) as h:
            _, mentor, trainee = await _team(h)
            assert worker_of(mentor, 2) != worker_of(trainee, 2)
            before = len(h.api.texts(trainee))
            await h.say(mentor, "/assign damaged-kettle team=Alpha due=2099-01-31")
            texts = await h.api.wait_texts(trainee, before + 1, timeout=90)
            assert "2099-01-31" in texts[-1]
            for _ in range(600):  # the worker marks it once the send returned
                if not store.outbox_counts().get("pending"):
                    break
                await asyncio.sleep(0.1)
            assert set(store.outbox_counts()) == {"sent"}
            assert len(h.api.texts(trainee)) == before + 1  # once

    asyncio.run(run())
    store.close()


def test_a_drill_customer_the_fronts_clock_brings_reaches_a_workers_chat(
    shared_db: str,
) -> None:
    """The front moves the drills on and wakes the trainee's worker, which sends the
    customer's line (and the notice of the drill before it): no sweep comes in the test."""
    store = Store.open(shared_db)

    async def run() -> None:
        async with BotHarness(store, webhook=True, workers=2, sweep_seconds=3600) as h:
            assert h.app is not None
            svc = h.app.svc
            team = svc.create_team("Alpha")
            trainee = 41
            await h.say(trainee, f"/start {svc.create_invite('trainee', team)}", lang="zh")
            before = len(h.api.texts(trainee))
            drill, _, members = svc.plan_drill(None, "618-warmup", teams=[team], seed=3)
            assert len(members) == 1
            texts = await h.api.wait_texts(trainee, before + 2, timeout=90)
            assert f"演练 #{drill.id}" in texts[before]
            assert any(text.startswith("【C1 · ") for text in texts[before + 1 :])

    asyncio.run(run())
    store.close()


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _shared_mb(pid: int) -> float:
    """Memory of ``pid`` that other processes map too."""
    shared = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Shared_Clean:", "Shared_Dirty:")):
            shared += int(line.split()[1])
    return shared / 1024


def _sockets(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:"):
                found.add(target)
    return found


def test_workers_are_forked_from_one_loaded_zygote_and_share_one_chart_process(
    tmp_path: Path,
) -> None:
    """The workers are children of the zygote, which loaded the bot (word model and all)
    once: they map it rather than hold copies. They hold none of the front's sockets, and
    their charts are drawn by one process, forked from the zygote as well."""
    store = Store.open(tmp_path / "bot.db")

    async def run() -> None:
        async with BotHarness(store, webhook=True, workers=2, chart_processes=1) as h:
            assert h.app is not None and h.app.pool is not None
            pool = h.app.pool
            assert pool.zygote is not None
            zygote = pool.zygote.pid
            assert _parent(zygote) == os.getpid()
            workers = pool.pids()
            assert [_parent(pid) for pid in workers] == [zygote, zygote]
            for pid in workers:
                assert _shared_mb(pid) > 60  # the word model alone is ~70 MB
            front = _sockets(os.getpid())  # the fake Bot API, the webhook server, ...
            assert front and all(not front & _sockets(pid) for pid in workers)

            chats = (90, 91)
            assert {worker_of(chat, 2) for chat in chats} == {0, 1}
            for chat in chats:
                await _session(h, chat, "en", KETTLE_EN)
                if not h.api.sent(chat, ["sendPhoto"]):  # still going: end it
                    await h.say(chat, "/end")
                (photo,) = h.api.sent(chat, ["sendPhoto"])
                assert next(iter(photo.files.values())).startswith(b"\x89PNG")
            children = [pid for pid in descendants(zygote) if _parent(pid) == zygote]
            (charts,) = set(children) - set(workers)  # one chart process for both
            assert alive(charts)
        assert not alive(zygote) and not alive(charts)
        assert not [pid for pid in workers if alive(pid)]

    asyncio.run(run())
    store.close()


def test_a_dead_zygote_stops_the_bot_and_the_workers_finish_their_work(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "bot.db")

    async def run() -> None:
        async with FakeBotAPI() as api:
            h = BotHarness(store, webhook=True, api=api, workers=1)
            app = await h.start_bot()
            assert app.pool is not None and app.pool.zygote is not None
            (worker,) = app.pool.pids()
            os.kill(app.pool.zygote.pid, signal.SIGKILL)
            await asyncio.wait_for(app.pool.failed.wait(), 10)
            assert "zygote" in app.pool.failure and "exit code -9" in app.pool.failure
            assert "inbox" in app.pool.failure
            # The worker, orphaned, still answers until the bot stops, and stops cleanly.
            assert "/practice" in (await h.say(100, "/start"))[-1]
            await h.stop_bot()
            assert not alive(worker)
            assert store.inbox_backlog(BOT_ID) == 0

    asyncio.run(run())
    store.close()


def test_a_zygote_that_cannot_load_the_bot_is_a_clear_error(tmp_path: Path) -> None:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "broken.yaml").write_text("id: [\n", encoding="utf-8")
    pool = WorkerPool(
        TelegramConfig(token="123:abc", workers=1), db=tmp_path / "bot.db", scenarios=scenarios
    )

    async def run() -> None:
        with pytest.raises(WorkerError, match=r"zygote .* failed to start \(exit code 1\)"):
            await pool.start()

    asyncio.run(run())
    assert pool.zygote is not None and pool.zygote.returncode == 1
    assert pool.pids() == []
    assert pool._folder is None  # its private folder is gone with it


def test_a_lost_lease_ends_the_workers_at_once_and_the_next_term_forks_new_ones(
    shared_db: str,
) -> None:
    """Standby mode stops a bot at once when another process took its lease, and starts
    it again in the same process when it gets the lease back: the zygote and its workers
    are gone at once, and a new zygote forks new workers that answer."""
    store = Store.open(shared_db)

    async def run() -> None:
        async with FakeBotAPI() as api:
            h = BotHarness(store, webhook=True, api=api, workers=1)
            app = await h.start_bot()
            assert "/practice" in (await h.say(130, "/start"))[-1]
            assert app.pool is not None and app.pool.zygote is not None
            first = [app.pool.zygote.pid, *app.pool.pids()]
            await app.stop(0.0)  # what a lost lease does
            assert not [pid for pid in first if alive(pid)]
            await h.stop_bot()

            app = await h.start_bot()  # the lease is back
            assert app.pool is not None and app.pool.zygote is not None
            assert app.pool.zygote.pid not in first
            assert "/practice" in (await h.say(130, "/help"))[-1]
            await h.stop_bot()

    asyncio.run(run())
    store.close()


def test_a_worker_forked_from_a_zygote_with_the_openai_sdk_talks_to_the_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With models configured the zygote imports the SDK once; each worker makes its own
    clients after the fork, and the customer's lines come from the model."""
    import tgharness
    from test_telegram_llm import LINE_EN, llm_bot, start_session

    scenarios = tmp_path / "scenarios"  # the kettle with the LLM customer, on disk for the zygote
    shipped = tgharness.library().root
    shutil.copytree(shipped, scenarios, ignore=shutil.ignore_patterns("labels"))
    (scenarios / "labels").symlink_to(shipped / "labels")
    with (scenarios / "damaged-kettle.yaml").open("a", encoding="utf-8") as kettle:
        kettle.write("player: llm\n")
    monkeypatch.setattr(tgharness, "_LIBRARY", ScenarioLibrary.load(scenarios))
    store = Store.open(tmp_path / "bot.db")

    async def run() -> None:
        async with llm_bot(store, webhook=True, workers=1) as (h, customer, _):
            opening = await start_session(h, 140, "en", "coach")
            assert LINE_EN in opening[-1]
            assert customer.completions
            assert h.app is not None and h.app.pool is not None and h.app.pool.zygote
            cmdline = Path(f"/proc/{h.app.pool.zygote.pid}/cmdline").read_bytes().split(b"\0")
            assert cmdline[-2:] == [b"models", b""]  # the zygote was told to load the SDK

    asyncio.run(run())
    store.close()
