"""Admin commands: /newteam and /invite (mentors may invite trainees to their teams)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiogram import Router
from aiogram.filters import CommandObject
from aiogram.types import Message

from bot.service import ROLES, Actor, Invalid
from bot.telegram.state import Cmd
from bot.telegram.texts import t

if TYPE_CHECKING:
    from bot.telegram.app import TelegramApp


def router() -> Router:
    """The admin router."""
    r = Router(name="admin")

    @r.message(Cmd("newteam"))
    async def new_team(
        message: Message, command: CommandObject, actor: Actor, app: TelegramApp
    ) -> None:
        name = (command.args or "").strip()
        if not name:
            await app.send(message.chat.id, t("usage_newteam", actor.lang))
            return
        team = app.svc.create_team(name, actor)
        await app.send(message.chat.id, t("team_created", actor.lang, team=team.name))

    @r.message(Cmd("invite"))
    async def invite(
        message: Message, command: CommandObject, actor: Actor, app: TelegramApp
    ) -> None:
        args = (command.args or "").split()
        if len(args) < 2 or args[1] not in ROLES:
            await app.send(message.chat.id, t("usage_invite", actor.lang))
            return
        team_name, role = args[0], args[1]
        try:
            uses = int(args[2]) if len(args) > 2 else (1 if role == "admin" else 50)
        except ValueError:
            raise Invalid(
                "bad_uses", {"zh": "次数必须是数字。", "en": "Uses must be a number."}
            ) from None
        team = None if role == "admin" else app.svc.team_named(team_name, actor)
        code = app.svc.create_invite(role, team, actor, uses=uses)
        link = f"https://t.me/{app.username}?start={code}"
        await app.send(
            message.chat.id,
            t("invite_link", actor.lang, role=role, uses=uses, link=link, code=code),
        )

    return r
