"""The fake Telegram Bot API server, exercised with the real aiogram client over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiogram import Bot, Dispatcher, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import (
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
)
from aiohttp import ClientSession, web

from tests.botapi import FakeBotAPI

Scenario = Callable[[FakeBotAPI, Bot], Awaitable[None]]


def make_bot(fake: FakeBotAPI, token: str | None = None) -> Bot:
    api = TelegramAPIServer.from_base(fake.base_url)
    return Bot(token or fake.token, session=AiohttpSession(api=api))


def run(scenario: Scenario, **fake_kw: Any) -> FakeBotAPI:
    """Start a fake server and a bot, run ``scenario``, close everything."""

    async def main() -> FakeBotAPI:
        async with FakeBotAPI(**fake_kw) as fake:
            bot = make_bot(fake)
            try:
                await scenario(fake, bot)
            finally:
                await bot.session.close()
        return fake

    return asyncio.run(main())


def keyboard(*data: str) -> InlineKeyboardMarkup:
    buttons = [InlineKeyboardButton(text=d[:10] or "x", callback_data=d) for d in data]
    return InlineKeyboardMarkup(inline_keyboard=[buttons])


def dump(markup: InlineKeyboardMarkup | None) -> Any:
    """Models parsed from a response carry the bot in a private field; compare the data."""
    return markup.model_dump(exclude_none=True) if markup is not None else None


def test_get_me() -> None:
    async def scenario(fake: FakeBotAPI, bot: Bot) -> None:
        me = await bot.get_me()
        assert me.id == 123456 and me.is_bot and me.username == "trainer_test_bot"
        assert fake.base_url.startswith("http://127.0.0.1:")
        assert [c.method for c in fake.calls] == ["getMe"] and fake.calls[0].status == 200

    run(scenario)


def test_a_sent_message_can_be_read_back() -> None:
    async def scenario(fake: FakeBotAPI, bot: Bot) -> None:
        first = await bot.send_message(42, "Hello", reply_markup=keyboard("opt:1", "opt:2"))
        second = await bot.send_message(42, "<b>Bold</b> &amp; plain", parse_mode="HTML")
        await bot.send_message(7, "other chat")
        assert (first.message_id, second.message_id) == (1, 2)
        assert first.chat.id == 42 and first.from_user is not None and first.from_user.is_bot
        assert dump(first.reply_markup) == dump(keyboard("opt:1", "opt:2"))
        assert second.text == "Bold & plain" and second.html_text == "<b>Bold</b> &amp; plain"
        assert fake.texts(42) == ["Hello", "Bold & plain"]
        assert [c.message_id for c in fake.sent(42)] == [1, 2]
        call = fake.sent(42)[0]
        assert call.params["chat_id"] == 42
        assert call.params["reply_markup"]["inline_keyboard"][0][1]["callback_data"] == "opt:2"
        assert await fake.wait_texts(7, 1, timeout=1) == ["other chat"]

        edited = await bot.edit_message_text("Hello again", chat_id=42, message_id=1)
        assert isinstance(edited, Message) and edited.edit_date is not None
        assert fake.texts(42) == ["Hello", "Bold & plain", "Hello again"]
        with pytest.raises(TelegramBadRequest, match="message is not modified"):
            await bot.edit_message_text("Hello again", chat_id=42, message_id=1)
        with pytest.raises(TelegramBadRequest, match="message to edit not found"):
            await bot.edit_message_text("x", chat_id=42, message_id=99)
        assert await bot.send_chat_action(42, "typing") is True

    run(scenario)


def test_get_updates_confirms_by_offset_and_can_redeliver() -> None:
    async def scenario(fake: FakeBotAPI, bot: Bot) -> None:
        first = fake.message(42, "/start now", lang="zh", username="wang")
        second = fake.message(42, "hello")
        updates = await bot.get_updates(timeout=0)
        assert [u.update_id for u in updates] == [first, second]
        start = updates[0].message
        assert start is not None and start.text == "/start now" and start.chat.id == 42
        assert start.from_user is not None and start.from_user.language_code == "zh"
        assert start.entities is not None and start.entities[0].type == "bot_command"
        assert start.entities[0].length == len("/start")
        assert len(await bot.get_updates(timeout=0)) == 2  # not confirmed yet

        assert await bot.get_updates(offset=second + 1, timeout=0) == []
        fake.redeliver(first)
        again = await bot.get_updates(offset=second + 1, timeout=0)
        assert [u.update_id for u in again] == [first]
        assert await bot.get_updates(offset=first + 1, timeout=0) == []

        # Long polling waits for the next update.
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, fake.message, 42, "late")
        began = loop.time()
        late = await bot.get_updates(offset=first + 1, timeout=5)
        assert [u.message.text for u in late if u.message] == ["late"]
        assert loop.time() - began < 2

    run(scenario)


def test_callback_updates_carry_the_message() -> None:
    async def scenario(fake: FakeBotAPI, bot: Bot) -> None:
        with pytest.raises(ValueError):
            fake.callback(42, "opt:1")  # nothing was sent to the chat yet
        sent = await bot.send_message(42, "Pick one", reply_markup=keyboard("opt:1"))
        fake.callback(42, "opt:1")
        fake.callback(42, "opt:2", message_id=77)
        updates = await bot.get_updates(timeout=0)
        queries = [u.callback_query for u in updates]
        assert all(isinstance(q, CallbackQuery) for q in queries)
        first, second = queries
        assert first is not None and second is not None
        assert first.data == "opt:1" and first.from_user.id == 42
        assert first.message is not None and first.message.message_id == sent.message_id
        assert first.message.chat.id == 42
        assert dump(first.message.reply_markup) == dump(keyboard("opt:1"))
        assert second.message is not None and second.message.message_id == 77
        assert await first.answer("ok") is True

    run(scenario)


def test_injected_failures_map_to_aiogram_exceptions() -> None:
    async def scenario(fake: FakeBotAPI, bot: Bot) -> None:
        fake.fail_next("sendMessage", retry_after=3)
        with pytest.raises(TelegramRetryAfter) as retry:
            await bot.send_message(1, "a")
        assert retry.value.retry_after == 3
        fake.fail_next("sendmessage", status=502, count=2)
        for _ in range(2):
            with pytest.raises(TelegramServerError):
                await bot.send_message(1, "b")
        fake.drop_connection_next("sendMessage")
        with pytest.raises(TelegramNetworkError):
            await bot.send_message(1, "c")
        await bot.send_message(1, "d")
        assert [c.status for c in fake.calls] == [429, 502, 502, 0, 200]
        assert fake.texts(1) == ["d"] and fake.limit_violations == 0

    run(scenario)


def test_unknown_methods_and_wrong_tokens_are_refused() -> None:
    async def scenario(fake: FakeBotAPI, bot: Bot) -> None:
        async with ClientSession() as http:
            url = f"{fake.base_url}/bot{fake.token}/sendUnicorn"
            async with http.post(url, data={"chat_id": "1"}) as resp:
                assert resp.status == 404
                assert await resp.json() == {
                    "ok": False,
                    "error_code": 404,
                    "description": "Not Found: method not found",
                }
            # JSON bodies and lower-case method names are accepted too.
            url = f"{fake.base_url}/bot{fake.token}/sendmessage"
            async with http.post(url, json={"chat_id": 5, "text": "json"}) as resp:
                assert resp.status == 200
        assert fake.sent(5)[0].method == "sendMessage" and fake.texts(5) == ["json"]
        wrong = make_bot(fake, token="999:WRONG")
        try:
            with pytest.raises(TelegramUnauthorizedError):
                await wrong.get_me()
        finally:
            await wrong.session.close()
        assert fake.calls[-1].status == 401

    run(scenario)


def test_rate_limits_answer_429() -> None:
    async def scenario(fake: FakeBotAPI, bot: Bot) -> None:
        results = await asyncio.gather(
            *(bot.send_message(1, f"m{i}") for i in range(10)), return_exceptions=True
        )
        refused = [r for r in results if isinstance(r, TelegramRetryAfter)]
        assert refused and all(r.retry_after == 1 for r in refused)
        assert fake.limit_violations == len(refused) == 10 - len(fake.sent(1))
        assert await bot.send_chat_action(1, "typing") is True  # not limited
        await asyncio.sleep(1 / 20)
        await bot.send_message(1, "after a pause")

    run(scenario, chat_rate=20)


def test_global_rate_limit_answers_429() -> None:
    async def scenario(fake: FakeBotAPI, bot: Bot) -> None:
        results = await asyncio.gather(
            *(bot.send_message(100 + i, "x") for i in range(15)), return_exceptions=True
        )
        refused = sum(isinstance(r, TelegramRetryAfter) for r in results)
        assert refused == fake.limit_violations == 4  # 10/s with a tolerance of one

    run(scenario, global_rate=10)


def test_telegram_validation() -> None:
    async def scenario(fake: FakeBotAPI, bot: Bot) -> None:
        with pytest.raises(TelegramBadRequest, match="message is too long"):
            await bot.send_message(1, "x" * 4097)
        await bot.send_message(1, "я" * 4096)
        with pytest.raises(TelegramBadRequest, match="message text is empty"):
            await bot.send_message(1, "")
        with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
            await bot.send_message(1, "pick", reply_markup=keyboard("d" * 65))
        with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
            await bot.send_message(1, "pick", reply_markup=keyboard("好" * 22))  # 66 bytes
        await bot.send_message(1, "pick", reply_markup=keyboard("d" * 64))
        with pytest.raises(TelegramBadRequest, match="caption is too long"):
            await bot.send_photo(1, BufferedInputFile(b"img", "a.png"), caption="c" * 1025)
        with pytest.raises(TelegramBadRequest, match="can't parse entities"):
            await bot.send_message(1, "<blink>hi</blink>", parse_mode="HTML")
        assert [c.status for c in fake.calls] == [400, 200, 400, 400, 400, 200, 400, 400]

    run(scenario)


def test_uploaded_files_are_recorded() -> None:
    async def scenario(fake: FakeBotAPI, bot: Bot) -> None:
        png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
        photo = await bot.send_photo(3, BufferedInputFile(png, "chart.png"), caption="Chart")
        doc = await bot.send_document(3, BufferedInputFile(b"a,b\n1,2\n", "report.csv"))
        assert photo.photo is not None and photo.caption == "Chart"
        assert doc.document is not None and doc.document.file_name == "report.csv"
        assert doc.document.file_size == 8
        photo_call, doc_call = fake.sent(3)
        assert photo_call.files == {"photo": png} and doc_call.files["document"] == b"a,b\n1,2\n"
        assert doc_call.filenames == {"document": "report.csv"}
        assert fake.texts(3) == ["Chart"]
        # Awkward parts: a non-ASCII file name with quotes, CRLF and dashes inside the data,
        # a caption with quotes and backslashes, a JSON field next to the file.
        tricky = b"a\r\n--\r\n\r\nb\r\n"
        name = '团队 "A\\B" 成绩.csv'
        caption = '成绩 "表" \\ done'
        keyboard = InlineKeyboardMarkup(
            inline_keyboard=[[InlineKeyboardButton(text="好", callback_data="x")]]
        )
        await bot.send_document(
            3, BufferedInputFile(tricky, name), caption=caption, reply_markup=keyboard
        )
        call = fake.sent(3)[-1]
        assert call.content_type == "multipart/form-data"
        assert call.files == {"document": tricky} and call.filenames == {"document": name}
        assert call.params["caption"] == caption
        assert call.params["reply_markup"] == keyboard.model_dump(exclude_none=True)
        # Files can be downloaded back through the file URL pattern.
        file = await bot.get_file(photo.photo[-1].file_id)
        assert file.file_path is not None
        data = await bot.download_file(file.file_path)
        assert data is not None and data.read() == png

    run(scenario)


def test_webhook_posts_with_the_secret_header() -> None:
    async def scenario(fake: FakeBotAPI, bot: Bot) -> None:
        received: list[tuple[str | None, dict[str, Any]]] = []

        async def receive(request: web.Request) -> web.Response:
            secret = request.headers.get("X-Telegram-Bot-Api-Secret-Token")
            if secret != "s3cret":
                return web.Response(status=401)
            received.append((secret, await request.json()))
            # Answer with a method call, as webhook bots may.
            return web.json_response({"method": "sendMessage", "chat_id": 42, "text": "pong"})

        app = web.Application()
        app.router.add_post("/hook", receive)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            port = runner.addresses[0][1]
            url = f"http://127.0.0.1:{port}/hook"
            assert await bot.set_webhook(url, secret_token="s3cret") is True
            assert (fake.webhook_url, fake.webhook_secret) == (url, "s3cret")
            info = await bot.get_webhook_info()
            assert info.url == url
            with pytest.raises(TelegramConflictError):
                await bot.get_updates(timeout=0)

            update_id = fake.message(42, "ping")
            assert await fake.post_to_webhook(fake.updates[update_id]) == 200
            assert received[0][1]["message"]["text"] == "ping"
            assert fake.texts(42) == ["pong"]
            assert await fake.post_to_webhook(fake.updates[update_id], secret=None) == 401
            assert await fake.post_to_webhook({"message": {}}, secret="wrong") == 401
            assert len(received) == 1

            assert await bot.delete_webhook() is True
            assert fake.webhook_url is None
            assert await bot.get_updates(timeout=0) == []
        finally:
            await runner.cleanup()

    run(scenario)


def test_wait_for_times_out_with_a_summary() -> None:
    async def scenario(fake: FakeBotAPI, bot: Bot) -> None:
        await bot.send_message(9, "only one")
        with pytest.raises(AssertionError, match=r"(?s)2 text\(s\) to chat 9.*only one"):
            await fake.wait_texts(9, 2, timeout=0.2)
        task = asyncio.create_task(bot.send_message(9, "second"))
        calls = await fake.wait_for(lambda c: c.chat_id == 9, count=2, timeout=2)
        assert [c.text for c in calls] == ["only one", "second"]
        await task

    run(scenario)


def test_dispatcher_polling_end_to_end() -> None:
    router = Router()

    @router.message()
    async def echo(message: Message) -> None:
        await message.answer(f"echo: {message.text}", reply_markup=keyboard("again"))

    @router.callback_query()
    async def pressed(query: CallbackQuery) -> None:
        await query.answer()
        if isinstance(query.message, Message):
            await query.message.edit_text(f"pressed {query.data}")

    async def scenario(fake: FakeBotAPI, bot: Bot) -> None:
        dp = Dispatcher()
        dp.include_router(router)
        polling = asyncio.create_task(
            dp.start_polling(bot, polling_timeout=1, handle_signals=False, close_bot_session=False)
        )
        try:
            fake.message(5, "hi")
            assert await fake.wait_texts(5, 1) == ["echo: hi"]
            fake.callback(5, "again")
            assert await fake.wait_texts(5, 2) == ["echo: hi", "pressed again"]
            await fake.wait_for(lambda c: c.method == "answerCallbackQuery")
        finally:
            await dp.stop_polling()
            await polling
        # aiogram asks only for the update types it has handlers for.
        assert fake.allowed_updates == ["callback_query", "message"]

    run(scenario)
