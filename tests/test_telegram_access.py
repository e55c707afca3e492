"""Access-control matrix, end to end: the real bot against the fake Bot API on 127.0.0.1.

Seven actors are set up through the bot itself: an admin, a mentor of team A, a mentor of
team B, trainees A1 and A2 (team A), trainee B1 (team B) and a stranger. A1 plays an exam
session with a poor reply, ends it and disputes its deductions. Then every actor tries every
command and button (forged when the actor was never shown it) that touches A1's data or
team A, and the rules of ``bot/service.py`` are checked cell by cell:

- admin: everything; mentor: their own team only; trainee: their own data only;
  stranger: nothing.
- A refusal is an answer (the refusal text in the actor's language, or an
  answerCallbackQuery alert), never a crash: no update is marked ``failed``.
- A refusal writes nothing (row counts of the access-relevant tables are unchanged).
- Nothing of A1's (session id, reply, dispute reasons, name) reaches an outsider.

Each matrix is one shared setup per test function; refused actors go first in every row
so that one-shot actions (a dispute ruled once) are still open when they try. Two bugs
found on the way (a practice button answered twice, /override crashing on "²") have
regression tests at the end of the file.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from tgharness import BotHarness

from bot.storage import Store
from bot.telegram.texts import t

Bilingual = Mapping[str, str]


@dataclass(frozen=True)
class Person:
    key: str
    uid: int
    lang: str
    name: str
    username: str | None = None


ADMIN = Person("admin", 9101, "en", "Ada-Admin", "ada_admin")
MENTOR_A = Person("mentor_a", 9102, "zh", "Meng-MentorA", "meng_a")
MENTOR_B = Person("mentor_b", 9103, "en", "Bob-MentorB", "bob_b")
A1 = Person("a1", 9104, "zh", "Alice-A1", "alice_a1")
A2 = Person("a2", 9105, "en", "Aaron-A2", "aaron_a2")
B1 = Person("b1", 9106, "zh", "Bei-B1", "bei_b1")
STRANGER = Person("stranger", 9107, "zh", "Sam-Stranger")
PEOPLE = (STRANGER, B1, A2, A1, MENTOR_B, MENTOR_A, ADMIN)
"""Every row is tried in this order: refused actors first, the allowed last."""
OUTSIDERS = (MENTOR_B, A2, B1, STRANGER)
"""Actors who may see nothing of A1's."""

A1_REPLY = "不知道，你自己看着办吧"
A1_REASONS = ("我第一句话已经道歉了-A1", "准确性扣分不合理-A1")

TABLES = ("grade_events", "disputes", "assignments", "invites", "teams", "memberships", "sessions")

FORBIDDEN = {
    "zh": "没有权限：这不属于你的团队或你本人。",
    "en": "Not allowed: this is not your team's or your own.",
}
MENTORS_ONLY = {
    "zh": "只有导师和管理员可以使用这个命令。",
    "en": "Only mentors and admins can do that.",
}
NOT_YOUR_TEAM = {"zh": "没有权限：这不是你的团队。", "en": "Not allowed: not your team."}
NO_TRAINEE = {
    "zh": "你的团队里没有学员 @alice_a1（可用用户 id 或 @用户名）。",
    "en": "No trainee @alice_a1 in your teams (use their user id or @username).",
}
NO_SESSION = {lang: t("no_session", lang) for lang in ("zh", "en")}
# Someone with no invite and no session is greeted with how to begin instead.
WELCOME_STRANGER = {lang: t("welcome", lang, name="Sam-Stranger") for lang in ("zh", "en")}
TRAINEE_OF_A = {  # a member knows the team exists: told why, not "no such team"
    "zh": "你是团队「A」的学员；只有导师和管理员可以管理团队。",
    "en": "You are a trainee of team 'A'; only its mentors and admins manage it.",
}


def admins_only(zh: str, en: str) -> Bilingual:
    """Refused because only an admin may: says so and where an admin works."""
    return {
        "zh": f"只有管理员可以{zh}。请联系管理员（服务器上：trainer admin --help）。",
        "en": f"Only an admin can {en}. Ask your admin (on the server: trainer admin --help).",
    }


ADMINS_CREATE_TEAMS = admins_only("创建团队", "create teams")
ADMINS_INVITE_ADMINS = admins_only("邀请管理员", "invite admins")
ADMINS_INVITE_MENTORS = admins_only(
    "邀请导师；你可以邀请学员：/invite A trainee",
    "invite mentors; you can invite trainees: /invite A trainee",
)
NO_DISPUTES = {lang: t("no_disputes", lang) for lang in ("zh", "en")}
OWN_ONLY = {
    "zh": "只有学员本人可以对自己的扣分提出申诉。",
    "en": "Only the trainee can dispute their own deductions.",
}


def no_team(name: str, yours: str) -> Bilingual:
    """The answer to a team name that is not the actor's: no such team, here are yours."""
    return {
        "zh": f"没有名为「{name}」的团队。你的团队：{yours}",
        "en": f"No team named '{name}'. Your teams: {yours}",
    }


# A team or dispute the actor may not see is answered exactly like one that does not exist.
NO_TEAM_A = no_team("A", "—")
NO_TEAM_A_FOR_B = no_team("A", "B")
NO_DISPUTE = {"zh": "没有申诉 #{d}。", "en": "No dispute #{d}."}
NO_SUCH_DISPUTE = {"zh": "没有申诉 #{d0}。", "en": "No dispute #{d0}."}
STALE = {lang: t("stale_button", lang) for lang in ("zh", "en")}


# ---------------------------------------------------------------- expectations


@dataclass(frozen=True)
class Allow:
    """The actor may: the writes happen and the data is shown."""

    delta: Mapping[str, int] = field(default_factory=dict)
    shows: tuple[str, ...] = ()
    """Templates (see ``World.fields``) that must appear in the texts or documents sent."""
    document: bool = False


@dataclass(frozen=True)
class Deny:
    """The actor may not: exactly these answers, no writes, none of A1's data.

    Texts and alerts are templates, formatted with ``World.fields``.
    """

    texts: tuple[Bilingual, ...] = ()
    alerts: tuple[Bilingual, ...] = ()


@dataclass(frozen=True)
class Own:
    """An answer about the actor's own (empty) data: no writes, none of A1's data."""


Expect = Allow | Deny | Own


@dataclass(frozen=True)
class Row:
    label: str
    steps: tuple[str, ...]
    """``say TEXT`` or ``press DATA``, formatted with ``World.fields``."""
    expect: Mapping[str, Expect]
    once: bool = True
    """Each callback query is answered exactly once."""


def rule(default: Expect, **by_actor: Expect) -> dict[str, Expect]:
    """An expectation for every actor: ``default`` unless named."""
    return {p.key: by_actor.get(p.key, default) for p in PEOPLE}


# ---------------------------------------------------------------- the world


@dataclass
class World:
    h: BotHarness
    store: Store
    sid: str
    team_a: int
    disputes: tuple[int, int]
    assignment: int

    def fields(self, p: Person) -> dict[str, object]:
        """Template fields; ``d`` is the dispute an actor rules on (the admin takes the second)."""
        return {
            "sid": self.sid,
            "team_a": self.team_a,
            "d": self.disputes[1] if p is ADMIN else self.disputes[0],
            "d1": self.disputes[0],
            "d2": self.disputes[1],
            "d0": max(self.disputes) + 100,  # no such dispute
            "aid": self.assignment,
            "key": p.key,
        }

    def leaks(self) -> tuple[str, ...]:
        """Strings that are A1's data."""
        return (self.sid, A1_REPLY, A1.name, *A1_REASONS)


def count(store: Store, table: str, where: str = "1=1") -> int:
    return int(store.backend.fetchone(f"SELECT COUNT(*) FROM {table} WHERE {where}")[0])


def counts(store: Store) -> dict[str, int]:
    out = {table: count(store, table) for table in TABLES}
    out["admins"] = count(store, "users", "is_admin = 1")
    return out


def failed(store: Store) -> int:
    return count(store, "updates", "status = 'failed'")


async def say(h: BotHarness, p: Person, text: str) -> list[str]:
    return await h.say(p.uid, text, lang=p.lang, first_name=p.name, username=p.username)


async def press(h: BotHarness, p: Person, data: str) -> list[str]:
    return await h.press(p.uid, data, lang=p.lang)


def _code(text: str) -> str:
    match = re.search(r"/start (\S+)", text)
    assert match, text
    return match.group(1)


async def build_world(h: BotHarness, store: Store) -> World:
    """The seven actors, A1's ended session with two deductions and two open disputes."""
    code = h.app.svc.create_invite("admin", None)  # what `trainer admin invite` does
    assert "admin" in (await say(h, ADMIN, f"/start {code}"))[0]
    for team in ("A", "B"):
        assert f"'{team}'" in (await say(h, ADMIN, f"/newteam {team}"))[0]
    team_a = store.team_by_name("A")
    assert team_a is not None
    for mentor, team in ((MENTOR_A, "A"), (MENTOR_B, "B")):
        mentor_code = _code((await say(h, ADMIN, f"/invite {team} mentor"))[0])
        await say(h, mentor, f"/start {mentor_code}")
    for mentor, team, trainees in ((MENTOR_A, "A", (A1, A2)), (MENTOR_B, "B", (B1,))):
        trainee_code = _code((await say(h, mentor, f"/invite {team} trainee"))[0])
        for trainee in trainees:
            await say(h, trainee, f"/start {trainee_code}")
    await say(h, STRANGER, "/start")
    assert (await say(h, MENTOR_A, "/assign damaged-kettle team=A"))[-1].startswith("已布置")
    (assignment,) = store.assignments([team_a.id])

    await say(h, A1, "/practice")
    await press(h, A1, "p:m:damaged-kettle:normal:exam:0")
    await say(h, A1, A1_REPLY)
    await say(h, A1, "/end")
    (row,) = store.sessions_of([store.user_by_external("telegram", str(A1.uid)).trainee])
    assert row.status == "ended" and len(store.ledger(row.id)) >= 2
    for entry, reason in enumerate(A1_REASONS, start=1):
        assert f"第 {entry} 项" in (await press(h, A1, f"dp:{row.id}:{entry}"))[0]
        assert "已提交" in (await say(h, A1, reason))[0]
    disputes = [d.id for d in store.disputes([row.id], status="open")]
    assert len(disputes) == 2
    roles = {p.key: h.app.svc.actor(store.user_by_external("telegram", str(p.uid)).id).roles
             for p in PEOPLE}  # fmt: skip
    assert roles == {
        "admin": ("admin",),
        "mentor_a": ("mentor",),
        "mentor_b": ("mentor",),
        "a1": ("trainee",),
        "a2": ("trainee",),
        "b1": ("trainee",),
        "stranger": (),
    }
    assert failed(store) == 0
    return World(h, store, row.id, team_a.id, (disputes[0], disputes[1]), assignment.id)


# ---------------------------------------------------------------- running a matrix


async def run_cell(w: World, p: Person, row: Row) -> list[str]:
    """One actor tries one row; returns the problems found (empty when as expected)."""
    h, store = w.h, w.store
    expect = row.expect[p.key]
    fields = w.fields(p)
    before, calls_before, failed_before = counts(store), len(h.api.calls), failed(store)
    sent: list[str] = []
    for step in row.steps:
        verb, _, arg = step.partition(" ")
        arg = arg.format(**fields)
        sent += await (say if verb == "say" else press)(h, p, arg)
    calls = h.api.calls[calls_before:]
    answers = [c for c in calls if c.method == "answerCallbackQuery"]
    alerts = [str(c.params.get("text", "")) for c in answers if c.params.get("show_alert")]
    documents = [
        data.decode("utf-8-sig", "replace")
        for c in calls
        if c.method == "sendDocument" and c.ok and c.chat_id == p.uid
        for data in c.files.values()
    ]
    after = counts(store)
    delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    where = f"{row.label!r} by {p.key}"
    problems = []
    if failed(store) != failed_before:
        problems.append(f"{where}: an update failed (crash)")
    presses = sum(s.startswith("press ") for s in row.steps)
    per_query = Counter(str(c.params.get("callback_query_id")) for c in answers)
    if len(per_query) != presses or (row.once and any(n != 1 for n in per_query.values())):
        problems.append(f"{where}: callback answers {dict(per_query)} for {presses} press(es)")
    shown = "\n".join([*sent, *alerts, *documents])
    if isinstance(expect, Allow):
        if delta != dict(expect.delta):
            problems.append(f"{where}: allowed, wrote {delta}, expected {dict(expect.delta)}")
        if alerts:
            problems.append(f"{where}: allowed but refused with an alert {alerts}")
        if expect.document and not documents:
            problems.append(f"{where}: allowed but no document was sent; got {sent}")
        for template in expect.shows:
            if template.format(**fields) not in shown:
                problems.append(f"{where}: allowed, {template!r} not shown in {sent}")
        return problems
    if delta:
        problems.append(f"{where}: refused, yet wrote {delta}")
    if documents:
        problems.append(f"{where}: refused, yet a document was sent")
    leaked = [s for s in w.leaks() if s in shown]
    if leaked:
        problems.append(f"{where}: A1's data {leaked} shown: {sent + alerts}")
    if isinstance(expect, Deny):
        want_texts = [m[p.lang].format(**fields) for m in expect.texts]
        want_alerts = [m[p.lang].format(**fields) for m in expect.alerts]
        if sent != want_texts:
            problems.append(f"{where}: texts {sent}, expected {want_texts}")
        if alerts != want_alerts:
            problems.append(f"{where}: alerts {alerts}, expected {want_alerts}")
    elif not sent or alerts:
        problems.append(f"{where}: expected an answer about their own data, got {sent} {alerts}")
    return problems


def outsider_problems(w: World) -> list[str]:
    """Everything ever sent to an outsider (texts, alerts, documents) is free of A1's data."""
    problems = []
    for p in OUTSIDERS:
        seen = list(w.h.api.texts(p.uid))
        for c in w.h.api.calls:
            if c.method == "answerCallbackQuery" and str(
                c.params.get("callback_query_id", "")
            ).startswith(str(p.uid)):
                seen.append(str(c.params.get("text", "")))
            if c.method == "sendDocument" and c.chat_id == p.uid:
                seen += [d.decode("utf-8", "replace") for d in c.files.values()]
        for s in w.leaks():
            hits = [x for x in seen if s in x]
            if hits:
                problems.append(f"{p.key} was sent A1's {s!r}: {hits[0][:200]!r}")
    return problems


async def run_matrix(store: Store, rows: tuple[Row, ...]) -> World:
    async with BotHarness(store) as h:
        w = await build_world(h, store)
        problems: list[str] = []
        for row in rows:
            assert set(row.expect) == {p.key for p in PEOPLE}, row.label
            for p in PEOPLE:
                problems += await run_cell(w, p, row)
        problems += outsider_problems(w)
        assert not problems, "\n".join(problems)
        assert failed(store) == 0
        return w


# ---------------------------------------------------------------- the matrices

MENTOR_COMMAND = rule(Deny(texts=(MENTORS_ONLY,)), mentor_b=Deny(texts=(FORBIDDEN,)))
"""A mentor command about A1's session: trainees and strangers are not mentors; B's mentor
is refused by the team check."""
TEAM_A_COMMAND = {**MENTOR_COMMAND, "mentor_b": Deny(texts=(NO_TEAM_A_FOR_B,))}
"""A mentor command naming team A: to B's mentor, team A might as well not exist."""

READ_ROWS = (
    Row(
        "/transcript",
        ("say /transcript {sid}",),
        rule(
            Deny(texts=(FORBIDDEN,)),
            admin=Allow(shows=("{sid}", A1_REPLY)),
            mentor_a=Allow(shows=("{sid}", A1_REPLY)),
            a1=Allow(shows=("{sid}", A1_REPLY)),
        ),
    ),
    Row(
        "/team A",
        ("say /team A",),
        {
            **TEAM_A_COMMAND,
            "admin": Allow(shows=("'A'", A1.name)),
            "mentor_a": Allow(shows=("「A」", A1.name)),
        },
    ),
    Row(
        "/export A",
        ("say /export A",),
        {
            **TEAM_A_COMMAND,
            "admin": Allow(shows=("{sid}", A1.name), document=True),
            "mentor_a": Allow(shows=("{sid}", A1.name), document=True),
        },
    ),
    Row(
        "team report button",
        ("press tm:{team_a}:r",),
        rule(
            Deny(alerts=(NOT_YOUR_TEAM,)),
            admin=Allow(shows=(A1.name,)),
            mentor_a=Allow(shows=(A1.name,)),
        ),
    ),
    Row(
        "team CSV button",
        ("press tm:{team_a}:x",),
        rule(
            Deny(alerts=(NOT_YOUR_TEAM,)),
            admin=Allow(shows=("{sid}",), document=True),
            mentor_a=Allow(shows=("{sid}",), document=True),
        ),
    ),
    Row(
        "/team Z (no such team): answered like someone else's team",
        ("say /team Z",),
        {
            **MENTOR_COMMAND,
            "mentor_b": Deny(texts=(no_team("Z", "B"),)),
            "mentor_a": Deny(texts=(no_team("Z", "A"),)),
            "admin": Deny(texts=(no_team("Z", "A, B"),)),
        },
    ),
    Row(
        "/sessions @A1",
        ("say /sessions @alice_a1",),
        {
            **MENTOR_COMMAND,
            "mentor_b": Deny(texts=(NO_TRAINEE,)),
            "admin": Allow(shows=("{sid}", A1.name)),
            "mentor_a": Allow(shows=("{sid}", A1.name)),
        },
    ),
    Row(
        "/disputes",
        ("say /disputes",),
        {
            **MENTOR_COMMAND,
            "mentor_b": Deny(texts=(NO_DISPUTES,)),
            "admin": Allow(shows=("{sid}", *A1_REASONS)),
            "mentor_a": Allow(shows=("{sid}", *A1_REASONS)),
        },
    ),
    Row(
        "/history and /me",
        ("say /history", "say /me"),
        rule(Own(), a1=Allow(shows=("{sid}",))),
    ),
)

WRITE_ROWS = (
    Row(
        "/override",
        ("say /override {sid} 1 0 grader misread",),
        {
            **MENTOR_COMMAND,
            "admin": Allow({"grade_events": 1}, shows=("{sid}",)),
            "mentor_a": Allow({"grade_events": 1}, shows=("{sid}",)),
        },
    ),
    Row(
        "/assign team=A",
        ("say /assign damaged-kettle team=A",),
        {
            **TEAM_A_COMMAND,
            "admin": Allow({"assignments": 1}, shows=("2 trainee(s) notified",)),
            "mentor_a": Allow({"assignments": 1}, shows=("已通知 2 位学员",)),
        },
    ),
    Row(
        "/assign trainee=@A1",
        ("say /assign damaged-kettle trainee=@alice_a1",),
        {
            **MENTOR_COMMAND,
            "mentor_b": Deny(texts=(NO_TRAINEE,)),
            "admin": Allow({"assignments": 1}, shows=("1 trainee(s) notified",)),
            "mentor_a": Allow({"assignments": 1}, shows=("已通知 1 位学员",)),
        },
    ),
    Row(
        "/invite A trainee",
        ("say /invite A trainee",),
        rule(
            Deny(texts=(NO_TEAM_A,)),
            a1=Deny(texts=(TRAINEE_OF_A,)),
            a2=Deny(texts=(TRAINEE_OF_A,)),
            mentor_b=Deny(texts=(NO_TEAM_A_FOR_B,)),
            admin=Allow({"invites": 1}, shows=("/start ",)),
            mentor_a=Allow({"invites": 1}, shows=("/start ",)),
        ),
    ),
    Row(
        "/invite A mentor",
        ("say /invite A mentor",),
        rule(
            Deny(texts=(NO_TEAM_A,)),
            a1=Deny(texts=(TRAINEE_OF_A,)),
            a2=Deny(texts=(TRAINEE_OF_A,)),
            mentor_b=Deny(texts=(NO_TEAM_A_FOR_B,)),
            mentor_a=Deny(texts=(ADMINS_INVITE_MENTORS,)),  # their team; admins invite mentors
            admin=Allow({"invites": 1}, shows=("/start ",)),
        ),
    ),
    Row(
        "/invite - admin",
        ("say /invite - admin",),
        rule(Deny(texts=(ADMINS_INVITE_ADMINS,)), admin=Allow({"invites": 1}, shows=("/start ",))),
    ),
    Row(
        "/newteam",
        ("say /newteam X-{key}",),
        rule(Deny(texts=(ADMINS_CREATE_TEAMS,)), admin=Allow({"teams": 1}, shows=("X-admin",))),
    ),
)

FORGED_REASON = "say 这条扣分不合理，请撤销"
MALFORMED_PRESSES = (
    "press rl:{d}:x",  # a verdict that does not exist
    "press rl:zz",  # too few parts
    "press rl:zz:a",  # not a number
    "press dp:{sid}:abc",
    "press dp:x",
    "press tm:{team_a}:q",
    "press tm:A:r",
    "press lg:fr",
    "press p:zz",
    "press zz:1",  # a prefix no handler knows (a button of an older bot version)
    "press x",
)

DISPUTE_ROWS = (
    Row(
        "ruling button then a reason",
        ("press rl:{d}:a", "say fair: the apology was there"),
        rule(
            # Outsiders are told what a missing dispute gets; A1 filed it, so knows it exists.
            Deny(texts=(NO_SESSION,), alerts=(NO_DISPUTE,)),
            stranger=Deny(texts=(WELCOME_STRANGER,), alerts=(NO_DISPUTE,)),
            a1=Deny(texts=(NO_SESSION,), alerts=(FORBIDDEN,)),
            admin=Allow({"grade_events": 1}, shows=("{sid}", "#{d2}")),
            mentor_a=Allow({"grade_events": 1}, shows=("{sid}", "#{d1}")),
        ),
    ),
    Row(
        "ruling button for a dispute that does not exist",
        ("press rl:{d0}:a", "say fair: the apology was there"),
        rule(
            Deny(texts=(NO_SESSION,), alerts=(NO_SUCH_DISPUTE,)),
            stranger=Deny(texts=(WELCOME_STRANGER,), alerts=(NO_SUCH_DISPUTE,)),
        ),
    ),
    Row(
        "dispute button then a reason",
        ("press dp:{sid}:1", FORGED_REASON),
        rule(
            Deny(texts=(NO_SESSION,), alerts=(FORBIDDEN,)),
            stranger=Deny(texts=(WELCOME_STRANGER,), alerts=(FORBIDDEN,)),
            # Readers who are not the owner may see the session but not dispute it.
            admin=Deny(texts=(NO_SESSION,), alerts=(OWN_ONLY,)),
            mentor_a=Deny(texts=(NO_SESSION,), alerts=(OWN_ONLY,)),
            a1=Allow({"disputes": 1}, shows=("第 1 项",)),  # entry 1 was ruled on just above
        ),
    ),
    Row(
        "team A assignment button then /end",
        ("press p:a::::{aid}", "say /end"),
        rule(
            Deny(texts=(NO_SESSION,), alerts=(FORBIDDEN,)),
            a1=Allow({"sessions": 1}, shows=("成绩单",)),
            a2=Allow({"sessions": 1}, shows=("Scorecard",)),
        ),
    ),
    Row(
        "malformed, unknown and stale buttons, then a reason",
        (
            *MALFORMED_PRESSES,
            "say fair: the apology was there",  # no ruling or dispute is waiting for it
        ),
        rule(
            Deny(texts=(NO_SESSION,), alerts=(STALE,) * len(MALFORMED_PRESSES)),
            stranger=Deny(texts=(WELCOME_STRANGER,), alerts=(STALE,) * len(MALFORMED_PRESSES)),
        ),
    ),
)


def test_read_matrix(store: Store) -> None:
    """Transcript, team report, CSV export (commands and buttons), sessions, disputes."""
    asyncio.run(run_matrix(store, READ_ROWS))


def test_write_matrix(store: Store) -> None:
    """Override, assign (team and trainee), invites of every role, new teams."""
    w = asyncio.run(run_matrix(store, WRITE_ROWS))
    events = store.grade_events([w.sid])
    assert [(e.kind, e.entry, e.new_points) for e in events] == [("override", 1, 0.0)] * 2
    invites = store.backend.fetchall(  # each made by its own chat message: ms apart
        "SELECT role, created_by FROM invites ORDER BY created_at, code"
    )
    roles = [r for r, _ in invites[-4:]]
    assert sorted(roles) == ["admin", "mentor", "trainee", "trainee"]
    assert [t.name for t in store.teams()] == ["A", "B", "X-admin"]


def test_dispute_matrix(store: Store) -> None:
    """Ruling on A1's disputes, disputing A1's session, starting team A's assignment."""
    w = asyncio.run(run_matrix(store, DISPUTE_ROWS))
    d1, d2 = (store.dispute(d) for d in w.disputes)
    assert d1 is not None and d2 is not None
    assert (d1.status, d2.status) == ("accepted", "accepted")
    by = {e.dispute_id: e.actor_id for e in store.grade_events([w.sid])}
    admin = store.user_by_external("telegram", str(ADMIN.uid))
    mentor = store.user_by_external("telegram", str(MENTOR_A.uid))
    assert by == {d1.id: mentor.id, d2.id: admin.id}
    (new,) = store.disputes([w.sid], status="open")
    assert (new.entry, new.reason) == (1, FORGED_REASON.removeprefix("say "))
    # A1's new dispute reached team A's mentor only.
    assert any(FORGED_REASON.removeprefix("say ") in x for x in w.h.api.texts(MENTOR_A.uid))


def test_a_refused_practice_button_is_answered_once(store: Store) -> None:
    """B1 presses a forged button for team A's assignment: one answer, the refusal alert."""

    async def run() -> None:
        async with BotHarness(store) as h:
            code = h.app.svc.create_invite("admin", None)
            await say(h, ADMIN, f"/start {code}")
            await say(h, ADMIN, "/newteam A")
            await say(h, ADMIN, "/newteam B")
            await say(h, ADMIN, "/assign damaged-kettle team=A")
            team_a = store.team_by_name("A")
            assert team_a is not None
            (assignment,) = store.assignments([team_a.id])
            await say(h, B1, f"/start {_code((await say(h, ADMIN, '/invite B trainee'))[0])}")
            before = len(h.api.calls)
            assert await press(h, B1, f"p:a::::{assignment.id}") == []
            answers = [c.params for c in h.api.calls[before:] if c.method == "answerCallbackQuery"]
            assert count(store, "sessions") == 0
            assert failed(store) == 0
            assert answers == [
                {
                    "callback_query_id": answers[0]["callback_query_id"],
                    "text": FORBIDDEN["zh"],
                    "show_alert": True,
                }
            ]

    asyncio.run(run())


def test_override_with_an_odd_digit_is_refused_not_crashed(store: Store) -> None:
    """A mentor's typo in the entry number gets an answer, not a crash."""

    async def run() -> None:
        async with BotHarness(store) as h:
            await say(h, ADMIN, f"/start {h.app.svc.create_invite('admin', None)}")
            await say(h, ADMIN, "/practice")
            await press(h, ADMIN, "p:m:damaged-kettle:normal:exam:0")
            await say(h, ADMIN, "/end")
            (row,) = store.sessions(limit=1)
            answer = await say(h, ADMIN, f"/override {row.id} ² 0 grader misread")
            assert failed(store) == 0
            assert len(answer) == 1
            assert store.grade_events([row.id]) == []

    asyncio.run(run())
