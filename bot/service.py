"""Teams, roles, invites, assignments, results, disputes and overrides.

The access-checked operations every chat adapter calls. Every permission check lives
here, not in keyboards or handlers: an adapter may show a button, but whoever presses
it (or forges its data) passes through the same checks. Roles:

- **admin**: everything; creates teams and invites.
- **mentor**: their own teams only: assigns scenarios, reads their trainees' results and
  transcripts, overrides grades and rules on disputes.
- **trainee**: their own sessions only.

A mentor's change to a grade never overwrites it: it is appended to the session's grade
history (who, when, old, new, why), and results show the original and the adjusted total.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import hashlib
import io
import itertools
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from bot import notices
from bot.content import ScenarioLibrary
from bot.drill.plan import DrillPlan, Load, load
from bot.drill.report import DrillReport, Standing, follow_up, standings
from bot.drill.runner import DrillRefused, DrillRunner
from bot.engine import MODES, Engine, Postbox, Session, SessionBusy, TurnResult
from bot.i18n import Lang, Refusal
from bot.scenario import Difficulty
from bot.storage import (
    AssignmentRow,
    DeviceRow,
    DisputeRow,
    DrillCustomerRow,
    DrillRow,
    GradeEventRow,
    InviteListing,
    InviteRow,
    Owed,
    SessionRow,
    Store,
    StoreError,
    TeamRow,
    TurnRow,
    UserRow,
)
from graders._base import Bilingual, Grade
from graders.rubric import RUBRICS, LedgerEntry, Scorecard, below_pass_reason

Role = Literal["admin", "mentor", "trainee"]
ROLES: tuple[Role, ...] = ("admin", "mentor", "trainee")
DIFFICULTIES: tuple[Difficulty, ...] = ("easy", "normal", "hard")
VERDICTS = ("accepted", "partly", "rejected")
DISPUTE_DAYS = 7
"""How many days after a session ends its trainee may dispute a deduction."""
LINK_CODE_MINUTES = 15
"""How long a code that links another channel to an account works."""
LINK_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""Link-code letters: no 0/O or 1/I to misread."""
REVIEW_FLAGS = ("needs_review", "judge_higher", "injection_attempt")
"""Flags that put a grade in the mentors' review queue."""
REVIEW_VERDICTS = ("accepted", "adjusted", "rejected")
"""A reviewed grade stands as graded, costs what the mentor set, or costs nothing."""
DEFAULT_PASS_MARK = 80.0


class ServiceError(Refusal):
    """An operation refused, with a message for the user in both languages."""


class Forbidden(ServiceError):
    """The actor may not do this."""


class NotFound(ServiceError):
    """The thing asked for does not exist (or the actor may not know it exists)."""


class Invalid(ServiceError):
    """The request is malformed; the message says how to fix it."""


def _forbidden() -> Forbidden:
    return Forbidden(
        "forbidden",
        {
            "zh": "没有权限：这不属于你的团队或你本人。",
            "en": "Not allowed: this is not your team's or your own.",
        },
    )


def _admins_only(what: Bilingual) -> Forbidden:
    return Forbidden(
        "admins_only",
        {
            "zh": f"只有管理员可以{what['zh']}。请联系管理员（服务器上：trainer admin --help）。",
            "en": f"Only an admin can {what['en']}. Ask your admin (on the server: "
            "trainer admin --help).",
        },
    )


def _mentors_only(team: str) -> Forbidden:
    return Forbidden(
        "mentors_only",
        {
            "zh": f"你是团队「{team}」的学员；只有导师和管理员可以管理团队。",
            "en": f"You are a trainee of team '{team}'; only its mentors and admins manage it.",
        },
    )


def _no_team(name: str, yours: Sequence[TeamRow]) -> NotFound:
    names = ", ".join(t.name for t in yours) or "—"
    return NotFound(
        "no_team",
        {
            "zh": f"没有名为「{name}」的团队。你的团队：{names}",
            "en": f"No team named '{name}'. Your teams: {names}",
        },
    )


def _no_dispute(dispute_id: int) -> NotFound:
    return NotFound(
        "no_dispute",
        {"zh": f"没有申诉 #{dispute_id}。", "en": f"No dispute #{dispute_id}."},
    )


def _no_session(session_id: str) -> NotFound:
    return NotFound(
        "no_session",
        {"zh": f"找不到会话 {session_id}。", "en": f"No session {session_id}."},
    )


@dataclass(frozen=True)
class Actor:
    """Who is asking: a user with their roles, read fresh for each request."""

    user: UserRow
    mentor_of: frozenset[int]
    trainee_in: frozenset[int]

    @property
    def id(self) -> int:
        """The user id."""
        return self.user.id

    @property
    def is_admin(self) -> bool:
        """Whether the user is an administrator."""
        return self.user.is_admin

    @property
    def lang(self) -> Lang:
        """The user's language."""
        return "en" if self.user.lang == "en" else "zh"

    @property
    def roles(self) -> tuple[Role, ...]:
        """The user's roles, most powerful first."""
        out: list[Role] = []
        if self.is_admin:
            out.append("admin")
        if self.mentor_of:
            out.append("mentor")
        if self.trainee_in:
            out.append("trainee")
        return tuple(out)

    def mentors(self, team_id: int) -> bool:
        """Whether the actor may manage ``team_id``."""
        return self.is_admin or team_id in self.mentor_of


@dataclass(frozen=True)
class EntryView:
    """One ledger entry with the mentor changes made to it."""

    number: int
    entry: LedgerEntry
    points: float
    """Points lost after the latest override or ruling (the original if none)."""
    history: tuple[GradeEventRow, ...]


@dataclass(frozen=True)
class FlaggedGrade:
    """A grade waiting on a mentor's review, with the ledger entries it cost.

    Flagged ``needs_review``, ``judge_higher`` or ``injection_attempt``.
    """

    view: SessionView
    turn_idx: int
    reply: int
    grade: Grade
    entries: tuple[EntryView, ...]


@dataclass(frozen=True)
class SessionView:
    """A session's result as its owner or mentor sees it."""

    row: SessionRow
    card: Scorecard | None
    entries: tuple[EntryView, ...]
    adjusted_total: float | None
    adjusted_passed: bool | None
    adjusted_reasons: tuple[Bilingual, ...]
    disputes: tuple[DisputeRow, ...]
    blocking_reasons: tuple[Bilingual, ...] = ()
    """Fail reasons other than the total (red line, unresolved, dimension floor)."""

    @property
    def adjusted(self) -> bool:
        """Whether a mentor changed any points."""
        return any(e.history for e in self.entries)

    def passes(self, pass_mark: float) -> bool:
        """Whether the session meets ``pass_mark`` (an assignment's) and every other rule."""
        return (
            self.adjusted_total is not None
            and self.adjusted_total >= pass_mark
            and not self.blocking_reasons
        )


@dataclass(frozen=True)
class PracticeChoice:
    """A scenario the trainee may practise, with its assignment when there is one."""

    scenario_id: str
    title: Bilingual
    assignment: AssignmentRow | None = None
    attempts_used: int = 0
    passed: bool = False

    @property
    def attempts_left(self) -> int | None:
        """Attempts left on the assignment (None: unlimited or not assigned)."""
        if self.assignment is None or self.assignment.attempts is None:
            return None
        return max(0, self.assignment.attempts - self.attempts_used)


@dataclass(frozen=True)
class Progress:
    """One trainee's state on one assignment."""

    trainee: UserRow
    assignment: AssignmentRow
    attempts: int
    best: float | None
    passed: bool
    overdue: bool


@dataclass(frozen=True)
class TeamReport:
    """A team's completion, averages, weak clauses and overdue trainees."""

    team: TeamRow
    trainees: tuple[UserRow, ...]
    progress: tuple[Progress, ...]
    sessions: int
    dimension_averages: tuple[tuple[Bilingual, float | None], ...]
    """Average percentage of each dimension over the team's ended sessions."""
    top_clauses: tuple[tuple[str, Bilingual, int], ...]
    """Most violated policy clauses: (clause id, title, ledger entries citing it)."""

    @property
    def completed(self) -> int:
        """Trainee-assignment pairs passed."""
        return sum(p.passed for p in self.progress)

    @property
    def overdue(self) -> tuple[Progress, ...]:
        """Trainee-assignment pairs past due and not passed."""
        return tuple(p for p in self.progress if p.overdue)


@dataclass(frozen=True)
class Profile:
    """A trainee's summary: results, weakest clauses and what to practise next."""

    sessions: int
    average: float | None
    passed: int
    weakest: tuple[tuple[str, Bilingual, float], ...]
    """(clause id, title, points lost citing it), worst first."""
    next_scenario: PracticeChoice | None
    recent: tuple[SessionRow, ...] = field(default=())


def token_digest(token: str) -> str:
    """What is stored of a sign-in token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Training:
    """The access-checked operations behind every chat adapter."""

    def __init__(
        self,
        store: Store,
        library: ScenarioLibrary,
        engine: Engine,
        *,
        platform: str = "telegram",
        today: Callable[[], dt.date] = dt.date.today,
        clock: Callable[[], float] = time.monotonic,
        drills: DrillRunner | None = None,
    ):
        self.store = store
        self.library = library
        self.engine = engine
        self.drills = drills or DrillRunner(store, library, engine)
        """Festival drills (their clock is the wall clock: drills start at set times)."""
        self.platform = platform
        self.today = today
        self.clock = clock
        self.live: dict[str, Session] = {}
        """Sessions in progress, by id (rebuilt from the store when missing)."""
        self.shown_at: dict[str, float] = {}
        """When the customer's last message was shown, by session (the reply timer)."""
        self._turns: dict[str, asyncio.Lock] = {}
        """One reply at a time per session, whichever channel or tab it comes from."""

    def for_platform(self, platform: str) -> Training:
        """The same service for another channel of this process.

        Both share the sessions in progress: a linked account replying from either channel
        reaches the same session.
        """
        other = Training(
            self.store,
            self.library,
            self.engine,
            platform=platform,
            today=self.today,
            clock=self.clock,
            drills=self.drills,
        )
        other.live, other.shown_at, other._turns = self.live, self.shown_at, self._turns
        return other

    # identity

    def register(
        self,
        external_id: str,
        *,
        name: str,
        lang: Lang,
        chat_id: str | None = None,
        username: str | None = None,
    ) -> Actor:
        """The actor for a chat-app user, created on first contact."""
        user = self.store.upsert_user(
            self.platform, external_id, name=name, lang=lang, chat_id=chat_id, username=username
        )
        return self._actor(user)

    def actor(self, user_id: int) -> Actor:
        """The actor for a stored user id."""
        user = self.store.user(user_id)
        if user is None:
            raise NotFound("no_user", {"zh": "找不到该用户。", "en": "No such user."})
        return self._actor(user)

    def _actor(self, user: UserRow) -> Actor:
        memberships = self.store.memberships(user.id)
        return Actor(
            user,
            frozenset(t for t, r in memberships if r == "mentor"),
            frozenset(t for t, r in memberships if r == "trainee"),
        )

    def set_lang(self, actor: Actor, lang: Lang) -> Actor:
        """Change the actor's language."""
        self.store.set_user_lang(actor.id, lang)
        return self.actor(actor.id)

    def join(self, actor: Actor, code: str) -> tuple[Role, TeamRow | None]:
        """Use an invite code: join its team in its role, or become admin."""
        return self._admit(actor, self._use_invite(code))

    def sign_in(self, code: str, *, name: str, lang: Lang, device: str) -> tuple[Actor, str]:
        """A new account joined through an invite code, and its browser's sign-in token.

        The code is used first, so a wrong one creates nothing. Only the token's hash is
        stored; the token is the browser's cookie.
        """
        invite = self._use_invite(code)
        actor = self.register(secrets.token_hex(12), name=name.strip()[:60] or "?", lang=lang)
        self._admit(actor, invite)
        token = secrets.token_urlsafe(32)
        self.store.add_device(actor.id, token_digest(token), device)
        return self.actor(actor.id), token

    def device_actor(self, token: str) -> Actor | None:
        """Who a browser's token signs in (None: unknown or signed out)."""
        user_id = self.store.device_user(token_digest(token))
        return None if user_id is None else self.actor(user_id)

    def link_code(self, actor: Actor) -> str:
        """A one-time code that brings the actor's account to another channel.

        Sent to the Telegram bot (``/link CODE``) it links that Telegram account to this
        one; typed on the web app's sign-in page it signs that browser in as this account.
        It works once, for ``LINK_CODE_MINUTES``.
        """
        code = "".join(secrets.choice(LINK_ALPHABET) for _ in range(8))
        self.store.add_link_code(token_digest(code), actor.id)
        return code

    def _linked_user(self, code: str) -> int:
        cleaned = code.strip().upper().replace("-", "").replace(" ", "")
        user_id = self.store.use_link_code(token_digest(cleaned), LINK_CODE_MINUTES * 60)
        if user_id is None:
            raise Invalid(
                "bad_link_code",
                {
                    "zh": f"链接码无效、已用过或已超过 {LINK_CODE_MINUTES} 分钟。请重新获取一个。",
                    "en": f"This link code is unknown, used or older than {LINK_CODE_MINUTES} "
                    "minutes. Get a new one.",
                },
            )
        return user_id

    def link_here(self, actor: Actor, code: str) -> Actor:
        """Link the actor's chat-app identity to the account that made ``code``.

        Refused when the actor already has sessions or teams of their own: two accounts
        with records are not merged (an admin can invite the person again instead).
        """
        if self.store.has_history(actor.id):
            raise Invalid(
                "has_records",
                {
                    "zh": "这个账号已经有自己的练习或团队记录，不能再关联到另一个账号。",
                    "en": "This account already has sessions or teams of its own; it cannot "
                    "be linked to another account.",
                },
            )
        user_id = self._linked_user(code)
        if user_id != actor.id:
            self.store.link_identity(actor.user.platform, actor.user.external_id, user_id)
        user = self.store.user(user_id)
        assert user is not None
        return self.register(
            actor.user.external_id,
            name=user.name,
            lang=actor.lang,
            chat_id=actor.user.chat_id,
            username=actor.user.username,
        )

    def sign_in_linked(self, code: str, *, device: str) -> tuple[Actor, str]:
        """Sign a browser in as the account that made ``code`` (in another channel)."""
        user_id = self._linked_user(code)
        token = secrets.token_urlsafe(32)
        self.store.add_device(user_id, token_digest(token), device)
        return self.actor(user_id), token

    def devices(self, actor: Actor, user_id: int) -> list[DeviceRow]:
        """The browsers signed in as ``user_id`` (the user's own, or any for an admin)."""
        if actor.id != user_id and not actor.is_admin:
            raise _forbidden()
        return self.store.devices([user_id])

    def revoke_device(self, actor: Actor, user_id: int, device_id: int) -> None:
        """Sign one of ``user_id``'s browsers out for good (the user, or an admin)."""
        if not any(d.id == device_id for d in self.devices(actor, user_id)):
            raise NotFound(
                "no_device", {"zh": "找不到这个设备。", "en": "There is no such device."}
            )
        self.store.revoke_device(device_id)

    def invites(self, actor: Actor) -> list[InviteListing]:
        """The invites the actor may see: every one (admins), their teams' trainee invites."""
        if actor.is_admin:
            return self.store.invites()
        if actor.mentor_of:
            return [i for i in self.store.invites(actor.mentor_of) if i.role == "trainee"]
        raise _forbidden()

    def revoke_invite(self, actor: Actor, code: str) -> None:
        """Stop an invite the actor may see from being used again."""
        if not any(i.code == code for i in self.invites(actor)):
            raise NotFound(
                "no_invite", {"zh": "找不到这个邀请。", "en": "There is no such invite."}
            )
        self.store.revoke_invite(code)

    def people(self, actor: Actor) -> list[tuple[TeamRow, list[UserRow], list[UserRow]]]:
        """Every team with its mentors and trainees (admins only)."""
        if not actor.is_admin:
            raise _admins_only({"zh": "查看所有人员", "en": "see everyone"})
        return [
            (team, self.store.members(team.id, "mentor"), self.store.members(team.id, "trainee"))
            for team in self.store.teams()
        ]

    def _use_invite(self, code: str) -> InviteRow:
        invite = self.store.use_invite(code.strip())
        if invite is None:
            raise Invalid(
                "bad_invite",
                {
                    "zh": "邀请码无效或已用完。请向导师或管理员要一个新的邀请链接。",
                    "en": "This invite code is unknown or used up. Ask your mentor or admin "
                    "for a new invite link.",
                },
            )
        return invite

    def _admit(self, actor: Actor, invite: InviteRow) -> tuple[Role, TeamRow | None]:
        if invite.role == "admin":
            self.store.set_admin(actor.id)
            return "admin", None
        assert invite.team_id is not None
        self.store.add_member(invite.team_id, actor.id, invite.role)
        return invite.role, self.store.team(invite.team_id)  # type: ignore[return-value]

    # administration (``by=None`` is the operator at the server's shell)

    def create_team(self, name: str, by: Actor | None = None) -> TeamRow:
        """Create a team (admin only)."""
        if by is not None and not by.is_admin:
            raise _admins_only({"zh": "创建团队", "en": "create teams"})
        name = name.strip()
        if not name or len(name) > 64:
            raise Invalid(
                "bad_team_name",
                {
                    "zh": "团队名称需要 1–64 个字符。",
                    "en": "A team name needs 1–64 characters.",
                },
            )
        if self.store.team_by_name(name) is not None:
            raise Invalid(
                "team_exists",
                {"zh": f"团队「{name}」已存在。", "en": f"A team named '{name}' already exists."},
            )
        return self.store.create_team(name)

    def team_named(self, name: str, by: Actor | None = None) -> TeamRow:
        """A team by name that ``by`` may manage.

        A team that exists but that ``by`` does not manage is refused exactly like a name
        that matches no team (NotFound listing only ``by``'s teams): team names are easy to
        guess, and a different answer would tell outsiders which teams exist.
        """
        team = self.store.team_by_name(name.strip())
        if (  # a trainee of the team knows it exists: say why, not "no such team"
            team is not None
            and by is not None
            and team.id in by.trainee_in
            and not by.mentors(team.id)
        ):
            raise _mentors_only(team.name)
        if team is None or (by is not None and not by.mentors(team.id)):
            raise _no_team(name, self.teams(by))
        return team

    def teams(self, by: Actor | None = None) -> list[TeamRow]:
        """Teams ``by`` may manage (all for admins and the operator)."""
        teams = self.store.teams()
        if by is None or by.is_admin:
            return teams
        return [t for t in teams if t.id in by.mentor_of]

    def create_invite(
        self, role: Role, team: TeamRow | None, by: Actor | None = None, *, uses: int = 50
    ) -> str:
        """A new invite code. Admins invite anyone; mentors invite trainees to their teams."""
        if role not in ROLES:
            raise Invalid(
                "bad_role",
                {
                    "zh": f"角色只能是 {', '.join(ROLES)}。",
                    "en": f"The role must be one of {', '.join(ROLES)}.",
                },
            )
        if not 1 <= uses <= 10_000:
            raise Invalid(
                "bad_uses",
                {"zh": "使用次数需在 1–10000 之间。", "en": "Uses must be 1–10000."},
            )
        if role == "admin":
            if by is not None and not by.is_admin:
                raise _admins_only({"zh": "邀请管理员", "en": "invite admins"})
            team = None
        else:
            if team is None:
                raise Invalid(
                    "team_needed",
                    {
                        "zh": "导师和学员邀请需要指定团队。",
                        "en": "Mentor and trainee invites need a team.",
                    },
                )
            allowed = by is None or by.is_admin or (role == "trainee" and by.mentors(team.id))
            if not allowed and by is not None and by.mentors(team.id):
                raise _admins_only(
                    {
                        "zh": f"邀请导师；你可以邀请学员：/invite {team.name} trainee",
                        "en": f"invite mentors; you can invite trainees: /invite {team.name} "
                        "trainee",
                    }
                )
            if not allowed:
                raise _forbidden()
        code = secrets.token_urlsafe(9)
        self.store.create_invite(
            code,
            team_id=None if team is None else team.id,
            role=role,
            max_uses=uses,
            created_by=None if by is None else by.id,
        )
        return code

    # practice

    def practice_choices(self, actor: Actor) -> list[PracticeChoice]:
        """Assigned scenarios first (soonest due first), then every other scenario."""
        assignments = self._assignments_of(actor)
        own = self.store.sessions_of([actor.user.trainee], assignments=[a.id for a in assignments])
        choices: list[PracticeChoice] = []
        for a in assignments:
            if a.scenario_id not in self.library.scenarios:
                continue
            mine = [s for s in own if s.assignment_id == a.id]
            choices.append(
                PracticeChoice(
                    a.scenario_id,
                    self.title(a.scenario_id),
                    a,
                    len(mine),
                    any(self._view(s).passes(a.pass_mark) for s in mine),
                )
            )
        choices.sort(key=lambda c: (c.passed, c.attempts_left == 0))
        for scenario_id in sorted(self.library.scenarios):
            choices.append(PracticeChoice(scenario_id, self.title(scenario_id)))
        return choices

    def title(self, scenario_id: str) -> Bilingual:
        """A scenario's title (its id when the library no longer has it)."""
        found = self.library.scenarios.get(scenario_id)
        if found is None:
            return {"zh": scenario_id, "en": scenario_id}
        title = found.scenario.title
        return {"zh": title.zh, "en": title.en}

    def _assignments_of(self, actor: Actor) -> list[AssignmentRow]:
        return [
            a
            for a in self.store.assignments(actor.trainee_in)
            if a.user_id is None or a.user_id == actor.id
        ]

    async def start_practice(
        self,
        actor: Actor,
        scenario_id: str,
        *,
        difficulty: str = "normal",
        mode: str = "coach",
        assignment_id: int | None = None,
        postbox: Postbox | None = None,
    ) -> tuple[Session, str]:
        """Start a session for the actor (an assignment fixes difficulty and mode).

        What the start owes the trainee is stored with it when a ``postbox`` is given.
        """
        self.ensure_no_session(actor)
        rubric = "default"
        if assignment_id:
            assignment = self.store.assignment(assignment_id)
            if assignment is None or assignment not in self._assignments_of(actor):
                raise _forbidden()
            used = len(self.store.sessions_of([actor.user.trainee], assignments=[assignment.id]))
            if assignment.attempts is not None and used >= assignment.attempts:
                raise Forbidden(
                    "no_attempts",
                    {
                        "zh": f"这个任务的 {assignment.attempts} 次机会已用完，请联系导师。",
                        "en": f"All {assignment.attempts} attempts at this assignment are used; "
                        "ask your mentor.",
                    },
                )
            scenario_id, difficulty, mode = (
                assignment.scenario_id,
                assignment.difficulty,
                assignment.mode,
            )
            rubric = assignment.rubric
        if scenario_id not in self.library.scenarios:
            raise NotFound(
                "no_scenario",
                {"zh": f"没有场景 {scenario_id}。", "en": f"No scenario {scenario_id}."},
            )
        if difficulty not in DIFFICULTIES or mode not in MODES:
            raise Invalid(
                "bad_choice",
                {"zh": "难度或模式无效。", "en": "Unknown difficulty or mode."},
            )
        session, opening = await self.engine.start(
            trainee=actor.user.trainee,
            scenario=scenario_id,
            lang=actor.lang,
            difficulty=difficulty,
            mode=mode,
            rubric=rubric,
            assignment_id=assignment_id or None,
            postbox=postbox,
        )
        self.live[session.id] = session
        self.shown_at[session.id] = self.clock()
        return session, opening

    # sessions in progress: one place for every channel

    async def session_for(
        self, actor: Actor, postbox: Postbox | None = None
    ) -> tuple[Session | None, str | None]:
        """The actor's session in progress and a customer message a crash left unsent.

        After a restart the session is rebuilt from the store; what the rebuild produces
        (the line the customer still owed) is owed to ``postbox`` with it.
        """
        row = self.active_session(actor)
        if row is None:
            return None, None
        live = self.live.get(row.id)
        if live is not None:
            busy = self._turns.get(row.id)
            if (busy is not None and busy.locked()) or self._current(live):
                return live, None
            self.forget(row.id)  # another process moved it on: read it again
        try:
            session, pending = await self.engine.resume(row.id, postbox=postbox)
        except SessionBusy:
            raise ServiceError(
                "busy",
                {
                    "zh": "上一条回复还在处理中，请稍等几秒再试。",
                    "en": "Your previous reply is still being answered; try again in a few "
                    "seconds.",
                },
            ) from None
        if not session.ended:
            self.live[row.id] = session
        return session, pending

    def _current(self, session: Session) -> bool:
        """Whether a session held in memory has every message the store has.

        Only another process sharing the database adds messages behind its back.
        """
        return not self.engine.peers.shared or self.store.spoken_turns(session.id) == len(
            session.chat
        )

    async def reply(
        self, session: Session, text: str, *, ref: str | None, postbox: Postbox | None
    ) -> TurnResult | None:
        """Send a trainee's reply, timed from when the customer's last message was shown.

        Replies to one session are taken one at a time; a reply whose ``ref`` the session
        already has (sent again after a dropped connection, or from a second tab) waits
        for the first to be answered and returns None instead of being graded twice, as
        does a reply to a session that ended meanwhile. Raises ``ReplyRejected`` for a
        reply the engine refuses (nothing is stored).
        """
        async with self._turns.setdefault(session.id, asyncio.Lock()):
            if session.ended:
                return None
            if ref is not None and self.store.turn_with_ref(session.id, ref) is not None:
                return None
            shown = self.shown_at.get(session.id)
            latency = None if shown is None else self.clock() - shown
            try:
                result = await session.reply(text, latency, ref=ref, postbox=postbox)
            except StoreError:  # half done in memory: the store's copy is read next time,
                self.live.pop(session.id, None)  # and a reply it kept gets its answer then
                raise
            self.shown_at[session.id] = self.clock()
        if session.ended:
            self.forget(session.id)
        return result

    async def end(self, session: Session, *, postbox: Postbox | None) -> None:
        """End a session in progress after any reply being answered; owes its scorecard."""
        async with self._turns.setdefault(session.id, asyncio.Lock()):
            if not session.ended:
                await session.end(postbox=postbox)
        self.forget(session.id)

    def forget(self, session_id: str) -> None:
        """Drop a session from memory (it ended, or its channel let go of it)."""
        self.live.pop(session_id, None)
        self.shown_at.pop(session_id, None)
        lock = self._turns.get(session_id)
        if lock is not None and not lock.locked():
            del self._turns[session_id]

    def ensure_no_session(self, actor: Actor) -> None:
        """Refuse to start another session while one is in progress."""
        if self.store.active_session(actor.user.trainee) is not None:
            raise Invalid(
                "already_practising",
                {
                    "zh": "你还有一个进行中的会话，请先结束它（/end，或网页上的“结束练习”）。",
                    "en": "You have a session in progress; finish it first (/end, or End on the web page).",
                },
            )

    def active_session(self, actor: Actor) -> SessionRow | None:
        """The actor's session in progress."""
        return self.store.active_session(actor.user.trainee)

    # results

    def owner(self, row: SessionRow) -> UserRow | None:
        """The chat user whose session this is (None for terminal sessions)."""
        platform, _, external = row.trainee.partition(":")
        return self.store.user_by_external(platform, external) if external else None

    def _can_read(self, actor: Actor, row: SessionRow) -> bool:
        if actor.is_admin or row.trainee == actor.user.trainee:
            return True
        owner = self.owner(row)
        if owner is None:
            return False
        owner_teams = {t for t, r in self.store.memberships(owner.id) if r == "trainee"}
        return bool(owner_teams & actor.mentor_of)

    def session_row(self, actor: Actor, session_id: str) -> SessionRow:
        """A session the actor may read."""
        row = self.store.session(session_id) if session_id else None
        if row is None:
            raise _no_session(session_id)
        if not self._can_read(actor, row):
            raise _forbidden()
        return row

    def session_view(self, actor: Actor, session_id: str) -> SessionView:
        """A session's scorecard with mentor adjustments (owner, their mentors, admins)."""
        return self._view(self.session_row(actor, session_id))

    def transcript(self, actor: Actor, session_id: str) -> tuple[SessionView, list[TurnRow]]:
        """A session's result and its turns."""
        row = self.session_row(actor, session_id)
        return self._view(row), self.store.turns(row.id)

    def _view(self, row: SessionRow) -> SessionView:
        card = Scorecard.from_dict(row.scorecard) if row.scorecard else None
        events = self.store.grade_events([row.id])
        entries = []
        for number, data in enumerate(self.store.ledger(row.id), start=1):
            entry = LedgerEntry.from_dict(data)
            history = tuple(e for e in events if e.entry == number)
            points = history[-1].new_points if history else entry.points
            entries.append(EntryView(number, entry, points, history))
        adjusted_total: float | None = None
        adjusted_passed: bool | None = None
        reasons: tuple[Bilingual, ...] = ()
        blocking: tuple[Bilingual, ...] = ()
        if card is not None:
            adjusted_passed, reasons = card.passed, card.fail_reasons
            blocking = card.fail_reasons
            if card.total is not None:
                restored = sum(e.entry.points - e.points for e in entries)
                # Totals are shown to one decimal; ledger points carry two.
                adjusted_total = round(min(100.0, max(0.0, card.total + restored)), 1)
                below = below_pass_reason(card.total, card.pass_mark)
                blocking = tuple(r for r in card.fail_reasons if r != below)
                if restored:
                    kept = list(blocking)
                    if adjusted_total < card.pass_mark:
                        kept.append(below_pass_reason(adjusted_total, card.pass_mark))
                    reasons = tuple(kept)
                    adjusted_passed = not reasons
        return SessionView(
            row,
            card,
            tuple(entries),
            adjusted_total,
            adjusted_passed,
            tuple(reasons),
            tuple(self.store.disputes([row.id])),
            blocking,
        )

    def _adjusted_total(self, row: SessionRow) -> float:
        view = self._view(row)
        return -1.0 if view.adjusted_total is None else view.adjusted_total

    def _own_sessions(self, user: UserRow) -> list[SessionRow]:
        return self.store.sessions_of([user.trainee])

    def history(self, actor: Actor, limit: int = 10) -> list[SessionRow]:
        """The actor's own most recent sessions."""
        return self.store.sessions(actor.user.trainee, limit=limit)

    def dimension_trends(self, actor: Actor) -> list[tuple[str, Bilingual, list[float | None]]]:
        """Each dimension's score (0–100) over the actor's ended default-rubric sessions.

        As (id, title, scores oldest first); None where a session had no score for it.
        """
        cards = [
            Scorecard.from_dict(s.scorecard)
            for s in self.store.sessions_of([actor.user.trainee], ended_only=True)
            if s.scorecard and s.rubric == "default"
        ]
        titles: dict[str, Bilingual] = {}
        for card in cards:
            for d in card.dimensions:
                titles.setdefault(d.id, d.title)
        return [
            (
                dim,
                title,
                [next((d.score for d in card.dimensions if d.id == dim), None) for card in cards],
            )
            for dim, title in titles.items()
        ]

    def trend(self, actor: Actor, session_id: str) -> list[float]:
        """Totals of the session owner's ended sessions up to and including this one."""
        row = self.session_row(actor, session_id)
        ended = self.store.ended_totals(row.trainee)
        changed = self.store.with_grade_events(sid for sid, _ in ended)
        totals = []
        for sid, total in ended:
            if total is not None:
                if sid in changed:  # mentors changed points: recompute as the views do
                    stored = self.store.session(sid)
                    assert stored is not None
                    totals.append(self._adjusted_total(stored))
                else:
                    totals.append(round(min(100.0, max(0.0, total)), 1))
            if sid == row.id:
                break
        return totals

    def profile(self, actor: Actor) -> Profile:
        """The actor's results, weakest clauses and recommended next scenario."""
        ended = [s for s in self._own_sessions(actor.user) if s.status == "ended"]
        totals = [self._adjusted_total(s) for s in ended if s.total is not None]
        lost: dict[str, float] = {}
        for s in ended:
            for e in self._view(s).entries:
                for clause in e.entry.clause_ids:
                    lost[clause] = lost.get(clause, 0.0) + e.points
        worst = sorted(lost.items(), key=lambda item: -item[1])[:3]
        weakest = tuple(
            (cid, self._clause_title(cid), round(points, 1))
            for cid, points in worst
            if points > 0 and cid in self._clause_titles()
        )
        return Profile(
            sessions=len(ended),
            average=round(sum(totals) / len(totals), 1) if totals else None,
            passed=sum(bool(self._view(s).adjusted_passed) for s in ended),
            weakest=weakest,
            next_scenario=self._recommend(actor, [w[0] for w in weakest], ended),
            recent=tuple(reversed(ended[-5:])),
        )

    def _clause_titles(self) -> dict[str, Bilingual]:
        titles: dict[str, Bilingual] = {}
        for pack in self.library.packs.values():
            for cid, clause in pack.clauses.items():
                titles.setdefault(cid, {"zh": clause.title.zh, "en": clause.title.en})
        return titles

    def _clause_title(self, clause_id: str) -> Bilingual:
        return self._clause_titles()[clause_id]

    def _recommend(
        self, actor: Actor, weak_clauses: Sequence[str], ended: Sequence[SessionRow]
    ) -> PracticeChoice | None:
        choices = self.practice_choices(actor)
        for choice in choices:
            if choice.assignment is not None and not choice.passed and choice.attempts_left != 0:
                return choice
        passed = {s.scenario_id for s in ended if self._view(s).adjusted_passed}
        played = Counter(s.scenario_id for s in ended)
        free = [c for c in choices if c.assignment is None and c.scenario_id not in passed]
        if not free:
            free = [c for c in choices if c.assignment is None]

        def weight(choice: PracticeChoice) -> tuple[int, int]:
            clauses = self.library.get(choice.scenario_id).applicable_clauses
            return (-len(set(clauses) & set(weak_clauses)), played[choice.scenario_id])

        return min(free, key=weight) if free else None

    # disputes and overrides

    def open_dispute(
        self,
        actor: Actor,
        session_id: str,
        entry: int,
        reason: str,
        *,
        ref: str | None = None,
    ) -> DisputeRow:
        """A trainee disputes one deduction of their own ended session.

        The trainee's mentors are told, in their channels, with the dispute (``ref``: the
        chat message that caused it).
        """
        row = self.disputable(actor, session_id, entry)
        reason = _required_reason(reason)
        points = self._entry(self._view(row), entry).points
        mentors = {u.id: u for t in actor.trainee_in for u in self.store.members(t, "mentor")}
        with self.store.transaction():
            dispute = self.store.add_dispute(row.id, entry, actor.id, reason)
            values = {
                "id": dispute.id,
                "trainee": actor.user.name,
                "session": row.id,
                "entry": entry,
                "points": f"{points:g}",
                "reason": reason,
            }
            self.store.outbox_add(*notices.owed(mentors.values(), "dispute_new", values, ref))
        return dispute

    def disputable(self, actor: Actor, session_id: str, entry: int) -> SessionRow:
        """The session if the actor may dispute this deduction now (before asking why)."""
        row = self.store.session(session_id)
        if row is None:
            raise _no_session(session_id)
        if row.trainee != actor.user.trainee:
            raise _forbidden()
        if row.ended_at is not None and not self.dispute_open(row):
            raise Invalid(
                "dispute_window",
                {
                    "zh": f"申诉期已过：会话结束 {DISPUTE_DAYS} 天内可以申诉。",
                    "en": f"The dispute window has closed: disputes are open for "
                    f"{DISPUTE_DAYS} days after a session ends.",
                },
            )
        view = self._view(row)
        self._entry(view, entry)
        if any(d.entry == entry and d.status == "open" for d in view.disputes):
            raise Invalid(
                "already_disputed",
                {
                    "zh": f"第 {entry} 项扣分已在申诉中，请等待导师处理。",
                    "en": f"Deduction {entry} is already disputed; wait for your mentor.",
                },
            )
        return row

    def dispute_open(self, row: SessionRow) -> bool:
        """Whether an ended session's deductions may still be disputed."""
        if row.ended_at is None:
            return False
        ended = dt.date.fromisoformat(row.ended_at[:10])
        return self.today() - ended <= dt.timedelta(days=DISPUTE_DAYS)

    def _entry(self, view: SessionView, number: int) -> EntryView:
        for e in view.entries:
            if e.number == number:
                return e
        raise NotFound(
            "no_entry",
            {
                "zh": f"会话 {view.row.id} 没有第 {number} 项扣分。",
                "en": f"Session {view.row.id} has no deduction {number}.",
            },
        )

    def open_disputes(self, actor: Actor) -> list[tuple[DisputeRow, SessionView]]:
        """Open disputes the actor may rule on (their trainees'; all for admins)."""
        trainees = {u.trainee for u in self._trainees_of(actor)}
        sessions = self.store.sessions_of(sorted(trainees), ended_only=True)
        out = []
        for d in self.store.disputes([s.id for s in sessions], status="open"):
            row = self.store.session(d.session_id)
            assert row is not None
            out.append((d, self._view(row)))
        return out

    def _trainees_of(self, actor: Actor) -> list[UserRow]:
        teams = (
            self.teams(actor)
            if actor.is_admin
            else [t for t in self.store.teams() if t.id in actor.mentor_of]
        )
        seen: dict[int, UserRow] = {}
        for team in teams:
            for user in self.store.members(team.id, "trainee"):
                seen.setdefault(user.id, user)
        return list(seen.values())

    def _mentors_owner(self, actor: Actor, row: SessionRow) -> bool:
        """Whether the actor is an admin or a mentor of a team the session's owner trains in."""
        if actor.is_admin:
            return True
        owner = self.owner(row)
        owner_teams = (
            {t for t, r in self.store.memberships(owner.id) if r == "trainee"} if owner else set()
        )
        return bool(owner_teams & actor.mentor_of)

    def _require_mentor_of(self, actor: Actor, row: SessionRow) -> None:
        if row.trainee == actor.user.trainee:
            raise _forbidden()  # nobody changes the grades of their own sessions
        if not self._mentors_owner(actor, row):
            raise _forbidden()

    def open_dispute_for_ruling(
        self, actor: Actor, dispute_id: int
    ) -> tuple[DisputeRow, SessionRow]:
        """An open dispute the actor may rule on, with its session.

        Dispute ids are small consecutive numbers, so a dispute the actor may not rule on is
        refused exactly like a missing one (NotFound): an outsider cannot tell which ids
        exist. Only the session's owner, who filed it, is told it is Forbidden.
        """
        dispute = self.store.dispute(dispute_id)
        row = None if dispute is None else self.store.session(dispute.session_id)
        if dispute is None or row is None:
            raise _no_dispute(dispute_id)
        if row.trainee != actor.user.trainee and not self._mentors_owner(actor, row):
            raise _no_dispute(dispute_id)
        self._require_mentor_of(actor, row)
        if dispute.status != "open":
            raise Invalid(
                "dispute_closed",
                {
                    "zh": f"申诉 #{dispute_id} 已处理（{dispute.status}）。",
                    "en": f"Dispute #{dispute_id} was already ruled on ({dispute.status}).",
                },
            )
        return dispute, row

    def resolve_dispute(
        self,
        actor: Actor,
        dispute_id: int,
        verdict: str,
        reason: str,
        points: float | None = None,
        *,
        ref: str | None = None,
    ) -> SessionView:
        """Rule on a dispute: accepted, partly (``points`` still lost) or rejected.

        Accepted gives all the points back; rejected leaves them. The ruling and its reason
        are appended to the grade history, and the trainee is told in their channel.
        """
        dispute, row = self.open_dispute_for_ruling(actor, dispute_id)
        if verdict not in VERDICTS:
            raise Invalid(
                "bad_verdict",
                {
                    "zh": "裁定只能是 accepted / partly / rejected。",
                    "en": "The ruling must be accepted, partly or rejected.",
                },
            )
        reason = _required_reason(reason)
        entry = self._entry(self._view(row), dispute.entry)
        if verdict == "accepted":
            new = 0.0
        elif verdict == "rejected":
            new = entry.points
        else:
            new = _points(points, entry.points, strict_below=True)
        with self.store.transaction():
            self.store.add_grade_event(
                session_id=row.id,
                entry=dispute.entry,
                kind="dispute",
                actor_id=actor.id,
                old_points=entry.points,
                new_points=new,
                reason=reason,
                dispute_id=dispute.id,
                verdict=verdict,
            )
            view = self._view(row)
            values = {
                "id": dispute.id,
                "session": row.id,
                "verdict": verdict,
                "reason": reason,
                "total": _total(view),
            }
            self.store.outbox_add(*self._tell_owner(row, "ruled_trainee", values, ref))
        return view

    def _tell_owner(
        self, row: SessionRow, key: notices.Key, values: dict[str, Any], ref: str | None
    ) -> list[Owed]:
        owner = self.owner(row)
        return notices.owed([owner] if owner is not None else [], key, values, ref)

    def override(
        self,
        actor: Actor,
        session_id: str,
        entry: int,
        points: float,
        reason: str,
        *,
        ref: str | None = None,
    ) -> SessionView:
        """A mentor sets how many points one deduction costs, with a required reason.

        The trainee is told in their channel, with the change.
        """
        row = self.store.session(session_id)
        if row is None:
            raise _no_session(session_id)
        self._require_mentor_of(actor, row)
        view = self._view(row)
        current = self._entry(view, entry)
        new = _points(points, 100.0, strict_below=False)
        reason = _required_reason(reason)
        with self.store.transaction():
            self.store.add_grade_event(
                session_id=row.id,
                entry=entry,
                kind="override",
                actor_id=actor.id,
                old_points=current.points,
                new_points=new,
                reason=reason,
            )
            view = self._view(row)
            self._tell_changed(view, entry, current.points, new, reason, ref)
        return view

    def _tell_changed(
        self, view: SessionView, entry: int, old: float, new: float, reason: str, ref: str | None
    ) -> None:
        """Owe the trainee a notice that a mentor changed what one deduction costs."""
        values = {
            "session": view.row.id,
            "entry": entry,
            "old": f"{old:g}",
            "new": f"{new:g}",
            "reason": reason,
            "total": _total(view),
        }
        self.store.outbox_add(*self._tell_owner(view.row, "overridden_trainee", values, ref))

    def flagged_grades(self, actor: Actor) -> list[FlaggedGrade]:
        """Grades of the actor's trainees' ended sessions waiting on a review, oldest first."""
        trainees = {u.trainee for u in self._trainees_of(actor)}
        sessions = {s.id: s for s in self.store.sessions_of(sorted(trainees), ended_only=True)}
        views: dict[str, SessionView] = {}
        out = []
        for sid, turn_idx, reply, grade in self.store.flagged_grades(sessions, REVIEW_FLAGS):
            view = views.get(sid) or views.setdefault(sid, self._view(sessions[sid]))
            out.append(FlaggedGrade(view, turn_idx, reply, grade, _cost(view, reply, grade)))
        return sorted(out, key=lambda f: (f.view.row.started_at, f.turn_idx))

    def review_grade(
        self,
        actor: Actor,
        session_id: str,
        turn_idx: int,
        dimension: str,
        verdict: str,
        reason: str,
        points: dict[int, float] | None = None,
        *,
        ref: str | None = None,
    ) -> SessionView:
        """Review a flagged grade: accepted, adjusted or rejected.

        ``accepted``: it stands; ``adjusted``: its ledger entries cost ``points`` (by entry
        number); ``rejected``: they cost nothing. Every review is appended to the grade reviews; changed points also to the grade
        history, and the trainee is told of them in their channel. A reason is required
        unless the grade is accepted as it is.
        """
        row = self.store.session(session_id) if session_id else None
        if row is None:
            raise _no_session(session_id)
        self._require_mentor_of(actor, row)
        found = [
            (idx, reply, g)
            for sid, idx, reply, g in self.store.flagged_grades([row.id], REVIEW_FLAGS)
            if idx == turn_idx and g.dimension == dimension
        ]
        if not found:
            raise NotFound(
                "no_flagged_grade",
                {
                    "zh": "这条评分不在待复核队列中（可能已被复核）。",
                    "en": "That grade is not waiting for a review (it may have been reviewed).",
                },
            )
        if verdict not in REVIEW_VERDICTS:
            raise Invalid(
                "bad_verdict",
                {
                    "zh": "复核结论只能是 accepted / adjusted / rejected。",
                    "en": "The review must be accepted, adjusted or rejected.",
                },
            )
        _, reply, grade = found[0]
        view = self._view(row)
        entries = _cost(view, reply, grade)
        reason = reason.strip() if verdict == "accepted" else _required_reason(reason)
        changes: dict[int, float] = {}
        if verdict == "rejected":
            changes = {e.number: 0.0 for e in entries if e.points}
        elif verdict == "adjusted":
            asked = points or {}
            for e in entries:
                if e.number in asked and asked[e.number] != e.points:
                    changes[e.number] = _points(asked[e.number], 100.0, strict_below=False)
            if not changes:
                raise Invalid(
                    "nothing_adjusted",
                    {
                        "zh": "请至少改动一项扣分，或选择“维持”。",
                        "en": "Change at least one entry's points, or accept the grade.",
                    },
                )
        with self.store.transaction():
            self.store.add_grade_review(
                session_id=row.id,
                turn_idx=turn_idx,
                dimension=dimension,
                verdict=verdict,
                actor_id=actor.id,
                reason=reason,
            )
            for number, new in changes.items():
                self.store.add_grade_event(
                    session_id=row.id,
                    entry=number,
                    kind="review",
                    verdict=verdict,
                    actor_id=actor.id,
                    old_points=next(e.points for e in entries if e.number == number),
                    new_points=new,
                    reason=reason,
                )
            view = self._view(row)
            for number, new in changes.items():
                old = next(e.points for e in entries if e.number == number)
                self._tell_changed(view, number, old, new, reason, ref)
        return view

    # mentors

    def assign(
        self,
        actor: Actor,
        scenario_ids: Sequence[str],
        *,
        team: TeamRow | None = None,
        trainee: str | UserRow | None = None,
        due: dt.date | None = None,
        pass_mark: float = DEFAULT_PASS_MARK,
        attempts: int | None = None,
        difficulty: str = "normal",
        mode: str = "exam",
        rubric: str = "default",
        ref: str | None = None,
    ) -> tuple[list[AssignmentRow], list[UserRow]]:
        """Assign scenarios to a whole team or one trainee.

        Returns the assignments and the trainees told of them, in their channels, with
        the assignments (a Telegram user who never opened the bot cannot be told).
        """
        if not scenario_ids:
            raise Invalid(
                "no_scenarios",
                {"zh": "请至少指定一个场景。", "en": "Name at least one scenario."},
            )
        for sid in scenario_ids:
            if sid not in self.library.scenarios:
                known = ", ".join(sorted(self.library.scenarios))
                raise NotFound(
                    "no_scenario",
                    {
                        "zh": f"没有场景 {sid}。可用场景：{known}",
                        "en": f"No scenario {sid}. Scenarios: {known}",
                    },
                )
        if difficulty not in DIFFICULTIES or mode not in MODES or rubric not in RUBRICS:
            raise Invalid(
                "bad_choice",
                {
                    "zh": "难度只能是 easy/normal/hard，模式只能是 coach/exam，"
                    f"评分表只能是 {'/'.join(RUBRICS)}。",
                    "en": "Difficulty must be easy/normal/hard, mode coach/exam, rubric "
                    f"{'/'.join(RUBRICS)}.",
                },
            )
        if not 0 < pass_mark <= 100 or (attempts is not None and attempts < 1):
            raise Invalid(
                "bad_numbers",
                {
                    "zh": "及格线需在 1–100 之间，次数至少为 1。",
                    "en": "The pass mark must be 1–100 and attempts at least 1.",
                },
            )
        if due is not None and due < self.today():
            raise Invalid(
                "due_past",
                {
                    "zh": f"截止日期 {due} 已经过去。",
                    "en": f"The due date {due} is in the past.",
                },
            )
        user: UserRow | None = None
        if trainee is not None:
            user, team = self.trainee_target(actor, trainee)
        if team is None or not actor.mentors(team.id):
            raise _forbidden()
        targets = [user] if user is not None else self.store.members(team.id, "trainee")
        reachable = [u for u in targets if notices.addresses(u)]
        with self.store.transaction():
            rows = [
                self.store.add_assignment(
                    team_id=team.id,
                    user_id=None if user is None else user.id,
                    scenario_id=sid,
                    difficulty=difficulty,
                    mode=mode,
                    rubric=rubric,
                    due=None if due is None else due.isoformat(),
                    pass_mark=pass_mark,
                    attempts=attempts,
                    created_by=actor.id,
                )
                for sid in scenario_ids
            ]
            ids = [row.id for row in rows]
            self.store.outbox_add(*notices.owed(reachable, "assignments", {"ids": ids}, ref))
        return rows, reachable

    def trainee_target(self, actor: Actor, token: str | UserRow) -> tuple[UserRow, TeamRow]:
        """A trainee of the actor's teams (a user, or their id or @username), with that team."""
        found = [token] if isinstance(token, UserRow) else self.store.find_users(token)
        for user in found:
            for team_id, role in self.store.memberships(user.id):
                if role == "trainee" and actor.mentors(team_id):
                    team = self.store.team(team_id)
                    assert team is not None
                    return user, team
        raise NotFound(
            "no_trainee",
            {
                "zh": f"你的团队里没有学员 {token}（可用用户 id 或 @用户名）。",
                "en": f"No trainee {token} in your teams (use their user id or @username).",
            },
        )

    def team_report(self, actor: Actor, team: TeamRow) -> TeamReport:
        """Completion, dimension averages, most violated clauses and overdue trainees."""
        if not actor.mentors(team.id):
            raise _forbidden()
        trainees = self.store.members(team.id, "trainee")
        sessions = self.store.sessions_of([u.trainee for u in trainees])
        by_trainee: dict[str, list[SessionRow]] = {}
        for s in sessions:
            by_trainee.setdefault(s.trainee, []).append(s)
        today = self.today().isoformat()
        progress = []
        for a in self.store.assignments([team.id]):
            for u in trainees:
                if a.user_id is not None and a.user_id != u.id:
                    continue
                mine = [s for s in by_trainee.get(u.trainee, []) if s.assignment_id == a.id]
                totals = [self._adjusted_total(s) for s in mine if s.total is not None]
                best = max(totals) if totals else None
                passed = any(self._view(s).passes(a.pass_mark) for s in mine)
                overdue = a.due is not None and a.due < today and not passed
                progress.append(Progress(u, a, len(mine), best, passed, overdue))
        ended = [s for s in sessions if s.status == "ended" and s.scorecard]
        return TeamReport(
            team,
            tuple(trainees),
            tuple(progress),
            len(ended),
            _dimension_averages(ended),
            self._top_clauses(ended),
        )

    def _top_clauses(self, ended: Sequence[SessionRow]) -> tuple[tuple[str, Bilingual, int], ...]:
        titles = self._clause_titles()
        counts: Counter[str] = Counter()
        for s in ended:
            for e in self._view(s).entries:
                if e.points > 0:
                    counts.update(c for c in e.entry.clause_ids if c in titles)
        return tuple((c, self._clause_title(c), n) for c, n in counts.most_common(5))

    def team_sessions(
        self, actor: Actor, team: TeamRow, limit: int = 5
    ) -> list[tuple[UserRow, list[tuple[SessionRow, float | None]]]]:
        """Each trainee of the team with their latest sessions and adjusted totals."""
        if not actor.mentors(team.id):
            raise _forbidden()
        return [
            (
                user,
                [
                    (row, self._adjusted_total(row))
                    for row in self.store.sessions(user.trainee, limit)
                ],
            )
            for user in self.store.members(team.id, "trainee")
        ]

    def export_csv(self, actor: Actor, team: TeamRow) -> str:
        """One row per session of the team's trainees (UTF-8 with BOM opens in Excel)."""
        if not actor.mentors(team.id):
            raise _forbidden()
        out = io.StringIO()
        out.write("\ufeff")
        writer = csv.writer(out)
        writer.writerow(
            ["trainee", "user_id", "session", "scenario", "difficulty", "mode", "assignment",
             "started_at", "ended_at", "outcome", "total", "adjusted_total", "passed",
             "adjusted_passed", "empathy", "accuracy", "policy", "red_lines", "disputes"]
        )  # fmt: skip
        for user in self.store.members(team.id, "trainee"):
            for s in self.store.sessions_of([user.trainee]):
                view = self._view(s)
                pct = _percentages(view.card)
                writer.writerow(
                    [_cell(user.name), user.id, s.id, s.scenario_id, s.difficulty, s.mode,
                     s.assignment_id or "", s.started_at, s.ended_at or "", s.outcome or "",
                     "" if s.total is None else f"{s.total:.1f}",
                     "" if view.adjusted_total is None else f"{view.adjusted_total:.1f}",
                     "" if s.passed is None else int(s.passed),
                     "" if view.adjusted_passed is None else int(view.adjusted_passed),
                     pct.get("empathy", ""), pct.get("accuracy", ""), pct.get("policy", ""),
                     len(view.card.red_lines) if view.card else "",
                     len(view.disputes)]
                )  # fmt: skip
        return out.getvalue()

    # drills

    def plan_drill(
        self,
        actor: Actor | None,
        preset: str,
        *,
        teams: Sequence[TeamRow],
        starts_at: float | None = None,
        minutes: float | None = None,
        concurrency: int | None = None,
        seed: int | None = None,
        ref: str | None = None,
    ) -> tuple[DrillRow, Load, list[UserRow]]:
        """Plan a drill of the trainees of ``teams`` from a preset (its numbers overridable).

        Returns the drill, the load it puts on a channel (see :func:`bot.drill.plan.load`)
        and the trainees, who are told in their channels. ``actor`` None is the operator
        at the command line, who may plan any team's drill.
        """
        if not teams:
            raise Invalid(
                "no_team", {"zh": "请选择至少一个团队。", "en": "Choose at least one team."}
            )
        if actor is not None and not all(actor.mentors(team.id) for team in teams):
            raise _forbidden()
        base = self.library.drills.get(preset)
        if base is None:
            known = ", ".join(sorted(self.library.drills)) or "—"
            raise NotFound(
                "no_preset",
                {
                    "zh": f"没有演练预设「{preset}」。可选：{known}",
                    "en": f"No drill preset '{preset}'. Known: {known}",
                },
            )
        changes = {"minutes": minutes, "concurrency": concurrency}
        try:
            plan = DrillPlan.model_validate(
                base.model_dump(by_alias=True) | {k: v for k, v in changes.items() if v is not None}
            )
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.errors()[0]["loc"])
            raise Invalid(
                "bad_plan",
                {
                    "zh": f"演练设置 {where} 不合法：时长 1–480 分钟，同时接待 1–5 位客户。",
                    "en": f"The drill's {where} is out of range: 1–480 minutes, 1–5 customers at once.",
                },
            ) from None
        members = list(
            {u.id: u for t in teams for u in self.store.members(t.id, "trainee")}.values()
        )
        now = self.drills.clock()
        starts = now if starts_at is None else starts_at
        if starts < now - 60:
            raise Invalid(
                "start_past", {"zh": "开始时间已经过去。", "en": "The start time has passed."}
            )
        reachable = [u for u in members if notices.addresses(u)]
        try:
            with self.store.transaction():
                drill_id = self.drills.plan(
                    plan,
                    members,
                    starts_at=starts,
                    seed=secrets.randbelow(2**31) if seed is None else seed,
                    created_by=None if actor is None else actor.id,
                )
                values = {
                    "id": str(drill_id),
                    "title_zh": plan.title.zh,
                    "title_en": plan.title.en,
                    "starts": time.strftime("%Y-%m-%d %H:%M", time.localtime(starts)),
                    "minutes": f"{plan.minutes:g}",
                    "concurrency": str(plan.concurrency),
                }
                self.store.outbox_add(*notices.owed(reachable, "drill_planned", values, ref))
        except DrillRefused as refused:
            raise Invalid(refused.code, refused.message) from None
        drill = self.store.drill(drill_id)
        assert drill is not None
        return drill, load(plan, len(members)), members

    def drill(self, actor: Actor, drill_id: int) -> DrillRow:
        """A drill the actor takes part in, mentors a trainee of, or any drill for an admin.

        Any other drill is refused as if it did not exist.
        """
        drill = self.store.drill(drill_id)
        if drill is None or not self._sees_drill(actor, drill):
            raise NotFound(
                "no_drill", {"zh": f"没有演练 #{drill_id}。", "en": f"No drill #{drill_id}."}
            )
        return drill

    def _sees_drill(self, actor: Actor, drill: DrillRow) -> bool:
        if actor.is_admin or drill.created_by == actor.id:
            return True
        if self.store.in_drill(drill.id, actor.id):
            return True
        if not actor.mentor_of:
            return False
        users = self.store.drill_users(drill.id)
        return any(
            actor.mentors(team)
            for user in users
            for team, role in self.store.memberships(user)
            if role == "trainee"
        )

    def drill_report(self, actor: Actor, drill_id: int) -> DrillReport:
        """The live standings of a drill, or its report once ended."""
        return standings(self.store, self.drill(actor, drill_id))

    def my_drill(self, actor: Actor) -> DrillRow | None:
        """The drill the actor takes part in that is running (or the next planned one)."""
        mine = self.store.drills_of(actor.id, ("running", "planned"))
        return mine[0] if mine else None

    def drill_waiting(self, actor: Actor, drill_id: int) -> list[DrillCustomerRow]:
        """The actor's customers in a drill whose conversation is open, first come first."""
        return self.store.drill_customers(drill_id, ("open",), user_id=actor.id)

    def drill_to_show(self, actor: Actor, drill_id: int | None) -> DrillRow | None:
        """The drill ``drill_id``, or the actor's running one, or the latest they may see."""
        if drill_id is not None:
            return self.drill(actor, drill_id)
        mine = self.store.drills_of(actor.id, ("running",))
        if mine:
            return mine[0]
        return next(iter(self.visible_drills(actor, 1)), None)

    def visible_drills(self, actor: Actor, limit: int) -> list[DrillRow]:
        """The newest ``limit`` drills the actor may see."""
        return list(
            itertools.islice((d for d in self.store.drills() if self._sees_drill(actor, d)), limit)
        )

    def drill_follow_ups(self, report: DrillReport) -> list[tuple[Standing, list[str]]]:
        """Each trainee of a drill with the scenarios that train their weakest clauses."""
        return [(s, follow_up(self.library, s)) for s in report.trainees]

    def assign_follow_ups(
        self, actor: Actor, drill_id: int, *, ref: str | None = None
    ) -> list[AssignmentRow]:
        """Assign every trainee of the drill their follow-up scenarios (they are told)."""
        if not actor.mentor_of and not actor.is_admin:
            raise _forbidden()
        made: list[AssignmentRow] = []
        for standing, scenarios in self.drill_follow_ups(self.drill_report(actor, drill_id)):
            user = self.store.user(standing.user_id) if standing.user_id is not None else None
            if user is None or not scenarios:
                continue
            rows, _ = self.assign(actor, scenarios, trainee=user, ref=ref)
            made += rows
        return made

    async def drill_reply(
        self, actor: Actor, drill_id: int, label: str, text: str, *, ref: str | None = None
    ) -> TurnResult | None:
        """The actor's reply to their drill customer ``label``; None if sent before."""
        if not self.store.in_drill(drill_id, actor.id):
            self.drill(actor, drill_id)  # refused as unknown to whoever may not see it
            raise _forbidden()  # a mentor watches a drill; only its trainees answer
        try:
            return await self.drills.reply(actor.user, drill_id, label, text, ref=ref)
        except DrillRefused as refused:
            raise Invalid(refused.code, refused.message) from None


def _cost(view: SessionView, reply: int, grade: Grade) -> tuple[EntryView, ...]:
    """The ledger entries a reply's grade cost (its deductions, by code)."""
    codes = {d.code for d in grade.deductions}
    return tuple(e for e in view.entries if e.entry.reply == reply and e.entry.code in codes)


def _total(view: SessionView) -> str:
    """A session's total after mentors' changes, as notices show it."""
    return "—" if view.adjusted_total is None else f"{view.adjusted_total:.1f}"


def _cell(value: object) -> object:
    """A CSV cell that a spreadsheet will not run as a formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _percentages(card: Scorecard | None) -> dict[str, str]:
    """Each scored dimension of a scorecard as a percentage, formatted for a CSV cell."""
    if card is None:
        return {}
    return {
        d.id: f"{d.score / d.max_score * 100:.1f}"
        for d in card.dimensions
        if d.score is not None and d.max_score
    }


def _dimension_averages(ended: Sequence[SessionRow]) -> tuple[tuple[Bilingual, float | None], ...]:
    sums: dict[str, list[float]] = {}
    titles: dict[str, Bilingual] = {}
    for s in ended:
        assert s.scorecard is not None
        for d in Scorecard.from_dict(s.scorecard).dimensions:
            titles.setdefault(d.id, d.title)
            if d.score is not None and d.max_score:
                sums.setdefault(d.id, []).append(d.score / d.max_score * 100)
    return tuple(
        (titles[k], round(sum(v) / len(v), 1) if (v := sums.get(k)) else None) for k in titles
    )


def _required_reason(reason: str) -> str:
    reason = reason.strip()
    if len(reason) < 2:
        raise Invalid(
            "reason_needed",
            {
                "zh": "请写明理由（至少 2 个字）。",
                "en": "Please give a reason (at least 2 characters).",
            },
        )
    return reason[:1000]


def _points(points: float | None, limit: float, *, strict_below: bool) -> float:
    ok = points is not None and 0 <= points <= limit and not (strict_below and points >= limit)
    if not ok or points is None:
        raise Invalid(
            "bad_points",
            {
                "zh": f"扣分需在 0 到 {limit:g} 之间"
                + ("（部分采纳时须小于原扣分）。" if strict_below else "。"),
                "en": f"Points must be between 0 and {limit:g}"
                + (" (below the original for a partial ruling)." if strict_below else "."),
            },
        )
    return round(points, 2)
