"""One process for a team: the web app and the Telegram bot's webhook on one port."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import aiohttp
from botapi import FakeBotAPI
from tgharness import TRAINER, bot_env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_web_with_telegram_answers_both_channels_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        async with FakeBotAPI() as api:
            port = _free_port()
            env = bot_env(
                api,
                tmp_path / "team.db",
                TELEGRAM_WEBHOOK_URL=f"http://127.0.0.1:{port}",
                TELEGRAM_WEBHOOK_SECRET="team-secret",
            )
            command = [*TRAINER, "serve", "web", "--port", str(port), "--telegram"]
            proc = await asyncio.create_subprocess_exec(
                *command,
                env=env,
                cwd=str(tmp_path),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                assert proc.stdout is not None
                first = await asyncio.wait_for(proc.stdout.readline(), 120)
                assert f"127.0.0.1:{port}" in first.decode(), first
                assert api.webhook_url == f"http://127.0.0.1:{port}/telegram/webhook"
                update = api.updates[api.message(70, "/start")]
                assert await api.post_to_webhook(update, secret="wrong") == 401
                assert await api.post_to_webhook(update) == 200  # Telegram, on that port
                await api.wait_texts(70, 1, timeout=120)
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"http://127.0.0.1:{port}/join/anything") as page,
                ):
                    assert page.status == 200 and "<form" in await page.text()
                proc.send_signal(signal.SIGTERM)
                _, stderr = await asyncio.wait_for(proc.communicate(), 120)
                assert proc.returncode == 0, stderr.decode()[-2000:]
                assert api.token not in stderr.decode()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()

    asyncio.run(run())


def test_serve_web_with_telegram_needs_a_webhook_and_says_so(tmp_path: Path) -> None:
    async def run() -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELEGRAM_")}
        env.update(TELEGRAM_BOT_TOKEN="1:abc", TRAINER_DB=str(tmp_path / "team.db"))
        proc = await asyncio.create_subprocess_exec(
            *TRAINER, "serve", "web", "--telegram", env=env, cwd=str(tmp_path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 1 and "TELEGRAM_WEBHOOK_URL" in err.decode()
        assert "Traceback" not in (out + err).decode()

    asyncio.run(run())
