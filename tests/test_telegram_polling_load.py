"""Long polling under load: the real `trainer serve telegram` answers every trainee's update.

Twenty trainees practise at once against the fake Bot API, each starting a coach session
and sending three replies, each waiting for the answer to its last message as a person
would. The bot long-polls (getUpdates, 25 s timeout, as in production), alone or with two
worker processes behind its front. Once, an update of such a run was seen to wait ~40 s,
answered only when the bot was stopped. Deadlines here only give up; nothing is timed.
"""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import pytest
from botapi import FakeBotAPI
from test_telegram import KETTLE_EN, KETTLE_ZH
from tgharness import serve_process

from bot.storage import Store

TRAINEES = 20
BOT_ID = 123456  # the fake server's bot
OPENING = {
    "zh": "您好，我是客服小李，请问有什么可以帮您？",
    "en": "Hello, this is Li from support. How can I help?",
}
REPLIES = {"zh": [OPENING["zh"], *KETTLE_ZH], "en": [OPENING["en"], *KETTLE_EN]}
GRADES = {"zh": "第 {n} 条回复的评分", "en": "Grades for reply #{n}"}
GIVE_UP_S = 120.0


async def _answered(api: FakeBotAPI, chat: int, words: str) -> None:
    """Wait until the bot sent ``chat`` a message containing ``words``."""
    await api.wait_for(lambda c: c.chat_id == chat and words in (c.text or ""), timeout=GIVE_UP_S)


async def _trainee(api: FakeBotAPI, chat: int, lang: str, sent: list[int]) -> None:
    sent.append(api.message(chat, "/start", lang=lang))
    await api.wait_texts(chat, 1, timeout=GIVE_UP_S)
    sent.append(api.callback(chat, "p:m:damaged-kettle:normal:coach:0", lang=lang))
    await _answered(api, chat, "📋")  # the briefing: the session started
    for n, reply in enumerate(REPLIES[lang], 1):
        sent.append(api.message(chat, reply, lang=lang))
        await _answered(api, chat, GRADES[lang].format(n=n))


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2], ids=["one process", "two workers"])
def test_every_update_of_twenty_trainees_at_once_is_answered_when_polling(
    tmp_path: Path, workers: int
) -> None:
    async def run() -> None:
        async with FakeBotAPI() as api:
            args = ("--workers", str(workers)) if workers else ()
            proc = await serve_process(api, tmp_path / "bot.db", *args)
            sent: list[int] = []
            try:
                await asyncio.gather(
                    *(
                        _trainee(api, 1000 + i, "zh" if i % 2 else "en", sent)
                        for i in range(TRAINEES)
                    )
                )
            finally:
                proc.send_signal(signal.SIGTERM)
                _, stderr = await asyncio.wait_for(proc.communicate(), GIVE_UP_S)
            log = stderr.decode()
            assert proc.returncode == 0, log[-3000:]
            assert len(sent) == TRAINEES * (2 + len(REPLIES["en"]))
            handled = {int(n) for n in re.findall(r"Update id=(\d+) is handled", log)}
            assert set(sent) <= handled, sorted(set(sent) - handled)
            assert api.pending_updates == 0  # every update was fetched and confirmed

        store = Store.open(tmp_path / "bot.db")
        try:
            assert store.inbox_backlog(BOT_ID) == 0
            assert store.inbox_failures() == []
        finally:
            store.close()

    asyncio.run(run())
