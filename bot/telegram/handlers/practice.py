"""/practice (scenario, difficulty, mode), the chat with the customer, /hint and /end.

In coach mode a reply's feedback and the customer's next line go out as one message, so
one trainee reply costs one bot message.
"""

from __future__ import annotations

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

from bot.drill.runner import LABEL
from bot.engine import ReplyRejected
from bot.service import DIFFICULTIES, Actor, Invalid
from bot.telegram import texts
from bot.telegram.state import Cmd, Flow, IsCommand, IsText, PracticeCb, set_flow
from bot.telegram.texts import t

if TYPE_CHECKING:
    from bot.telegram.app import TelegramApp

MAX_CHOICES = 24


async def _drill_reply(
    message: Message, update: Update, actor: Actor, app: TelegramApp, drill_id: int
) -> None:
    """A reply in a running drill goes to the customer whose message it quotes.

    Without a quote it goes to the one customer waiting; with several waiting the trainee
    is asked to quote, never guessed for.
    """
    chat, lang = message.chat.id, actor.lang
    quoted = message.reply_to_message.text if message.reply_to_message else None
    found = LABEL.match(quoted or "")
    if found is not None:
        label = found.group(1)
    else:
        waiting = app.svc.drill_waiting(actor, drill_id)
        if len(waiting) != 1:
            labels = "、".join(w.label for w in waiting)
            key = "drill_which" if waiting else "drill_nobody"
            await app.send(chat, t(key, lang, count=len(waiting), labels=labels))
            return
        label = waiting[0].label
    try:
        async with app.typing(chat):
            await app.svc.drill_reply(
                actor, drill_id, label, message.text or "", ref=str(update.update_id)
            )
    except (ReplyRejected, Invalid) as refused:
        await app.send(chat, refused.message[lang])


def _button(text: str, data: PracticeCb) -> list[InlineKeyboardButton]:
    return [InlineKeyboardButton(text=text[:60], callback_data=data.pack())]


async def _begin(
    app: TelegramApp,
    chat_id: int,
    actor: Actor,
    state: FSMContext,
    data: PracticeCb,
    update_id: int,
) -> None:
    postbox = app.postbox(chat_id, actor, update_id)
    session, opened = await app.svc.session_for(actor, postbox)
    if session is not None and opened is not None and not session.grader.records:
        # A crash came while this session was being opened: rebuilding it owed the opening.
        await set_flow(state, Flow.practising, {"session": session.id})
        return
    async with app.typing(chat_id):
        session, _ = await app.svc.start_practice(
            actor,
            data.scenario,
            difficulty=data.difficulty or "normal",
            mode=data.mode or "coach",
            assignment_id=data.assignment or None,
            postbox=postbox,
        )
    await set_flow(state, Flow.practising, {"session": session.id})


async def _finished(app: TelegramApp, state: FSMContext, session_id: str) -> None:
    """Forget an ended session; its scorecard is owed to the chat (sent after the handler)."""
    app.svc.forget(session_id)
    await set_flow(state, None)


def router() -> Router:
    """The practice router."""
    r = Router(name="practice")

    @r.message(Cmd("practice"))
    async def practice(message: Message, actor: Actor, app: TelegramApp) -> None:
        lang = actor.lang
        app.svc.ensure_no_session(actor)  # said now, not after three menus
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
        event_update: Update,
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
            await _begin(app, query.from_user.id, actor, state, data, event_update.update_id)
            await query.answer()
            await app.deliver(query.from_user.id)  # the briefing first, then the clean-up
        else:  # a step this version does not know: an old or forged button
            await query.answer(t("stale_button", lang), show_alert=True)
            return
        await app.drop_buttons(query)

    @r.message(Cmd("end"))
    async def end(
        message: Message, event_update: Update, actor: Actor, app: TelegramApp, state: FSMContext
    ) -> None:
        postbox = app.postbox(message.chat.id, actor, event_update.update_id)
        session, _ = await app.svc.session_for(actor, postbox)
        if session is None:
            await set_flow(state, None)
            await app.send(message.chat.id, t("no_session", actor.lang))
            return
        await app.svc.end(session, postbox=postbox)
        await _finished(app, state, session.id)

    @r.message(Cmd("hint"))
    async def hint(message: Message, event_update: Update, actor: Actor, app: TelegramApp) -> None:
        postbox = app.postbox(message.chat.id, actor, event_update.update_id)
        session, _ = await app.svc.session_for(actor, postbox)
        if session is None:
            await app.send(message.chat.id, t("no_session", actor.lang))
        elif session.mode != "coach":
            await app.send(message.chat.id, t("no_hint_exam", actor.lang))
        else:
            await app.send(message.chat.id, t("hint", actor.lang, text=session.hint()[actor.lang]))

    @r.message(Cmd("leaderboard"))
    async def leaderboard(message: Message, actor: Actor, app: TelegramApp) -> None:
        arg = (message.text or "").split(maxsplit=1)[1:]
        drill = app.svc.drill_to_show(actor, int(arg[0]) if arg and arg[0].isdigit() else None)
        if drill is None:
            await app.send(message.chat.id, t("no_drill", actor.lang))
            return
        await app.send(
            message.chat.id, texts.leaderboard(app.svc.drill_report(actor, drill.id), actor.lang)
        )

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
        drill = app.svc.my_drill(actor)
        if drill is not None and drill.status == "running":
            await _drill_reply(message, event_update, actor, app, drill.id)
            return
        postbox = app.postbox(chat_id, actor, event_update.update_id)
        session, _ = await app.svc.session_for(actor, postbox)
        if session is None:
            await set_flow(state, None)
            if not actor.roles and not app.svc.history(actor, limit=1):  # new here, no invite
                await app.answer_burst(chat_id, t("welcome", lang, name=actor.user.name))
            else:
                await app.answer_burst(chat_id, t("no_session", lang))
            return
        ref = str(event_update.update_id)
        if session.ended or app.store.turn_with_ref(session.id, ref) is not None:
            # A crash interrupted this very update after the reply was saved: rebuilding the
            # session answered it and owed the answer (and the scorecard if it ended) here.
            if session.ended:
                await _finished(app, state, session.id)
            return
        try:
            async with app.typing(chat_id):
                await app.svc.reply(session, message.text or "", ref=ref, postbox=postbox)
        except ReplyRejected as exc:
            await app.send(chat_id, exc.message[lang])
            return
        if session.ended:
            await _finished(app, state, session.id)

    @r.message()
    async def other(message: Message, actor: Actor, app: TelegramApp) -> None:
        await app.send(message.chat.id, t("not_text", actor.lang))

    return r
