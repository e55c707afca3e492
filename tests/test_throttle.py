"""The outbound throttle, run inside a real aiogram Bot whose network is a tiny fake."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import defaultdict
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiogram import Bot
from aiogram.client.session.base import BaseSession
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import SendMessage, TelegramMethod
from aiogram.types import Chat, Message

from bot.coordination import RedisCoordinator
from bot.telegram.app import RawGetUpdates
from bot.telegram.throttle import Throttle, ThrottleStats
from tests.fakeclock import VirtualTime
from tests.test_coordination import RedisServer

Failure = Callable[[TelegramMethod[Any]], Exception]


class FakeSession(BaseSession):
    """Records every request that reaches the network and raises planned failures."""

    def __init__(self, latency: float = 0.0, time_: VirtualTime | None = None) -> None:
        super().__init__()
        self.latency = latency
        self._clock = time.monotonic if time_ is None else time_.clock
        self._sleep = asyncio.sleep if time_ is None else time_.sleep
        self.attempts: list[tuple[float, TelegramMethod[Any]]] = []
        self.delivered: list[tuple[float, int | str | None, str | None]] = []
        # (chat_id, text) -> failures to raise on the next attempts, in order
        self.plan: dict[tuple[Any, str | None], list[Failure]] = defaultdict(list)
        self.fail_all: Failure | None = None

    async def make_request(
        self, bot: Bot, method: TelegramMethod[Any], timeout: int | None = None
    ) -> Any:
        now = self._clock()
        self.attempts.append((now, method))
        chat_id = getattr(method, "chat_id", None)
        text = getattr(method, "text", None)
        if self.fail_all is not None:
            raise self.fail_all(method)
        planned = self.plan.get((chat_id, text))
        if planned:
            raise planned.pop(0)(method)
        self.delivered.append((now, chat_id, text))
        if self.latency:
            await self._sleep(self.latency)
        if isinstance(method, SendMessage):
            return Message(
                message_id=len(self.delivered),
                date=datetime.now(UTC),
                chat=Chat(id=int(method.chat_id), type="private"),
                text=method.text,
            )
        return True

    async def close(self) -> None:
        pass

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        yield b""


def make_bot(
    throttle: Throttle, latency: float = 0.0, time_: VirtualTime | None = None
) -> tuple[Bot, FakeSession]:
    session = FakeSession(latency, time_)
    session.middleware(throttle)
    return Bot("42:TEST", session=session), session


def retry_after(seconds: int) -> Failure:
    return lambda m: TelegramRetryAfter(method=m, message="Too Many Requests", retry_after=seconds)


def server_error(m: TelegramMethod[Any]) -> Exception:
    return TelegramServerError(method=m, message="Internal Server Error")


def network_error(m: TelegramMethod[Any]) -> Exception:
    return TelegramNetworkError(method=m, message="Connection reset")


def per_chat(delivered: list[tuple[float, Any, str | None]]) -> dict[Any, list[tuple[float, str]]]:
    out: dict[Any, list[tuple[float, str]]] = defaultdict(list)
    for t, chat, text in delivered:
        out[chat].append((t, text or ""))
    return out


async def send_interleaved(bot: Bot, chats: list[int], per: int) -> None:
    """Start the sends round-robin across chats, all concurrently."""
    await asyncio.gather(
        *(bot.send_message(chat, f"{chat}:{i}") for i in range(per) for chat in chats)
    )


def test_a_message_goes_through_and_returns_the_result() -> None:
    throttle = Throttle()
    bot, _ = make_bot(throttle)
    msg = asyncio.run(bot.send_message(7, "hello"))
    assert isinstance(msg, Message) and msg.text == "hello"
    assert throttle.stats == ThrottleStats(sent=1, waited_s=throttle.stats.waited_s)
    assert throttle.stats.waited_s < 0.01


def test_per_chat_order_and_spacing_with_retries() -> None:
    virtual = VirtualTime()
    throttle = Throttle(
        global_rate=1000,
        chat_rate=25,
        backoff=(0.005, 0.02),
        clock=virtual.clock,
        sleep=virtual.sleep,
    )
    bot, session = make_bot(throttle, latency=0.001, time_=virtual)
    chats = [1, 2, 3, 4, 5]
    rng = random.Random(3)
    failures = [retry_after(0), server_error, network_error]
    for chat in chats:
        for i in range(6):
            if rng.random() < 0.3:
                session.plan[(chat, f"{chat}:{i}")] = [rng.choice(failures)]
    planned = sum(len(v) for v in session.plan.values())
    assert planned >= 5

    virtual.run(send_interleaved(bot, chats, 6))
    elapsed = virtual.now

    by_chat = per_chat(session.delivered)
    for chat in chats:
        sends = by_chat[chat]
        assert [text for _, text in sends] == [f"{chat}:{i}" for i in range(6)]
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(sends)]
        assert min(gaps) >= 1 / 25 - 0.002
    assert len(session.delivered) == 30
    assert throttle.stats.sent == 30
    assert throttle.stats.retried_429 + throttle.stats.retried_network == planned
    assert throttle.stats.failed == 0
    # Chats run side by side: far less than 30 sends * 40 ms in a row.
    assert elapsed < 0.7


def test_global_window_and_throughput_with_a_backlog_across_50_chats() -> None:
    rate = 200
    virtual = VirtualTime()  # the throughput is the throttle's, not the machine's
    throttle = Throttle(global_rate=rate, chat_rate=10, clock=virtual.clock, sleep=virtual.sleep)
    bot, session = make_bot(throttle, latency=0.002, time_=virtual)
    virtual.run(send_interleaved(bot, list(range(1000, 1050)), 6))

    times = sorted(t for t, _, _ in session.delivered)
    assert len(times) == 300
    # No window [t, t + 1 s) holds more than `rate` sends (tiny slack for timestamping).
    j = 0
    for i, t in enumerate(times):
        while j < len(times) and times[j] < t + 1.0 - 0.001:
            j += 1
        assert j - i <= rate
    throughput = (len(times) - 1) / (times[-1] - times[0])
    assert throughput >= 0.9 * rate
    assert throughput <= rate * 1.02
    # Spaced out, not bursty.
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert sorted(gaps)[len(gaps) // 2] >= 0.8 / rate
    assert throttle.stats.waited_s > 0


def test_retry_after_waits_then_succeeds_without_blocking_other_chats() -> None:
    virtual = VirtualTime()
    throttle = Throttle(global_rate=100, chat_rate=50, clock=virtual.clock, sleep=virtual.sleep)
    bot, session = make_bot(throttle, time_=virtual)
    session.plan[(1, "1:1")] = [retry_after(1)]
    virtual.run(send_interleaved(bot, [1, 2], 5))

    by_chat = per_chat(session.delivered)
    assert [text for _, text in by_chat[1]] == [f"1:{i}" for i in range(5)]
    assert [text for _, text in by_chat[2]] == [f"2:{i}" for i in range(5)]
    first_try = next(t for t, m in session.attempts if getattr(m, "text", None) == "1:1")
    retried_at = by_chat[1][1][0]
    assert retried_at - first_try >= 1.0 - 0.002
    # Later sends to the same chat waited too; the other chat carried on meanwhile.
    assert by_chat[1][2][0] > retried_at
    assert by_chat[2][-1][0] < first_try + 0.5
    assert throttle.stats.retried_429 == 1
    assert throttle.stats.sent == 10
    assert throttle.stats.failed == 0


def test_network_and_server_errors_back_off_exponentially_then_give_up() -> None:
    delays: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)

    throttle = Throttle(global_rate=None, chat_rate=None, max_retries=4, backoff=(0.5, 2.0),
                        sleep=fake_sleep)  # fmt: skip
    bot, session = make_bot(throttle)
    session.fail_all = network_error
    with pytest.raises(TelegramNetworkError):
        asyncio.run(bot.send_message(1, "x"))
    assert delays == [0.5, 1.0, 2.0, 2.0]
    assert len(session.attempts) == 5
    assert throttle.stats.retried_network == 4
    assert throttle.stats.failed == 1
    assert throttle.stats.sent == 0

    delays.clear()
    session.fail_all = None
    session.plan[(1, "y")] = [server_error, network_error]
    asyncio.run(bot.send_message(1, "y"))
    assert delays == [0.5, 1.0]
    assert throttle.stats.sent == 1
    assert throttle.stats.retried_network == 6


def test_backoff_in_real_time() -> None:
    throttle = Throttle(chat_rate=100, max_retries=2, backoff=(0.02, 0.03))
    bot, session = make_bot(throttle)
    session.plan[(1, "x")] = [server_error, server_error]
    asyncio.run(bot.send_message(1, "x"))
    (t0, _), (t1, _), (t2, _) = session.attempts
    assert t1 - t0 >= 0.02 - 0.002
    assert t2 - t1 >= 0.03 - 0.002
    assert throttle.stats.sent == 1


def test_a_retry_is_a_send_and_respects_the_chat_interval() -> None:
    throttle = Throttle(chat_rate=10, backoff=(0.01, 0.01))
    bot, session = make_bot(throttle)
    session.plan[(1, "x")] = [network_error]
    asyncio.run(bot.send_message(1, "x"))
    (t0, _), (t1, _) = session.attempts
    assert t1 - t0 >= 0.1 - 0.002


@pytest.mark.parametrize(
    "error",
    [
        lambda m: TelegramBadRequest(method=m, message="Bad Request: message is too long"),
        lambda m: TelegramForbiddenError(method=m, message="Forbidden: bot was blocked"),
        lambda m: TelegramEntityTooLarge(method=m, message="Request Entity Too Large"),
    ],
)
def test_client_errors_are_never_retried(error: Failure) -> None:
    throttle = Throttle()
    bot, session = make_bot(throttle)
    session.fail_all = error
    with pytest.raises(type(error(SendMessage(chat_id=1, text="x")))):
        asyncio.run(bot.send_message(1, "x"))
    assert len(session.attempts) == 1
    assert throttle.stats.failed == 1
    assert throttle.stats.retried_network == throttle.stats.retried_429 == 0


def test_get_updates_is_passed_through_untouched() -> None:
    throttle = Throttle()
    bot, session = make_bot(throttle)
    session.fail_all = server_error
    with pytest.raises(TelegramServerError):
        asyncio.run(bot.get_updates())
    with pytest.raises(TelegramServerError):  # the bot's own getUpdates, answered as JSON
        asyncio.run(bot(RawGetUpdates(timeout=1)))
    assert len(session.attempts) == 2
    assert throttle.stats == ThrottleStats()


def test_unlimited_methods_skip_the_limits_but_are_retried() -> None:
    virtual = VirtualTime()
    throttle = Throttle(
        global_rate=5, chat_rate=1, backoff=(0.001, 0.001), clock=virtual.clock, sleep=virtual.sleep
    )
    bot, session = make_bot(throttle, time_=virtual)

    async def run() -> None:
        await asyncio.gather(*(bot.send_chat_action(1, "typing") for _ in range(10)))
        session.plan[(None, None)] = [server_error]
        await bot.answer_callback_query("cb")
        await bot.get_me()

    virtual.run(run())
    assert virtual.now < 0.2  # 10 typing actions at 1/s per chat would take 9 s
    assert throttle.stats.sent == 12
    assert throttle.stats.retried_network == 1
    assert throttle.tracked_chats == 0


def test_string_and_integer_chat_ids_share_one_limit() -> None:
    throttle = Throttle(global_rate=None, chat_rate=20)
    bot, session = make_bot(throttle)

    async def run() -> None:
        await asyncio.gather(bot.send_message(5, "a"), bot.send_message("5", "b"))

    asyncio.run(run())
    (t0, _, _), (t1, _, _) = session.delivered
    assert t1 - t0 >= 1 / 20 - 0.002


def test_idle_chats_are_evicted() -> None:
    throttle = Throttle(global_rate=None, chat_rate=50)
    bot, _ = make_bot(throttle)

    async def run() -> None:
        await asyncio.gather(*(bot.send_message(chat, "hi") for chat in range(20)))
        assert throttle.tracked_chats == 20  # each still has a send slot in the future
        await asyncio.sleep(0.06)
        await bot.send_message(99, "later")  # sweeps the idle ones on the way
        assert throttle.tracked_chats == 1
        await asyncio.sleep(0.03)
        assert throttle.prune() == 1
        assert throttle.tracked_chats == 0

    asyncio.run(run())

    unlimited = Throttle(global_rate=None, chat_rate=None)
    bot, _ = make_bot(unlimited)
    asyncio.run(send_interleaved(bot, list(range(10)), 2))
    assert unlimited.tracked_chats == 0  # nothing to remember: dropped on release


def test_a_busy_chat_is_not_evicted() -> None:
    # No per-chat interval, so only the queue of pending sends keeps the entry alive.
    throttle = Throttle(global_rate=None, chat_rate=None)
    bot, session = make_bot(throttle)
    session.plan[(1, "slow")] = [retry_after(0)] * 3

    async def run() -> None:
        slow = asyncio.ensure_future(bot.send_message(1, "slow"))
        queued = asyncio.ensure_future(bot.send_message(1, "next"))
        await asyncio.sleep(0)
        assert len(session.attempts) == 1  # "slow" is retrying, "next" waits behind it
        assert throttle.prune() == 0
        assert throttle.tracked_chats == 1
        late = asyncio.ensure_future(bot.send_message(1, "late"))
        await asyncio.gather(slow, queued, late)

    asyncio.run(run())
    assert [text for _, _, text in session.delivered] == ["slow", "next", "late"]
    assert throttle.tracked_chats == 0


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ValueError):
        Throttle(global_rate=0)
    with pytest.raises(ValueError):
        Throttle(chat_rate=-1)
    with pytest.raises(ValueError):
        Throttle(max_retries=-1)
    with pytest.raises(ValueError):
        Throttle(backoff=(2.0, 1.0))


# -- several processes on one token, counted together in Redis ------------------------------


def _most_in_a_second(times: list[float]) -> int:
    times = sorted(times)
    return max((sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times)),
               default=0)  # fmt: skip


def test_two_processes_share_one_chat_limit_through_redis_and_outlive_its_restart(
    tmp_path: Path,
) -> None:
    """Two bots (as two processes would) send to one chat at 5/s together, not 5/s each."""
    server = RedisServer(tmp_path)
    server.start()

    async def main() -> None:
        await server.ready()
        coords = [RedisCoordinator(server.url, "t:") for _ in range(2)]
        bots = [
            make_bot(Throttle(global_rate=None, chat_rate=5.0, shared=c, key="telegram:42"))
            for c in coords
        ]
        try:
            await asyncio.gather(*(b.send_message(7, f"{n}:{i}") for i in range(6)
                                   for n, (b, _) in enumerate(bots)))  # fmt: skip
            together = [t for _, s in bots for t, _, _ in s.delivered]
            assert len(together) == 12
            assert _most_in_a_second(together) <= 5 + 1  # one send of slack for timer jitter
            server.kill()  # the sends go on meanwhile, each process within the limit alone
            await asyncio.gather(*(b.send_message(7, f"away:{i}") for i in range(3)
                                   for b, _ in bots))  # fmt: skip
            server.start()
            await server.ready()
            start = time.monotonic()
            while await coords[0].ping() is False or await coords[1].ping() is False:
                assert time.monotonic() - start < 30, "Redis never answered again"
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # past the fallback's own schedule
            after = time.monotonic()
            await asyncio.gather(*(b.send_message(7, f"back:{i}") for i in range(6)
                                   for b, _ in bots))  # fmt: skip
            back = [t for _, s in bots for t, _, text in s.delivered if (text or "")[:4] == "back"]
            assert len(back) == 12 and min(back) >= after
            assert _most_in_a_second(back) <= 5 + 1  # counted together again, no restart
        finally:
            for b, _ in bots:
                await b.session.close()
            for c in coords:
                await c.close()

    try:
        asyncio.run(main())
    finally:
        if server.proc is not None:
            server.kill()
