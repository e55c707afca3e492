"""What a change tells people, whichever channel they use: notices in the outbox.

A notice (an assignment, a new dispute, a ruling, a changed grade) is stored with the
change that causes it, addressed to the reader's channel, as a key, the reader's language
and plain values; the channel that delivers it puts it into its own words (Telegram names
its commands, the web links its pages). So a ruling made on the web reaches a Telegram
trainee, and a dispute sent from Telegram reaches a mentor who works on the web.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from bot.storage import Owed, UserRow

TELEGRAM = "telegram:"
"""Outbox addresses of Telegram chats: ``telegram:<chat id>``."""
WEB = "web:"
"""Outbox addresses of web accounts: ``web:<user id>``, shown on their next page."""
KIND = "notice"

Key = Literal["assignments", "dispute_new", "ruled_trainee", "overridden_trainee", "drill_planned"]
"""``assignments``: {ids}; ``dispute_new``: {id, trainee, session, entry, points, reason};
``ruled_trainee``: {id, session, verdict, reason, total}; ``overridden_trainee``: {session,
entry, old, new, reason, total}; ``drill_planned``: {id, title_zh, title_en, starts,
minutes, concurrency}. Numbers arrive formatted as text."""


def addresses(user: UserRow) -> list[str]:
    """Where ``user`` is told things: their web account, their Telegram chat, or both.

    Both once linked; none for a Telegram user who never opened the bot.
    """
    found = [f"{WEB}{user.id}"] if user.platform == "web" else []
    if user.chat_id:
        found.append(f"{TELEGRAM}{user.chat_id}")
    return found


def owed(users: Iterable[UserRow], key: Key, values: dict[str, Any], ref: str | None) -> list[Owed]:
    """The notice ``key`` for each user, in their language, in each channel they use."""
    out: list[Owed] = []
    for user in users:
        lang = "en" if user.lang == "en" else "zh"
        body = {"key": key, "lang": lang, "values": values}
        out.extend(Owed(where, ref, ((KIND, body),)) for where in addresses(user))
    return out
