"""/practice (scenario, difficulty, mode), the chat with the customer, /hint and /end.

In coach mode a reply's feedback and the customer's next line go out as one message, so
one trainee reply costs one bot message.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiogram import Router
from aiogram.fsm.context import FSMContext
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
)

from bot.engine import ReplyRejected, Session
from bot.service import DIFFICULTIES, Actor, Invalid
from bot.telegram import texts
from bot.telegram.state import Cmd, Flow, IsCommand, IsText, PracticeCb, set_flow
from bot.telegram.texts import t

if TYPE_CHECKING:
    from bot.telegram.app import TelegramApp

MAX_CHOICES = 24


def _button(text: str, data: PracticeCb) -> list[InlineKeyboardButton]:
    return [InlineKeyboardButton(text=text[:60], callback_data=data.pack())]


def _customer_name(session: Session) -> str:
    return session.scenario.scenario.customer.persona.name.get(session.lang)


async def _begin(
    app: TelegramApp, chat_id: int, actor: Actor, state: FSMContext, data: PracticeCb
) -> None:
    async with app.typing(chat_id):
        session, opening = await app.svc.start_practice(
            actor,
            data.scenario,
            difficulty=data.difficulty or "normal",
            mode=data.mode or "coach",
            assignment_id=data.assignment or None,
        )
    app.live[session.id] = session
    await set_flow(state, Flow.practising, {"session": session.id})
    lang = actor.lang
    s = session.scenario.scenario
    head = t(
        "starting",
        lang,
        title=s.title.get(lang),
        difficulty=t(session.difficulty, lang),
        mode=t(session.mode, lang),
    )
    briefing = t("briefing", lang, briefing=s.briefing.get(lang))
    await app.send(
        chat_id,
        f"{head}\n\n{briefing}\n\n{texts.customer_line(_customer_name(session), opening, lang)}",
    )
    app.shown_at[session.id] = time.monotonic()


async def _finish(
    app: TelegramApp, chat_id: int, actor: Actor, state: FSMContext, sid: str
) -> None:
    app.forget(sid)
    await set_flow(state, None)
    await app.send_result(chat_id, actor, sid)


def router() -> Router:
    """The practice router."""
    r = Router(name="practice")

    @r.message(Cmd("practice"))
    async def practice(message: Message, actor: Actor, app: TelegramApp) -> None:
        lang = actor.lang
        rows = []
        for choice in app.svc.practice_choices(actor)[:MAX_CHOICES]:
            if choice.assignment is not None:
                if choice.attempts_left == 0:
                    continue
                data = PracticeCb(step="a", assignment=choice.assignment.id)
            else:
                data = PracticeCb(step="s", scenario=choice.scenario_id)
            rows.append(_button(texts.choice_label(choice, lang), data))
        await app.send(
            message.chat.id, t("pick_scenario", lang), InlineKeyboardMarkup(inline_keyboard=rows)
        )

    @r.callback_query(PracticeCb.filter())
    async def choose(
        query: CallbackQuery,
        callback_data: PracticeCb,
        actor: Actor,
        app: TelegramApp,
        state: FSMContext,
    ) -> None:
        lang = actor.lang
        data = callback_data
        # Each branch checks before answering: a refusal is answered once, as an alert.
        if data.step in ("s", "d") and data.scenario not in app.library.scenarios:
            raise Invalid("bad_choice", {"zh": "没有这个场景。", "en": "No such scenario."})
        if data.step == "s":
            title = app.library.get(data.scenario).scenario.title.get(lang)
            rows = [
                _button(t(d, lang), PracticeCb(step="d", scenario=data.scenario, difficulty=d))
                for d in DIFFICULTIES
            ]
            await app.send(
                query.from_user.id,
                t("pick_difficulty", lang, title=title),
                InlineKeyboardMarkup(inline_keyboard=rows),
            )
            await query.answer()
        elif data.step == "d":
            if data.difficulty not in DIFFICULTIES:
                raise Invalid("bad_choice", {"zh": "没有这个难度。", "en": "No such difficulty."})
            rows = [
                _button(
                    t(m, lang),
                    PracticeCb(
                        step="m", scenario=data.scenario, difficulty=data.difficulty, mode=m
                    ),
                )
                for m in ("coach", "exam")
            ]
            await app.send(
                query.from_user.id, t("pick_mode", lang), InlineKeyboardMarkup(inline_keyboard=rows)
            )
            await query.answer()
        elif data.step in ("m", "a"):
            await _begin(app, query.from_user.id, actor, state, data)
            await query.answer()
        else:  # a step this version does not know: an old or forged button
            await query.answer(t("stale_button", lang), show_alert=True)

    @r.message(Cmd("end"))
    async def end(message: Message, actor: Actor, app: TelegramApp, state: FSMContext) -> None:
        session, _ = await app.session_for(actor)
        if session is None:
            await set_flow(state, None)
            await app.send(message.chat.id, t("no_session", actor.lang))
            return
        await session.end()
        await _finish(app, message.chat.id, actor, state, session.id)

    @r.message(Cmd("hint"))
    async def hint(message: Message, actor: Actor, app: TelegramApp) -> None:
        session, _ = await app.session_for(actor)
        if session is None:
            await app.send(message.chat.id, t("no_session", actor.lang))
        elif session.mode != "coach":
            await app.send(message.chat.id, t("no_hint_exam", actor.lang))
        else:
            await app.send(message.chat.id, t("hint", actor.lang, text=session.hint()[actor.lang]))

    @r.message(IsCommand())
    async def unknown(message: Message, actor: Actor, app: TelegramApp) -> None:
        await app.send(message.chat.id, t("unknown_command", actor.lang))

    @r.message(IsText())
    async def reply(
        message: Message,
        event_update: Update,
        actor: Actor,
        app: TelegramApp,
        state: FSMContext,
    ) -> None:
        lang = actor.lang
        chat_id = message.chat.id
        session, pending = await app.session_for(actor)
        if session is None:
            await set_flow(state, None)
            await app.send(chat_id, t("no_session", lang))
            return
        ref = str(event_update.update_id)
        stored = app.store.turn_with_ref(session.id, ref)
        if stored is not None:
            # A crash interrupted this very update after the reply was saved: show what the
            # customer answered (resume produced it if it was missing) instead of replying twice.
            answer = pending or next(
                (
                    x.text
                    for x in app.store.turns(session.id)
                    if x.idx > stored and x.role == "customer"
                ),
                None,
            )
            number = sum(
                1 for x in app.store.turns(session.id) if x.role == "trainee" and x.idx <= stored
            )
            record = session.grader.records[number - 1]
            note = None
        else:
            shown = app.shown_at.get(session.id)
            latency = None if shown is None else time.monotonic() - shown
            try:
                async with app.typing(chat_id):
                    result = await session.reply(message.text or "", latency, ref=ref)
            except ReplyRejected as exc:
                await app.send(chat_id, exc.message[lang])
                return
            record, answer, note = result.record, result.customer_text, result.note
        parts = []
        if session.mode == "coach":
            better = session.better_reply(record)
            parts.append(texts.feedback(record.number, record.grades, better, lang))
        if note:
            parts.append(note[lang])
        if answer:
            parts.append(texts.customer_line(_customer_name(session), answer, lang))
        if parts:
            await app.send(chat_id, "\n\n".join(parts))
        app.shown_at[session.id] = time.monotonic()
        if session.ended:
            await _finish(app, chat_id, actor, state, session.id)

    @r.message()
    async def other(message: Message, actor: Actor, app: TelegramApp) -> None:
        await app.send(message.chat.id, t("not_text", actor.lang))

    return r
