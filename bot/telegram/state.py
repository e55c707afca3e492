"""Conversation state on our store (not in memory), FSM states and typed callback data.

Because the state lives in the database, a restart (even ``kill -9``) picks every chat up
where it was. Callback data is short ASCII and stays under Telegram's 64-byte limit; it
is only a request: the service layer checks every value it carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiogram import Bot
from aiogram.filters import Command, Filter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.fsm.storage.base import BaseStorage, DefaultKeyBuilder, StateType, StorageKey
from aiogram.types import Message

from bot.storage import Store


class StoreStorage(BaseStorage):
    """aiogram FSM storage on the trainer's store (table ``chat_state``)."""

    def __init__(self, store: Store):
        self.store = store
        self.keys = DefaultKeyBuilder(with_bot_id=True)

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        """Set the state of a chat."""
        name = state.state if isinstance(state, State) else state
        _, data = self.store.chat_state(self.keys.build(key))
        self.store.set_chat_state(self.keys.build(key), name, data)

    async def get_state(self, key: StorageKey) -> str | None:
        """The state of a chat."""
        return self.store.chat_state(self.keys.build(key))[0]

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        """Replace the data of a chat."""
        state, _ = self.store.chat_state(self.keys.build(key))
        self.store.set_chat_state(self.keys.build(key), state, dict(data))

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        """The data of a chat."""
        return self.store.chat_state(self.keys.build(key))[1]

    async def set_flow(self, key: StorageKey, state: StateType, data: Mapping[str, Any]) -> None:
        """Set the state and the data of a chat in one write."""
        name = state.state if isinstance(state, State) else state
        self.store.set_chat_state(self.keys.build(key), name, dict(data))

    async def close(self) -> None:
        """Nothing to close: the store is closed by its owner."""


async def set_flow(
    context: FSMContext, state: StateType, data: Mapping[str, Any] | None = None
) -> None:
    """Set a chat's state and data together (``None``: clear both).

    FSMContext sets them one at a time, which costs our store two commits.
    """
    if isinstance(context.storage, StoreStorage):
        await context.storage.set_flow(context.key, state, data or {})
    else:
        await context.set_state(state)
        await context.set_data(dict(data or {}))


class IsText(Filter):
    """A text message.

    Our filters are coroutines: aiogram runs a plain function filter, such as an ``F``
    magic filter, in a worker thread for every update it checks.
    """

    async def __call__(self, message: Message) -> bool:
        """Whether the message has text."""
        return message.text is not None


class Cmd(Command):
    """aiogram's Command filter, saying no at once to text that is no command at all.

    A chat reply passes the filter of every command handler before it reaches the
    practice chat, and aiogram's Command parses the whole text each time.
    """

    async def __call__(self, message: Message, bot: Bot) -> bool | dict[str, Any]:
        """Whether the message is this command (and its parsed ``command``)."""
        text = (message.text or message.caption) if isinstance(message, Message) else None
        if not text or not text.startswith(tuple(self.prefix)):
            return False
        return await super().__call__(message, bot)


class IsCommand(Filter):
    """A message that starts with ``/``."""

    async def __call__(self, message: Message) -> bool:
        """Whether the message is a command."""
        return (message.text or "").startswith("/")


class IsPlainText(Filter):
    """A text message that is not a command."""

    async def __call__(self, message: Message) -> bool:
        """Whether the message is text and no command."""
        return message.text is not None and not message.text.startswith("/")


class Flow(StatesGroup):
    """Where a chat is."""

    practising = State()
    dispute_reason = State()
    ruling_reason = State()


class PracticeCb(CallbackData, prefix="p"):
    """A step of choosing a practice: scenario, difficulty, mode (or an assignment)."""

    step: str
    scenario: str = ""
    difficulty: str = ""
    mode: str = ""
    assignment: int = 0


class DisputeCb(CallbackData, prefix="dp"):
    """Dispute one ledger entry of a session."""

    session: str
    entry: int


class RulingCb(CallbackData, prefix="rl"):
    """A mentor's ruling on a dispute."""

    dispute: int
    verdict: str


class TeamCb(CallbackData, prefix="tm"):
    """A team report (``r``) or CSV export (``x``)."""

    team: int
    action: str


class LangCb(CallbackData, prefix="lg"):
    """Switch the user's language."""

    lang: str
