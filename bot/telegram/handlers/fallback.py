"""The last router: answers a button press that no other handler took.

Callback data that matches no handler (forged or malformed data, or a button from an older
version of the bot) would otherwise never be answered, and the user's client would show a
spinner until it times out. This router is included after every other one, and it handles
callback queries only, so it never shadows a real handler or any message handler.
"""

from __future__ import annotations

from aiogram import Router
from aiogram.types import CallbackQuery

from bot.service import Actor
from bot.telegram.texts import t


def router() -> Router:
    """The fallback router (include it last)."""
    r = Router(name="fallback")

    @r.callback_query()
    async def stale_button(query: CallbackQuery, actor: Actor) -> None:
        await query.answer(t("stale_button", actor.lang), show_alert=True)

    return r
