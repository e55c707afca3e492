"""Who is asking.

Registers the Telegram user, injects the actor, and turns refusals into messages in the
user's language.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiogram import BaseMiddleware
from aiogram.types import CallbackQuery, Chat, Message, TelegramObject, User

from bot.i18n import Lang
from bot.service import ServiceError

if TYPE_CHECKING:
    from bot.telegram.app import TelegramApp


def client_lang(user: User) -> Lang:
    """The language of the user's Telegram client: Chinese for zh*, English otherwise."""
    return "zh" if (user.language_code or "").lower().startswith("zh") else "en"


class ActorMiddleware(BaseMiddleware):
    """Adds ``actor`` (fresh roles from the store) to every message and callback handler."""

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        """Register the sender, then run the handler; a refused operation is answered."""
        user: User | None = data.get("event_from_user")
        if user is None or user.is_bot:
            return None
        app: TelegramApp = data["app"]
        chat: Chat | None = data.get("event_chat")
        actor = app.svc.register(
            str(user.id),
            name=user.full_name,
            lang=client_lang(user),
            chat_id=str(chat.id) if chat is not None and chat.type == "private" else None,
            username=user.username,
        )
        data["actor"] = actor
        try:
            return await handler(event, data)
        except ServiceError as exc:
            text = exc.message[actor.lang]
            if isinstance(event, CallbackQuery):
                await event.answer(text[:200], show_alert=True)
            elif isinstance(event, Message):
                await app.send(event.chat.id, text)
            return None
