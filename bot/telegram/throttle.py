"""Outbound rate limiting and retries for the Bot API, as an aiogram request middleware.

Register one ``Throttle`` per bot token: ``bot.session.middleware(Throttle())``. It keeps
its state (locks, buckets) for a single event loop.

Retrying after a network error is at-least-once: if the request reached Telegram before the
connection failed, the message can arrive twice. Every attempt, retries included, waits for
the chat's and the global send tokens.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import (
    TelegramEntityTooLarge,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import SendChatAction
from aiogram.methods.base import TelegramType

from bot.coordination import Coordinator

log = logging.getLogger("trainer.telegram")

if TYPE_CHECKING:
    from aiogram.client.bot import Bot
    from aiogram.methods import Response, TelegramMethod

Clock = Callable[[], float]
"""A monotonic clock in seconds."""
Sleep = Callable[[float], Awaitable[object]]
"""An awaitable sleep in seconds."""

UNLIMITED_METHODS: tuple[type[Any], ...] = (SendChatAction,)
"""Methods that carry a ``chat_id`` but are not rate limited."""

# Per-chat entries are swept at most this often (seconds) when ``chat_rate`` is small.
_MIN_PRUNE_INTERVAL = 0.05


@dataclass(slots=True)
class ThrottleStats:
    """Counters of what the throttle did (GetUpdates is never counted)."""

    sent: int = 0
    """Requests that succeeded, possibly after retries."""
    retried_429: int = 0
    """Retries after a ``TelegramRetryAfter`` (HTTP 429)."""
    retried_network: int = 0
    """Retries after a server (5xx) or network error."""
    failed: int = 0
    """Requests that ended in an error: out of retries, or an error that is never retried."""
    waited_s: float = 0.0
    """Total time spent waiting for send tokens (per-chat and global), summed over requests."""


@dataclass(slots=True, eq=False)
class _Chat:
    """Per-chat state: FIFO lock, next time a send is allowed and how many requests use it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    next_at: float = -math.inf
    users: int = 0


class _GlobalBucket:
    """A token bucket of capacity 1 plus a strict one-second sliding window.

    Waiters are served FIFO; only the head waiter sleeps, until its slot. Slots are one
    interval apart. A send that leaves late (timer oversleep, a busy loop) by at most
    ``tolerance`` (one interval, capped at 50 ms) keeps the schedule, so lateness does not
    add up into lost throughput: the next send may then follow sooner than one interval.
    Later than that, the schedule restarts from the actual send time. The sliding window
    of actual send times guarantees that no one-second window ever holds more than
    ``rate`` sends whatever the jitter.
    """

    def __init__(self, rate: float, clock: Clock, sleep: Sleep) -> None:
        self.interval = 1.0 / rate
        self.tolerance = min(self.interval, 0.05)
        self.recent: deque[float] = deque(maxlen=max(1, math.floor(rate)))
        self.next_at = -math.inf
        self.lock = asyncio.Lock()
        self._clock = clock
        self._sleep = sleep

    async def take(self) -> float:
        """Wait for a token; return the time it was granted."""
        async with self.lock:
            while True:
                now = self._clock()
                ready = self.next_at
                if len(self.recent) == self.recent.maxlen:
                    ready = max(ready, self.recent[0] + 1.0)
                if now >= ready:
                    break
                await self._sleep(ready - now)
            on_schedule = now - self.next_at <= self.tolerance
            self.next_at = (self.next_at if on_schedule else now) + self.interval
            self.recent.append(now)
            return now


class Throttle(BaseRequestMiddleware):
    """Global and per-chat send limits, FIFO per chat, retry on 429 and network/5xx errors."""

    def __init__(
        self,
        *,
        global_rate: float | None = 30.0,
        chat_rate: float | None = 1.0,
        max_retries: int = 5,
        backoff: tuple[float, float] = (0.5, 8.0),
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        shared: Coordinator | None = None,
        key: str = "telegram",
    ) -> None:
        """Limits for one process, or with ``shared`` for all of them.

        ``shared`` (a Redis coordinator) makes the limits those of every process using it
        with the same ``key`` (the bot's id): Telegram counts per token, not per process.
        """
        for name, rate in (("global_rate", global_rate), ("chat_rate", chat_rate)):
            if rate is not None and not rate > 0:
                raise ValueError(f"{name} must be positive or None, got {rate!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries!r}")
        if not 0 <= backoff[0] <= backoff[1]:
            raise ValueError(f"backoff must satisfy 0 <= first <= cap, got {backoff!r}")
        self.max_retries = max_retries
        self.backoff = backoff
        self.stats = ThrottleStats()
        self._said_down = False
        """Whether the log says the Bot API is not taking calls (until one succeeds)."""
        self._clock = clock
        self._sleep = sleep
        self._global = None if global_rate is None else _GlobalBucket(global_rate, clock, sleep)
        self._chat_interval = None if chat_rate is None else 1.0 / chat_rate
        self._shared = shared
        self._key = key
        self._rates = (global_rate, chat_rate)
        self._chats: dict[int | str, _Chat] = {}
        self._prune_every = max(self._chat_interval or 1.0, _MIN_PRUNE_INTERVAL)
        self._next_prune = -math.inf

    @property
    def tracked_chats(self) -> int:
        """Number of chats currently holding per-chat state."""
        return len(self._chats)

    def prune(self) -> int:
        """Drop idle chats whose next allowed send time has passed; return how many."""
        now = self._clock()
        stale = [k for k, c in self._chats.items() if c.users == 0 and c.next_at <= now]
        for key in stale:
            del self._chats[key]
        return len(stale)

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        """Send ``method`` through the limits, retrying transient errors."""
        if _is_polling(method):
            # Long polling: aiogram's poller has its own backoff.
            return await make_request(bot, method)
        if not _is_limited(method):
            return await self._send(make_request, bot, method, limited=False, chat=None)
        if self._clock() >= self._next_prune:
            self.prune()
            self._next_prune = self._clock() + self._prune_every
        key = _chat_key(getattr(method, "chat_id", None))
        if key is None:  # e.g. editing an inline message: global limit only
            return await self._send(make_request, bot, method, limited=True, chat=None)
        chat = self._chats.get(key)
        if chat is None:
            chat = self._chats[key] = _Chat()
        chat.users += 1
        try:
            # asyncio.Lock is FIFO and acquiring a free lock does not yield, so sends to
            # one chat leave in the order they reached this middleware, retries included.
            async with chat.lock:
                return await self._send(make_request, bot, method, limited=True, chat=chat, key=key)
        finally:
            chat.users -= 1
            if chat.users == 0 and chat.next_at <= self._clock() and self._chats.get(key) is chat:
                del self._chats[key]

    async def _send(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
        *,
        limited: bool,
        chat: _Chat | None,
        key: int | str | None = None,
    ) -> Response[TelegramType]:
        retries = 0
        network_retries = 0
        while True:
            if limited and self._shared is not None:
                await self._wait_for_shared_tokens(key)
            elif limited:
                await self._wait_for_tokens(chat)
            try:
                response = await make_request(bot, method)
            except TelegramRetryAfter as exc:
                if retries >= self.max_retries:
                    self.stats.failed += 1
                    raise
                retries += 1
                self.stats.retried_429 += 1
                delay = float(exc.retry_after)
                if chat is not None:
                    # Holding the chat lock already delays later sends to this chat;
                    # recording the time also keeps the entry from being pruned early.
                    chat.next_at = max(chat.next_at, self._clock() + delay)
                await self._sleep(delay)
            except TelegramEntityTooLarge:
                self.stats.failed += 1
                raise
            except (TelegramServerError, TelegramNetworkError) as exc:
                if retries >= self.max_retries:
                    self.stats.failed += 1
                    raise
                retries += 1
                self.stats.retried_network += 1
                delay = min(self.backoff[0] * 2**network_retries, self.backoff[1])
                if not self._said_down:  # once until a send succeeds: not silent, not noisy
                    self._said_down = True
                    log.warning(
                        "the Bot API did not take %s (%s); trying again",
                        method.__api_method__,
                        (str(exc).splitlines() or [type(exc).__name__])[0][:200],
                    )
                network_retries += 1
                await self._sleep(delay)
            except Exception:
                self.stats.failed += 1
                raise
            else:
                self.stats.sent += 1
                self._said_down = False
                return response

    async def _wait_for_tokens(self, chat: _Chat | None) -> None:
        start = self._clock()
        if chat is not None and self._chat_interval is not None:
            while (delay := chat.next_at - self._clock()) > 0:
                await self._sleep(delay)
        granted = await self._global.take() if self._global is not None else self._clock()
        if chat is not None and self._chat_interval is not None:
            chat.next_at = granted + self._chat_interval
        self.stats.waited_s += granted - start

    async def _wait_for_shared_tokens(self, chat: int | str | None) -> None:
        """Reserve the next send slots of the chat and of the bot, among all processes."""
        assert self._shared is not None
        start = self._clock()
        global_rate, chat_rate = self._rates
        waits = []
        if chat is not None and chat_rate is not None:
            waits.append(await self._shared.take(f"{self._key}:chat:{chat}", chat_rate))
        if global_rate is not None:
            waits.append(await self._shared.take(f"{self._key}:all", global_rate))
        delay = max(waits, default=0.0)
        if delay > 0:
            await self._sleep(delay)
        self.stats.waited_s += self._clock() - start


def _is_polling(method: TelegramMethod[Any]) -> bool:
    """Whether ``method`` is getUpdates (aiogram's or the bot's raw one): passed through."""
    return method.__api_method__ == "getUpdates"


def _is_limited(method: TelegramMethod[Any]) -> bool:
    """Whether ``method`` is a message-like call subject to the send limits."""
    return "chat_id" in type(method).model_fields and not isinstance(method, UNLIMITED_METHODS)


def _chat_key(chat_id: object) -> int | str | None:
    """Normalise a chat id so that ``123`` and ``"123"`` share one entry."""
    if chat_id is None:
        return None
    if isinstance(chat_id, int):
        return chat_id
    text = str(chat_id)
    try:
        return int(text)
    except ValueError:
        return text
