"""The bot against a Bot API server nobody on this project wrote: telegram-test-api (npm).

It answers ``getUpdates`` at once (no long poll), sends button presses without
``chat_instance``, leaves ``is_bot`` out of ``getMe`` and has no ``setMyCommands``,
``sendChatAction``, ``sendPhoto`` or ``sendDocument``. ``python3 dev.py test`` installs it
(``npm ci`` in ``tests/foreign_botapi``); it needs Node.js and npm.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_drill import GOOD, T0, Clock
from test_telegram import KETTLE_EN
from tgharness import library

from bot.storage import Store
from bot.telegram.app import TelegramApp, TelegramConfig

HERE = Path(__file__).resolve().parent / "foreign_botapi"
TOKEN = "123456:FOREIGN-server-token"
USER = 501


def _installed() -> None:
    if not (HERE / "node_modules" / "telegram-test-api").is_dir():
        raise RuntimeError(
            "telegram-test-api is not installed: run python3 dev.py test (it runs npm ci in "
            "tests/foreign_botapi; Node.js 18+ and npm are needed)"
        )


@pytest.fixture
def foreign_api() -> Iterator[str]:
    """telegram-test-api listening on 127.0.0.1; yields its base URL."""
    _installed()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    node = shutil.which("node")
    assert node is not None, "Node.js is needed for tests/test_foreign_botapi.py"
    proc = subprocess.Popen(
        [node, "server.js", str(port)], cwd=HERE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        if proc.stdout is not None:
            proc.stdout.close()


class Client:
    """A user of the foreign server's client API (its own, not Telegram's)."""

    def __init__(self, http: aiohttp.ClientSession, base: str):
        self.http, self.base = http, base
        self.sender = {"id": USER, "first_name": "Lin", "username": "lin", "is_bot": False}
        self.chat = {"id": USER, "first_name": "Lin", "type": "private"}

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        async with self.http.post(self.base + path, json=body) as resp:
            assert resp.status == 200, await resp.text()
            return (await resp.json())["result"]

    async def say(self, text: str, quoting: dict[str, Any] | None = None) -> None:
        body: dict[str, Any] = {"botToken": TOKEN, "from": self.sender, "chat": self.chat,
                                "date": int(time.time()), "text": text}  # fmt: skip
        if quoting is not None:  # a reply to one of the bot's messages
            body["reply_to_message"] = {"message_id": quoting.get("message_id", 1),
                                        "date": int(time.time()), "chat": self.chat,
                                        "text": quoting.get("text", "")}  # fmt: skip
        if text.startswith("/"):
            body["entities"] = [
                {"offset": 0, "length": len(text.split()[0]), "type": "bot_command"}
            ]
            await self._post("/sendCommand", body)
        else:
            await self._post("/sendMessage", body)

    async def press(self, data: str) -> None:
        message = {"message_id": 1, "date": int(time.time()), "chat": self.chat}
        await self._post("/sendCallback", {"botToken": TOKEN, "from": self.sender,
                                           "message": message, "data": data})  # fmt: skip

    async def bot_messages(self) -> list[dict[str, Any]]:
        history = await self._post("/getUpdatesHistory", {"token": TOKEN})
        return [item["message"] for item in history if "chat_id" in item.get("message", {})]

    async def wait_for(self, predicate: Any, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for m in await self.bot_messages() if predicate(m)]
            if found:
                return found[-1]
            await asyncio.sleep(0.1)
        texts = [m.get("text", "")[:80] for m in await self.bot_messages()]
        raise AssertionError(f"no such bot message; the bot sent: {texts}")


def _buttons(message: dict[str, Any]) -> list[str]:
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return [b.get("callback_data", "") for row in rows for b in row]


@contextlib.asynccontextmanager
async def _polling(store: Store, foreign_api: str) -> AsyncIterator[TelegramApp]:
    """The bot started on the foreign server and polling it; stopped on the way out."""
    config = replace(
        TelegramConfig(token=TOKEN, api_base=foreign_api),
        global_rate=None, chat_rate=None, poll_timeout=1, chart_processes=0,
    )  # fmt: skip
    app = TelegramApp(config, store, library())
    await app.start()  # getMe without is_bot, no setMyCommands: it starts
    stop = asyncio.Event()
    poller = asyncio.create_task(app.poll(stop))
    try:
        yield app
    finally:
        stop.set()
        await poller
        await app.stop()


def test_a_whole_session_on_a_foreign_bot_api_server(foreign_api: str, tmp_path: Path) -> None:
    store = Store.open(tmp_path / "bot.db")

    async def run() -> None:
        async with _polling(store, foreign_api), aiohttp.ClientSession() as http:
            user = Client(http, foreign_api)
            await user.say("/start")
            await user.wait_for(lambda m: m.get("text", "").startswith("Hi "))
            await user.say("/practice")
            menu = await user.wait_for(lambda m: "p:s:damaged-kettle:::0" in _buttons(m))
            assert menu
            await user.press("p:s:damaged-kettle:::0")  # no chat_instance
            await user.wait_for(lambda m: "p:d:damaged-kettle:normal::0" in _buttons(m))
            await user.press("p:d:damaged-kettle:normal::0")
            await user.wait_for(lambda m: "p:m:damaged-kettle:normal:coach:0" in _buttons(m))
            await user.press("p:m:damaged-kettle:normal:coach:0")
            await user.wait_for(lambda m: "Briefing" in m.get("text", ""))
            await user.say(KETTLE_EN[0])
            await user.wait_for(lambda m: "Grades for reply #1" in m.get("text", ""))
            await user.say("/end")  # no sendPhoto: the scorecard comes without the chart
            card = await user.wait_for(lambda m: m.get("text", "").startswith("📊"))
            assert any(d.startswith("dp:") for d in _buttons(card))
            polls_before = len(await user.bot_messages())
            await asyncio.sleep(2.0)  # idle: a server answering at once is not hammered
            assert len(await user.bot_messages()) == polls_before
        failed = store.backend.db.execute(
            "SELECT COUNT(*) FROM updates WHERE status != 'done'"
        ).fetchone()
        assert failed[0] == 0
        outbox = dict(
            store.backend.db.execute("SELECT kind, status FROM outbox WHERE kind = 'chart'")
        )
        assert outbox == {"chart": "failed"}
        assert store.outbox_counts().get("pending", 0) == 0

    asyncio.run(run())
    store.close()


def test_a_drill_customer_is_answered_by_quoting_on_a_foreign_bot_api_server(
    foreign_api: str, tmp_path: Path
) -> None:
    """Two labelled customers; the user quotes one of them (``reply_to_message``)."""
    store = Store.open(tmp_path / "bot.db")

    async def run() -> None:
        async with _polling(store, foreign_api) as app, aiohttp.ClientSession() as http:
            clock = Clock()
            app.svc.drills.clock = clock
            user = Client(http, foreign_api)
            team = app.svc.create_team("Alpha")
            await user.say(f"/start {app.svc.create_invite('trainee', team)}")
            await user.wait_for(lambda m: "Alpha" in m.get("text", ""))
            app.svc.plan_drill(None, "double11-peak", teams=[team], concurrency=2, seed=4)
            await app.svc.drills.tick()
            clock.now = T0 + 3
            await app.svc.drills.tick()
            app._sweep()
            second = await user.wait_for(lambda m: m.get("text", "").startswith("【C2 · "))
            await user.wait_for(lambda m: m.get("text", "").startswith("【C1 · "))
            await user.say(GOOD)  # two are waiting: which one?
            await user.wait_for(lambda m: "Reply to that customer's message" in m.get("text", ""))
            await user.say(GOOD, quoting=second)
            await user.wait_for(  # C2 answers, labelled
                lambda m: (
                    m.get("text", "").startswith("【C2 · ") and m.get("text") != second["text"]
                )
            )
        replied = [c for c in store.drill_customers(1) if c.first_reply_at is not None]
        assert [c.label for c in replied] == ["C2"]

    asyncio.run(run())
    store.close()
