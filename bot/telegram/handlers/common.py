"""/start (with an invite code), /help, /lang, /web, /link and /cancel."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiogram import F, Router
from aiogram.filters import CommandObject, CommandStart
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.service import LINK_CODE_MINUTES, Actor
from bot.telegram import texts
from bot.telegram.state import Cmd, LangCb, set_flow
from bot.telegram.texts import t

if TYPE_CHECKING:
    from bot.telegram.app import TelegramApp

_JOINED = {"admin": "joined_admin", "mentor": "joined_mentor", "trainee": "joined_trainee"}


def help_text(actor: Actor) -> str:
    """The commands this actor may use."""
    parts = [t("help_trainee", actor.lang)]
    if actor.mentor_of or actor.is_admin:
        parts.append(t("help_mentor", actor.lang))
    if actor.is_admin:
        parts.append(t("help_admin", actor.lang))
    return "\n\n".join(parts)


def router() -> Router:
    """The common router."""
    r = Router(name="common")

    @r.message(CommandStart())
    async def start(
        message: Message, command: CommandObject, actor: Actor, app: TelegramApp
    ) -> None:
        code = (command.args or "").strip()
        if code:
            role, team = app.svc.join(actor, code)
            actor = app.svc.actor(actor.id)
            name = "" if team is None else team.name
            await app.send(message.chat.id, t(_JOINED[role], actor.lang, team=name))
            if role == "trainee":  # assignments made before they joined
                notes = [
                    texts.assignment_note(c.assignment, c.title[actor.lang], actor.lang)
                    for c in app.svc.practice_choices(actor)
                    if c.assignment is not None and not c.passed and c.attempts_left != 0
                ]
                if notes:
                    await app.send(message.chat.id, "\n\n".join(notes))
        await app.send(message.chat.id, t("welcome", actor.lang, name=actor.user.name))

    @r.message(Cmd("help"))
    async def help_(message: Message, actor: Actor, app: TelegramApp) -> None:
        await app.send(message.chat.id, help_text(actor))

    @r.message(Cmd("lang"))
    async def lang(
        message: Message, command: CommandObject, actor: Actor, app: TelegramApp
    ) -> None:
        choice = (command.args or "").strip().lower()
        if choice in ("zh", "en"):
            actor = app.svc.set_lang(actor, choice)  # type: ignore[arg-type]
            await app.send(message.chat.id, t("lang_set", actor.lang))
            return
        keyboard = InlineKeyboardMarkup(
            inline_keyboard=[
                [
                    InlineKeyboardButton(text="中文", callback_data=LangCb(lang="zh").pack()),
                    InlineKeyboardButton(text="English", callback_data=LangCb(lang="en").pack()),
                ]
            ]
        )
        await app.send(message.chat.id, t("lang_pick", actor.lang), keyboard)

    @r.callback_query(LangCb.filter(F.lang.in_({"zh", "en"})))
    async def lang_button(
        query: CallbackQuery, callback_data: LangCb, actor: Actor, app: TelegramApp
    ) -> None:
        actor = app.svc.set_lang(actor, callback_data.lang)  # type: ignore[arg-type]
        await query.answer()
        await app.send(query.from_user.id, t("lang_set", actor.lang))

    @r.message(Cmd("web"))
    async def web_code(message: Message, actor: Actor, app: TelegramApp) -> None:
        code = app.svc.link_code(actor)
        text = t("web_code", actor.lang, code=code, minutes=LINK_CODE_MINUTES)
        await app.send(message.chat.id, text)

    @r.message(Cmd("link"))
    async def link(
        message: Message, command: CommandObject, actor: Actor, app: TelegramApp
    ) -> None:
        code = (command.args or "").strip()
        if not code:
            await app.send(message.chat.id, t("usage_link", actor.lang))
            return
        actor = app.svc.link_here(actor, code)
        await app.send(message.chat.id, t("linked", actor.lang, name=actor.user.name))

    @r.message(Cmd("cancel"))
    async def cancel(message: Message, actor: Actor, app: TelegramApp, state: FSMContext) -> None:
        await set_flow(state, None)
        await app.send(message.chat.id, t("cancelled", actor.lang))

    return r
