"""The bot's JSON session sends what aiogram's form session sends, over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ChatAction
from aiogram.exceptions import TelegramBadRequest, TelegramNetworkError, TelegramRetryAfter
from aiogram.types import (
    BufferedInputFile,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
)

from bot.telegram.session import JsonSession
from tests.botapi import Call, FakeBotAPI

KEYBOARD = InlineKeyboardMarkup(
    inline_keyboard=[
        [InlineKeyboardButton(text="退款 ✅", callback_data="p:s:退款:0")],
        [InlineKeyboardButton(text="Docs", url="https://example.org/a?b=c&d=e")],
    ]
)
PNG = b"\x89PNG\r\n\x1a\n not really a picture \x00\xff"


async def every_kind_of_call(bot: Bot) -> None:
    """The methods the trainer bot uses, with the kinds of fields it fills in."""
    first = await bot.send_message(
        42,
        "第一行 <b>bold</b>\nsecond & line",
        reply_markup=KEYBOARD,
        link_preview_options=LinkPreviewOptions(is_disabled=True),
        disable_notification=False,
    )
    await bot.send_message(42, "plain", parse_mode=None)
    await bot.edit_message_text(
        "edited 已修改", chat_id=42, message_id=first.message_id, reply_markup=None
    )
    await bot.send_chat_action(42, ChatAction.TYPING)
    await bot.send_photo(
        42, BufferedInputFile(PNG, "chart.png"), caption="图 chart", reply_markup=KEYBOARD
    )
    await bot.send_document(42, BufferedInputFile(b"a,b\n1,2\n", "team.csv"))
    await bot.get_me()


async def with_bot(
    session_class: type[AiohttpSession], act: Callable[[Bot], Awaitable[Any]]
) -> list[Call]:
    """Run ``act`` with a bot on ``session_class`` against a fresh fake; the calls it made."""
    async with FakeBotAPI() as fake:
        session = session_class(api=TelegramAPIServer.from_base(fake.base_url))
        bot = Bot(fake.token, session=session, default=DefaultBotProperties(parse_mode="HTML"))
        try:
            await act(bot)
        finally:
            await bot.session.close()
        return list(fake.calls)


def test_json_session_sends_the_same_fields_as_aiogram_form_session() -> None:
    form = asyncio.run(with_bot(AiohttpSession, every_kind_of_call))
    json_ = asyncio.run(with_bot(JsonSession, every_kind_of_call))
    assert [c.method for c in json_] == [c.method for c in form]
    assert all(c.ok for c in form + json_), [c.description for c in form + json_]
    for sent, expected in zip(json_, form, strict=True):
        assert sent.params.keys() == expected.params.keys(), sent.method
        for key, value in expected.params.items():
            if isinstance(value, str) and value.startswith("attach://"):
                assert sent.params[key].startswith("attach://")  # a random part name
            else:
                assert sent.params[key] == value, (sent.method, key)
        assert sent.files == expected.files
        assert sent.filenames == expected.filenames
    first, plain = (c for c in json_ if c.method == "sendMessage")
    assert first.params["parse_mode"] == "HTML"  # the bot's default
    assert "parse_mode" not in plain.params  # None: left out
    assert first.params["reply_markup"] == KEYBOARD.model_dump(exclude_none=True)
    uploads = {"sendPhoto", "sendDocument"}
    for call in json_:
        want = "multipart/form-data" if call.method in uploads else "application/json"
        assert call.content_type == want, call.method
    assert {c.content_type for c in form if c.method not in uploads} == {
        "application/x-www-form-urlencoded"
    }


def test_json_session_raises_aiogram_errors() -> None:
    async def act(fake: FakeBotAPI, bot: Bot) -> None:
        fake.fail_next("sendMessage", status=429, retry_after=7)
        with pytest.raises(TelegramRetryAfter) as retry:
            await bot.send_message(42, "hello")
        assert retry.value.retry_after == 7
        fake.fail_next("sendMessage", status=400, description="Bad Request: chat not found")
        with pytest.raises(TelegramBadRequest, match="chat not found"):
            await bot.send_message(42, "hello")
        fake.drop_connection_next("sendMessage")
        with pytest.raises(TelegramNetworkError):
            await bot.send_message(42, "hello")
        sent = await bot.send_message(42, "hello again")
        assert sent.text == "hello again"
        assert fake.texts(42) == ["hello again"]

    async def main() -> None:
        async with FakeBotAPI() as fake:
            session = JsonSession(api=TelegramAPIServer.from_base(fake.base_url))
            bot = Bot(fake.token, session=session)
            try:
                await act(fake, bot)
            finally:
                await bot.session.close()

    asyncio.run(main())
