"""The Telegram bot: a durable update inbox, an outbox, long polling or a webhook, shutdown.

Every update is written to the store (keyed by ``update_id``) before it is acknowledged
or processed, so a re-delivered update is processed once and an update interrupted by a
crash or shutdown is processed at the next start. What a state change owes a chat is
stored with the change (:mod:`bot.telegram.postbox`) and delivered until the Bot API
accepts it. Updates of one chat are processed one at a time, in order; different chats
run concurrently. Outgoing messages pass through :class:`~bot.telegram.throttle.Throttle`
(rate limits and retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import secrets
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.client.session.middlewares.base import NextRequestMiddlewareType
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNotFound,
    TelegramUnauthorizedError,
)
from aiogram.methods import Response, TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import (
    BotCommand,
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
)
from aiohttp import web
from pydantic import ValidationError

from bot import notices
from bot.chartpool import ChartRenderer
from bot.content import ScenarioLibrary
from bot.coordination import coordinator
from bot.disksync import DiskSync, checkpoints
from bot.drill.runner import run_clock
from bot.engine import Engine
from bot.i18n import Lang
from bot.llm.roles import Assistants
from bot.service import Actor, Training
from bot.storage import (
    BUSY_TIMEOUT_S,
    OutboxRow,
    Store,
    StoreBusy,
    StoreError,
    without_password,
)
from bot.telegram import texts
from bot.telegram.handlers import build_routers
from bot.telegram.middleware import ActorMiddleware
from bot.telegram.postbox import PREFIX, TelegramPostbox, address, chat_of
from bot.telegram.session import API_FAILURES, JsonSession, accepted
from bot.telegram.standby import BotLease
from bot.telegram.state import DisputeCb, StoreStorage
from bot.telegram.throttle import Throttle
from bot.telegram.workers import WorkerError, WorkerPool, worker_of
from graders import warm_up as warm_up_graders

log = logging.getLogger("trainer.telegram")

WEBHOOK_PATH = "/telegram/webhook"


@dataclass(frozen=True)
class TelegramConfig:
    """How to reach Telegram and how fast to send."""

    token: str
    api_base: str | None = None
    """Another Bot API server (self-hosted, or a test server); None for api.telegram.org."""
    webhook_url: str | None = None
    """Public HTTPS URL; None for long polling."""
    webhook_secret: str | None = None
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    global_rate: float | None = 30.0
    chat_rate: float | None = 1.0
    poll_timeout: int = 25
    grace_seconds: float = 20.0
    typing_after: float = 0.5
    """Show "typing…" when an answer takes longer than this many seconds."""
    chart_processes: int = 1
    """Worker processes that draw scorecard charts; 0 draws them in a thread."""
    workers: int = 0
    """Worker processes that answer updates; 0: this process answers them. With workers,
    this process only stores and routes them (:mod:`bot.telegram.workers`)."""
    sweep_seconds: float = 10.0
    """How often owed messages another process stored for this one's chats are looked for:
    the safety net, as the processes of a pool wake a chat's owner at once (see
    :meth:`TelegramApp.owed`) but a wake-up dies with its process, and the web app and the
    command line wake no one; not a setting, tests lengthen it."""
    redis_url: str | None = None
    """Redis shared by every process sending with this token: the send limits are then
    counted across all of them (otherwise each process keeps its own share)."""


class StartError(RuntimeError):
    """The bot cannot start: the Bot API refused the token or did not answer."""


def _session(config: TelegramConfig) -> JsonSession:
    """An HTTP session to the configured Bot API server."""
    api = TelegramAPIServer.from_base(config.api_base) if config.api_base else None
    return JsonSession(api=api) if api else JsonSession()


async def get_me(bot: Bot, config: TelegramConfig) -> dict[str, Any]:
    """The bot's own account (getMe), or :class:`StartError` saying why not (no token in it)."""
    try:
        return await bot(RawGetMe())
    except TelegramUnauthorizedError:
        raise StartError(
            "the Bot API refused the token (Unauthorized): check TELEGRAM_BOT_TOKEN, or "
            "ask @BotFather for the bot's current one"
        ) from None
    except API_FAILURES as exc:
        where = config.api_base or "https://api.telegram.org"
        reason = _brief(exc).replace(config.token, "<token>")
        raise StartError(f"cannot reach the Bot API at {where}: {reason}") from None


class TokenFilter(logging.Filter):
    """Redacts the bot token from every log record."""

    def __init__(self, token: str):
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the token in the formatted message."""
        message = record.getMessage()
        if self.token and self.token in message:
            record.msg = message.replace(self.token, "<token>")
            record.args = ()
        return True


def protect_logs(token: str) -> None:
    """Keep the token out of all log output (every handler of the root logger)."""
    token_filter = TokenFilter(token)
    for handler in logging.getLogger().handlers:
        handler.addFilter(token_filter)


MAX_STARTS = 3
"""Starts of the bot an update may stop (a crash while processing it) before it is skipped."""
MAX_UPDATE_ID = 2**63 - 1


def valid_update_id(value: object) -> bool:
    """Whether a JSON value is an update id: an integer (not true, not 9013.7) that fits."""
    return type(value) is int and 0 <= value <= MAX_UPDATE_ID


def _id_of(holder: object) -> int | None:
    value = holder.get("id") if isinstance(holder, dict) else None
    return value if type(value) is int else None


def _chat_key(payload: dict[str, Any]) -> int:
    """The chat an update belongs to (0 when it names none a Bot API would send)."""
    for kind in ("message", "edited_message", "callback_query", "my_chat_member"):
        event = payload.get(kind)
        if not isinstance(event, dict):
            continue
        message = event.get("message")
        for holder in (
            event.get("chat"),
            message.get("chat") if isinstance(message, dict) else None,
            event.get("from"),
        ):
            found = _id_of(holder)
            if found is not None:
                return found
    return 0


class RawGetMe(TelegramMethod[dict[str, Any]]):
    """getMe answered as plain JSON.

    Only the username is read, so a Bot API server that leaves out fields Telegram always
    sends (``is_bot``) still starts the bot.
    """

    __returning__ = dict[str, Any]
    __api_method__ = "getMe"


class RawGetUpdates(TelegramMethod[list[Any]]):
    """getUpdates answered as plain JSON.

    An update aiogram cannot parse is then one bad update, stored and marked failed on its
    own, not a batch that stops the poller.
    """

    __returning__ = list[Any]
    __api_method__ = "getUpdates"

    offset: int | None = None
    timeout: int | None = None


def _brief(exc: BaseException) -> str:
    """An error in one short line (aiogram's decode errors quote the whole answer)."""
    if isinstance(exc, ClientDecodeError):
        data = exc.data.get("message") if isinstance(exc.data, dict) else exc.data
        return f"the server's answer is not a Bot API answer: {str(data)[:200]}"
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


def _lenient(payload: dict[str, Any]) -> dict[str, Any]:
    """An update with what some Bot API servers leave out and the bot never reads filled in.

    A button press without ``chat_instance`` (an opaque id Telegram always sends) is
    otherwise not a valid update; anything else missing still is.
    """
    query = payload.get("callback_query")
    if isinstance(query, dict) and "chat_instance" not in query:
        return {**payload, "callback_query": {**query, "chat_instance": ""}}
    return payload


_RESPONSE_TYPES: dict[Any, type] = {}


async def pin_response_types(
    make_request: NextRequestMiddlewareType[TelegramType],
    bot: Bot,
    method: TelegramMethod[TelegramType],
) -> Response[TelegramType]:
    """Keep aiogram's parsed-response class of each method alive (request middleware).

    aiogram parses every answer with ``Response[T]``; pydantic caches parametrised models
    only weakly, so without a reference the class (and its validator) is rebuilt on almost
    every call, which cost about a tenth of the bot's CPU under load.
    """
    returning = method.__returning__
    if returning not in _RESPONSE_TYPES:
        _RESPONSE_TYPES[returning] = Response[returning]  # type: ignore[valid-type]
    return await make_request(bot, method)


_Arrival = tuple[int, str, dict[str, Any]]  # update id, stored JSON, payload
_Batch = list[tuple[list[_Arrival], asyncio.Future[int]]]  # arrivals and their caller


class Intake:
    """Stores arriving updates in the inbox, then hands them on, in arrival order.

    Updates arriving while the previous ones are being written share the next commit.
    While another process (a worker) holds the database's write lock, the intake waits
    for it without stalling the event loop, so webhook calls keep being read meanwhile.
    After each commit, the disk wait (:class:`DiskSync`) runs beside the next commit;
    then the new updates go to ``route`` and their callers return.
    """

    POLL_S = 0.0002
    """How often the write lock is tried while another process holds it."""

    def __init__(
        self,
        store: Store,
        bot_id: int,
        disk: DiskSync,
        route: Callable[[int, str, dict[str, Any]], None],
    ):
        self._store = store
        self._bot_id = bot_id
        self._disk = disk
        self._route = route
        self._waiting: _Batch = []
        self._writer: asyncio.Task[None] | None = None
        self._settling: set[asyncio.Task[None]] = set()

    async def add(self, arrivals: list[_Arrival]) -> int:
        """Store updates and route the new ones; returns how many were new, once on disk."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append((arrivals, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())
        return await future

    async def idle(self) -> None:
        """Wait until every update handed in so far is stored and routed (or failed)."""
        while self._writer is not None or self._settling:
            await asyncio.gather(
                *([self._writer] if self._writer else []), *self._settling, return_exceptions=True
            )

    async def _write(self) -> None:
        try:
            while self._waiting:
                batch: _Batch = []
                try:
                    added = await self._insert(batch)
                except Exception as exc:  # nothing stored: the callers do not acknowledge
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                settle = asyncio.create_task(self._settle(batch, added))
                self._settling.add(settle)
                settle.add_done_callback(self._settling.discard)
        finally:
            self._writer = None

    async def _insert(self, batch: _Batch) -> list[bool]:
        """Commit the waiting updates, joined by any that arrive while the lock is held."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BUSY_TIMEOUT_S
        while True:
            batch += self._waiting
            self._waiting.clear()
            updates = [a[:2] for arrivals, _ in batch for a in arrivals]
            try:
                return self._store.inbox_add_many(
                    self._bot_id, updates, wait_for_disk=False, wait_for_lock=False
                )
            except StoreError as exc:
                raise StoreError(f"the inbox could not be written: {exc}") from exc
            except StoreBusy:
                if loop.time() >= deadline:
                    raise StoreError(
                        f"the inbox could not be written: the database stayed locked for "
                        f"{BUSY_TIMEOUT_S:.0f} s"
                    ) from None
                await asyncio.sleep(self.POLL_S)

    async def _settle(self, batch: _Batch, added: list[bool]) -> None:
        flags = iter(added)
        error: BaseException | None = None
        try:
            await self._disk.wait()
        except BaseException as exc:  # the callers get the error; nothing is acknowledged
            error = exc
        # Routed either way: the updates are stored, and a re-delivery of one that was
        # not acknowledged is recognised as a duplicate of it.
        for arrivals, future in batch:
            new = 0
            for (update_id, stored, payload), is_new in zip(arrivals, flags, strict=False):
                if is_new:
                    new += 1
                    self._route(update_id, stored, payload)
                else:
                    log.info("update %d was delivered again; already handled", update_id)
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(new)


@dataclass
class _ChatQueue:
    """The work of one chat (its updates, deliveries to it): one at a time, in order."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    work: int = 0
    """Pieces of work of this chat queued or running."""
    updates: int = 0
    """Of those, the chat's updates."""


class TelegramApp:
    """The bot: owns the aiogram Bot and Dispatcher, the inbox, the outbox and live sessions."""

    IDLE_POLL_MAX_S = 2.0
    """Longest wait before asking again a server that answers an empty long poll at once."""
    RETRY_FIRST_S = 1.0
    RETRY_MAX_S = 60.0
    """Owed messages the Bot API did not take are tried again after 1, 2, 4 … 60 s."""

    def __init__(
        self,
        config: TelegramConfig,
        store: Store,
        library: ScenarioLibrary,
        *,
        service: Training | None = None,
        assistants: Assistants | None = None,
        pool: WorkerPool | None = None,
    ):
        self.config = config
        self.pool = pool
        """The workers that answer updates; None: this process answers them itself."""
        self.store = store
        store.sync_at_inbox()  # the inbox is where updates become durable
        store.checkpoint_aside()  # and the WAL is copied into the file in a thread
        self.library = library
        engine = Engine(store, library, assistants)
        self.svc = service or Training(store, library, engine)
        self.engine = self.svc.engine
        session = _session(config)
        self.coordinator = coordinator(config.redis_url) if config.redis_url else None
        self.throttle = Throttle(
            global_rate=config.global_rate,
            chat_rate=config.chat_rate,
            shared=self.coordinator,
            key=f"telegram:{config.token.split(':', 1)[0]}",
        )
        session.middleware(pin_response_types)
        session.middleware(self.throttle)
        self.charts = ChartRenderer(config.chart_processes)
        self.bot = Bot(config.token, session=session)
        self.intake = Intake(store, self.bot.id, DiskSync(store.sync_wal), self._route)
        self.dp = Dispatcher(storage=StoreStorage(store), app=self)
        middleware = ActorMiddleware()
        self.dp.message.outer_middleware(middleware)
        self.dp.callback_query.outer_middleware(middleware)
        self.dp.include_routers(*build_routers())
        self.username = ""
        self._chats: dict[int, _ChatQueue] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting = False
        self._stopped = False
        self._flush_soon = False
        self.shard: tuple[int, int] | None = None
        """(index, count) of a worker of a pool: it delivers to the chats it answers."""
        self.relay: Callable[[int], None] | None = None if pool is None else pool.wake
        """Tells the process that owns a chat this one does not that the chat is owed
        messages: the front tells the chat's worker; a worker tells the front."""
        self._retry: asyncio.TimerHandle | None = None
        self._retry_delay = self.RETRY_FIRST_S
        self._sweeper: asyncio.Task[None] | None = None
        self._checkpoints: asyncio.Task[None] | None = None
        self._drills: asyncio.Task[None] | None = None

    # lifecycle

    async def start(self, *, worker: bool = False) -> None:
        """Check the token, publish the command menu and finish interrupted updates.

        A ``worker`` of a pool leaves the menu and the inbox to the front and only gets
        ready to answer. A start that fails (:class:`StartError`, or anything else) stops
        what it had started: no session or process is left open.
        """
        try:
            await self._start(worker)
        except BaseException:
            await self.stop(0.0)
            raise

    async def _start(self, worker: bool) -> None:
        me = await get_me(self.bot, self.config)
        self.username = str(me.get("username") or "")
        if not worker:
            await self._publish_commands()
        if self.pool is not None:
            await self.pool.start()
        else:  # (chart processes start with the first chart)
            # Loading what grading reads takes a second; off the loop, before the first reply.
            await asyncio.to_thread(warm_up_graders, self.library.scenarios.values())
        # aiogram's pydantic models alone are ~190k objects that live as long as the
        # process; a full garbage collection walked them all (~0.1 s, the whole bot
        # stalled). Frozen, they are skipped; what is created from now on is collected.
        gc.freeze()
        self._accepting = True
        self._sweep()  # what a crash left owed goes out before anything new
        self._sweeper = asyncio.create_task(self._sweep_every(self.config.sweep_seconds))
        self._checkpoints = asyncio.create_task(checkpoints(self.store.checkpoint))
        if not worker:  # one clock per bot: the front of a pool, or the only process
            self._drills = asyncio.create_task(run_clock(self.svc.drills, after=self._sweep))
        if worker:
            return
        pending = self.store.inbox_resume(self.bot.id, MAX_STARTS)
        if pending:
            log.info("resuming %d update(s) stored before the last stop", len(pending))
        for update_id, payload in pending:
            self._route(update_id, payload, json.loads(payload))

    async def _publish_commands(self) -> None:
        """The command menu: optional, a Bot API server without it only loses the menu."""
        for lang in ("zh", "en"):
            try:
                await self.bot.set_my_commands(
                    [BotCommand(command=c, description=d) for c, d in _COMMANDS[lang]],
                    language_code=lang,
                )
            except API_FAILURES as exc:
                log.warning(
                    "could not publish the command menu (%s); the bot runs without it", _brief(exc)
                )
                return

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait for in-flight updates; True if all finished within ``timeout``.

        With a worker pool: until no stored update awaits processing.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._tasks or (self.pool is not None and self.store.inbox_backlog(self.bot.id)):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=remaining)
            else:
                await asyncio.sleep(0.01 if remaining is None else min(0.01, remaining))
        return True

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking updates, let in-flight work finish (or leave it to the next start).

        Work still running after ``grace`` seconds (the configured grace by default) is
        cancelled. Stopping again does nothing.
        """
        if self._stopped:
            return
        self._stopped = True
        grace = self.config.grace_seconds if grace is None else grace
        self._accepting = False
        await self.intake.idle()  # updates already handed in are stored and routed
        if self.pool is not None:
            await self.pool.stop(grace)
        elif not await self.drain(grace):
            log.warning(
                "%d update(s) still running after %.0fs; they stay in the inbox and are "
                "processed at the next start",
                len(self._tasks),
                grace,
            )
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        for background in (self._sweeper, self._checkpoints, self._drills):
            if background is not None:
                background.cancel()
                await asyncio.gather(background, return_exceptions=True)
        self.store.flush()
        await self.charts.close()
        await self.bot.session.close()
        if self.coordinator is not None:
            await self.coordinator.close()

    # the inbox

    async def accept(self, *payloads: dict[str, Any]) -> int:
        """Store updates and schedule them, in order; returns how many were new.

        Returns once they are on the disk: only then may they be acknowledged. Updates
        arriving together share the commit and the wait (:class:`Intake`). An update
        seen before is skipped; while stopping, nothing is taken.
        """
        if not self._accepting:
            return 0
        return await self.intake.add(
            [(int(p["update_id"]), json.dumps(p, ensure_ascii=False), p) for p in payloads]
        )

    def _route(self, update_id: int, stored: str, payload: dict[str, Any]) -> None:
        if self.pool is not None:
            self.pool.forward(_chat_key(payload), update_id, stored)
        else:
            self.take(update_id, payload)

    def take(self, update_id: int, payload: dict[str, Any]) -> None:
        """Process a stored update: after the chat's earlier ones, concurrently with others."""
        chat = _chat_key(payload)
        self._in_chat(chat, lambda: self._process(update_id, payload, chat), update=True)

    def _in_chat(
        self, chat: int, work: Callable[[], Awaitable[None]], *, update: bool = False
    ) -> None:
        """Run ``work`` after the chat's earlier work, concurrently with other chats."""
        queue = self._chats.setdefault(chat, _ChatQueue())
        queue.work += 1
        queue.updates += update
        task = asyncio.create_task(self._run_in_chat(chat, queue, work, update))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _process(self, update_id: int, payload: dict[str, Any], chat: int) -> None:
        error = None
        if self.store.outbox_has(address(chat), str(update_id)):
            # A crash came after this update's change was stored with what it owes.
            log.info("update %d was processed before a restart; delivering what it owes", update_id)
        else:
            try:
                update = Update.model_validate(_lenient(payload), context={"bot": self.bot})
                await self.dp.feed_update(self.bot, update)
            except asyncio.CancelledError:
                raise  # left as 'received': processed again at the next start
            except ValidationError as exc:  # not an update this bot can read: skipped
                where = sorted({".".join(map(str, e["loc"][:2])) for e in exc.errors()})
                error = f"not a valid update ({', '.join(where[:5])})"
                log.warning("update %d skipped: %s", update_id, error)
            except Exception as exc:  # a failing update must not stop the bot
                log.exception("update %d failed", update_id)
                error = f"{type(exc).__name__}: {exc}"
        if self.owns(chat):
            await self.deliver(chat)
        others = {chat_of(a) for a in self.store.outbox_addresses(PREFIX, str(update_id))}
        for other in others - {chat}:  # notices to other users: in those chats' turn
            self.owed(other)
        # Several updates finishing together share one commit of their marks.
        self.store.inbox_done(self.bot.id, update_id, error, defer=True)
        if not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _run_in_chat(
        self, chat: int, queue: _ChatQueue, work: Callable[[], Awaitable[None]], update: bool
    ) -> None:
        try:
            async with queue.lock:
                await work()
        finally:
            # Forget the chat's lock only when no work of it is queued or running:
            # dropping it while one waits would let a newer update overtake it.
            queue.work -= 1
            queue.updates -= update
            if queue.work == 0 and self._chats.get(chat) is queue:
                del self._chats[chat]

    def _flush(self) -> None:
        self._flush_soon = False
        try:
            self.store.flush()
        except Exception:  # the marks stay queued; the next transaction retries them
            log.exception("could not mark updates done")

    # long polling

    async def poll(self, stop: asyncio.Event) -> None:
        """Long-poll until ``stop`` is set; each batch is stored before it is confirmed."""
        await self.bot.delete_webhook(drop_pending_updates=False)
        offset: int | None = None
        backoff = 1.0
        idle = 0.0  # a server that answers an empty long poll at once is asked less often
        loop = asyncio.get_running_loop()
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                asked = loop.time()
                request = asyncio.create_task(
                    self.bot(
                        RawGetUpdates(offset=offset, timeout=self.config.poll_timeout),
                        request_timeout=self.config.poll_timeout + 10,
                    )
                )
                done, _ = await asyncio.wait(
                    {request, stopping}, return_when=asyncio.FIRST_COMPLETED
                )
                if request not in done:
                    request.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await request
                    break
                try:
                    answer = request.result()
                except (*API_FAILURES, ValidationError) as exc:
                    log.warning("getUpdates failed (%s); retrying in %.0fs", _brief(exc), backoff)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                backoff = 1.0
                updates = [u for u in answer if isinstance(u, dict)]
                valid = [u for u in updates if valid_update_id(u.get("update_id"))]
                if len(valid) < len(answer):
                    log.warning(
                        "getUpdates returned %d item(s) without an update id; skipped",
                        len(answer) - len(valid),
                    )
                try:
                    await self.accept(*valid)
                except (OSError, StoreError) as exc:  # not confirmed: fetched again
                    log.error("could not store updates (%s); fetching them again", exc)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), backoff)
                    continue
                if valid:
                    offset = max(u["update_id"] for u in valid) + 1
                    idle = 0.0
                elif loop.time() - asked < min(1.0, self.config.poll_timeout / 2):
                    idle = min(max(idle * 2, 0.5), self.IDLE_POLL_MAX_S)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), idle)
        finally:
            stopping.cancel()

    # webhook

    def webhook_app(self) -> web.Application:
        """An aiohttp app answering Telegram's webhook POSTs (secret checked first)."""
        app = web.Application()
        app.add_routes(self.webhook_routes())
        return app

    def webhook_routes(self) -> list[web.RouteDef]:
        """The webhook's route, for a server that also serves something else (the web app)."""
        return [web.post(WEBHOOK_PATH, self._webhook)]

    async def _webhook(self, request: web.Request) -> web.Response:
        secret = self.config.webhook_secret or ""
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if secret and not secrets.compare_digest(given.encode(), secret.encode()):
            log.warning("webhook call with a wrong secret token from %s", request.remote)
            return web.Response(status=401, text="wrong secret token")
        if not self._accepting:
            return web.Response(status=503, text="shutting down")
        try:
            payload = json.loads(await request.text())
        except (ValueError, RecursionError):
            return web.Response(status=400, text="not JSON")
        if not isinstance(payload, dict) or not valid_update_id(payload.get("update_id")):
            return web.Response(status=400, text="not a Telegram update: no integer update_id")
        await self.accept(payload)  # on the disk before the 200 below acknowledges it
        return web.Response(text="ok")

    async def set_webhook(self) -> None:
        """Register the webhook URL and secret with Telegram."""
        assert self.config.webhook_url
        await self.bot.set_webhook(
            self.config.webhook_url.rstrip("/") + WEBHOOK_PATH
            if not self.config.webhook_url.endswith(WEBHOOK_PATH)
            else self.config.webhook_url,
            secret_token=self.config.webhook_secret,
            drop_pending_updates=False,
        )

    # sending

    @contextlib.asynccontextmanager
    async def typing(self, chat_id: int | str) -> AsyncIterator[None]:
        """Show "typing…" in the chat while the body takes longer than ``typing_after``.

        A quick answer goes out without it: the action would cost a request and be gone
        before anyone could see it. A slow one (an LLM customer) shows it, renewed every 4 s
        as Telegram clears it after 5.
        """
        task: asyncio.Task[None] | None = None

        async def show() -> None:
            while True:
                try:
                    await self.bot.send_chat_action(chat_id, "typing")
                except API_FAILURES as exc:
                    log.info("typing action for chat %s failed: %s", chat_id, _brief(exc))
                await asyncio.sleep(4.0)

        def begin() -> None:
            nonlocal task
            task = asyncio.create_task(show())

        timer = asyncio.get_running_loop().call_later(max(self.config.typing_after, 0.0), begin)
        try:
            yield
        finally:
            timer.cancel()
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def send(
        self, chat_id: int | str, text: str, markup: InlineKeyboardMarkup | None = None
    ) -> None:
        """Send a text, split into Telegram-sized parts; the keyboard goes on the last."""
        parts = texts.split(text)
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            await self.bot.send_message(chat_id, part, reply_markup=markup if last else None)

    async def drop_buttons(self, query: CallbackQuery) -> None:
        """Take the keyboard off a menu whose button was pressed (each menu is used once).

        Called after the next message went out, so the edit never delays what the user
        waits for; a message too old to edit keeps its buttons, which then answer "stale".
        """
        message = query.message
        if not isinstance(message, Message):
            return  # inaccessible (too old): nothing to edit
        try:
            await self.bot.edit_message_reply_markup(
                chat_id=message.chat.id, message_id=message.message_id, reply_markup=None
            )
        except API_FAILURES as exc:
            log.info("could not remove a used keyboard: %s", _brief(exc))

    async def answer_burst(self, chat_id: int, text: str) -> None:
        """Send an answer that every message of a burst would repeat word for word.

        While later updates of the chat wait in its queue, this one is skipped: they will
        get the same answer, so 20 messages in a row get one reply, not 20. (Deliveries
        queued for the chat do not count: they answer nothing.)
        """
        queue = self._chats.get(chat_id)
        if queue is not None and queue.updates > 1:
            return
        await self.send(chat_id, text)

    # sessions in progress (kept by the service, shared by every channel)

    def postbox(self, chat_id: int, actor: Actor, update_id: int | None) -> TelegramPostbox:
        """Where a state change caused by an update stores what it owes the chat."""
        ref = None if update_id is None else str(update_id)
        return TelegramPostbox(chat_id, actor.user.id, actor.lang, ref)

    # the outbox

    def owns(self, chat: int) -> bool:
        """Whether this process delivers to a chat (a pool's front leaves it to the workers)."""
        if self.pool is not None:
            return False
        return self.shard is None or worker_of(chat, self.shard[1]) == self.shard[0]

    async def deliver(self, chat: int) -> bool:
        """Send what a chat is owed, oldest first, marking each message as it is accepted.

        A message the Bot API refuses for good (the user blocked the bot, a bad request)
        is marked failed with the reason; a chart that fails is skipped; anything else
        (network, server errors) stops the chat's delivery, which is tried again later.
        Returns False when something is left for later. Call it inside the chat's turn.
        """
        for row in self.store.outbox_pending(address(chat)):
            try:
                await self._send_owed(chat, row)
            except (TelegramForbiddenError, TelegramBadRequest, TelegramNotFound) as exc:
                log.warning("message %d to chat %d refused (%s); not sent", row.id, chat, exc)
                self.store.outbox_done(row.id, f"{type(exc).__name__}: {exc}")
            except (*API_FAILURES, OSError, TimeoutError) as exc:
                if isinstance(exc, ClientDecodeError) and accepted(exc):
                    log.warning(
                        "message %d to chat %d sent; its answer was unreadable", row.id, chat
                    )
                    self.store.outbox_done(row.id)
                    continue
                why = f"{type(exc).__name__}: {_brief(exc)}"
                if row.kind == "chart":  # an optional extra never holds back the text
                    log.info("chart for chat %d not sent (%s); the scorecard follows", chat, why)
                    self.store.outbox_done(row.id, why)
                    continue
                log.warning("message %d to chat %d not sent yet (%s)", row.id, chat, why)
                self.store.outbox_retry(row.id, why)
                self._retry_soon()
                return False
            except Exception as exc:  # a bug: logged, never retried in a loop
                log.exception("message %d to chat %d could not be built", row.id, chat)
                self.store.outbox_done(row.id, f"{type(exc).__name__}: {exc}")
            else:
                self.store.outbox_done(row.id)
        return True

    def owed(self, chat: int) -> None:
        """Have what a chat is owed delivered soon: here, or by the process that owns it."""
        if self.owns(chat):
            self._in_chat(chat, partial(self._deliver_quietly, chat))
        elif self.relay is not None:
            self.relay(chat)

    def _sweep(self) -> None:
        """Schedule delivery to every chat of this process that is owed messages.

        The front of a pool, which owns no chat, wakes their workers instead: so the drill
        clock's lines it stores go out at once. A worker leaves other workers' chats alone.
        """
        for addr in self.store.outbox_addresses(PREFIX):
            chat = chat_of(addr)
            if self.pool is not None or self.owns(chat):
                self.owed(chat)

    def _retry_now(self) -> None:
        self._retry = None
        self._sweep()

    async def _sweep_every(self, seconds: float) -> None:
        """Deliver what other processes owed this one's chats and did not wake it for."""
        while True:
            await asyncio.sleep(seconds)
            try:
                self._sweep()
            except Exception:  # a locked or busy store: the next round tries again
                log.exception("could not look for owed messages")

    async def _deliver_quietly(self, chat: int) -> None:
        if await self.deliver(chat):
            self._retry_delay = self.RETRY_FIRST_S

    def _retry_soon(self) -> None:
        if self._retry is None and self._accepting:
            loop = asyncio.get_running_loop()
            self._retry = loop.call_later(self._retry_delay, self._retry_now)
            self._retry_delay = min(self._retry_delay * 2, self.RETRY_MAX_S)

    async def _send_owed(self, chat: int, row: OutboxRow) -> None:
        body = row.body
        if row.kind == "text":
            await self.send(chat, body["text"])
        elif row.kind == notices.KIND:
            await self.send(chat, texts.notice(body, self.store, self.library))
        elif row.kind in ("chart", "result"):
            actor = self.svc.actor(int(body["user"]))
            if row.kind == "chart":
                await self.send_chart(chat, actor, body["session"])
            else:
                await self.send_card(chat, actor, body["session"])
        else:
            raise ValueError(f"unknown kind of owed message {row.kind!r}")

    async def send_chart(self, chat_id: int | str, actor: Actor, session_id: str) -> None:
        """The scorecard chart of an ended session, as a photo."""
        view = self.svc.session_view(actor, session_id)
        if view.card is None:
            return
        title = self.svc.title(view.row.scenario_id)
        png = await self.charts.render(
            [(d.title, d.score, d.max_score) for d in view.card.dimensions],
            self.svc.trend(actor, session_id),
            title=title,
            lang=actor.lang,
        )
        await self.bot.send_photo(
            chat_id,
            BufferedInputFile(png, filename=f"scorecard-{session_id}.png"),
            caption=texts.t("chart_caption", actor.lang, title=title[actor.lang]),
        )

    async def send_card(self, chat_id: int | str, actor: Actor, session_id: str) -> None:
        """The scorecard and ledger of an ended session; Dispute buttons for its trainee."""
        view = self.svc.session_view(actor, session_id)
        if view.card is None:
            return
        lang = actor.lang
        own = view.row.trainee == actor.user.trainee
        markup = _dispute_keyboard(session_id, len(view.entries), lang) if own else None
        title = self.svc.title(view.row.scenario_id)
        await self.send(
            chat_id,
            texts.scorecard(view, title[lang], lang, with_buttons=markup is not None),
            markup,
        )


def _dispute_keyboard(session_id: str, entries: int, lang: Lang) -> InlineKeyboardMarkup | None:
    if not entries:
        return None
    buttons = [
        InlineKeyboardButton(
            text=texts.t("dispute_button", lang, n=n),
            callback_data=DisputeCb(session=session_id, entry=n).pack(),
        )
        for n in range(1, entries + 1)
    ]
    return InlineKeyboardMarkup(
        inline_keyboard=[buttons[i : i + 4] for i in range(0, len(buttons), 4)]
    )


_COMMANDS: dict[str, list[tuple[str, str]]] = {
    "zh": [
        ("practice", "开始练习"),
        ("end", "结束当前会话"),
        ("hint", "参考回复（教练模式）"),
        ("history", "最近的会话"),
        ("me", "我的成绩与推荐"),
        ("lang", "切换语言"),
        ("web", "在网页版登录同一账号"),
        ("leaderboard", "演练排行榜"),
        ("help", "全部命令"),
    ],
    "en": [
        ("practice", "Start a practice session"),
        ("end", "Finish the session"),
        ("hint", "Model reply (coach mode)"),
        ("history", "Recent sessions"),
        ("me", "My results and what to practise next"),
        ("lang", "Switch language"),
        ("web", "Sign in to the web app as this account"),
        ("leaderboard", "A drill's standings"),
        ("help", "All commands"),
    ],
}


async def serve(
    config: TelegramConfig,
    store: Store,
    library: ScenarioLibrary,
    assistants: Assistants | None = None,
) -> None:
    """Run the bot until SIGTERM or SIGINT: polling, or a webhook when configured.

    With ``config.workers`` set, this process stores and routes the updates and worker
    processes answer them; a worker that dies stops the bot (:class:`WorkerError`). With
    ``config.redis_url`` set, processes serving the same bot take turns: one answers, the
    others stand by (:mod:`bot.telegram.standby`).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    answer = partial(_answer, config, store, library, assistants)
    try:
        if config.redis_url:
            await _take_turns(config, store, stop, answer)
        else:
            await answer(stop, asyncio.Event())
    finally:
        if assistants is not None:
            await assistants.aclose()


Answer = Callable[[asyncio.Event, asyncio.Event], Awaitable[None]]
"""Answers the bot until the first event is set; at once if the second (lease lost) is."""

STANDBY_AFTER_FAILED_START_S = 5.0
"""How long a process whose start failed after a take-over waits before standing by again."""


async def _take_turns(
    config: TelegramConfig, store: Store, stop: asyncio.Event, answer: Answer
) -> None:
    """Stand by until this process holds the bot's lease, answer while it does, repeat.

    What would stop a take-over (no database to share, a token or Bot API that does not
    work, no Redis) is found before standing by, not when the other process is gone.
    """
    assert config.redis_url
    if config.workers > 0 and store.location is None:
        raise WorkerError("several workers need a database file or server, not memory")
    bot = Bot(config.token, session=_session(config))
    try:
        await get_me(bot, config)
    finally:
        await bot.session.close()
    shared = coordinator(config.redis_url)
    lease = BotLease(shared, config.token.split(":", 1)[0])
    try:
        if not await shared.ping():
            raise StartError(f"cannot reach Redis at {without_password(config.redis_url)}")
        while await lease.acquire(stop):
            log.info("this process answers the bot (lease %s)", lease.me)
            try:
                if await _while_held(lease, stop, answer):
                    return  # stopped
            except StartError as exc:  # e.g. the Bot API is unreachable from here just now
                log.error("%s; leaving the bot to another process", exc)
                await lease.release()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), STANDBY_AFTER_FAILED_START_S)
                continue
            gc.unfreeze()  # the last term's objects may go; the next term freezes its own
    finally:
        await lease.release()
        await shared.close()


async def _while_held(lease: BotLease, stop: asyncio.Event, answer: Answer) -> bool:
    """Answer while the lease is held; False if another process took it.

    The lease is renewed until answering has ended, a drain after SIGTERM included, so
    no standby takes over while this process still finishes updates.
    """
    until, lost, done = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def keep() -> None:
        await lease.keep(done, lost)
        until.set()

    async def relay() -> None:
        await stop.wait()
        until.set()

    keeper, relaying = asyncio.create_task(keep()), asyncio.create_task(relay())
    try:
        await answer(until, lost)
    finally:
        done.set()
        relaying.cancel()
        await keeper
    return not lost.is_set()


async def _answer(
    config: TelegramConfig,
    store: Store,
    library: ScenarioLibrary,
    assistants: Assistants | None,
    until: asyncio.Event,
    lost: asyncio.Event,
) -> None:
    """Answer the bot's updates until ``until`` is set; at once if the lease was ``lost``."""
    pool = None
    if config.workers > 0:
        if store.location is None:
            raise WorkerError("several workers need a database file or server, not memory")
        pool = WorkerPool(config, db=store.location, scenarios=library.root, assistants=assistants)
    app = TelegramApp(config, store, library, assistants=assistants, pool=pool)
    try:
        await app.start()
    except BaseException:
        if assistants is None:  # the app's own
            await app.engine.assistants.aclose()
        raise
    watch = asyncio.create_task(pool.failed.wait()) if pool is not None else None
    if watch is not None:
        watch.add_done_callback(lambda _: until.set())
    log.info(
        "bot @%s started%s",
        app.username,
        f" with {config.workers} worker process{'es' if config.workers > 1 else ''}"
        if pool is not None
        else "",
    )
    runner: web.AppRunner | None = None
    try:
        if config.webhook_url:
            runner = web.AppRunner(app.webhook_app())
            await runner.setup()
            await web.TCPSite(runner, config.listen_host, config.listen_port).start()
            await app.set_webhook()
            log.info("webhook listening on %s:%d", config.listen_host, config.listen_port)
            await until.wait()
        else:
            await app.poll(until)
    finally:
        if lost.is_set():  # another process answers now: what runs here is left to it
            log.info("stopping at once: updates in flight stay in the inbox for it")
        else:
            log.info("stopping: no new updates; finishing work in flight")
        if watch is not None:
            watch.cancel()
        await app.stop(0.0 if lost.is_set() else None)
        if runner is not None:
            await runner.cleanup()
        if assistants is None:  # the app's own; serve() closes the ones it was given
            await app.engine.assistants.aclose()
        log.info("stopped")
    if pool is not None and pool.failure:
        raise WorkerError(pool.failure)
