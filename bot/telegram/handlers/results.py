"""/history, /me and disputes raised by trainees."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiogram import Router
from aiogram.filters import CommandObject, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message, Update

from bot.service import Actor, Forbidden
from bot.telegram import texts
from bot.telegram.state import Cmd, DisputeCb, Flow, IsPlainText, set_flow
from bot.telegram.texts import t

if TYPE_CHECKING:
    from bot.telegram.app import TelegramApp


def router() -> Router:
    """The results router."""
    r = Router(name="results")

    @r.message(Cmd("history"))
    async def history(
        message: Message, command: CommandObject, actor: Actor, app: TelegramApp
    ) -> None:
        session_id = (command.args or "").strip()
        if session_id:  # one session: its scorecard again, with its Dispute buttons
            row = app.svc.session_row(actor, session_id)
            if row.status != "ended":
                await app.send(message.chat.id, t("history_running", actor.lang))
                return
            await app.send_card(message.chat.id, actor, row.id)
            return
        rows = app.svc.history(actor)
        if not rows:
            await app.send(message.chat.id, t("history_empty", actor.lang))
            return
        lines = [t("history", actor.lang)]
        for row in rows:
            title = app.library.scenarios.get(row.scenario_id)
            name = title.scenario.title.get(actor.lang) if title else row.scenario_id
            view = app.svc.session_view(actor, row.id)
            lines.append(texts.session_line(view, actor.lang, name))
        await app.send(message.chat.id, "\n".join(lines))

    @r.message(Cmd("me"))
    async def me(message: Message, actor: Actor, app: TelegramApp) -> None:
        await app.send(message.chat.id, texts.profile(app.svc.profile(actor), actor.lang))

    @r.callback_query(DisputeCb.filter())
    async def dispute(
        query: CallbackQuery,
        callback_data: DisputeCb,
        actor: Actor,
        app: TelegramApp,
        state: FSMContext,
    ) -> None:
        view = app.svc.session_view(actor, callback_data.session)
        if view.row.trainee != actor.user.trainee:
            raise Forbidden(
                "own_only",
                {
                    "zh": "只有学员本人可以对自己的扣分提出申诉。",
                    "en": "Only the trainee can dispute their own deductions.",
                },
            )
        entry = next((e for e in view.entries if e.number == callback_data.entry), None)
        if entry is None:  # a forged or outdated button
            await query.answer(t("stale_button", actor.lang), show_alert=True)
            return
        app.svc.disputable(actor, view.row.id, entry.number)  # refused now, not after the why
        await query.answer()
        await set_flow(state, Flow.dispute_reason, {"session": view.row.id, "entry": entry.number})
        await app.send(
            query.from_user.id,
            t("dispute_ask", actor.lang, n=entry.number, points=f"{entry.points:g}"),
        )

    @r.message(StateFilter(Flow.dispute_reason), IsPlainText())
    async def dispute_reason(
        message: Message,
        event_update: Update,
        actor: Actor,
        app: TelegramApp,
        state: FSMContext,
    ) -> None:
        data = await state.get_data()
        dispute = app.svc.open_dispute(
            actor,
            data["session"],
            int(data["entry"]),
            message.text or "",
            ref=str(event_update.update_id),
        )
        await set_flow(state, None)
        await app.send(message.chat.id, t("dispute_saved", actor.lang, id=dispute.id))

    return r
