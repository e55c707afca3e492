"""The web app: invite sign-in, the practice chat and its grades, the scorecard.

aiohttp serves server-rendered jinja2 pages (autoescaped: whatever a trainee types is shown
as text) with a Content Security Policy that allows no inline script, so the pages work
offline on an intranet and in the in-app browsers of WeCom, DingTalk, Feishu and WeChat.
A browser signs in once through an invite link and keeps an ``HttpOnly`` cookie; only the
cookie's hash is stored. Every form carries a token derived from that cookie (CSRF), the
sign-in form is refused from another origin, and sign-in attempts are rate-limited. Every
permission check is the service's, as for Telegram.

A reply is stored, graded and answered before the page is shown again (post, then
redirect), under a reference the form carries, so a form sent twice (a reload, a retry
after the network dropped) is graded once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import hashlib
import hmac
import json
import logging
import secrets
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import jinja2
from aiohttp import WSMsgType, web

from bot import notices
from bot.cluster import Cluster
from bot.disksync import DiskSync, checkpoints
from bot.drill.plan import load
from bot.drill.report import to_csv as drill_csv
from bot.drill.runner import run_clock
from bot.engine import ReplyRejected, Session
from bot.i18n import Lang
from bot.scenario import COURIER_NAMES, PAYMENT_NAMES
from bot.service import (
    DEFAULT_PASS_MARK,
    LINK_CODE_MINUTES,
    Actor,
    Forbidden,
    NotFound,
    ServiceError,
    SessionView,
    Training,
    token_digest,
)
from bot.storage import (
    DeviceRow,
    DrillCustomerRow,
    SessionRow,
    StoreError,
    StoreUnavailable,
    TeamRow,
    TurnRow,
)
from bot.web.desk import DeskLine
from bot.web.texts import FLAGS, dimension, mood, t
from bot.web.texts import notice as web_notice
from graders import warm_up as warm_up_graders
from graders._base import Bilingual
from graders.rubric import response_seconds

HERE = Path(__file__).resolve().parent

_CONTENT_TYPES = {".css": "text/css", ".js": "text/javascript"}


def _static_files(folder: Path) -> dict[str, tuple[bytes, str, str]]:
    """Each file of ``folder`` by name: its bytes, content type and ETag.

    Served from memory rather than by aiohttp's static route, which opens the file in a
    thread: a page closed meanwhile left that file open (a ResourceWarning in a test).
    """
    files = {}
    for path in sorted(folder.iterdir()):
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        files[path.name] = (body, _CONTENT_TYPES.get(path.suffix, "application/octet-stream"), etag)
    return files


log = logging.getLogger(__name__)
COOKIE = "trainer_device"
SIGN_INS_PER_MINUTE = 10
"""Sign-in attempts one address may make in a minute (invite codes are not guessable, but
a flood of tries still costs the store)."""
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebApp:
    """The aiohttp application over one ``Training`` service (platform ``web``)."""

    def __init__(
        self,
        svc: Training,
        *,
        base_url: str | None = None,
        cluster: Cluster | None = None,
    ) -> None:
        self.svc = svc
        self.cluster = cluster
        self.base_url = (base_url or "").rstrip("/")
        self.secure = self.base_url.startswith("https://")
        self.pages = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            auto_reload=False,  # templates ship with the code: no stat per page
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.pages.globals.update(t=t, dimension=dimension, mood=mood)
        self._tries: dict[str, deque[float]] = {}
        self._hints: dict[str, Bilingual] = {}
        """The model reply last asked for, by session, shown until the next reply."""
        self.disk = DiskSync(svc.store.sync_wal)
        """Changes reach the disk before the page that shows them (one fsync shared)."""
        self._drawing = asyncio.Lock()
        """One chart at a time, off the event loop (a chart is drawn once per scorecard
        view; two drawn at once in threads once came out wrong in a test)."""
        self._replies: set[asyncio.Task[Any]] = set()
        """Replies being answered, kept running when their page goes away."""
        self._static = _static_files(HERE / "static")
        self.app = web.Application(middlewares=[self._guard])
        self.app.add_routes(
            [
                web.get("/", self.home),
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
                web.get("/join/{code}", self.join_page),
                web.post("/join/{code}", self.join),
                web.get("/link", self.link_page),
                web.post("/link", self.link),
                web.get("/account", self.account_page),
                web.post("/account/link-code", self.link_code),
                web.post("/devices/{user}/{device}/revoke", self.revoke_device),
                web.post("/signout", self.sign_out),
                web.get("/invites", self.invites_page),
                web.post("/invites", self.create_invite),
                web.post("/invites/{code}/revoke", self.revoke_invite),
                web.get("/admin", self.admin_page),
                web.post("/teams", self.create_team),
                web.post("/practice", self.start),
                web.get("/practice/{session}", self.session_page),
                web.get("/practice/{session}/chart.png", self.chart),
                web.get("/history", self.history_page),
                web.post("/practice/{session}/reply", self.reply),
                web.get("/practice/{session}/live", self.live),
                web.post("/practice/{session}/end", self.end),
                web.post("/practice/{session}/hint", self.hint),
                web.post("/practice/{session}/dispute/{entry}", self.dispute),
                web.get("/review", self.review_page),
                web.post("/review/{dispute}", self.rule),
                web.post("/review/grade/{session}/{turn}/{dimension}", self.review_grade),
                web.get("/team/{team}", self.team_page),
                web.get("/team/{team}/sessions.csv", self.team_csv),
                web.post("/team/{team}/assign", self.assign),
                web.post("/team/{team}/drill", self.plan_drill),
                web.get("/drills/{drill}", self.drill_board),
                web.get("/drills/{drill}/report.csv", self.drill_csv),
                web.get("/drills/{drill}/chart.png", self.drill_chart),
                web.get("/drills/{drill}/desk", self.drill_desk),
                web.get("/drills/{drill}/desk.json", self.drill_desk_json),
                web.get("/drills/{drill}/desk/live", self.drill_live),
                web.post("/drills/{drill}/reply", self.drill_reply),
                web.post("/drills/{drill}/follow-up", self.drill_follow_up),
                web.post("/lang", self.switch_lang),
                web.get("/static/{name}", self.static_file),
            ]
        )

    # ------------------------------------------------------------------ plumbing

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Security headers on every answer; a service refusal is a page, not a traceback."""
        try:
            response = await handler(request)
        except web.HTTPException as answer:
            if request.method == "POST":
                await self.disk.wait()  # what the form changed is on the disk before it is shown
            # Answered as a plain response, not re-raised: aiohttp would keep the exception
            # in a reference cycle with the traceback's frames (the handler's request and
            # session with them) that only a long garbage collection pause frees.
            response = web.Response(
                status=answer.status, reason=answer.reason, headers=answer.headers, body=answer.body
            )
            for name, cookie in answer.cookies.items():
                response.cookies[name] = cookie
        except ServiceError as refused:
            status = 403 if isinstance(refused, Forbidden) else 404
            if not isinstance(refused, Forbidden | NotFound):
                status = 400  # Invalid: the message says how to fix the request
            response = self._message(request, refused.message[self._lang(request)], status)
        except StoreUnavailable as exc:
            log.warning("the database is unavailable: %s", exc)
            accept = request.headers.get("Accept-Language", "").lower()
            lang: Lang = "zh" if accept.startswith("zh") else "en"  # no store to ask
            response = self._render("message.html.j2", 503, lang=lang, text=t("db_down", lang))
            response.headers["Retry-After"] = "5"
        _protect(response.headers)
        return response

    async def static_file(self, request: web.Request) -> web.Response:
        """A stylesheet or script, from memory (a few KB, read at start-up)."""
        found = self._static.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, content_type, etag = found
        headers = {"ETag": etag, "Cache-Control": "no-cache"}  # revalidated on every page
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=headers)

    async def healthz(self, request: web.Request) -> web.Response:
        """The process answers (for a load balancer's liveness check)."""
        return web.json_response({"ok": True})

    async def readyz(self, request: web.Request) -> web.Response:
        """The process can serve: its database (and Redis, when shared) answer; 503 if not."""
        checks: dict[str, bool] = {}
        try:
            checks["database"] = self.svc.store.ping()
        except StoreError:
            checks["database"] = False
        cluster = self.cluster
        checks["redis"] = True if cluster is None else await cluster.ready()
        ok = all(checks.values())
        mine = None if cluster is None else cluster.part()
        about = (
            {}
            if cluster is None
            else {
                "process": cluster.me,
                "leading": cluster.leading(),
                "clock_parts": None if mine is None else sorted(mine[1]),
            }
        )
        return web.json_response({"ok": ok, **checks, **about}, status=200 if ok else 503)

    def _render(self, name: str, status: int = 200, **values: Any) -> web.Response:
        html = self.pages.get_template(name).render(**values)
        return web.Response(text=html, status=status, content_type="text/html")

    def _message(self, request: web.Request, text: str, status: int) -> web.Response:
        return self._render("message.html.j2", status, lang=self._lang(request), text=text)

    def _lang(self, request: web.Request) -> Lang:
        actor = self._actor(request)
        if actor is not None:
            return actor.lang
        accept = request.headers.get("Accept-Language", "")
        return "zh" if accept.lower().startswith("zh") else "en"

    def _actor(self, request: web.Request) -> Actor | None:
        token = request.cookies.get(COOKIE)
        return None if not token else self.svc.device_actor(token)

    def _refusal(self, request: web.Request, key: str, status: int) -> web.HTTPException:
        """An error page to raise: the text ``key`` in the visitor's language."""
        lang = self._lang(request)
        html = self.pages.get_template("message.html.j2").render(lang=lang, text=t(key, lang))
        return _ERRORS[status](text=html, content_type="text/html")

    def _signed_in(self, request: web.Request) -> Actor:
        actor = self._actor(request)
        if actor is None:
            raise self._refusal(request, "signed_out", 401)
        return actor

    @staticmethod
    def _csrf(request: web.Request) -> str:
        """The form token of this browser: derived from its cookie, unknown to other sites."""
        token = request.cookies.get(COOKIE, "")
        return hmac.new(token.encode(), b"forms", hashlib.sha256).hexdigest()[:32]

    async def _form(self, request: web.Request) -> dict[str, str]:
        """The posted form, after checking its token."""
        form = {k: str(v) for k, v in (await request.post()).items()}
        if not hmac.compare_digest(form.get("csrf", ""), self._csrf(request)):
            raise self._refusal(request, "bad_form", 403)
        return form

    def _origin(self, request: web.Request) -> str:
        """The origin a browser names for this site (scheme and host, no path)."""
        if self.base_url:
            parts = urlsplit(self.base_url)
            return f"{parts.scheme}://{parts.netloc}"
        return f"{request.scheme}://{request.host}"

    def _same_origin(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin") or request.headers.get("Referer") or ""
        mine = self.base_url or self._origin(request)
        return origin == mine or origin.startswith(mine + "/")

    def _allow_sign_in(self, request: web.Request) -> bool:
        now = time.monotonic()
        if len(self._tries) > 10_000:  # many addresses: forget those quiet for a minute
            self._tries = {k: v for k, v in self._tries.items() if v and now - v[-1] < 60}
        tries = self._tries.setdefault(request.remote or "?", deque())
        while tries and now - tries[0] > 60:
            tries.popleft()
        tries.append(now)
        return len(tries) <= SIGN_INS_PER_MINUTE

    # ------------------------------------------------------------------ sign-in

    async def _sign_in_form(self, request: web.Request) -> Any:
        """A posted sign-in form, from this site and not too often from one address.

        A visitor signing in has no cookie yet, so no form token to check.
        """
        if not self._same_origin(request):
            raise self._refusal(request, "bad_form", 403)
        if not self._allow_sign_in(request):
            raise self._refusal(request, "too_many", 429)
        return await request.post()

    async def join_page(self, request: web.Request) -> web.Response:
        """The invite link: name and language, then Join."""
        lang = self._lang(request)
        return self._render("join.html.j2", lang=lang, code=request.match_info["code"], error="")

    async def join(self, request: web.Request) -> web.Response:
        """Use the invite: a new account, signed in on this browser."""
        form = await self._sign_in_form(request)
        chosen: Lang = "en" if form.get("lang") == "en" else "zh"
        code = request.match_info["code"]
        try:
            _, token = self.svc.sign_in(
                code,
                name=str(form.get("name", "")),
                lang=chosen,
                device=request.headers.get("User-Agent", "?"),
            )
        except ServiceError as refused:
            error = refused.message[chosen]
            return self._render("join.html.j2", 400, lang=chosen, code=code, error=error)
        raise self._signed_in_as(token)

    def _signed_in_as(self, token: str) -> web.HTTPException:
        """The answer that keeps ``token`` in this browser and goes home."""
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            COOKIE,
            token,
            max_age=180 * 24 * 3600,
            httponly=True,
            samesite="Lax",
            secure=self.secure,
            path="/",
        )
        return response

    async def link_page(self, request: web.Request) -> web.Response:
        """Sign in with a code from the Telegram bot (``/web``): the same account here."""
        return self._render("link.html.j2", lang=self._lang(request), error="")

    async def link(self, request: web.Request) -> web.Response:
        """Use a link code: this browser is signed in as the account that made it."""
        form = await self._sign_in_form(request)
        lang = self._lang(request)
        try:
            _, token = self.svc.sign_in_linked(
                str(form.get("code", "")), device=request.headers.get("User-Agent", "?")
            )
        except ServiceError as refused:
            return self._render("link.html.j2", 400, lang=lang, error=refused.message[lang])
        raise self._signed_in_as(token)

    async def account_page(self, request: web.Request) -> web.Response:
        """One's browsers (each can be signed out) and a code to link the Telegram bot."""
        return self._account(request, self._signed_in(request), code=None)

    async def link_code(self, request: web.Request) -> web.Response:
        """The account page with a one-time code to send the Telegram bot (``/link CODE``)."""
        actor = self._signed_in(request)
        await self._form(request)
        return self._account(request, actor, code=self.svc.link_code(actor))

    def _account(self, request: web.Request, actor: Actor, code: str | None) -> web.Response:
        return self._render(
            "account.html.j2",
            lang=actor.lang,
            actor=actor,
            csrf=self._csrf(request),
            devices=self.svc.devices(actor, actor.id),
            this=token_digest(request.cookies.get(COOKIE, "")),
            code=code,
            minutes=LINK_CODE_MINUTES,
        )

    async def revoke_device(self, request: web.Request) -> web.StreamResponse:
        """Sign a browser out for good: one's own, or anyone's for an admin."""
        actor = self._signed_in(request)
        await self._form(request)
        user, device = request.match_info["user"], request.match_info["device"]
        self.svc.revoke_device(
            actor, int(user) if user.isdigit() else 0, int(device) if device.isdigit() else 0
        )
        raise web.HTTPSeeOther("/account" if user == str(actor.id) else "/admin")

    async def sign_out(self, request: web.Request) -> web.StreamResponse:
        """Sign this browser out for good (its cookie no longer works anywhere)."""
        actor = self._signed_in(request)
        await self._form(request)
        this = token_digest(request.cookies.get(COOKIE, ""))
        for device in self.svc.devices(actor, actor.id):
            if device.token_sha == this:
                self.svc.revoke_device(actor, actor.id, device.id)
        response = web.HTTPSeeOther("/link")
        response.del_cookie(COOKIE, path="/")
        raise response

    # ------------------------------------------------------------------ practice

    async def home(self, request: web.Request) -> web.Response:
        """The trainee's start page: the session in progress, scenarios, recent results."""
        actor = self._signed_in(request)
        return self._render(
            "home.html.j2",
            lang=actor.lang,
            actor=actor,
            csrf=self._csrf(request),
            active=self.svc.active_session(actor),
            teams=[team for team in self.svc.teams(actor) if team.id in actor.mentor_of],
            reviews=self._waiting(actor),
            choices=self.svc.practice_choices(actor),
            history=self.svc.history(actor, limit=5),
            notices=self._notices(actor),
            drill=self.svc.my_drill(actor),
        )

    def _notices(self, actor: Actor) -> list[tuple[str, str]]:
        """What changes elsewhere owe this account (text, link), marked delivered as shown."""
        shown = []
        for row in self.svc.store.outbox_pending(f"{notices.WEB}{actor.id}"):
            try:
                shown.append(web_notice(row.body, self.svc.store, self.svc.library))
            except Exception as exc:  # a bug: logged and marked, never shown in a loop
                log.exception("notice %d could not be shown", row.id)
                self.svc.store.outbox_done(row.id, f"{type(exc).__name__}: {exc}")
            else:
                self.svc.store.outbox_done(row.id)
        return shown

    async def switch_lang(self, request: web.Request) -> web.StreamResponse:
        """Switch the account's language (every channel follows it)."""
        actor = self._signed_in(request)
        form = await self._form(request)
        self.svc.set_lang(actor, "en" if form.get("lang") == "en" else "zh")
        back = form.get("back", "/")
        raise web.HTTPSeeOther(back if back.startswith("/") and not back.startswith("//") else "/")

    async def start(self, request: web.Request) -> web.StreamResponse:
        """Start the scenario chosen on the home page."""
        actor = self._signed_in(request)
        form = await self._form(request)
        assignment = form.get("assignment", "")
        session, _ = await self.svc.start_practice(
            actor,
            form.get("scenario", ""),
            difficulty=form.get("difficulty", "normal"),
            mode=form.get("mode", "coach"),
            assignment_id=int(assignment) if assignment.isdigit() else None,
        )
        raise web.HTTPSeeOther(f"/practice/{session.id}")

    async def session_page(self, request: web.Request) -> web.Response:
        """The chat so far, each reply's grades (coach) and the reply box; or the scorecard.

        Any signed-in reader the service lets see the session (its trainee, their mentor).
        """
        actor = self._signed_in(request)
        session_id = request.match_info["session"]
        view, turns = self.svc.transcript(actor, session_id)
        live, _ = await self.svc.session_for(actor)
        live = live if live is not None and live.id == session_id else None
        hint = self._hints.get(session_id)
        return self._render(
            "practice.html.j2",
            csrf=self._csrf(request),
            view=view,
            open=live is not None and not live.ended,
            ref=secrets.token_urlsafe(12),
            order=_order_card(live, actor.lang) if live is not None else None,
            clauses=_clauses(live, actor.lang) if live is not None else [],
            hint=hint[actor.lang] if hint is not None and live is not None else None,
            mine=view.row.trainee == actor.user.trainee and self.svc.dispute_open(view.row),
            disputed={d.entry for d in view.disputes if d.status == "open"},
            limit=response_seconds(),
            **self._chat(actor, view.row, turns, -1, live),
        )

    def _chat(
        self, actor: Actor, row: SessionRow, turns: list[TurnRow], after: int, live: Session | None
    ) -> dict[str, Any]:
        """What the chat needs to show ``turns`` (those after index ``after``).

        Grades, better replies (the last replies' records are the new replies'), names;
        the grade history of an ended session (a session in progress has none).
        """
        better: dict[int, str] = {}
        if live is not None and live.mode == "coach":
            replies = [turn.idx for turn in turns if turn.role == "trainee"]
            records = live.grader.records[len(live.grader.records) - len(replies) :]
            for idx, record in zip(replies, records, strict=False):
                found = live.better_reply(record)
                if found is not None:
                    better[idx] = found[actor.lang]
        scenario = self.svc.library.scenarios.get(row.scenario_id)
        name = scenario.scenario.customer.persona.name.get(actor.lang) if scenario else None
        owner = None if row.trainee == actor.user.trainee else self.svc.owner(row)
        ended = row.status == "ended"
        reviews = self.svc.store.grade_reviews([row.id]) if ended else []
        events = self.svc.store.grade_events([row.id]) if ended else []
        return {
            "lang": actor.lang,
            "turns": turns,
            "grades": self.svc.store.grades(row.id, after),
            "better": better,
            "customer": name or t("customer", actor.lang),
            "me": owner.name if owner is not None else t("you", actor.lang),
            "show_grades": row.mode == "coach" or ended,
            "reviews": {(r.turn_idx, r.dimension): r for r in reviews},
            "people": self._names([r.actor_id for r in reviews] + [e.actor_id for e in events]),
            "flag_names": FLAGS,
        }

    def _names(self, user_ids: Iterable[int | None]) -> dict[int, str]:
        """Display names of these users (mentors in a grade's history)."""
        users = (self.svc.store.user(uid) for uid in set(user_ids) if uid is not None)
        return {user.id: user.name for user in users if user is not None}

    async def chart(self, request: web.Request) -> web.Response:
        """The scorecard chart of an ended session: its dimensions and the owner's trend."""
        actor = self._signed_in(request)
        session_id = request.match_info["session"]
        view = self.svc.session_view(actor, session_id)
        if view.card is None:
            raise self._refusal(request, "not_found", 404)
        async with self._drawing:
            png = await self._draw(view, actor, session_id)
        return web.Response(body=png, content_type="image/png")

    async def _draw(self, view: SessionView, actor: Actor, session_id: str) -> bytes:
        from bot.charts import scorecard_chart  # matplotlib: loaded with the first chart

        assert view.card is not None
        return await asyncio.to_thread(
            scorecard_chart,
            [(d.title, d.score, d.max_score) for d in view.card.dimensions],
            self.svc.trend(actor, session_id),
            title=self.svc.title(view.row.scenario_id),
            lang=actor.lang,
            pass_mark=view.card.pass_mark,
        )

    async def history_page(self, request: web.Request) -> web.Response:
        """Every session of one's own, and each dimension's trend as a small chart."""
        actor = self._signed_in(request)
        rows = self.svc.history(actor, limit=500)
        trends = [
            (title[actor.lang], _polyline(scores), scores[-1])
            for _, title, scores in self.svc.dimension_trends(actor)
            if any(score is not None for score in scores)
        ]
        return self._render("history.html.j2", lang=actor.lang, rows=rows, trends=trends)

    async def reply(self, request: web.Request) -> web.StreamResponse:
        """Send one reply; a form sent again (same reference) is not graded again."""
        actor = self._signed_in(request)
        form = await self._form(request)
        session_id = request.match_info["session"]
        back = web.HTTPSeeOther(f"/practice/{session_id}")
        session = await self._practising(actor, session_id)
        if session is None:
            raise back  # ended meanwhile: the page shows the scorecard
        try:
            await self._answer(session, form.get("text", ""), form.get("ref", ""))
        except ReplyRejected as rejected:
            return self._message(request, rejected.message[actor.lang], 400)
        raise back

    async def _practising(self, actor: Actor, session_id: str) -> Session | None:
        """The actor's own session ``session_id`` if it is in progress (None: it ended)."""
        self._own(actor, session_id)
        session, _ = await self.svc.session_for(actor)
        return session if session is not None and session.id == session_id else None

    def _own(self, actor: Actor, session_id: str) -> SessionRow:
        """The actor's own session ``session_id``.

        Anyone else's session is refused, even one the actor may read (a mentor's
        trainee's): only its trainee replies to it, ends it or asks for a hint.
        """
        row = self.svc.session_row(actor, session_id)
        if row.trainee != actor.user.trainee:
            raise Forbidden(
                "not_yours",
                {"zh": "这不是你的练习。", "en": "This is not your session."},
            )
        return row

    async def _answer(self, session: Session, text: str, ref: str) -> None:
        """Store, grade and answer a reply once per reference (none given: never a repeat).

        It runs to the end even when the page that sent it goes away meanwhile.
        """
        self._hints.pop(session.id, None)
        key = "web:" + (ref or secrets.token_urlsafe(12))[:40]
        task = asyncio.ensure_future(self.svc.reply(session, text, ref=key, postbox=None))
        self._replies.add(task)
        task.add_done_callback(self._replied)
        await asyncio.shield(task)
        await self.disk.wait()  # the reply and its answer are on the disk before shown

    def _replied(self, task: asyncio.Task[Any]) -> None:
        """A reply is answered; one whose page went away and failed is logged, not lost."""
        self._replies.discard(task)
        failure = None if task.cancelled() else task.exception()
        if isinstance(failure, StoreUnavailable):  # the page says so; the store keeps it
            log.warning("a reply could not be stored or answered: %s", failure)
        elif failure is not None:
            log.error("a reply failed after its page went away", exc_info=failure)

    async def live(self, request: web.Request) -> web.StreamResponse:
        """The practice chat over a WebSocket: replies in, new messages out.

        The page says which turn it shows last (``after``) whenever it connects, and gets
        every later one; a reply comes with the form's reference, so a reply sent again
        after a dropped connection is answered once. The session ending makes the page
        reload (to its scorecard). Only the session's trainee may connect.
        """
        actor = self._signed_in(request)
        if request.headers.get("Origin") != self._origin(request):
            raise self._refusal(request, "bad_form", 403)
        row = self._own(actor, request.match_info["session"])  # refused unless their own
        socket = web.WebSocketResponse(heartbeat=30, max_msg_size=64 * 1024)
        await socket.prepare(request)
        device = token_digest(request.cookies.get(COOKIE, ""))
        with contextlib.suppress(ConnectionResetError):  # the page went away: it reconnects
            await self._converse(socket, actor, row, device)
        return socket

    async def _converse(
        self, socket: web.WebSocketResponse, actor: Actor, row: SessionRow, device: str
    ) -> None:
        async for message in socket:
            if message.type != WSMsgType.TEXT:
                continue
            if self.svc.store.device_user(device) != actor.id:  # signed out meanwhile
                await socket.close(code=4401, message=b"signed out")
                break
            try:
                asked = json.loads(message.data)
                after = int(asked.get("after", -1))
            except (ValueError, TypeError, AttributeError):
                await socket.send_json({"type": "error", "text": t("bad_message", actor.lang)})
                continue
            try:
                await socket.send_json(await self._turn(actor, row, asked, after))
            except ServiceError as refused:
                await socket.send_json({"type": "error", "text": refused.message[actor.lang]})
            except Exception:  # a bug: this message fails, the connection and service go on
                log.exception("a live chat message for session %s failed", row.id)
                await socket.send_json({"type": "error", "text": t("message_failed", actor.lang)})

    async def _turn(
        self, actor: Actor, row: SessionRow, asked: dict[str, Any], after: int
    ) -> dict[str, Any]:
        """What the page is sent for one message: new turns, a refusal, or that it ended."""
        session = self.svc.live.get(row.id)  # checked as theirs when the socket opened
        if session is None or session.ended:
            session = await self._practising(actor, row.id)
        if session is None:
            return {"type": "ended"}
        ref = asked.get("ref")
        if asked.get("type") == "reply":
            try:
                await self._answer(session, str(asked.get("text", "")), str(ref or ""))
            except ReplyRejected as rejected:
                return {"type": "rejected", "ref": ref, "text": rejected.message[actor.lang]}
        if session.ended:
            return {"type": "ended"}
        return self._news(actor, row, session, after, ref)

    def _news(
        self, actor: Actor, row: SessionRow, session: Session, after: int, ref: Any
    ) -> dict[str, Any]:
        """The turns after ``after``, as the chat shows them, and the reply they answer."""
        turns = self.svc.store.turns(session.id, after)
        values = self._chat(actor, row, turns, after, session)
        html = self.pages.get_template("turns.html.j2").render(**values)
        last = turns[-1].idx if turns else after
        return {
            "type": "turns",
            "html": html,
            "last": last,
            "done": ref,
            "next": secrets.token_urlsafe(12),
        }

    async def end(self, request: web.Request) -> web.StreamResponse:
        """End the session in progress; its scorecard is shown."""
        actor = self._signed_in(request)
        await self._form(request)
        session_id = request.match_info["session"]
        session = await self._practising(actor, session_id)
        if session is not None:
            await self.svc.end(session, postbox=None)
            self._hints.pop(session_id, None)
        raise web.HTTPSeeOther(f"/practice/{session_id}")

    async def hint(self, request: web.Request) -> web.StreamResponse:
        """Show the model reply for this stage (coach mode; its use is recorded)."""
        actor = self._signed_in(request)
        await self._form(request)
        session_id = request.match_info["session"]
        session = await self._practising(actor, session_id)
        if session is not None and session.mode == "coach":
            self._hints[session_id] = session.hint()
        raise web.HTTPSeeOther(f"/practice/{session_id}")

    async def dispute(self, request: web.Request) -> web.StreamResponse:
        """Dispute one deduction of one's own ended session, with a reason."""
        actor = self._signed_in(request)
        form = await self._form(request)
        session_id, entry = request.match_info["session"], request.match_info["entry"]
        number = int(entry) if entry.isdigit() else 0
        self.svc.open_dispute(actor, session_id, number, form.get("reason", ""))
        raise web.HTTPSeeOther(f"/practice/{session_id}")

    # ------------------------------------------------------------------ mentors

    def _team(self, request: web.Request) -> tuple[Actor, TeamRow]:
        """The signed-in mentor and the team in the URL (not theirs: refused alike)."""
        actor = self._signed_in(request)
        number = request.match_info["team"]
        team = self.svc.store.team(int(number)) if number.isdigit() else None
        if team is None or not actor.mentors(team.id):
            raise self._refusal(request, "forbidden", 403)
        return actor, team

    def _mentor(self, request: web.Request) -> Actor:
        actor = self._signed_in(request)
        if not actor.mentor_of and not actor.is_admin:
            raise self._refusal(request, "forbidden", 403)
        return actor

    def _waiting(self, actor: Actor) -> int:
        """How many items wait in the actor's review queue (0 for trainees)."""
        if not actor.mentor_of and not actor.is_admin:
            return 0
        return len(self.svc.open_disputes(actor)) + len(self.svc.flagged_grades(actor))

    async def invites_page(self, request: web.Request) -> web.Response:
        """Invite links the actor may hand out: create, see their uses, revoke."""
        actor = self._mentor(request)
        return self._invites(request, actor, new=None)

    def _invites(self, request: web.Request, actor: Actor, new: str | None) -> web.Response:
        teams = self.svc.teams(actor)
        return self._render(
            "invites.html.j2",
            lang=actor.lang,
            actor=actor,
            csrf=self._csrf(request),
            invites=self.svc.invites(actor),
            teams={team.id: team for team in teams},
            root=self.base_url or self._origin(request),
            new=new,
        )

    async def create_invite(self, request: web.Request) -> web.Response:
        """A new invite link (mentors: trainees of their teams; admins: anyone)."""
        actor = self._mentor(request)
        form = await self._form(request)
        role = form.get("role", "trainee")
        team = form.get("team", "")
        uses = form.get("uses", "50")
        code = self.svc.create_invite(
            role,  # type: ignore[arg-type]  # the service refuses an unknown role
            self.svc.store.team(int(team)) if team.isdigit() else None,
            actor,
            uses=int(uses) if uses.isdigit() else 0,
        )
        return self._invites(request, actor, new=code)

    async def revoke_invite(self, request: web.Request) -> web.StreamResponse:
        """Stop an invite link from working (those who joined stay)."""
        actor = self._mentor(request)
        await self._form(request)
        self.svc.revoke_invite(actor, request.match_info["code"])
        raise web.HTTPSeeOther("/invites")

    async def admin_page(self, request: web.Request) -> web.Response:
        """Teams, their mentors and trainees, and each web account's browsers (admins)."""
        actor = self._signed_in(request)
        people = self.svc.people(actor)
        users = {u.id: u for _, mentors, trainees in people for u in (*mentors, *trainees)}
        devices: dict[int, list[DeviceRow]] = {}
        for device in self.svc.store.devices(users):
            devices.setdefault(device.user_id, []).append(device)
        return self._render(
            "admin.html.j2",
            lang=actor.lang,
            csrf=self._csrf(request),
            people=people,
            devices=devices,
        )

    async def create_team(self, request: web.Request) -> web.StreamResponse:
        """A new team (admins)."""
        actor = self._signed_in(request)
        form = await self._form(request)
        self.svc.create_team(form.get("name", ""), actor)
        raise web.HTTPSeeOther("/admin")

    async def review_page(self, request: web.Request) -> web.Response:
        """Everything waiting on this mentor: disputes and flagged grades, each with a form."""
        actor = self._mentor(request)
        disputes = self.svc.open_disputes(actor)
        flagged = self.svc.flagged_grades(actor)
        rows = [view.row for _, view in disputes] + [item.view.row for item in flagged]
        owners = {row.id: self.svc.owner(row) for row in rows}
        return self._render(
            "review.html.j2",
            lang=actor.lang,
            csrf=self._csrf(request),
            disputes=disputes,
            flagged=flagged,
            names={sid: owner.name if owner else "?" for sid, owner in owners.items()},
            flag_names=FLAGS,
        )

    async def review_grade(self, request: web.Request) -> web.StreamResponse:
        """Accept, adjust (points per ledger entry) or reject a flagged grade, with a reason."""
        actor = self._mentor(request)
        form = await self._form(request)
        turn = request.match_info["turn"]
        points: dict[int, float] = {}
        for key, value in form.items():
            number = key.removeprefix("points_")
            if key.startswith("points_") and number.isdigit() and value.strip():
                try:
                    points[int(number)] = float(value)
                except ValueError:
                    points[int(number)] = -1.0  # the service says what is wrong with it
        self.svc.review_grade(
            actor,
            request.match_info["session"],
            int(turn) if turn.isdigit() else -1,
            request.match_info["dimension"],
            form.get("verdict", ""),
            form.get("reason", ""),
            points,
        )
        raise web.HTTPSeeOther("/review")

    async def rule(self, request: web.Request) -> web.StreamResponse:
        """Accept, partly accept (points still lost) or reject a dispute, with a reason."""
        actor = self._mentor(request)
        form = await self._form(request)
        number = request.match_info["dispute"]
        points = form.get("points", "").strip()
        try:
            kept = float(points) if points else None
        except ValueError:
            kept = -1.0  # the service says what is wrong with it
        self.svc.resolve_dispute(
            actor,
            int(number) if number.isdigit() else 0,
            form.get("verdict", ""),
            form.get("reason", ""),
            kept,
        )
        raise web.HTTPSeeOther("/review")

    async def team_page(self, request: web.Request) -> web.Response:
        """A mentor's team: assignments, averages, weak clauses, latest sessions.

        Each trainee's transcripts are a click away.
        """
        actor, team = self._team(request)
        assigned = request.query.get("assigned", "")
        report = self.svc.team_report(actor, team)
        trainees = self.svc.team_sessions(actor, team, limit=10)
        summary = []
        for user, rows in trainees:
            totals = [total for _, total in reversed(rows) if total is not None]
            late = sum(p.overdue for p in report.overdue if p.trainee.id == user.id)
            summary.append((user, len(rows), totals, _polyline(list(totals), 120, 30), late))
        return self._render(
            "team.html.j2",
            lang=actor.lang,
            csrf=self._csrf(request),
            report=report,
            summary=summary,
            trainees=trainees,
            scenarios=[(sid, self.svc.library.scenarios[sid]) for sid in self.svc.library.ids()],
            assigned=int(assigned) if assigned.isdigit() else None,
            today=self.svc.today().isoformat(),
            presets=list(self.svc.library.drills.values()),
            drills=self.svc.visible_drills(actor, 5),
        )

    # ------------------------------------------------------------------ drills

    async def plan_drill(self, request: web.Request) -> web.StreamResponse:
        """Plan a drill of the team from a preset; its board shows the load it brings."""
        actor, team = self._team(request)
        form = await self._form(request)
        starts = None
        if form.get("start"):
            try:
                starts = time.mktime(time.strptime(form["start"], "%Y-%m-%dT%H:%M"))
            except ValueError:
                raise self._refusal(request, "bad_form", 400) from None
        drill, _, _ = self.svc.plan_drill(
            actor,
            form.get("preset", ""),
            teams=[team],
            starts_at=starts,
            minutes=_number(form.get("minutes")),
            concurrency=int(form["concurrency"]) if form.get("concurrency", "").isdigit() else None,
        )
        raise web.HTTPSeeOther(f"/drills/{drill.id}")

    def _drill(self, request: web.Request) -> tuple[Actor, int]:
        actor = self._signed_in(request)
        number = request.match_info["drill"]
        drill = self.svc.drill(actor, int(number) if number.isdigit() else 0)  # or NotFound
        return actor, drill.id

    async def drill_board(self, request: web.Request) -> web.Response:
        """The live leaderboard (a page for a projector) and, once ended, the report."""
        actor, drill_id = self._drill(request)
        report = self.svc.drill_report(actor, drill_id)
        members = self.svc.store.drill_users(drill_id)
        manages = bool(actor.mentor_of) or actor.is_admin
        ended = report.drill.status == "ended"
        assigned = request.query.get("assigned", "")
        return self._render(
            "drill.html.j2",
            lang=actor.lang,
            csrf=self._csrf(request),
            follow_ups=self.svc.drill_follow_ups(report) if manages and ended else [],
            titles={sid: r.scenario.title for sid, r in self.svc.library.scenarios.items()},
            assigned=int(assigned) if assigned.isdigit() else None,
            report=report,
            load=load(report.plan, len(members)),
            trainees=len(members),
            mine=actor.id in members,
            starts=time.strftime("%Y-%m-%d %H:%M", time.localtime(report.drill.starts_at)),
        )

    async def drill_chart(self, request: web.Request) -> web.Response:
        """The standings as a chart: each trainee's score and first response."""
        from bot.charts import drill_chart  # matplotlib: loaded with the first chart

        actor, drill_id = self._drill(request)
        report = self.svc.drill_report(actor, drill_id)
        rows = [(s.name, s.score, s.first_response_mean_s) for s in report.trainees]
        async with self._drawing:
            png = await asyncio.to_thread(
                drill_chart,
                rows,
                title=report.plan.title.get(actor.lang),
                lang=actor.lang,
                pass_mark=report.plan.pass_.min_average,
                first_response_s=report.plan.first_response_s,
            )
        return web.Response(body=png, content_type="image/png")

    async def drill_follow_up(self, request: web.Request) -> web.StreamResponse:
        """Assign every trainee of an ended drill their follow-up scenarios, in one click."""
        actor, drill_id = self._drill(request)
        await self._form(request)
        made = self.svc.assign_follow_ups(actor, drill_id)
        raise web.HTTPSeeOther(f"/drills/{drill_id}?assigned={len(made)}")

    async def drill_csv(self, request: web.Request) -> web.Response:
        """The drill's report as CSV."""
        actor, drill_id = self._drill(request)
        body = drill_csv(self.svc.drill_report(actor, drill_id))
        name = f"drill-{drill_id}.csv"
        return web.Response(
            text=body,
            content_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    async def _desk(self, request: web.Request) -> tuple[Actor, int, dict[str, Any]]:
        """The trainee's workspace in a drill: their customers and one conversation."""
        actor, drill_id = self._drill(request)
        if not self.svc.store.in_drill(drill_id, actor.id):
            raise self._refusal(request, "forbidden", 403)
        return actor, drill_id, await self.desk_values(actor, drill_id, request.query.get("c", ""))

    async def desk_values(self, actor: Actor, drill_id: int, asked: str) -> dict[str, Any]:
        """What the workspace shows: customer ``asked`` (a label) or the longest waiting."""
        drill = self.svc.store.drill(drill_id)
        assert drill is not None
        now = self.svc.drills.clock()
        rows = self.svc.store.drill_customers(drill_id, user_id=actor.id)
        open_rows = [r for r in rows if r.status == "open"]
        chosen = next((r for r in open_rows if r.label == asked), None)
        if chosen is None and open_rows:
            chosen = min(open_rows, key=lambda r: r.waiting_since or now)
        queue, chat = [], []
        for row in open_rows:
            turns = self.svc.store.turns(row.session_id) if row.session_id else []
            after = max((t.idx for t in turns if t.role == "trainee"), default=-1)
            unread = sum(1 for t in turns if t.role == "customer" and t.idx > after)
            waited = None if row.waiting_since is None else max(0, int(now - row.waiting_since))
            queue.append((row, self._customer_name(row, actor.lang), unread, waited))
            if row is chosen:
                chat = [t for t in turns if t.role != "system"]
        order = None
        if chosen is not None and chosen.session_id:
            live = await self.svc.drills.conversation(chosen)
            order = _order_card(live, actor.lang) if live is not None else None
        return {
            "lang": actor.lang,
            "drill": drill,
            "queue": queue,
            "queued": sum(1 for r in rows if r.status == "queued"),
            "chosen": chosen,
            "chat": chat,
            "who": self._customer_name(chosen, actor.lang) if chosen else "",
            "order": order,
            "left": max(0, int(drill.ends_at - now)),
        }

    def desk_news(self, values: dict[str, Any]) -> dict[str, Any]:
        """The workspace as the script refreshes it (over the socket or desk.json)."""
        chosen = values["chosen"]
        return {
            "type": "desk",
            "queue": self.pages.get_template("desk_queue.html.j2").render(**values),
            "chat": self.pages.get_template("desk_chat.html.j2").render(**values),
            "label": chosen.label if chosen else "",
            "customers": [
                {"label": row.label, "unread": unread, "waited": waited}
                for row, _, unread, waited in values["queue"]
            ],
            "left": values["left"],
            "running": values["drill"].status == "running",
        }

    def _customer_name(self, row: DrillCustomerRow, lang: Lang) -> str:
        scenario = self.svc.library.scenarios.get(row.scenario_id)
        return scenario.scenario.customer.persona.name.get(lang) if scenario else row.label

    async def drill_desk(self, request: web.Request) -> web.Response:
        """Several customers at once: the queue with unread counts and waits, one chat."""
        _, _, values = await self._desk(request)
        return self._render(
            "desk.html.j2", csrf=self._csrf(request), ref=secrets.token_urlsafe(12), **values
        )

    async def drill_desk_json(self, request: web.Request) -> web.Response:
        """What the workspace script refreshes when it has no socket."""
        _, _, values = await self._desk(request)
        return web.json_response(self.desk_news(values))

    async def drill_live(self, request: web.Request) -> web.StreamResponse:
        """The workspace over a WebSocket: replies in; the queue and chat out on every change.

        The page says which customer it shows (``show``) and sends replies (``reply``, with
        the form's reference: a reply sent again after a dropped connection is answered
        once). The server sends the workspace whenever one of the trainee's customers
        changes in this process, and every few seconds anyway. Only the drill's trainees
        may connect.
        """
        actor, drill_id = self._drill(request)
        if request.headers.get("Origin") != self._origin(request):
            raise self._refusal(request, "bad_form", 403)
        if not self.svc.store.in_drill(drill_id, actor.id):
            raise self._refusal(request, "forbidden", 403)
        socket = web.WebSocketResponse(heartbeat=30, max_msg_size=64 * 1024)
        await socket.prepare(request)
        device = token_digest(request.cookies.get(COOKIE, ""))
        with contextlib.suppress(ConnectionResetError):  # the page went away: it reconnects
            await DeskLine(self, socket, actor, drill_id, device).run()
        return socket

    async def drill_reply(self, request: web.Request) -> web.StreamResponse:
        """A reply to one drill customer; the script gets JSON, a plain form the desk again."""
        actor, drill_id = self._drill(request)
        form = await self._form(request)
        label = form.get("label", "")
        ref = "web:" + (form.get("ref") or secrets.token_urlsafe(12))[:40]
        scripted = request.headers.get("Accept", "").startswith("application/json")
        try:
            await self.svc.drill_reply(actor, drill_id, label, form.get("text", ""), ref=ref)
        except ReplyRejected as rejected:
            if scripted:
                return web.json_response({"error": rejected.message[actor.lang]}, status=400)
            return self._message(request, rejected.message[actor.lang], 400)
        except ServiceError as refused:
            if scripted and not isinstance(refused, Forbidden | NotFound):
                return web.json_response({"error": refused.message[actor.lang]}, status=400)
            raise
        await self.disk.wait()
        if scripted:
            return web.json_response({"ok": True})
        raise web.HTTPSeeOther(f"/drills/{drill_id}/desk?c={label}")

    async def assign(self, request: web.Request) -> web.StreamResponse:
        """Assign scenarios to the team or one of its trainees; they are told in their channel."""
        actor, team = self._team(request)
        raw = await request.post()
        form = await self._form(request)
        due = form.get("due", "").strip()
        try:
            due_on = dt.date.fromisoformat(due) if due else None
            pass_mark = float(form.get("pass_mark") or DEFAULT_PASS_MARK)
            attempts = int(form["attempts"]) if form.get("attempts", "").strip() else None
        except ValueError:
            return self._message(request, t("bad_numbers", actor.lang), 400)
        who = form.get("trainee", "")
        rows, _ = self.svc.assign(
            actor,
            [str(v) for v in raw.getall("scenario", [])],
            team=None if who else team,
            trainee=who or None,
            due=due_on,
            pass_mark=pass_mark,
            attempts=attempts,
            difficulty=form.get("difficulty", "normal"),
            mode=form.get("mode", "exam"),
        )
        raise web.HTTPSeeOther(f"/team/{team.id}?assigned={len(rows)}")

    async def team_csv(self, request: web.Request) -> web.Response:
        """Every session of the team's trainees as CSV (opens in Excel)."""
        actor, team = self._team(request)
        name = f"team-{team.id}-sessions.csv"
        return web.Response(
            text=self.svc.export_csv(actor, team),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )


def _polyline(scores: list[float | None], width: int = 300, height: int = 80) -> str:
    """SVG polyline points of 0–100 scores across a chart (sessions without one skipped)."""
    step = width / max(1, len(scores) - 1)
    return " ".join(
        f"{i * step:.1f},{height - score / 100 * height:.1f}"
        for i, score in enumerate(scores)
        if score is not None
    )


def _order_card(session: Session, lang: Lang) -> list[tuple[str, str]] | None:
    """The order as the trainee has learnt it so far (None until the order number is given).

    The order's record opens once the customer gives its number; the sign-for date, the
    customer's identity and photos join it as the customer gives them.
    """
    s = session.scenario.scenario
    revealed = session.grader.state.revealed
    told = {f.kind for f in s.customer.facts if f.id in revealed}
    asked = {f.kind for f in s.customer.facts}
    if "order_id" in asked and "order_id" not in told:
        return None
    o = s.order
    rows = [
        (t("order_no", lang), o.order_id),
        (t("item", lang), f"{o.item.get(lang)} ×{o.quantity}"),
        (t("paid", lang), f"¥{o.price:g} · {PAYMENT_NAMES[o.payment][lang]}"),
        (t("courier", lang), f"{COURIER_NAMES[o.courier][lang]} {o.tracking_no or ''}"),
        (t("ordered", lang), str(o.ordered_on)),
        (t("shipped", lang), str(o.shipped_on or "—")),
    ]
    if "signed_time" not in asked or "signed_time" in told:
        rows.append((t("signed", lang), str(o.signed_on or "—")))
    rows += [(t(key, lang), str(value)) for key, value in o.refund_facts()]
    if "identity" in told:
        rows.append((t("identity", lang), t("confirmed", lang)))
    if "photos" in told:
        rows.append((t("photos", lang), t("received", lang)))
    return rows


def _clauses(session: Session, lang: Lang) -> list[tuple[str, str, str]]:
    """The policy clauses of the session's case: (id, title, text)."""
    policy = session.scenario.policy
    return [
        (cid, policy.clauses[cid].title.get(lang), policy.clause_text(cid, lang))
        for cid in session.scenario.applicable_clauses
    ]


_ERRORS: dict[int, type[web.HTTPException]] = {
    401: web.HTTPUnauthorized,
    403: web.HTTPForbidden,
    429: web.HTTPTooManyRequests,
}


def _protect(headers: Any) -> None:
    headers["Content-Security-Policy"] = CSP
    headers["X-Content-Type-Options"] = "nosniff"
    # Invite codes are in URLs: no referrer to other sites; same-origin forms keep their
    # Origin (under "no-referrer" Chromium sends "Origin: null" and sign-in was refused).
    headers["Referrer-Policy"] = "same-origin"
    headers.setdefault("Cache-Control", "no-store")


class Alongside(Protocol):
    """Another channel served by the same process and port (the Telegram webhook)."""

    def routes(self) -> list[web.RouteDef]:
        """Its routes on the shared server."""

    async def start(self) -> None:
        """Start taking requests (called once the server listens)."""

    async def stop(self) -> None:
        """Stop taking requests and finish the work in flight."""


async def serve(
    svc: Training,
    *,
    host: str,
    port: int,
    base_url: str | None,
    admin_link: str | None,
    alongside: Alongside | None = None,
    cluster: Cluster | None = None,
) -> None:
    """Serve until cancelled (Ctrl-C) or SIGTERM; prints where.

    With a ``cluster`` sharing Redis, this process is one of several on the database.
    """
    cluster = cluster or Cluster(None)
    # the first replies are not the slow ones
    await asyncio.to_thread(warm_up_graders, svc.library.scenarios.values())
    # Commits no longer wait for the disk on the event loop; a change waits (one fsync in
    # a thread, shared by the changes made meanwhile) before the page that shows it.
    svc.store.sync_at_inbox()
    svc.store.checkpoint_aside()  # nor for copying the WAL into the database file
    checkpointing = asyncio.create_task(checkpoints(svc.store.checkpoint))
    svc.drills.announce = cluster.announce
    await cluster.start(heard=svc.drills.heard)
    # customers arrive on time (moved on by one process of several)
    drilling = asyncio.create_task(run_clock(svc.drills, part=cluster.part))
    app = WebApp(svc, base_url=base_url, cluster=cluster).app
    if alongside is not None:
        app.add_routes(alongside.routes())
    runner = web.AppRunner(app, access_log=None)
    gc.freeze()  # what lives as long as the process is never walked by a collection again
    stop = asyncio.Event()
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        if alongside is not None:
            await alongside.start()
        where = base_url or f"http://{host}:{port}"
        print(f"Web app on {where}/ (Ctrl-C stops it)", flush=True)
        if admin_link:
            print(f"Sign in as admin (this link works once): {admin_link}", flush=True)
        await stop.wait()
    finally:
        if alongside is not None:
            await alongside.stop()
        await runner.cleanup()
        for task in (checkpointing, drilling):
            task.cancel()
        await asyncio.gather(checkpointing, drilling, return_exceptions=True)
        await cluster.stop()


def _number(text: str | None) -> float | None:
    """A number typed in a form, or None when the field is empty or not a number."""
    try:
        return float(text) if text else None
    except ValueError:
        return None
