"""A fake Telegram Bot API server for end-to-end tests and benchmarks.

It listens on 127.0.0.1 (the OS picks the port) and speaks real HTTP, so the real aiogram
client is exercised end to end::

    async with FakeBotAPI() as fake:
        bot = Bot(fake.token, session=AiohttpSession(api=TelegramAPIServer.from_base(fake.base_url)))
        fake.message(42, "/start")
        ...
        await fake.wait_texts(42, 1)
        await bot.session.close()

What aiogram sends (aiogram 3.x ``AiohttpSession``; the bot's ``JsonSession`` sends a JSON body
instead when nothing is uploaded, which is decoded the same way): every method is a POST to
``{base}/bot{token}/{method}``. Fields are form data: plain ``application/x-www-form-urlencoded``
unless a file is attached, then ``multipart/form-data`` with the file in a part named by a random
key and the field itself set to ``attach://<key>``. Scalars are strings (``"42"``, ``"true"``),
complex fields (``reply_markup``, ``entities``, ``allowed_updates``, ``commands``...) are JSON
strings, and fields that are ``None`` or the empty string are left out altogether (so an empty
``text`` arrives as a missing ``text``). The server decodes all of this into ``Call.params``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import json
import mimetypes
import re
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

__all__ = ["SEND_METHODS", "Call", "FakeBotAPI"]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64  # bytes, UTF-8

SEND_METHODS = ("sendMessage", "sendPhoto", "sendDocument", "editMessageText")
"""Methods that deliver visible text to a chat; the default filter of ``sent``/``texts``."""

LIMITED_METHODS = frozenset(SEND_METHODS)
"""Methods subject to ``chat_rate`` / ``global_rate``."""

GLOBAL_WINDOW_S = 0.9
"""``global_rate`` allows ``rate + 1`` sends in any window this long, not a whole second.

Sends are timed when they arrive here, after the client's and this event loop's delays:
on a loaded machine a throttled bot's sends, one interval apart when they left, arrived up
to ~60 ms closer together (22 within 0.996 s at 20/s, once in a few runs with CPU hogs).
A bot that ignores the limit, or two processes each keeping it alone, still exceed it.
"""

_KNOWN_METHODS = _words(
    "getMe getUpdates setWebhook deleteWebhook getWebhookInfo sendMessage sendPhoto "
    "sendDocument sendChatAction editMessageText editMessageReplyMarkup deleteMessage "
    "answerCallbackQuery setMyCommands getMyCommands deleteMyCommands setMyDescription "
    "setMyShortDescription setChatMenuButton getFile close logOut"
)
_CANONICAL = {name.lower(): name for name in _KNOWN_METHODS}

# Form values are strings; these keys are decoded to int (when they parse as one).
_INT_FIELDS = _words(
    "chat_id message_id offset limit timeout user_id reply_to_message_id message_thread_id "
    "cache_time max_connections from_chat_id duration width height"
)
# These keys always stay strings, even when they look like JSON, numbers or booleans.
_STRING_FIELDS = _words(
    "text caption data callback_query_id inline_message_id url secret_token ip_address "
    "description short_description name parse_mode action language_code file_id "
    "business_connection_id message_effect_id"
)

_STATUS_TEXT = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_BUTTON_ACTIONS = _words(
    "url callback_data web_app login_url switch_inline_query switch_inline_query_current_chat "
    "switch_inline_query_chosen_chat copy_text callback_game pay"
)
_COMMAND_RE = re.compile(r"^[A-Za-z0-9_]{1,32}$")


@dataclass
class Call:
    """One request received by the fake server (successful or not)."""

    method: str
    """Canonical method name (``sendMessage`` even if the URL said ``sendmessage``)."""
    params: dict[str, Any]
    """Decoded parameters: ints for ids, JSON fields decoded, file fields as ``attach://key``."""
    status: int
    """HTTP status answered; 0 while in progress or when the connection was dropped."""
    at: float
    """``time.monotonic()`` when the request arrived."""
    files: dict[str, bytes] = field(default_factory=dict)
    """Uploaded files by parameter name (``photo``/``document``), or by part name if unreferenced."""
    chat_id: int | None = None
    message_id: int | None = None
    """Message id of the sent or edited message (successful sends only)."""
    result: Any = None
    """The ``result`` of a successful answer (a Message dict for sends)."""
    description: str | None = None
    """The error description of a failed answer."""
    filenames: dict[str, str] = field(default_factory=dict)
    """Upload file names, keyed like ``files``."""
    content_type: str = ""
    """The request body's media type (``application/json``, ``multipart/form-data``...)."""

    @property
    def ok(self) -> bool:
        """Whether the call was answered with HTTP 200."""
        return self.status == 200

    @property
    def text(self) -> str | None:
        """Text or caption of the resulting message (as Telegram parsed it), if any."""
        if isinstance(self.result, dict):
            return self.result.get("text", self.result.get("caption"))
        return None

    def summary(self) -> str:
        """One line for assertion messages."""
        text = self.text if self.text is not None else self.params.get("text")
        shown = f" {text[:60]!r}" if isinstance(text, str) else ""
        error = f" ({self.description})" if self.description else ""
        return f"{self.method} -> {self.status} chat={self.chat_id}{shown}{error}"


class _ApiError(Exception):
    def __init__(self, status: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def _bad(description: str) -> _ApiError:
    return _ApiError(400, f"Bad Request: {description}")


def _retry(after: int) -> _ApiError:
    return _ApiError(429, f"Too Many Requests: retry after {after}", {"retry_after": after})


@dataclass
class _Fault:
    kind: str  # "status" or "drop"
    status: int = 0
    retry_after: int = 1
    description: str | None = None

    def error(self) -> _ApiError:
        if self.status == 429:
            return _ApiError(
                429,
                self.description or f"Too Many Requests: retry after {self.retry_after}",
                {"retry_after": self.retry_after},
            )
        return _ApiError(self.status, self.description or _STATUS_TEXT.get(self.status, "Error"))


@dataclass
class _Pending:
    update_id: int
    update: dict[str, Any]
    forced: bool = False  # redelivered: survives confirmation until delivered once more

    def __lt__(self, other: _Pending) -> bool:
        return self.update_id < other.update_id


def _u16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class _HtmlEntities(HTMLParser):
    """Telegram's HTML parse mode: strips the supported tags into entities."""

    _SIMPLE: ClassVar[dict[str, str]] = {
        "b": "bold",
        "strong": "bold",
        "i": "italic",
        "em": "italic",
        "u": "underline",
        "ins": "underline",
        "s": "strikethrough",
        "strike": "strikethrough",
        "del": "strikethrough",
        "tg-spoiler": "spoiler",
        "code": "code",
        "pre": "pre",
    }

    def __init__(self, raw: str) -> None:
        super().__init__(convert_charrefs=True)
        self.raw = raw
        self.out: list[str] = []
        self.pos = 0  # UTF-16 offset in the output
        self.stack: list[tuple[str, dict[str, Any]]] = []
        self.entities: list[dict[str, Any]] = []

    def _offset(self) -> int:
        line, col = self.getpos()
        lines = self.raw.split("\n")
        chars = sum(len(x) + 1 for x in lines[: line - 1]) + col
        return len(self.raw[:chars].encode())

    def _fail(self, what: str) -> _ApiError:
        return _bad(f"can't parse entities: {what} at byte offset {self._offset()}")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        entity: dict[str, Any]
        if tag in self._SIMPLE:
            entity = {"type": self._SIMPLE[tag]}
        elif tag == "span" and attr.get("class") == "tg-spoiler":
            entity = {"type": "spoiler"}
        elif tag == "a":
            entity = {"type": "text_link", "url": attr.get("href") or ""}
        elif tag == "blockquote":
            entity = {"type": "expandable_blockquote" if "expandable" in attr else "blockquote"}
        elif tag == "tg-emoji":
            entity = {"type": "custom_emoji", "custom_emoji_id": attr.get("emoji-id") or ""}
        else:
            raise self._fail(f'Unsupported start tag "{tag}"')
        if tag == "code" and self.stack and self.stack[-1][0] == "pre":
            language = (attr.get("class") or "").removeprefix("language-")
            if language:
                self.stack[-1][1]["language"] = language
            entity["inside_pre"] = True
        entity["offset"] = self.pos
        self.stack.append((tag, entity))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1][0] != tag:
            raise self._fail(f'Unmatched end tag "{tag}"')
        _, entity = self.stack.pop()
        entity["length"] = self.pos - entity["offset"]
        if entity.pop("inside_pre", False):
            return  # <pre><code class="language-x"> is one pre entity
        if entity["length"] > 0:
            self.entities.append(entity)

    def handle_data(self, data: str) -> None:
        self.out.append(data)
        self.pos += _u16(data)

    def parse(self) -> tuple[str, list[dict[str, Any]]]:
        self.feed(self.raw)
        self.close()
        if self.stack:
            tag = self.stack[-1][0]
            raise _bad(
                f"can't parse entities: Can't find end tag corresponding to start tag \"{tag}\""
            )
        entities = sorted(self.entities, key=lambda e: (e["offset"], -e["length"]))
        return "".join(self.out), entities


def _trim(text: str, entities: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Telegram strips leading and trailing whitespace; entity offsets follow."""
    stripped = text.strip()
    if stripped == text:
        return text, entities
    lead = _u16(text[: len(text) - len(text.lstrip())])
    end = _u16(stripped)
    out = []
    for entity in entities:
        start = max(entity["offset"] - lead, 0)
        stop = min(entity["offset"] + entity["length"] - lead, end)
        if stop > start:
            out.append(entity | {"offset": start, "length": stop - start})
    return stripped, out


_PARAM = re.compile(r';\s*([\w*.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def _media_type(header: str) -> str:
    """``multipart/form-data`` of ``multipart/form-data; boundary=x``, lower-cased."""
    return header.partition(";")[0].strip().lower()


def _header_params(header: str) -> dict[str, str]:
    """The parameters of a header value (``name="photo"; filename="a.png"``), unquoted."""
    params = {}
    for key, value in _PARAM.findall(header):
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        elif key.endswith("*") and "''" in value:  # RFC 5987: charset''percent-encoded
            charset, _, encoded = value.partition("''")
            key, value = key[:-1], urllib.parse.unquote(encoded, charset or "utf-8")
        params[key.lower()] = value
    return params


def _multipart(body: bytes, content_type: str) -> Iterable[tuple[dict[str, str], bytes]]:
    """The parts of a ``multipart/form-data`` body: (lower-cased headers, data)."""
    boundary = _header_params(content_type).get("boundary")
    if not boundary:
        raise ValueError("multipart body without a boundary")
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            return  # the closing delimiter
        head, _, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("utf-8").split("\r\n"):
            key, sep, value = line.partition(":")
            if sep:
                headers[key.strip().lower()] = value.strip()
        yield headers, data.removesuffix(b"\r\n")


def _coerce(key: str, value: Any) -> Any:
    if not isinstance(value, str) or key in _STRING_FIELDS:
        return value
    if key in _INT_FIELDS:
        try:
            return int(value)
        except ValueError:
            return value
    if value in ("true", "false"):
        return value == "true"
    if value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _decode(
    raw: Mapping[str, Any], files: dict[str, bytes], names: dict[str, str]
) -> dict[str, Any]:
    """Coerce form values; re-key files by the parameter that references them (attach://)."""
    params = {k: _coerce(k, v) for k, v in raw.items()}
    for key, value in params.items():
        if isinstance(value, str) and value.startswith("attach://"):
            part = value.removeprefix("attach://")
            if part in files:
                files[key] = files.pop(part)
                names[key] = names.pop(part)
    return params


def _update_type(update: Mapping[str, Any]) -> str | None:
    return next((k for k in update if k != "update_id"), None)


class FakeBotAPI:
    """A fake Telegram Bot API server on 127.0.0.1; see the module docstring.

    ``chat_rate`` (sends per second to one chat) and ``global_rate`` (sends per second overall)
    turn on Telegram-like flood control for sendMessage/sendPhoto/sendDocument/editMessageText.
    """

    def __init__(
        self,
        token: str = "123456:TEST-TOKEN",
        *,
        username: str = "trainer_test_bot",
        chat_rate: float | None = None,
        global_rate: float | None = None,
    ) -> None:
        self.token = token
        self.username = username
        self.chat_rate = chat_rate
        self.global_rate = global_rate
        self.bot_user: dict[str, Any] = {
            "id": int(token.split(":", 1)[0]),
            "is_bot": True,
            "first_name": username.removesuffix("_bot").replace("_", " ").title() or "Bot",
            "username": username,
        }
        self.base_url = ""
        self.calls: list[Call] = []
        self.limit_violations = 0
        self.webhook_url: str | None = None
        self.webhook_secret: str | None = None
        self.allowed_updates: list[str] | None = None
        """The last ``allowed_updates`` given to getUpdates/setWebhook (Telegram remembers it)."""
        self.updates: dict[int, dict[str, Any]] = {}
        """Every update ever added, by update_id."""
        self.commands: dict[str, list[dict[str, Any]]] = {}
        """Commands set with setMyCommands, keyed by ``language_code`` ('' for the default)."""
        self.messages: dict[int, dict[int, dict[str, Any]]] = {}
        """Current state of every message per chat (user and bot messages), by message_id."""
        self.stored_files: dict[str, bytes] = {}
        """Uploaded (or ``add_file``-registered) contents by file_id."""

        self._ok: list[Call] = []  # successful calls in completion order
        self._ok_by_chat: dict[int, list[Call]] = {}
        self._pending: list[_Pending] = []
        self._next_update_id = 1
        self._callback_ids = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._message_ids: dict[int, int] = {}
        self._users: dict[int, dict[str, Any]] = {}
        self._file_meta: dict[str, dict[str, Any]] = {}
        self._faults: dict[str, deque[_Fault]] = {}
        self._last_send: dict[int, float] = {}
        self._recent_sends: deque[float] = deque()
        self._waiters: list[asyncio.Future[None]] = []
        self._poll_generation = 0
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start listening on 127.0.0.1 at a free port; sets ``base_url``."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        app.router.add_route("*", "/{tail:.*}", self._handle_other)
        self._closing = False
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"

    async def stop(self) -> None:
        """Answer pending long polls, close the server and the webhook client."""
        self._closing = True
        self._wake()
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeBotAPI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ inspection

    def sent(self, chat_id: int | None = None, methods: Iterable[str] = SEND_METHODS) -> list[Call]:
        """Successful calls of ``methods`` (to ``chat_id`` if given), in arrival order."""
        wanted = set(methods)
        pool = self.calls if chat_id is None else self._ok_by_chat.get(chat_id, [])
        return [c for c in pool if c.status == 200 and c.method in wanted]

    def texts(self, chat_id: int) -> list[str]:
        """Text or caption of each successful send/edit to ``chat_id`` (captionless media skipped)."""
        return [c.text for c in self.sent(chat_id) if c.text is not None]

    def last_message(self, chat_id: int) -> dict[str, Any] | None:
        """The newest message the bot sent to ``chat_id`` (current state, after edits)."""
        for message_id in sorted(self.messages.get(chat_id, {}), reverse=True):
            message = self.messages[chat_id][message_id]
            if message.get("from", {}).get("id") == self.bot_user["id"]:
                return message
        return None

    @property
    def pending_updates(self) -> int:
        """Number of queued, unconfirmed updates."""
        return len(self._pending)

    # ------------------------------------------------------------------ injecting updates

    def add_update(self, update: dict[str, Any]) -> int:
        """Queue an update for getUpdates; assigns a fresh ``update_id`` when missing."""
        update, update_id = self._with_id(update)
        self.updates[update_id] = update
        bisect.insort(self._pending, _Pending(update_id, update))
        self._wake()
        return update_id

    def _with_id(self, update: dict[str, Any]) -> tuple[dict[str, Any], int]:
        if "update_id" not in update:
            update = {"update_id": self._next_update_id, **update}
        update_id = int(update["update_id"])
        self._next_update_id = max(self._next_update_id, update_id + 1)
        return update, update_id

    def user(
        self,
        user_id: int,
        *,
        lang: str = "en",
        first_name: str = "Test",
        username: str | None = None,
    ) -> dict[str, Any]:
        """A Telegram User dict for a human user."""
        user: dict[str, Any] = {
            "id": user_id,
            "is_bot": False,
            "first_name": first_name,
            "language_code": lang,
        }
        if username:
            user["username"] = username
        self._users[user_id] = user
        return user

    def message(
        self,
        user_id: int,
        text: str,
        *,
        lang: str = "en",
        first_name: str = "Test",
        username: str | None = None,
        reply_to: int | None = None,
    ) -> int:
        """Queue a private-chat text message from ``user_id``; returns its update_id.

        ``reply_to`` is the id of a message in the chat that this one quotes (a reply).
        """
        sender = self.user(user_id, lang=lang, first_name=first_name, username=username)
        message: dict[str, Any] = {
            "message_id": self._next_message_id(user_id),
            "from": sender,
            "chat": self._chat(user_id),
            "date": int(time.time()),
            "text": text,
        }
        if reply_to is not None:
            message["reply_to_message"] = dict(self.messages[user_id][reply_to])
        if text.startswith("/"):
            command = text.split(maxsplit=1)[0] if text.strip() else text
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": _u16(command)}]
        self.messages.setdefault(user_id, {})[message["message_id"]] = message
        return self.add_update({"message": message})

    def callback(
        self, user_id: int, data: str, *, message_id: int | None = None, lang: str = "en"
    ) -> int:
        """Queue a callback_query from ``user_id`` pressing a button with ``data``.

        The query's message is the last message the bot sent to that chat, or ``message_id``.
        """
        chat_messages = self.messages.get(user_id, {})
        if message_id is None:
            message = self.last_message(user_id)
            if message is None:
                raise ValueError(f"the bot sent nothing to chat {user_id}; pass message_id")
        else:
            message = chat_messages.get(message_id) or {
                "message_id": message_id,
                "from": self.bot_user,
                "chat": self._chat(user_id),
                "date": int(time.time()),
            }
        known = self._users.get(user_id, {})
        sender = self.user(
            user_id,
            lang=lang,
            first_name=known.get("first_name", "Test"),
            username=known.get("username"),
        )
        query = {
            "id": f"{user_id}{next(self._callback_ids):08d}",
            "from": sender,
            "message": dict(message),
            "chat_instance": str(abs(user_id) * 7919 + self.bot_user["id"]),
            "data": data,
        }
        return self.add_update({"callback_query": query})

    def redeliver(self, update_id: int) -> None:
        """Deliver the same update (same update_id) again, even if it was confirmed."""
        bisect.insort(self._pending, _Pending(update_id, self.updates[update_id], forced=True))
        self._wake()

    def add_file(
        self, data: bytes, *, filename: str = "file.bin", kind: str = "documents"
    ) -> dict[str, Any]:
        """Register a file (as if a user uploaded it); returns a Document-like dict."""
        return self._store_file(data, filename, kind)

    # ------------------------------------------------------------------ failure injection

    def fail_next(
        self,
        method: str,
        *,
        status: int = 429,
        retry_after: int = 1,
        count: int = 1,
        description: str | None = None,
    ) -> None:
        """Make the next ``count`` calls of ``method`` fail with ``status``."""
        queue = self._faults.setdefault(method.lower(), deque())
        queue.extend(_Fault("status", status, retry_after, description) for _ in range(count))

    def drop_connection_next(self, method: str, count: int = 1) -> None:
        """Close the connection without answering the next ``count`` calls of ``method``."""
        queue = self._faults.setdefault(method.lower(), deque())
        queue.extend(_Fault("drop") for _ in range(count))

    # ------------------------------------------------------------------ waiting

    async def wait_for(
        self, predicate: Callable[[Call], bool], *, count: int = 1, timeout: float = 60.0
    ) -> list[Call]:
        """Wait until ``count`` successful calls match ``predicate``; returns all matches."""

        found: list[Call] = []
        scanned = 0

        def matches() -> list[Call] | None:
            nonlocal scanned
            new, scanned = self._ok[scanned:], len(self._ok)
            found.extend(c for c in new if predicate(c))
            if len(found) < count:
                return None
            order = {id(c): i for i, c in enumerate(self.calls)}
            return sorted(found, key=lambda c: order.get(id(c), -1))

        return await self._wait_until(matches, timeout, f"{count} matching call(s)")

    async def wait_texts(self, chat_id: int, n: int, timeout: float = 60.0) -> list[str]:
        """Wait until at least ``n`` texts were sent to ``chat_id``; returns them all."""

        def enough() -> list[str] | None:
            texts = self.texts(chat_id)
            return texts if len(texts) >= n else None

        return await self._wait_until(enough, timeout, f"{n} text(s) to chat {chat_id}")

    async def _wait_until(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (result := check()) is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = "\n".join("  " + c.summary() for c in self.calls[-20:]) or "  (none)"
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; last calls:\n{recent}"
                )
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(asyncio.shield(waiter), remaining)
            except TimeoutError:
                pass
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
        return result

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # ------------------------------------------------------------------ webhook

    async def post_to_webhook(self, update: dict[str, Any], *, secret: Any = ...) -> int:
        """POST ``update`` to the registered webhook; returns the HTTP status.

        ``secret`` defaults to the registered secret token; ``None`` sends no header. A method
        call in the webhook's answer (JSON or aiogram's multipart reply) is executed and
        recorded in ``calls`` like a normal request.
        """
        if not self.webhook_url:
            raise RuntimeError("no webhook is set")
        update, update_id = self._with_id(update)
        self.updates.setdefault(update_id, update)
        self._pending = [p for p in self._pending if p.update_id != update_id]
        token = self.webhook_secret if secret is ... else secret
        headers = {} if token is None else {"X-Telegram-Bot-Api-Secret-Token": token}
        if self._client is None:
            self._client = aiohttp.ClientSession()
        async with self._client.post(self.webhook_url, json=update, headers=headers) as resp:
            status = resp.status
            raw: dict[str, Any] = {}
            files: dict[str, bytes] = {}
            names: dict[str, str] = {}
            if resp.content_type == "application/json":
                body = await resp.json()
                if isinstance(body, dict):
                    raw = body
            elif resp.content_type.startswith("multipart/"):
                parts = _multipart(await resp.read(), resp.headers["Content-Type"])
                self._read_parts(parts, raw, files, names)
            params = _decode(raw, files, names)
        if 200 <= status < 300 and isinstance(params.get("method"), str):
            method = params.pop("method")
            call = self._new_call(method, params, files, names)
            await self._execute(call)
        return status

    # ------------------------------------------------------------------ HTTP handlers

    async def _handle_other(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
        )

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return web.Response(status=401, text="Unauthorized")
        path = request.match_info["path"]
        for file_id, meta in self._file_meta.items():
            if meta["file_path"] == path:
                return web.Response(body=self.stored_files[file_id])
        return web.Response(status=404, text="Not Found")

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        ctype = _media_type(request.headers.get("Content-Type", ""))
        params, files, names = await self._read_request(request, ctype)
        call = self._new_call(request.match_info["method"], params, files, names)
        call.content_type = ctype
        if request.match_info["token"] != self.token:
            return self._answer(call, _ApiError(401, "Unauthorized"))
        queue = self._faults.get(call.method.lower())
        if queue:
            fault = queue.popleft()
            if fault.kind == "drop":
                call.description = "connection dropped"
                if request.transport is not None:
                    request.transport.close()
                self._wake()
                return web.Response(status=500)  # never reaches the client
            return self._answer(call, fault.error())
        return await self._execute(call)

    def _new_call(
        self, method: str, params: dict[str, Any], files: dict[str, bytes], names: dict[str, str]
    ) -> Call:
        chat_id = params.get("chat_id")
        call = Call(
            method=_CANONICAL.get(method.lower(), method),
            params=params,
            status=0,
            at=time.monotonic(),
            files=files,
            chat_id=chat_id if isinstance(chat_id, int) else None,
            filenames=names,
        )
        self.calls.append(call)
        return call

    async def _read_request(
        self, request: web.Request, ctype: str
    ) -> tuple[dict[str, Any], dict[str, bytes], dict[str, str]]:
        raw: dict[str, Any] = dict(request.query)
        files: dict[str, bytes] = {}
        names: dict[str, str] = {}
        if request.method == "POST" and request.can_read_body:
            if ctype == "application/json":
                with contextlib.suppress(ValueError):
                    body = await request.json()
                    if isinstance(body, dict):
                        raw.update(body)
            elif ctype.startswith("multipart/"):
                self._read_parts(
                    _multipart(await request.read(), request.headers["Content-Type"]),
                    raw,
                    files,
                    names,
                )
            else:
                raw.update(await request.post())
        return _decode(raw, files, names), files, names

    @staticmethod
    def _read_parts(
        parts: Iterable[tuple[dict[str, str], bytes]],
        params: dict[str, Any],
        files: dict[str, bytes],
        names: dict[str, str],
    ) -> None:
        for headers, data in parts:
            disposition = _header_params(headers.get("content-disposition", ""))
            name = disposition.get("name")
            if name is None:
                continue
            if "filename" in disposition:
                files[name] = data
                names[name] = disposition["filename"]
            else:
                charset = _header_params(headers.get("content-type", "")).get("charset")
                params[name] = data.decode(charset or "utf-8")

    def _answer(self, call: Call, outcome: Any) -> web.Response:
        if isinstance(outcome, _ApiError):
            call.status = outcome.status
            call.description = outcome.description
            body = outcome.body()
        else:
            call.status = 200
            call.result = outcome
            if isinstance(outcome, dict) and "message_id" in outcome:
                call.message_id = outcome["message_id"]
            self._ok.append(call)
            if call.chat_id is not None:
                self._ok_by_chat.setdefault(call.chat_id, []).append(call)
            body = {"ok": True, "result": outcome}
        self._wake()
        return web.json_response(body, status=call.status)

    async def _execute(self, call: Call) -> web.Response:
        handler = (
            getattr(self, f"_m_{call.method}", None) if call.method in _KNOWN_METHODS else None
        )
        if handler is None:
            return self._answer(call, _ApiError(404, "Not Found: method not found"))
        try:
            result = handler(call.params, call)
            if asyncio.iscoroutine(result):
                result = await result
        except _ApiError as error:
            return self._answer(call, error)
        except Exception as error:  # a bug in the fake or a malformed request: say so
            return self._answer(call, _ApiError(500, f"Internal Server Error: fake: {error!r}"))
        return self._answer(call, result)

    # ------------------------------------------------------------------ helpers

    def _next_message_id(self, chat_id: int) -> int:
        self._message_ids[chat_id] = self._message_ids.get(chat_id, 0) + 1
        return self._message_ids[chat_id]

    def _chat(self, chat_id: int) -> dict[str, Any]:
        if chat_id < 0:
            kind = "supergroup" if str(chat_id).startswith("-100") else "group"
            return {"id": chat_id, "type": kind, "title": f"Group {chat_id}"}
        chat: dict[str, Any] = {"id": chat_id, "type": "private"}
        user = self._users.get(chat_id, {})
        chat["first_name"] = user.get("first_name", "Test")
        if "username" in user:
            chat["username"] = user["username"]
        return chat

    def _require_chat(self, params: dict[str, Any]) -> int:
        chat_id = params.get("chat_id")
        if chat_id is None:
            raise _bad("chat_id is empty")
        if not isinstance(chat_id, int):
            raise _bad("chat not found")
        return chat_id

    def _check_markup(self, params: dict[str, Any]) -> dict[str, Any] | None:
        markup = params.get("reply_markup")
        if markup is None:
            return None
        if not isinstance(markup, dict):
            raise _bad("can't parse reply keyboard markup JSON object")
        rows = markup.get("inline_keyboard")
        if rows is None:
            return None  # reply keyboards are not echoed in Message objects
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise _bad('field "inline_keyboard" of the InlineKeyboardMarkup must be an Array')
        for row in rows:
            for button in row:
                if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                    raise _bad(
                        'can\'t parse inline keyboard button: Field "text" must be of type String'
                    )
                if not _BUTTON_ACTIONS.intersection(button):
                    raise _bad(
                        "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
                    )
                data = button.get("callback_data")
                if data is not None and (
                    not isinstance(data, str) or len(data.encode()) > MAX_CALLBACK_DATA
                ):
                    raise _bad("BUTTON_DATA_INVALID")
        return markup

    @staticmethod
    def _formatted(
        params: dict[str, Any], key: str, entities_key: str
    ) -> tuple[str, list[dict[str, Any]]]:
        text = params.get(key)
        if text is None:
            return "", []
        text = str(text)
        mode = str(params.get("parse_mode") or "").lower()
        if mode == "html":
            text, entities = _HtmlEntities(text).parse()
        else:  # Markdown modes are passed through unparsed
            given = params.get(entities_key)
            entities = given if isinstance(given, list) else []
        return _trim(text, entities)

    def _check_rate(self, call: Call, chat_id: int) -> None:
        now = call.at
        if self.chat_rate:
            last = self._last_send.get(chat_id)
            if last is not None and now - last < 0.95 / self.chat_rate:
                self.limit_violations += 1
                raise _retry(1)
        if self.global_rate:
            recent = self._recent_sends
            while recent and recent[0] <= now - GLOBAL_WINDOW_S:
                recent.popleft()
            if len(recent) + 1 > self.global_rate + 1:
                self.limit_violations += 1
                raise _retry(1)
        self._last_send[chat_id] = now
        if self.global_rate:
            self._recent_sends.append(now)

    def _store_file(self, data: bytes, filename: str, kind: str) -> dict[str, Any]:
        n = next(self._file_ids)
        file_id = f"BQACAgIAAx{n:06d}FAKE"
        meta = {
            "file_id": file_id,
            "file_unique_id": f"AgAD{n:06d}",
            "file_size": len(data),
            "file_path": f"{kind}/file_{n}{_suffix(filename)}",
            "file_name": filename,
        }
        self.stored_files[file_id] = data
        self._file_meta[file_id] = meta
        return {k: v for k, v in meta.items() if k != "file_path"}

    def _media(self, call: Call, key: str) -> dict[str, Any]:
        value = call.params.get(key)
        if key in call.files:
            return self._store_file(call.files[key], call.filenames.get(key, key), f"{key}s")
        if isinstance(value, str) and value in self._file_meta:
            meta = self._file_meta[value]
            return {k: v for k, v in meta.items() if k != "file_path"}
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            return self._store_file(b"", value.rsplit("/", 1)[-1] or key, f"{key}s")
        if value is None:
            raise _bad(f"there is no {key} in the request")
        raise _bad("wrong file identifier/HTTP URL specified")

    def _new_message(
        self, call: Call, chat_id: int, body: dict[str, Any], markup: dict[str, Any] | None
    ) -> dict[str, Any]:
        self._check_rate(call, chat_id)
        message = {
            "message_id": self._next_message_id(chat_id),
            "from": self.bot_user,
            "chat": self._chat(chat_id),
            "date": int(time.time()),
            **body,
        }
        if markup is not None:
            message["reply_markup"] = markup
        self.messages.setdefault(chat_id, {})[message["message_id"]] = dict(message)
        return message

    def _editable(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        if params.get("inline_message_id"):
            return None
        chat_id = self._require_chat(params)
        message_id = params.get("message_id")
        if not isinstance(message_id, int):
            raise _bad("message identifier is not specified")
        message = self.messages.get(chat_id, {}).get(message_id)
        if message is None:
            raise _bad("message to edit not found")
        if message.get("from", {}).get("id") != self.bot_user["id"]:
            raise _bad("message can't be edited")
        return chat_id, message

    # ------------------------------------------------------------------ methods

    def _m_getMe(self, params: dict[str, Any], call: Call) -> Any:
        return self.bot_user | {
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _m_getUpdates(self, params: dict[str, Any], call: Call) -> Any:
        if self.webhook_url:
            raise _ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        self._poll_generation += 1
        generation = self._poll_generation
        offset = params.get("offset")
        limit = params.get("limit")
        limit = min(max(limit, 1), 100) if isinstance(limit, int) else 100
        timeout = params.get("timeout")
        timeout = max(timeout, 0) if isinstance(timeout, int) else 0
        allowed = params.get("allowed_updates")
        if isinstance(allowed, list):
            self.allowed_updates = allowed
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if generation != self._poll_generation:
                raise _ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                )
            self._confirm(offset)
            offset = None  # confirm once; later arrivals are new
            batch = self._pending[:limit]
            remaining = deadline - loop.time()
            if batch or remaining <= 0 or self._closing or self.webhook_url:
                for entry in batch:
                    entry.forced = False
                return [entry.update for entry in batch]
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(asyncio.shield(waiter), remaining)
            except TimeoutError:
                pass
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    def _confirm(self, offset: Any) -> None:
        if isinstance(offset, int) and offset < 0:
            self._pending = self._pending[offset:]
        elif isinstance(offset, int) and offset > 0:
            self._pending = [p for p in self._pending if p.update_id >= offset or p.forced]
        if self.allowed_updates:
            allowed = set(self.allowed_updates)
            self._pending = [p for p in self._pending if _update_type(p.update) in allowed]

    def _m_setWebhook(self, params: dict[str, Any], call: Call) -> Any:
        url = params.get("url")
        if not url:
            self.webhook_url = self.webhook_secret = None
            return True
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            raise _bad("secret token contains unallowed characters")
        self.webhook_url = str(url)
        self.webhook_secret = secret
        if isinstance(params.get("allowed_updates"), list):
            self.allowed_updates = params["allowed_updates"]
        if params.get("drop_pending_updates") is True:
            self._pending.clear()
        self._wake()  # a waiting getUpdates returns
        return True

    def _m_deleteWebhook(self, params: dict[str, Any], call: Call) -> Any:
        self.webhook_url = self.webhook_secret = None
        if params.get("drop_pending_updates") is True:
            self._pending.clear()
        return True

    def _m_getWebhookInfo(self, params: dict[str, Any], call: Call) -> Any:
        info: dict[str, Any] = {
            "url": self.webhook_url or "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._pending),
        }
        if self.webhook_url and self.allowed_updates:
            info["allowed_updates"] = self.allowed_updates
        return info

    def _m_sendMessage(self, params: dict[str, Any], call: Call) -> Any:
        chat_id = self._require_chat(params)
        text, entities = self._formatted(params, "text", "entities")
        if not text:
            raise _bad("message text is empty")
        if len(text) > MAX_TEXT:
            raise _bad("message is too long")
        markup = self._check_markup(params)
        body: dict[str, Any] = {"text": text}
        if entities:
            body["entities"] = entities
        return self._new_message(call, chat_id, body, markup)

    def _caption(self, params: dict[str, Any]) -> dict[str, Any]:
        caption, entities = self._formatted(params, "caption", "caption_entities")
        if len(caption) > MAX_CAPTION:
            raise _bad("message caption is too long")
        body: dict[str, Any] = {}
        if caption:
            body["caption"] = caption
        if entities:
            body["caption_entities"] = entities
        return body

    def _m_sendPhoto(self, params: dict[str, Any], call: Call) -> Any:
        chat_id = self._require_chat(params)
        body = self._caption(params)
        markup = self._check_markup(params)
        meta = self._media(call, "photo")
        base = {"file_unique_id": meta["file_unique_id"], "file_size": meta["file_size"]}
        sizes = [
            base | {"file_id": meta["file_id"] + "s", "width": 90, "height": 90},
            base | {"file_id": meta["file_id"], "width": 800, "height": 800},
        ]
        return self._new_message(call, chat_id, {"photo": sizes, **body}, markup)

    def _m_sendDocument(self, params: dict[str, Any], call: Call) -> Any:
        chat_id = self._require_chat(params)
        body = self._caption(params)
        markup = self._check_markup(params)
        meta = self._media(call, "document")
        mime = mimetypes.guess_type(meta["file_name"])[0] or "application/octet-stream"
        document = meta | {"mime_type": mime}
        return self._new_message(call, chat_id, {"document": document, **body}, markup)

    def _m_sendChatAction(self, params: dict[str, Any], call: Call) -> Any:
        self._require_chat(params)
        if not params.get("action"):
            raise _bad("wrong parameter action in request")
        return True

    def _m_editMessageText(self, params: dict[str, Any], call: Call) -> Any:
        text, entities = self._formatted(params, "text", "entities")
        if not text:
            raise _bad("message text is empty")
        if len(text) > MAX_TEXT:
            raise _bad("message is too long")
        markup = self._check_markup(params)
        target = self._editable(params)
        if target is None:
            return True
        chat_id, message = target
        if "text" not in message:
            raise _bad("there is no text in the message to edit")
        if (
            message["text"] == text
            and message.get("entities", []) == entities
            and message.get("reply_markup") == markup
        ):
            raise _bad(
                "message is not modified: specified new message content and reply markup "
                "are exactly the same as a current content and reply markup of the message"
            )
        self._check_rate(call, chat_id)
        message["text"] = text
        message.pop("entities", None)
        if entities:
            message["entities"] = entities
        message.pop("reply_markup", None)
        if markup is not None:
            message["reply_markup"] = markup
        message["edit_date"] = int(time.time())
        return dict(message)

    def _m_editMessageReplyMarkup(self, params: dict[str, Any], call: Call) -> Any:
        markup = self._check_markup(params)
        target = self._editable(params)
        if target is None:
            return True
        _, message = target
        if message.get("reply_markup") == markup:
            raise _bad(
                "message is not modified: specified new message content and reply markup "
                "are exactly the same as a current content and reply markup of the message"
            )
        message.pop("reply_markup", None)
        if markup is not None:
            message["reply_markup"] = markup
        message["edit_date"] = int(time.time())
        return dict(message)

    def _m_deleteMessage(self, params: dict[str, Any], call: Call) -> Any:
        chat_id = self._require_chat(params)
        if self.messages.get(chat_id, {}).pop(params.get("message_id"), None) is None:
            raise _bad("message to delete not found")
        return True

    def _m_answerCallbackQuery(self, params: dict[str, Any], call: Call) -> Any:
        if not params.get("callback_query_id"):
            raise _bad("query is too old and response timeout expired or query ID is invalid")
        return True

    def _m_setMyCommands(self, params: dict[str, Any], call: Call) -> Any:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise _bad("can't parse commands JSON object")
        for command in commands:
            if not isinstance(command, dict) or not _COMMAND_RE.match(
                str(command.get("command", ""))
            ):
                raise _bad("BOT_COMMAND_INVALID")
            if not str(command.get("description", "")).strip():
                raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
        self.commands[str(params.get("language_code") or "")] = commands
        return True

    def _m_getMyCommands(self, params: dict[str, Any], call: Call) -> Any:
        return self.commands.get(str(params.get("language_code") or ""), [])

    def _m_deleteMyCommands(self, params: dict[str, Any], call: Call) -> Any:
        self.commands.pop(str(params.get("language_code") or ""), None)
        return True

    def _m_setMyDescription(self, params: dict[str, Any], call: Call) -> Any:
        return True

    def _m_setMyShortDescription(self, params: dict[str, Any], call: Call) -> Any:
        return True

    def _m_setChatMenuButton(self, params: dict[str, Any], call: Call) -> Any:
        return True

    def _m_getFile(self, params: dict[str, Any], call: Call) -> Any:
        meta = self._file_meta.get(str(params.get("file_id")))
        if meta is None:
            raise _bad("wrong file_id or the file is temporarily unavailable")
        return {k: meta[k] for k in ("file_id", "file_unique_id", "file_size", "file_path")}

    def _m_close(self, params: dict[str, Any], call: Call) -> Any:
        return True

    def _m_logOut(self, params: dict[str, Any], call: Call) -> Any:
        return True


def _suffix(filename: str) -> str:
    dot = filename.rfind(".")
    return filename[dot:] if dot >= 0 and len(filename) - dot <= 6 else ""
