"""Run the real Telegram bot (real aiogram, real HTTP) against the fake Bot API server.

Used by the end-to-end tests and by ``bench/bench_telegram.py``::

    async with BotHarness(store) as h:          # polling; BotHarness(store, webhook=True)
        await h.say(100, "/start")              # a user message; waits for the bot to answer
        await h.press(100, "p:s:damaged-kettle:::0")
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from botapi import FakeBotAPI

from bot.content import ScenarioLibrary
from bot.llm.roles import Assistants
from bot.storage import Store
from bot.telegram.app import WEBHOOK_PATH, TelegramApp, TelegramConfig
from bot.telegram.workers import WorkerPool

_LIBRARY: ScenarioLibrary | None = None


def library() -> ScenarioLibrary:
    """The bundled scenario library, loaded once per process."""
    global _LIBRARY
    if _LIBRARY is None:
        _LIBRARY = ScenarioLibrary.load()
    return _LIBRARY


class BotHarness:
    """A fake Bot API server plus the bot polling it (or receiving its webhook)."""

    def __init__(
        self,
        store: Store,
        *,
        webhook: bool = False,
        api: FakeBotAPI | None = None,
        secret: str = "s3cret-token",
        assistants: Assistants | None = None,
        **config: Any,
    ):
        self.store = store
        self.assistants = assistants
        """The model-backed roles given to the bot (the caller closes them)."""
        self.webhook = webhook
        self.api = api or FakeBotAPI()
        self._own_api = api is None
        self.secret = secret
        self.config_overrides = {
            "global_rate": None,
            "chat_rate": None,
            "poll_timeout": 1,
            "chart_processes": 0,  # a spawned worker per test bot would cost seconds
        }
        self.config_overrides.update(config)
        self.app: TelegramApp | None = None
        self._stop = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._runner: Any = None

    async def __aenter__(self) -> BotHarness:
        if self._own_api:
            await self.api.start()
        await self.start_bot()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_bot()
        if self._own_api:
            await self.api.stop()

    async def start_bot(self) -> TelegramApp:
        """Start (or restart) the bot on the same store."""
        from aiohttp import web

        config = TelegramConfig(token=self.api.token, api_base=self.api.base_url)
        config = replace(config, **self.config_overrides)
        if self.webhook:
            config = replace(config, webhook_secret=self.secret)
        pool = None
        if config.workers > 0:  # the production pool: worker processes on the same database
            assert self.store.location is not None, "workers need a file or a database server"
            pool = WorkerPool(
                config, db=self.store.location, scenarios=library().root, assistants=self.assistants
            )
        self.app = TelegramApp(config, self.store, library(), assistants=self.assistants, pool=pool)
        await self.app.start()
        self._stop = asyncio.Event()
        if self.webhook:
            self._runner = web.AppRunner(self.app.webhook_app())
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            port = self._runner.addresses[0][1]
            url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
            self.app.config = replace(self.app.config, webhook_url=url)
            await self.app.set_webhook()
        else:
            self._poller = asyncio.create_task(self.app.poll(self._stop))
        return self.app

    async def stop_bot(self) -> None:
        """Stop the bot as SIGTERM would: no new updates, in-flight work finished."""
        if self.app is None:
            return
        self._stop.set()
        if self._poller is not None:
            await self._poller
            self._poller = None
        await self.app.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.app = None

    async def deliver(self, update_id: int) -> int:
        """Push a queued update to the bot (webhook mode); returns the HTTP status."""
        return await self.api.post_to_webhook(self.api.updates[update_id])

    async def _send(self, update_id: int, chat_id: int, wait: int | None) -> list[str]:
        before = len(self.api.texts(chat_id))
        if self.webhook:
            status = await self.deliver(update_id)
            assert status == 200, status
        if wait is None:
            await self.idle()
            return self.api.texts(chat_id)[before:]
        return (await self.api.wait_texts(chat_id, before + wait))[before:]

    async def say(
        self, user_id: int, text: str, *, lang: str = "en", wait: int | None = None, **kw: Any
    ) -> list[str]:
        """A user message; returns the texts the bot sent to that chat in answer.

        ``wait`` is how many messages to wait for; by default, until the bot is idle.
        """
        update_id = self.api.message(user_id, text, lang=lang, **kw)
        return await self._send(update_id, user_id, wait)

    async def press(
        self, user_id: int, data: str, *, lang: str = "en", wait: int | None = None
    ) -> list[str]:
        """A button press with callback ``data``; returns the texts sent in answer."""
        update_id = self.api.callback(user_id, data, lang=lang)
        return await self._send(update_id, user_id, wait)

    async def idle(self, timeout: float = 60.0) -> None:
        """Wait until every queued update was taken and processed."""
        assert self.app is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if not self.webhook and self.api.pending_updates:
                await asyncio.sleep(0.01)
                continue
            if await self.app.drain(max(0.0, deadline - loop.time())):
                await asyncio.sleep(0.02)  # a poll may have just fetched one more
                if not self.app._tasks and (self.webhook or not self.api.pending_updates):
                    return
        raise AssertionError("the bot did not become idle")

    def buttons(self, chat_id: int) -> list[tuple[str, str]]:
        """(label, callback data) of the inline keyboard on the last message to a chat."""
        message = self.api.last_message(chat_id) or {}
        rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
        return [(b["text"], b.get("callback_data", "")) for row in rows for b in row]


TRAINER = [sys.executable, "-c", "from bot.cli import main; main()"]
"""The ``trainer`` command, run by this Python."""


def trainer(constants: Mapping[str, float] | None = None) -> list[str]:
    """The ``trainer`` command, run by this Python with some module constants set first.

    A test shortens a wait this way (the drill clock's interval, a lease) without a
    setting users would see; a constant that does not exist (renamed) fails the start.
    """
    code = ["import importlib"]
    for dotted, value in (constants or {}).items():
        module, name = dotted.rsplit(".", 1)
        code += [f"m = importlib.import_module({module!r})", f"assert hasattr(m, {name!r})",
                 f"m.{name} = {value!r}"]  # fmt: skip
    code.append("from bot.launch import main; main()")
    return [sys.executable, "-c", "\n".join(code)]


def bot_env(api: FakeBotAPI, db: Path, **more: str) -> dict[str, str]:
    """This process's environment for a trainer process talking to ``api``, limits off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEGRAM_")}
    env.update(
        TELEGRAM_BOT_TOKEN=api.token,
        TELEGRAM_API_BASE=api.base_url,
        TELEGRAM_CHAT_RATE="0",
        TELEGRAM_GLOBAL_RATE="0",
        TRAINER_DB=str(db),
        **more,
    )
    return env


async def serve_process(api: FakeBotAPI, db: Path, *args: str) -> asyncio.subprocess.Process:
    """A real ``trainer serve telegram ARGS`` process against ``api``, limits off.

    Its stderr (the log) is piped; it runs in the database's directory.
    """
    return await asyncio.create_subprocess_exec(
        *TRAINER,
        "serve",
        "telegram",
        *args,
        env=bot_env(api, db),
        cwd=str(db.parent),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
