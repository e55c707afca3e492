"""Mentor commands: /team, /assign, /sessions, /transcript, /override, /disputes, /export."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiogram import F, Router
from aiogram.filters import CommandObject, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.types import (
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
)

from bot.i18n import Lang
from bot.service import VERDICTS, Actor, Forbidden, Invalid, SessionView
from bot.storage import TeamRow
from bot.telegram import texts
from bot.telegram.session import API_FAILURES
from bot.telegram.state import Cmd, Flow, IsPlainText, RulingCb, TeamCb, set_flow
from bot.telegram.texts import t

if TYPE_CHECKING:
    from bot.telegram.app import TelegramApp

MAX_DISPUTES_SHOWN = 10


log = logging.getLogger("trainer.telegram")


def _require_mentor(actor: Actor) -> None:
    if not (actor.mentor_of or actor.is_admin):
        raise Forbidden(
            "mentors_only",
            {
                "zh": "只有导师和管理员可以使用这个命令。",
                "en": "Only mentors and admins can do that.",
            },
        )


def _number(value: str, key: str, lang_hint: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise Invalid(
            "bad_number",
            {"zh": f"{key} 必须是数字：{lang_hint}", "en": f"{key} must be a number: {lang_hint}"},
        ) from None


def parse_assign(args: str) -> tuple[list[str], dict[str, str]]:
    """Split ``/assign`` arguments into scenario ids and ``key=value`` options."""
    words = args.split()
    if not words or "=" in words[0]:
        return [], {}
    options: dict[str, str] = {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep or not value:
            raise ValueError(word)
        options[key.lower()] = value
    return [s for s in words[0].split(",") if s], options


async def _parsed(
    app: TelegramApp,
    chat_id: int,
    args: str | None,
    usage: str,
    lang: Lang,
    known: set[str],
    enough: Callable[[list[str], dict[str, str]], bool],
) -> tuple[list[str], dict[str, str]] | None:
    """A mentor command's words and ``key=value`` options, or None once the usage is sent.

    A malformed or unknown option is named; arguments that are not ``enough`` get the usage.
    """
    try:
        words, options = parse_assign(args or "")
    except ValueError as exc:
        bad = str(exc.args[0])
    else:
        unknown = sorted(set(options) - known)
        bad = unknown[0] if unknown else ""
        if not bad and enough(words, options):
            return words, options
    await app.send(chat_id, t("bad_option", lang, option=bad, usage=usage) if bad else usage)
    return None


async def _team_or_pick(
    app: TelegramApp, chat_id: int, actor: Actor, name: str, action: str
) -> TeamRow | None:
    """The team named (or the only one); otherwise offer a keyboard and return None."""
    if name:
        return app.svc.team_named(name, actor)
    teams = app.svc.teams(actor)
    if not teams:
        await app.send(chat_id, t("no_teams", actor.lang))
        return None
    if len(teams) == 1:
        return teams[0]
    rows = [
        [
            InlineKeyboardButton(
                text=team.name[:60], callback_data=TeamCb(team=team.id, action=action).pack()
            )
        ]
        for team in teams[:30]
    ]
    await app.send(chat_id, t("pick_team", actor.lang), InlineKeyboardMarkup(inline_keyboard=rows))
    return None


async def _report(app: TelegramApp, chat_id: int, actor: Actor, team: TeamRow) -> None:
    report = app.svc.team_report(actor, team)
    keyboard = InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text="CSV", callback_data=TeamCb(team=team.id, action="x").pack()
                )
            ]
        ]
    )
    await app.send(chat_id, texts.team_report(report, actor.lang), keyboard)


async def _export(app: TelegramApp, chat_id: int, actor: Actor, team: TeamRow) -> None:
    data = app.svc.export_csv(actor, team).encode("utf-8")
    stamp = dt.date.today().isoformat()
    try:
        await app.bot.send_document(
            chat_id,
            BufferedInputFile(data, filename=f"team-{team.id}-{stamp}.csv"),
            caption=t("exported", actor.lang, team=team.name),
        )
    except API_FAILURES as exc:  # a server without files
        log.warning("sendDocument failed (%s); the CSV goes out as text", exc)
        await app.send(chat_id, t("export_as_text", actor.lang, team=team.name, csv=data.decode()))


def _adjusted(view: SessionView) -> str:
    """A session's total after mentors' changes, as shown in messages."""
    return "—" if view.adjusted_total is None else f"{view.adjusted_total:.1f}"


def _dispute_text(app: TelegramApp, row: Any, view: Any, lang: Lang) -> str:
    entry = view.entries[row.entry - 1]
    owner = app.store.user(row.user_id)
    return t(
        "dispute_item",
        lang,
        id=row.id,
        trainee=owner.name if owner else "?",
        session=row.session_id,
        entry=row.entry,
        item=entry.entry.item_title[lang],
        points=f"{entry.points:g}",
        why=entry.entry.reason[lang],
        quote=entry.entry.quote or "—",
        reason=row.reason,
    )


def router() -> Router:
    """The mentor router."""
    r = Router(name="mentor")

    @r.message(Cmd("team"))
    async def team(
        message: Message, command: CommandObject, actor: Actor, app: TelegramApp
    ) -> None:
        _require_mentor(actor)
        chosen = await _team_or_pick(app, message.chat.id, actor, (command.args or "").strip(), "r")
        if chosen is not None:
            await _report(app, message.chat.id, actor, chosen)

    @r.message(Cmd("export"))
    async def export(
        message: Message, command: CommandObject, actor: Actor, app: TelegramApp
    ) -> None:
        _require_mentor(actor)
        chosen = await _team_or_pick(app, message.chat.id, actor, (command.args or "").strip(), "x")
        if chosen is not None:
            await _export(app, message.chat.id, actor, chosen)

    @r.callback_query(TeamCb.filter(F.action.in_({"r", "x"})))
    async def team_button(
        query: CallbackQuery, callback_data: TeamCb, actor: Actor, app: TelegramApp
    ) -> None:
        chosen = app.store.team(callback_data.team)
        if chosen is None or not actor.mentors(chosen.id):
            raise Forbidden(
                "forbidden",
                {"zh": "没有权限：这不是你的团队。", "en": "Not allowed: not your team."},
            )
        await query.answer()
        if callback_data.action == "r":
            await _report(app, query.from_user.id, actor, chosen)
        else:
            await _export(app, query.from_user.id, actor, chosen)

    @r.message(Cmd("assign"))
    async def assign(
        message: Message,
        command: CommandObject,
        event_update: Update,
        actor: Actor,
        app: TelegramApp,
    ) -> None:
        _require_mentor(actor)
        lang = actor.lang
        usage = t("usage_assign", lang, ids=", ".join(app.library.ids()))
        parsed = await _parsed(
            app, message.chat.id, command.args, usage, lang,
            {"team", "trainee", "due", "pass", "attempts", "difficulty", "mode"},
            lambda ids, options: bool(ids) and ("team" in options) != ("trainee" in options),
        )  # fmt: skip
        if parsed is None:
            return
        scenario_ids, options = parsed
        due = None
        if "due" in options:
            try:
                due = dt.date.fromisoformat(options["due"])
            except ValueError:
                await app.send(
                    message.chat.id, t("bad_option", lang, option=options["due"], usage=usage)
                )
                return
        attempts = (
            int(_number(options["attempts"], "attempts", usage)) if "attempts" in options else None
        )
        target_team = app.svc.team_named(options["team"], actor) if "team" in options else None

        rows, notified = app.svc.assign(
            actor,
            scenario_ids,
            team=target_team,
            trainee=options.get("trainee"),
            due=due,
            pass_mark=_number(options.get("pass", "80"), "pass", usage),
            attempts=attempts,
            difficulty=options.get("difficulty", "normal"),
            mode=options.get("mode", "exam"),
            ref=str(event_update.update_id),
        )
        target = options.get("team") or options.get("trainee") or ""
        await app.send(
            message.chat.id,
            t("assigned", lang, n=len(rows), target=target, notified=len(notified)),
        )

    @r.message(Cmd("drill"))
    async def drill(
        message: Message,
        command: CommandObject,
        event_update: Update,
        actor: Actor,
        app: TelegramApp,
    ) -> None:
        _require_mentor(actor)
        lang = actor.lang
        usage = t("usage_drill", lang, presets=", ".join(app.library.drills))
        parsed = await _parsed(
            app, message.chat.id, command.args, usage, lang, {"team", "minutes", "concurrency"},
            lambda presets, options: len(presets) == 1 and "team" in options,
        )  # fmt: skip
        if parsed is None:
            return
        presets, options = parsed
        team = app.svc.team_named(options["team"], actor)
        concurrency = options.get("concurrency")
        planned, load, members = app.svc.plan_drill(
            actor,
            presets[0],
            teams=[team],
            minutes=_number(options["minutes"], "minutes", usage) if "minutes" in options else None,
            concurrency=int(_number(concurrency, "concurrency", usage)) if concurrency else None,
            ref=str(event_update.update_id),
        )
        lines = [
            t(
                "drill_planned_by_you",
                lang,
                id=planned.id,
                trainees=len(members),
                rate=f"{load.messages_per_s:.1f}",
            )
        ]
        if not load.fits_telegram(len(members)):
            lines.append(t("drill_too_big", lang, carries=load.telegram_trainees))
        await app.send(message.chat.id, "\n".join(lines))

    @r.message(Cmd("sessions"))
    async def sessions(
        message: Message, command: CommandObject, actor: Actor, app: TelegramApp
    ) -> None:
        _require_mentor(actor)
        token = (command.args or "").strip()
        if not token:
            await app.send(message.chat.id, t("usage_sessions", actor.lang))
            return
        user, _ = app.svc.trainee_target(actor, token)
        lines = [t("sessions_of", actor.lang, name=user.name)]
        for row in app.store.sessions(user.trainee, limit=30):
            title = app.library.scenarios.get(row.scenario_id)
            name = title.scenario.title.get(actor.lang) if title else row.scenario_id
            lines.append(texts.session_line(app.svc.session_view(actor, row.id), actor.lang, name))
        await app.send(message.chat.id, "\n".join(lines))

    @r.message(Cmd("transcript"))
    async def transcript(
        message: Message, command: CommandObject, actor: Actor, app: TelegramApp
    ) -> None:
        session_id = (command.args or "").strip()
        if not session_id:
            await app.send(message.chat.id, t("usage_transcript", actor.lang))
            return
        view, turns = app.svc.transcript(actor, session_id)
        scenario = app.library.scenarios.get(view.row.scenario_id)
        customer = scenario.scenario.customer.persona.name.get(actor.lang) if scenario else "👤"
        owner = app.svc.owner(view.row)
        names = (customer, owner.name if owner else view.row.trainee)
        await app.send(message.chat.id, texts.transcript(view, turns, names, actor.lang))

    @r.message(Cmd("override"))
    async def override(
        message: Message,
        command: CommandObject,
        event_update: Update,
        actor: Actor,
        app: TelegramApp,
    ) -> None:
        _require_mentor(actor)
        words = (command.args or "").split(maxsplit=3)
        if len(words) < 4 or not words[1].isdecimal():
            await app.send(message.chat.id, t("usage_override", actor.lang))
            return
        usage = t("usage_override", actor.lang)
        points = _number(words[2], "points", usage)
        before = app.svc.session_view(actor, words[0])
        old = next((e.points for e in before.entries if e.number == int(words[1])), 0.0)
        view = app.svc.override(
            actor, words[0], int(words[1]), points, words[3], ref=str(event_update.update_id)
        )
        await app.send(
            message.chat.id,
            t(
                "overridden",
                actor.lang,
                session=view.row.id,
                entry=words[1],
                old=f"{old:g}",
                new=f"{points:g}",
                total=_adjusted(view),
            ),
        )

    @r.message(Cmd("disputes"))
    async def disputes(message: Message, actor: Actor, app: TelegramApp) -> None:
        _require_mentor(actor)
        found = app.svc.open_disputes(actor)
        if not found:
            await app.send(message.chat.id, t("no_disputes", actor.lang))
            return
        for row, view in found[:MAX_DISPUTES_SHOWN]:
            buttons = [
                InlineKeyboardButton(
                    text=t(v, actor.lang),
                    callback_data=RulingCb(dispute=row.id, verdict=v[0]).pack(),
                )
                for v in VERDICTS
            ]
            await app.send(
                message.chat.id,
                _dispute_text(app, row, view, actor.lang),
                InlineKeyboardMarkup(inline_keyboard=[buttons]),
            )

    @r.callback_query(RulingCb.filter(F.verdict.in_({"a", "p", "r"})))
    async def ruling(
        query: CallbackQuery,
        callback_data: RulingCb,
        actor: Actor,
        app: TelegramApp,
        state: FSMContext,
    ) -> None:
        dispute, _ = app.svc.open_dispute_for_ruling(actor, callback_data.dispute)
        verdict = {"a": "accepted", "p": "partly", "r": "rejected"}[callback_data.verdict]
        await query.answer()
        await set_flow(state, Flow.ruling_reason, {"dispute": dispute.id, "verdict": verdict})
        key = "ruling_ask_partly" if verdict == "partly" else "ruling_ask"
        await app.send(query.from_user.id, t(key, actor.lang))

    @r.message(StateFilter(Flow.ruling_reason), IsPlainText())
    async def ruling_reason(
        message: Message,
        event_update: Update,
        actor: Actor,
        app: TelegramApp,
        state: FSMContext,
    ) -> None:
        data = await state.get_data()
        text = message.text or ""
        points = None
        if data["verdict"] == "partly":
            first, _, rest = text.partition(" ")
            points, text = _number(first, "points", t("ruling_ask_partly", actor.lang)), rest
        view = app.svc.resolve_dispute(
            actor,
            int(data["dispute"]),
            data["verdict"],
            text,
            points,
            ref=str(event_update.update_id),
        )
        await set_flow(state, None)
        total = _adjusted(view)
        await app.send(
            message.chat.id,
            t(
                "ruled",
                actor.lang,
                id=data["dispute"],
                verdict=t(data["verdict"], actor.lang),
                session=view.row.id,
                total=total,
            ),
        )

    return r
