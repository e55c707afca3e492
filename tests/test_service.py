"""The training service: invites, who may do what, disputes, overrides, assignments, reports.

Everything runs through the real service, engine and an in-memory store. Sessions are
played with replies whose grades do not depend on the scripted customer's random seed
(the service starts sessions with a random seed).
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pytest

from bot.content import ScenarioLibrary
from bot.engine import Engine
from bot.service import Actor, Forbidden, Invalid, NotFound, ServiceError, Training
from bot.storage import DisputeRow, Store, StoreError, TeamRow
from graders.rubric import below_pass_reason

TODAY = date(2026, 11, 24)
KETTLE = "damaged-kettle"
HOODIE = "wrong-item-hoodie"
SKINCARE = "missing-item-skincare"

# Damaged kettle, English. GOOD resolves the case at easy/normal difficulty with 100 points.
GOOD = [
    "Hello Ms. Wang, I'm so sorry — a brand-new kettle arriving cracked would make anyone "
    "angry. Could you send me the order number and two photos (the crack and the outer box)? "
    "I'll sort it out for you straight away.",
    "Thank you for the photos, and I'm sorry for the trouble the cracked kettle has caused. "
    "You can choose: we send a new kettle within 48 hours and pick up the cracked one for free, "
    "or we refund the full ¥299 to your Alipay within 1-3 business days.",
    "Thanks, Ms. Wang. To protect your details, could you first tell me the recipient's name or the last four "
    "digits of the phone on the order? I'll confirm the address for you right after.",
]
COLD = "Thanks. Could you send me the order number and two photos (the crack and the outer box)?"
WRONG_TIMING = GOOD[1].replace("1-3 business days", "10 business days")
FIX = "Sorry, let me correct that: the ¥299 refund reaches your Alipay within 1-3 business days."
# Courtesy and a bare question, no acknowledgement and no next step (a courteous request to
# verify the customer would be a next step): 1 of 3 for empathy.
NO_ACK = "Thanks. What are the last four digits of the phone on the order?"
# Resolved, 75.8 points in four deductions (5, 2.5, 5, 11.67 with clause REFUND-TIMING):
# the session fails only because the total is below the pass mark.
BELOW_ONLY = [COLD, WRONG_TIMING, FIX, NO_ACK]
# Resolved and passed with 86.7 points: two deductions of 6.67.
NEAR_FULL = [COLD, GOOD[1], NO_ACK]
# Breaks the off-platform clause (a red line).
OFF_PLATFORM = ["Add me on WeChat and I'll pay you ¥50 if you leave a five-star review."]

COUNTED = ("grade_events", "disputes", "assignments", "invites", "teams", "memberships", "sessions")


class Clock:
    """A settable ``today`` for the service."""

    def __init__(self, day: date):
        self.day = day

    def __call__(self) -> date:
        return self.day


@dataclass
class World:
    """Two teams, their mentors and trainees, an admin and a stranger with no team."""

    store: Store
    svc: Training
    clock: Clock
    team_a: TeamRow
    team_b: TeamRow
    admin: Actor
    mentor_a: Actor
    mentor_b: Actor
    a1: Actor
    a2: Actor
    b1: Actor
    stranger: Actor

    def fresh(self, actor: Actor) -> Actor:
        return self.svc.actor(actor.id)


def _join(svc: Training, external: str, name: str, code: str | None, **kw: Any) -> Actor:
    actor = svc.register(external, name=name, lang=kw.pop("lang", "en"), **kw)
    if code is not None:
        svc.join(actor, code)
    return svc.actor(actor.id)


def make_world(library: ScenarioLibrary, store: Store) -> World:
    clock = Clock(TODAY)
    svc = Training(store, library, Engine(store, library), today=clock)
    admin = _join(svc, "1", "Ada", svc.create_invite("admin", None), chat_id="1")
    team_a = svc.create_team("Alpha", admin)
    team_b = svc.create_team("Beta", admin)
    mentor_a = _join(svc, "2", "Meg", svc.create_invite("mentor", team_a, admin), chat_id="2")
    mentor_b = _join(svc, "3", "Max", svc.create_invite("mentor", team_b, admin), chat_id="3")
    a1_code = svc.create_invite("trainee", team_a, mentor_a)
    a1 = _join(svc, "10", "Alice", a1_code, chat_id="10", username="Alice")
    a2 = _join(svc, "11", "王小明", a1_code, lang="zh")  # has never opened the chat: no chat id
    b1 = _join(svc, "20", "Bob", svc.create_invite("trainee", team_b, mentor_b), chat_id="20")
    stranger = _join(svc, "99", "Eve", None, chat_id="99", username="eve")
    return World(store, svc, clock, team_a, team_b, admin, mentor_a, mentor_b, a1, a2, b1, stranger)


@pytest.fixture
def world(library: ScenarioLibrary, store: Store) -> Iterator[World]:
    w = make_world(library, store)
    yield w
    w.store.close()


def play(svc: Training, actor: Actor, replies: list[str], scenario: str = KETTLE, **kw: Any) -> str:
    """Start a session, send the replies (until the customer ends it), end it; its id."""

    async def run() -> str:
        session, _ = await svc.start_practice(actor, scenario, **kw)
        for text in replies:
            if session.ended:
                break
            await session.reply(text)
        await session.end()
        return session.id

    return asyncio.run(run())


def counts(store: Store) -> dict[str, int]:
    return {t: store.backend.fetchone(f"SELECT COUNT(*) FROM {t}")[0] for t in COUNTED}


def assert_bilingual(err: ServiceError) -> None:
    assert set(err.message) == {"zh", "en"}
    assert err.message["zh"] and err.message["en"] and err.message["zh"] != err.message["en"]
    assert str(err) == err.message["en"]


# --- invites -------------------------------------------------------------------------------


def test_an_admin_invite_makes_an_admin(world: World) -> None:
    svc = world.svc
    code = svc.create_invite("admin", None, world.admin)
    newcomer = svc.register("50", name="Nia", lang="en")
    assert not newcomer.is_admin and newcomer.roles == ()
    assert svc.join(newcomer, f"  {code}\n") == ("admin", None)  # pasted with whitespace
    again = svc.actor(newcomer.id)
    assert again.is_admin and again.roles == ("admin",) and not again.mentor_of


def test_a_mentor_invite_joins_the_team_as_mentor(world: World) -> None:
    svc = world.svc
    code = svc.create_invite("mentor", world.team_b, world.admin)
    newcomer = svc.register("51", name="Mo", lang="zh")
    role, team = svc.join(newcomer, code)
    assert (role, team) == ("mentor", world.team_b)
    again = svc.actor(newcomer.id)
    assert again.mentor_of == {world.team_b.id} and not again.trainee_in
    assert again.roles == ("mentor",) and not again.is_admin
    assert [u.id for u in world.store.members(world.team_b.id, "mentor")] == [
        world.mentor_b.id,
        newcomer.id,
    ]


def test_a_trainee_invite_joins_the_team_as_trainee(world: World) -> None:
    svc = world.svc
    code = svc.create_invite("trainee", world.team_a, world.mentor_a)
    newcomer = svc.register("52", name="Tao", lang="zh")
    assert svc.join(newcomer, code) == ("trainee", world.team_a)
    again = svc.actor(newcomer.id)
    assert again.trainee_in == {world.team_a.id} and again.roles == ("trainee",)
    assert not again.mentor_of and not again.is_admin


def test_the_operator_creates_any_invite(world: World) -> None:
    svc = world.svc
    assert svc.create_invite("mentor", world.team_a)
    assert svc.create_invite("trainee", world.team_b)
    assert svc.create_invite("admin", world.team_b)  # the team of an admin invite is dropped
    row = world.store.backend.fetchone(
        "SELECT team_id, created_by FROM invites WHERE role = 'admin' AND created_by IS NULL"
        " AND uses = 0"
    )
    assert row == (None, None)


@pytest.mark.parametrize("code", ["nope", "", "   "])
def test_an_unknown_code_is_invalid_with_a_bilingual_message(world: World, code: str) -> None:
    with pytest.raises(Invalid) as err:
        world.svc.join(world.stranger, code)
    assert err.value.code == "bad_invite"
    assert_bilingual(err.value)
    assert "invite" in err.value.message["en"] and "邀请" in err.value.message["zh"]
    assert world.svc.actor(world.stranger.id).roles == ()


def test_a_used_up_code_is_invalid(world: World) -> None:
    svc = world.svc
    code = svc.create_invite("trainee", world.team_a, world.mentor_a, uses=1)
    first = svc.register("60", name="One", lang="en")
    second = svc.register("61", name="Two", lang="zh")
    svc.join(first, code)
    with pytest.raises(Invalid) as err:
        svc.join(second, code)
    assert err.value.code == "bad_invite"
    assert_bilingual(err.value)
    assert svc.actor(second.id).roles == ()
    assert svc.actor(first.id).trainee_in == {world.team_a.id}


def test_a_mentor_invites_trainees_to_their_own_team_only(world: World) -> None:
    svc, mentor = world.svc, world.mentor_a
    before = counts(world.store)
    assert svc.create_invite("trainee", world.team_a, mentor)
    for role, team in [
        ("trainee", world.team_b),
        ("mentor", world.team_a),
        ("mentor", world.team_b),
        ("admin", None),
        ("admin", world.team_a),
    ]:
        with pytest.raises(Forbidden) as err:
            svc.create_invite(role, team, mentor)  # type: ignore[arg-type]
        # their own team: told only admins invite mentors; admin invites likewise
        own = role == "admin" or team == world.team_a
        assert err.value.code == ("admins_only" if own else "forbidden")
        assert_bilingual(err.value)
    assert counts(world.store)["invites"] == before["invites"] + 1


@pytest.mark.parametrize("who", ["a1", "b1", "stranger"])
@pytest.mark.parametrize("role", ["admin", "mentor", "trainee"])
def test_trainees_and_strangers_create_no_invites(world: World, who: str, role: str) -> None:
    before = counts(world.store)
    for team in (world.team_a, world.team_b):
        with pytest.raises(Forbidden):
            world.svc.create_invite(role, team, getattr(world, who))  # type: ignore[arg-type]
    assert counts(world.store) == before


def test_bad_invite_requests_are_invalid(world: World) -> None:
    svc = world.svc
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: svc.create_invite("boss", world.team_a, world.admin), "bad_role"),  # type: ignore[arg-type]
        (lambda: svc.create_invite("trainee", None, world.admin), "team_needed"),
        (lambda: svc.create_invite("mentor", None, world.admin), "team_needed"),
        (lambda: svc.create_invite("trainee", world.team_a, world.admin, uses=0), "bad_uses"),
        (lambda: svc.create_invite("trainee", world.team_a, world.admin, uses=10_001), "bad_uses"),
    ]
    before = counts(world.store)
    for call, code in cases:
        with pytest.raises(Invalid) as err:
            call()
        assert err.value.code == code
        assert_bilingual(err.value)
    assert counts(world.store) == before


def test_only_admins_create_teams_with_valid_unique_names(world: World) -> None:
    svc = world.svc
    assert svc.create_team("  Gamma  ", world.admin).name == "Gamma"
    assert svc.create_team("Delta").name == "Delta"  # the operator
    for name, code in [
        ("", "bad_team_name"),
        ("x" * 65, "bad_team_name"),
        ("alpha", "team_exists"),
    ]:
        with pytest.raises(Invalid) as err:
            svc.create_team(name, world.admin)
        assert err.value.code == code
    assert [t.name for t in svc.teams(world.admin)] == ["Alpha", "Beta", "Delta", "Gamma"]
    assert svc.teams(world.mentor_a) == [world.team_a]
    assert svc.teams(world.a1) == []


# --- the access-control matrix -------------------------------------------------------------


@dataclass
class Matrix(World):
    """A world where trainee A1 has an ended session with a dispute open on deduction 1."""

    sid: str = ""
    dispute: DisputeRow | None = None


@pytest.fixture
def matrix(library: ScenarioLibrary, store: Store) -> Iterator[Matrix]:
    w = make_world(library, store)
    sid = play(w.svc, w.a1, BELOW_ONLY)
    dispute = w.svc.open_dispute(w.a1, sid, 1, "I asked for the photos politely")
    yield Matrix(**vars(w), sid=sid, dispute=dispute)
    w.store.close()


ACTORS = ["admin", "mentor_a", "mentor_b", "a1", "a2", "b1", "stranger"]


def _resolve(m: Matrix, actor: Actor) -> object:
    assert m.dispute is not None
    return m.svc.resolve_dispute(actor, m.dispute.id, "accepted", "fair point")


OPERATIONS: dict[str, Callable[[Matrix, Actor], object]] = {
    "session_view": lambda m, a: m.svc.session_view(a, m.sid),
    "transcript": lambda m, a: m.svc.transcript(a, m.sid),
    "open_dispute": lambda m, a: m.svc.open_dispute(a, m.sid, 2, "I did apologise there"),
    "resolve_dispute": _resolve,
    "override": lambda m, a: m.svc.override(a, m.sid, 3, 0.0, "too harsh for this reply"),
    "team_report": lambda m, a: m.svc.team_report(a, m.team_a),
    "export_csv": lambda m, a: m.svc.export_csv(a, m.team_a),
    "assign_team": lambda m, a: m.svc.assign(a, [KETTLE], team=m.team_a),
    "assign_trainee": lambda m, a: m.svc.assign(a, [KETTLE], trainee="@alice"),
    "invite_trainee": lambda m, a: m.svc.create_invite("trainee", m.team_a, a),
    "create_team": lambda m, a: m.svc.create_team("Gamma", a),
    "team_named": lambda m, a: m.svc.team_named("Alpha", a),
}
MANAGERS_OF_A = {"admin", "mentor_a"}
ALLOWED: dict[str, set[str]] = {op: MANAGERS_OF_A for op in OPERATIONS} | {
    "session_view": MANAGERS_OF_A | {"a1"},
    "transcript": MANAGERS_OF_A | {"a1"},
    "open_dispute": {"a1"},  # only the owner disputes, not even an admin
    "create_team": {"admin"},
}
WRITES = {
    "open_dispute": "disputes",
    "resolve_dispute": "grade_events",
    "override": "grade_events",
    "assign_team": "assignments",
    "assign_trainee": "assignments",
    "invite_trainee": "invites",
    "create_team": "teams",
}
# Looking something up by a guessable name or a small id outside your reach reads as "no
# such thing" (NotFound, exactly what a missing one gets) rather than Forbidden: the service
# does not confirm which trainees, teams or disputes exist.
DENIED_AS: dict[str, tuple[type[ServiceError], str]] = {
    "assign_trainee": (NotFound, "no_trainee"),
    "team_named": (NotFound, "no_team"),
    "resolve_dispute": (NotFound, "no_dispute"),
    "create_team": (Forbidden, "admins_only"),  # says who can, not "not yours"
}
# ... except for A1, who filed the dispute: they know it exists, and may not rule on it;
# and Alpha's trainees, who know their team exists: they are told only mentors manage it.
DENIED_AS_BY: dict[tuple[str, str], tuple[type[ServiceError], str]] = {
    ("resolve_dispute", "a1"): (Forbidden, "forbidden"),
    ("team_named", "a1"): (Forbidden, "mentors_only"),
    ("team_named", "a2"): (Forbidden, "mentors_only"),
}
FORBIDDEN_TEXT = {
    "zh": "没有权限：这不属于你的团队或你本人。",
    "en": "Not allowed: this is not your team's or your own.",
}


def denial_text(m: Matrix, code: str, actor: Actor) -> dict[str, str]:
    """The exact refusal an outsider gets: the same as for a thing that does not exist."""
    assert m.dispute is not None
    teams = ", ".join(t.name for t in m.svc.teams(actor)) or "—"
    return {
        "forbidden": FORBIDDEN_TEXT,
        "no_trainee": {
            "zh": "你的团队里没有学员 @alice（可用用户 id 或 @用户名）。",
            "en": "No trainee @alice in your teams (use their user id or @username).",
        },
        "no_team": {
            "zh": f"没有名为「Alpha」的团队。你的团队：{teams}",
            "en": f"No team named 'Alpha'. Your teams: {teams}",
        },
        "no_dispute": {
            "zh": f"没有申诉 #{m.dispute.id}。",
            "en": f"No dispute #{m.dispute.id}.",
        },
        "admins_only": {
            "zh": "只有管理员可以创建团队。请联系管理员（服务器上：trainer admin --help）。",
            "en": "Only an admin can create teams. Ask your admin (on the server: "
            "trainer admin --help).",
        },
        "mentors_only": {
            "zh": "你是团队「Alpha」的学员；只有导师和管理员可以管理团队。",
            "en": "You are a trainee of team 'Alpha'; only its mentors and admins manage it.",
        },
    }[code]


@pytest.mark.parametrize("who", ACTORS)
@pytest.mark.parametrize("op", list(OPERATIONS))
def test_access_control_matrix(matrix: Matrix, op: str, who: str) -> None:
    actor = getattr(matrix, who)
    before = counts(matrix.store)
    events_before = matrix.store.grade_events([matrix.sid])
    if who in ALLOWED[op]:
        OPERATIONS[op](matrix, actor)
        expected = dict(before)
        if op in WRITES:
            expected[WRITES[op]] += 1
        assert counts(matrix.store) == expected
        return
    exc, code = DENIED_AS_BY.get((op, who), DENIED_AS.get(op, (Forbidden, "forbidden")))
    with pytest.raises(ServiceError) as err:
        OPERATIONS[op](matrix, actor)
    assert type(err.value) is exc
    assert err.value.code == code
    assert_bilingual(err.value)
    assert err.value.message == denial_text(matrix, code, actor)
    assert counts(matrix.store) == before  # nothing written
    assert matrix.store.grade_events([matrix.sid]) == events_before
    assert matrix.dispute is not None
    dispute = matrix.store.dispute(matrix.dispute.id)
    assert dispute is not None and dispute.status == "open"


@pytest.mark.parametrize("who", ACTORS)
def test_open_disputes_lists_only_what_the_actor_may_rule_on(matrix: Matrix, who: str) -> None:
    before = counts(matrix.store)
    listed = matrix.svc.open_disputes(getattr(matrix, who))
    assert counts(matrix.store) == before
    if who in MANAGERS_OF_A:
        assert matrix.dispute is not None
        assert [(d.id, v.row.id) for d, v in listed] == [(matrix.dispute.id, matrix.sid)]
    else:
        assert listed == []


def test_a_mentor_reads_the_transcript_of_their_trainee(matrix: Matrix) -> None:
    view, turns = matrix.svc.transcript(matrix.mentor_a, matrix.sid)
    assert view.row.id == matrix.sid and view.card is not None
    assert [t.role for t in turns][:3] == ["customer", "trainee", "customer"]
    assert turns[1].text == COLD


def test_an_unknown_session_is_not_found(matrix: Matrix) -> None:
    for call in (
        lambda: matrix.svc.session_view(matrix.admin, "ffffffffffff"),
        lambda: matrix.svc.session_view(matrix.admin, ""),
        lambda: matrix.svc.override(matrix.admin, "ffffffffffff", 1, 0, "because"),
        lambda: matrix.svc.open_dispute(matrix.a1, "ffffffffffff", 1, "because"),
        lambda: matrix.svc.resolve_dispute(matrix.admin, 999, "accepted", "because"),
    ):
        with pytest.raises(NotFound):
            call()


# --- disputes ------------------------------------------------------------------------------


def _entry_number(world: World, sid: str, code: str) -> int:
    view = world.svc.session_view(world.admin, sid)
    return next(e.number for e in view.entries if e.entry.code == code)


def test_an_accepted_dispute_restores_the_points(world: World) -> None:
    svc = world.svc
    sid = play(svc, world.a1, BELOW_ONLY)
    before = svc.session_view(world.a1, sid)
    assert before.card is not None and before.adjusted_total == before.card.total
    number = _entry_number(world, sid, "accuracy.wrong.refund_timing")
    lost = before.entries[number - 1].points
    assert lost > 0 and "REFUND-TIMING" in before.entries[number - 1].entry.clause_ids

    dispute = svc.open_dispute(world.a1, sid, number, "I corrected the timing right after")
    assert (dispute.status, dispute.entry, dispute.user_id) == ("open", number, world.a1.id)
    view = svc.resolve_dispute(world.mentor_a, dispute.id, "accepted", "fair: you fixed it")

    assert view.adjusted_total == round(before.card.total + lost, 1)
    entry = view.entries[number - 1]
    assert entry.points == 0.0 and entry.entry.points == lost  # the original stays visible
    (event,) = entry.history
    assert (event.kind, event.verdict, event.dispute_id, event.actor_id) == (
        "dispute",
        "accepted",
        dispute.id,
        world.mentor_a.id,
    )
    assert (event.old_points, event.new_points, event.reason) == (
        lost,
        0.0,
        "fair: you fixed it",
    )
    assert [d.status for d in view.disputes] == ["accepted"]
    assert view.adjusted
    # the trainee sees the same adjusted result
    assert svc.session_view(world.a1, sid).adjusted_total == view.adjusted_total


def test_restored_points_are_capped_at_100(world: World) -> None:
    svc = world.svc
    sid = play(svc, world.a1, NEAR_FULL)
    view = svc.session_view(world.a1, sid)
    assert view.card is not None and view.card.passed
    assert sum(e.points for e in view.entries) + view.card.total > 100  # rounding drift
    for e in view.entries:
        d = svc.open_dispute(world.a1, sid, e.number, "I asked for the photos politely")
        view = svc.resolve_dispute(world.admin, d.id, "accepted", "agreed")
    assert view.adjusted_total == 100.0 and view.adjusted_passed is True


def test_a_partly_ruling_needs_points_below_the_current_loss(world: World) -> None:
    svc = world.svc
    sid = play(svc, world.a1, BELOW_ONLY)
    before = svc.session_view(world.a1, sid)
    number = _entry_number(world, sid, "accuracy.wrong.refund_timing")
    current = before.entries[number - 1].points
    dispute = svc.open_dispute(world.a1, sid, number, "it was only a slip")
    snapshot = counts(world.store)
    for points in (None, current, current + 1, -0.5, 1000.0):
        with pytest.raises(Invalid) as err:
            svc.resolve_dispute(world.mentor_a, dispute.id, "partly", "half right", points)
        assert err.value.code == "bad_points"
        assert_bilingual(err.value)
    with pytest.raises(Invalid) as err:
        svc.resolve_dispute(world.mentor_a, dispute.id, "maybe", "half right", 1.0)
    assert err.value.code == "bad_verdict"
    assert counts(world.store) == snapshot
    assert world.store.dispute(dispute.id).status == "open"  # type: ignore[union-attr]

    view = svc.resolve_dispute(world.mentor_a, dispute.id, "partly", "half right", 5)
    assert view.entries[number - 1].points == 5.0
    assert view.adjusted_total == round(before.adjusted_total + current - 5, 1)  # type: ignore[operator]
    assert view.entries[number - 1].history[-1].verdict == "partly"
    assert world.store.dispute(dispute.id).status == "partly"  # type: ignore[union-attr]


def test_a_partly_ruling_of_zero_points_is_allowed(world: World) -> None:
    svc = world.svc
    sid = play(svc, world.a1, BELOW_ONLY)
    dispute = svc.open_dispute(world.a1, sid, 1, "I asked for the photos politely")
    view = svc.resolve_dispute(world.mentor_a, dispute.id, "partly", "mostly right", 0)
    assert view.entries[0].points == 0.0


def test_a_rejected_dispute_keeps_the_points_but_is_recorded(world: World) -> None:
    svc = world.svc
    sid = play(svc, world.a1, BELOW_ONLY)
    before = svc.session_view(world.a1, sid)
    dispute = svc.open_dispute(world.a1, sid, 1, "I asked for the photos politely")
    view = svc.resolve_dispute(world.mentor_a, dispute.id, "rejected", "no greeting at all")
    assert view.adjusted_total == before.adjusted_total
    assert view.adjusted_passed is False
    assert view.entries[0].points == before.entries[0].points
    (event,) = view.entries[0].history
    assert (event.verdict, event.old_points, event.new_points, event.reason) == (
        "rejected",
        before.entries[0].points,
        before.entries[0].points,
        "no greeting at all",
    )
    assert [d.status for d in view.disputes] == ["rejected"]


def test_a_closed_dispute_cannot_be_ruled_on_again(world: World) -> None:
    svc = world.svc
    sid = play(svc, world.a1, BELOW_ONLY)
    dispute = svc.open_dispute(world.a1, sid, 1, "I asked for the photos politely")
    svc.resolve_dispute(world.mentor_a, dispute.id, "rejected", "no greeting at all")
    snapshot = counts(world.store)
    for actor, verdict in [(world.mentor_a, "accepted"), (world.admin, "partly")]:
        with pytest.raises(Invalid) as err:
            svc.resolve_dispute(actor, dispute.id, verdict, "changed my mind", 1.0)
        assert err.value.code == "dispute_closed"
        assert "rejected" in err.value.message["en"]
    assert counts(world.store) == snapshot
    assert world.store.dispute(dispute.id).status == "rejected"  # type: ignore[union-attr]


@pytest.mark.parametrize("reason", ["", "x", "   ", " y \n", "好"])
def test_every_dispute_ruling_and_override_needs_a_reason(world: World, reason: str) -> None:
    svc = world.svc
    sid = play(svc, world.a1, BELOW_ONLY)
    dispute = svc.open_dispute(world.a1, sid, 1, "ok")  # two characters are enough
    snapshot = counts(world.store)
    for call in (
        lambda: svc.open_dispute(world.a1, sid, 2, reason),
        lambda: svc.resolve_dispute(world.mentor_a, dispute.id, "accepted", reason),
        lambda: svc.override(world.mentor_a, sid, 2, 0.0, reason),
    ):
        with pytest.raises(Invalid) as err:
            call()
        assert err.value.code == "reason_needed"
        assert_bilingual(err.value)
    assert counts(world.store) == snapshot


def test_a_long_reason_is_kept_to_1000_characters(world: World) -> None:
    sid = play(world.svc, world.a1, BELOW_ONLY)
    view = world.svc.override(world.mentor_a, sid, 1, 0, "理" * 1500)
    assert view.entries[0].history[0].reason == "理" * 1000


def test_grade_history_is_append_only_in_the_database(world: World) -> None:
    svc, db = world.svc, world.store.backend
    sid = play(svc, world.a1, BELOW_ONLY)
    svc.override(world.mentor_a, sid, 1, 0.0, "too harsh")
    dispute = svc.open_dispute(world.a1, sid, 2, "I was correcting the facts")
    svc.resolve_dispute(world.mentor_a, dispute.id, "rejected", "the slip still counts")
    history = world.store.grade_events([sid])
    assert len(history) == 2
    with pytest.raises(StoreError, match="append-only"):
        db.execute("UPDATE grade_events SET new_points = 99 WHERE session_id = ?", [sid])
    with pytest.raises(StoreError, match="append-only"):
        db.execute("DELETE FROM grade_events WHERE session_id = ?", [sid])
    with pytest.raises(StoreError, match="append-only"):
        db.execute("DELETE FROM grade_events")
    assert world.store.grade_events([sid]) == history


def test_rulings_and_overrides_leave_the_original_scorecard_and_ledger(world: World) -> None:
    svc, db = world.svc, world.store.backend
    sid = play(svc, world.a1, BELOW_ONLY)

    def stored() -> tuple[Any, ...]:
        session = db.fetchone(
            "SELECT scorecard, total, passed, outcome FROM sessions WHERE id = ?", [sid]
        )
        ledger = db.fetchall(
            "SELECT id, item, reply_number, points, data FROM ledger WHERE session_id = ?"
            " ORDER BY id",
            [sid],
        )
        return session, ledger

    original = stored()
    svc.override(world.mentor_a, sid, 1, 0.0, "too harsh")
    svc.override(world.admin, sid, 2, 10.0, "this was worse than it looks")
    for number, verdict in [(3, "accepted"), (4, "rejected")]:
        d = svc.open_dispute(world.a1, sid, number, "please look again")
        svc.resolve_dispute(world.mentor_a, d.id, verdict, "looked again")
    assert stored() == original
    view = svc.session_view(world.a1, sid)
    assert view.row.total == original[0][1] and view.row.passed is False
    assert view.card is not None and view.card.total == 75.8
    assert [e.entry.points for e in view.entries] == pytest.approx(
        [r[3] for r in original[1]], abs=0.005
    )


def test_a_deduction_is_disputed_once_at_a_time(world: World) -> None:
    svc = world.svc
    sid = play(svc, world.a1, BELOW_ONLY)
    svc.open_dispute(world.a1, sid, 1, "I asked for the photos politely")
    with pytest.raises(Invalid) as err:
        svc.open_dispute(world.a1, sid, 1, "and again")
    assert err.value.code == "already_disputed"
    assert_bilingual(err.value)
    svc.open_dispute(world.a1, sid, 2, "another deduction is fine")
    with pytest.raises(NotFound) as missing:
        svc.open_dispute(world.a1, sid, 9, "no such deduction")
    assert missing.value.code == "no_entry"
    assert len(world.store.disputes([sid])) == 2


def test_an_active_session_has_nothing_to_dispute(world: World) -> None:
    async def start() -> str:
        session, _ = await world.svc.start_practice(world.a1, KETTLE)
        await session.reply(COLD)
        return session.id

    sid = asyncio.run(start())
    with pytest.raises(NotFound):
        world.svc.open_dispute(world.a1, sid, 1, "too early")
    with pytest.raises(NotFound):
        world.svc.override(world.mentor_a, sid, 1, 0.0, "too early")


def test_restoring_points_over_the_pass_mark_passes_a_session_failed_only_on_total(
    world: World,
) -> None:
    svc = world.svc
    sid = play(svc, world.a1, BELOW_ONLY)
    view = svc.session_view(world.a1, sid)
    assert view.card is not None and view.row.outcome == "resolved"
    assert not view.card.passed and view.adjusted_passed is False
    assert view.card.fail_reasons == (below_pass_reason(75.8, 80),)
    assert view.adjusted_reasons == view.card.fail_reasons

    number = _entry_number(world, sid, "accuracy.wrong.refund_timing")
    d = svc.open_dispute(world.a1, sid, number, "I corrected it right away")
    view = svc.resolve_dispute(world.mentor_a, d.id, "accepted", "agreed")
    assert view.adjusted_total is not None and view.adjusted_total >= 80
    assert view.adjusted_passed is True and view.adjusted_reasons == ()
    assert view.row.passed is False  # the original verdict is kept


def test_restoring_points_does_not_pass_a_session_failed_for_another_reason(world: World) -> None:
    svc = world.svc
    # the hard customer is not satisfied within these replies: the trainee ends the chat
    sid = play(svc, world.a1, BELOW_ONLY, difficulty="hard")
    view = svc.session_view(world.a1, sid)
    assert view.card is not None and view.row.outcome == "trainee_ended"
    below, unresolved = view.card.fail_reasons
    assert below == below_pass_reason(75.8, 80) and "not resolved" in unresolved["en"]
    for e in view.entries:
        view = svc.override(world.mentor_a, sid, e.number, 0.0, "all fair")
    assert view.adjusted_total is not None and view.adjusted_total >= 80
    assert view.adjusted_passed is False
    assert view.adjusted_reasons == (unresolved,)  # the total is no longer a reason


def test_an_override_that_takes_points_can_fail_a_passed_session(world: World) -> None:
    svc = world.svc
    sid = play(svc, world.a1, NEAR_FULL)
    view = svc.session_view(world.a1, sid)
    assert view.card is not None and view.card.passed
    view = svc.override(world.mentor_a, sid, 1, 20.0, "this really was cold")
    expected = round(view.card.total - (20.0 - view.entries[0].entry.points), 1)  # type: ignore[union-attr,operator]
    assert view.adjusted_total == expected and expected < 80
    assert view.adjusted_passed is False
    assert view.adjusted_reasons == (below_pass_reason(expected, 80),)


def test_restoring_points_to_exactly_the_pass_mark_passes(world: World) -> None:
    svc = world.svc
    sid = play(svc, world.a1, BELOW_ONLY)  # deductions 5 + 2.5 + 5 + 11.67: total 75.83
    number = _entry_number(world, sid, "accuracy.wrong.refund_timing")
    d = svc.open_dispute(world.a1, sid, number, "I corrected it right away")
    view = svc.resolve_dispute(world.mentor_a, d.id, "partly", "half of it", 7.5)
    assert 100 - sum(e.points for e in view.entries) == pytest.approx(80.0)
    assert view.adjusted_total == 80.0
    assert view.adjusted_passed is True


# --- overrides -----------------------------------------------------------------------------


def test_an_override_sets_the_points_and_appends_history(world: World) -> None:
    svc = world.svc
    sid = play(svc, world.a1, BELOW_ONLY)
    before = svc.session_view(world.a1, sid)
    original = before.entries[0].points

    view = svc.override(world.mentor_a, sid, 1, 1.5, "only a small slip")
    assert view.entries[0].points == 1.5
    assert view.adjusted_total == round(before.adjusted_total + original - 1.5, 1)  # type: ignore[operator]
    (first,) = view.entries[0].history
    assert (first.kind, first.actor_id, first.old_points, first.new_points, first.reason) == (
        "override",
        world.mentor_a.id,
        original,
        1.5,
        "only a small slip",
    )
    assert first.dispute_id is None and first.verdict is None and first.created_at

    view = svc.override(world.admin, sid, 1, 3.0, "on second thought")
    second = view.entries[0].history[-1]
    assert (second.actor_id, second.old_points, second.new_points) == (world.admin.id, 1.5, 3.0)
    assert view.entries[0].points == 3.0
    assert [e.new_points for e in view.entries[0].history] == [1.5, 3.0]
    assert all(not e.history for e in view.entries[1:])  # other deductions untouched


def test_a_ruling_after_an_override_starts_from_the_overridden_points(world: World) -> None:
    svc = world.svc
    sid = play(svc, world.a1, BELOW_ONLY)
    svc.override(world.mentor_a, sid, 1, 4.0, "slightly less")
    d = svc.open_dispute(world.a1, sid, 1, "still too much")
    with pytest.raises(Invalid):
        svc.resolve_dispute(world.mentor_a, d.id, "partly", "half", 4.5)  # above the current 4
    view = svc.resolve_dispute(world.mentor_a, d.id, "partly", "half", 2.0)
    assert [(e.old_points, e.new_points) for e in view.entries[0].history] == [
        (5.0, 4.0),
        (4.0, 2.0),
    ]


@pytest.mark.parametrize("points", [-1.0, 100.01, float("nan"), float("inf")])
def test_override_points_must_be_0_to_100(world: World, points: float) -> None:
    sid = play(world.svc, world.a1, BELOW_ONLY)
    with pytest.raises(Invalid) as err:
        world.svc.override(world.mentor_a, sid, 1, points, "a reason")
    assert err.value.code == "bad_points"
    assert world.store.grade_events([sid]) == []


# --- assignments ---------------------------------------------------------------------------


def test_a_team_assignment_notifies_only_trainees_with_a_chat(world: World) -> None:
    rows, notify = world.svc.assign(
        world.mentor_a, [KETTLE, HOODIE], team=world.team_a, due=TODAY, attempts=2
    )
    assert [(r.scenario_id, r.team_id, r.user_id) for r in rows] == [
        (KETTLE, world.team_a.id, None),
        (HOODIE, world.team_a.id, None),
    ]
    assert all(
        (r.due, r.attempts, r.created_by, r.mode, r.difficulty, r.rubric, r.pass_mark)
        == (TODAY.isoformat(), 2, world.mentor_a.id, "exam", "normal", "default", 80.0)
        for r in rows
    )
    assert [u.id for u in notify] == [world.a1.id]  # 王小明 has no chat id
    for trainee in (world.a1, world.a2):
        assigned = [c.scenario_id for c in world.svc.practice_choices(trainee) if c.assignment]
        assert assigned == [KETTLE, HOODIE]
    assert not [c for c in world.svc.practice_choices(world.b1) if c.assignment]


@pytest.mark.parametrize("token", ["@alice", "@ALICE", "Alice", "10"])
def test_an_assignment_to_one_trainee(world: World, token: str) -> None:
    rows, notify = world.svc.assign(world.mentor_a, [KETTLE], trainee=token)
    assert [(r.team_id, r.user_id) for r in rows] == [(world.team_a.id, world.a1.id)]
    assert [u.id for u in notify] == [world.a1.id]
    assert [c.assignment for c in world.svc.practice_choices(world.a1) if c.assignment] == rows
    assert not [c for c in world.svc.practice_choices(world.a2) if c.assignment]


def test_an_assignment_to_a_trainee_without_a_chat_notifies_nobody(world: World) -> None:
    rows, notify = world.svc.assign(world.admin, [KETTLE], trainee=str(world.a2.id))
    assert rows[0].user_id == world.a2.id and notify == []


def test_assigning_to_someone_not_a_trainee_of_the_team_is_not_found(world: World) -> None:
    for token in ["@eve", "2", "3", "@bob", "nobody", "@"]:  # stranger, mentors, team B, nobody
        with pytest.raises(NotFound) as err:
            world.svc.assign(world.mentor_a, [KETTLE], trainee=token)
        assert err.value.code == "no_trainee"
    assert counts(world.store)["assignments"] == 0


def test_an_unknown_scenario_is_not_found_and_names_the_known_ones(world: World) -> None:
    with pytest.raises(NotFound) as err:
        world.svc.assign(world.mentor_a, [KETTLE, "flying-car"], team=world.team_a)
    assert err.value.code == "no_scenario"
    assert_bilingual(err.value)
    for lang in ("en", "zh"):
        assert "flying-car" in err.value.message[lang]  # type: ignore[literal-required]
        for known in world.svc.library.scenarios:
            assert known in err.value.message[lang]  # type: ignore[literal-required]
    assert counts(world.store)["assignments"] == 0  # not even the known one


def test_a_due_date_in_the_past_is_invalid(world: World) -> None:
    with pytest.raises(Invalid) as err:
        world.svc.assign(world.mentor_a, [KETTLE], team=world.team_a, due=TODAY - timedelta(days=1))
    assert err.value.code == "due_past" and "2026-11-23" in err.value.message["en"]
    assert counts(world.store)["assignments"] == 0
    rows, _ = world.svc.assign(world.mentor_a, [KETTLE], team=world.team_a, due=TODAY)
    assert rows[0].due == "2026-11-24"


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"pass_mark": 0}, "bad_numbers"),
        ({"pass_mark": 100.5}, "bad_numbers"),
        ({"attempts": 0}, "bad_numbers"),
        ({"difficulty": "extreme"}, "bad_choice"),
        ({"mode": "quiz"}, "bad_choice"),
        ({"rubric": "vibes"}, "bad_choice"),
    ],
)
def test_bad_assignment_settings_are_invalid(world: World, kw: dict[str, Any], code: str) -> None:
    with pytest.raises(Invalid) as err:
        world.svc.assign(world.mentor_a, [KETTLE], team=world.team_a, **kw)
    assert err.value.code == code
    with pytest.raises(Invalid) as none:
        world.svc.assign(world.mentor_a, [], team=world.team_a)
    assert none.value.code == "no_scenarios"
    assert counts(world.store)["assignments"] == 0


def test_an_assignment_fixes_scenario_difficulty_mode_and_rubric(world: World) -> None:
    (row,), _ = world.svc.assign(
        world.mentor_a, [KETTLE], team=world.team_a, difficulty="hard", mode="exam",
        rubric="assessment100",
    )  # fmt: skip

    async def start() -> Any:
        session, opening = await world.svc.start_practice(
            world.a1, HOODIE, difficulty="easy", mode="coach", assignment_id=row.id
        )
        await session.end()
        return session, opening

    session, opening = asyncio.run(start())
    assert opening
    stored = world.store.session(session.id)
    assert stored is not None
    assert (stored.scenario_id, stored.difficulty, stored.mode, stored.rubric) == (
        KETTLE,
        "hard",
        "exam",
        "assessment100",
    )
    assert stored.assignment_id == row.id and stored.lang == "en"


def test_free_practice_uses_the_trainees_choices(world: World) -> None:
    async def start() -> Any:
        session, _ = await world.svc.start_practice(world.a2, HOODIE, difficulty="easy")
        await session.end()
        return session

    session = asyncio.run(start())
    stored = world.store.session(session.id)
    assert stored is not None
    assert (stored.scenario_id, stored.difficulty, stored.mode, stored.lang) == (
        HOODIE,
        "easy",
        "coach",
        "zh",
    )
    assert stored.assignment_id is None and stored.trainee == world.a2.user.trainee


def test_free_practice_refuses_unknown_choices(world: World) -> None:
    for scenario, kw, exc in [
        ("flying-car", {}, NotFound),
        (KETTLE, {"difficulty": "extreme"}, Invalid),
        (KETTLE, {"mode": "quiz"}, Invalid),
    ]:
        with pytest.raises(exc):
            asyncio.run(world.svc.start_practice(world.a1, scenario, **kw))
    assert counts(world.store)["sessions"] == 0


def test_used_up_attempts_forbid_another_start(world: World) -> None:
    (row,), _ = world.svc.assign(world.mentor_a, [KETTLE], team=world.team_a, attempts=1)
    play(world.svc, world.a1, BELOW_ONLY, assignment_id=row.id)
    (choice,) = [c for c in world.svc.practice_choices(world.a1) if c.assignment]
    assert (choice.attempts_used, choice.attempts_left, choice.passed) == (1, 0, False)
    with pytest.raises(Forbidden) as err:
        asyncio.run(world.svc.start_practice(world.a1, KETTLE, assignment_id=row.id))
    assert err.value.code == "no_attempts" and "1" in err.value.message["en"]
    assert_bilingual(err.value)
    assert len(world.store.sessions_of([world.a1.user.trainee])) == 1
    # another trainee of the team still has their own attempt, and free practice goes on
    play(world.svc, world.a2, BELOW_ONLY, assignment_id=row.id)
    play(world.svc, world.a1, BELOW_ONLY)


def test_a_trainee_cannot_start_another_teams_or_trainees_assignment(world: World) -> None:
    (team_row,), _ = world.svc.assign(world.mentor_a, [KETTLE], team=world.team_a)
    (own_row,), _ = world.svc.assign(world.mentor_a, [KETTLE], trainee="@alice")
    for actor, assignment_id in [
        (world.b1, team_row.id),  # team B
        (world.stranger, team_row.id),  # no team
        (world.a2, own_row.id),  # same team, assigned to A1 only
        (world.a1, 999),  # no such assignment
    ]:
        with pytest.raises(Forbidden) as err:
            asyncio.run(world.svc.start_practice(actor, KETTLE, assignment_id=assignment_id))
        assert err.value.code == "forbidden"
    assert counts(world.store)["sessions"] == 0


def test_starting_while_a_session_is_active_is_invalid(world: World) -> None:
    async def go() -> None:
        session, _ = await world.svc.start_practice(world.a1, KETTLE)
        assert world.svc.active_session(world.a1).id == session.id  # type: ignore[union-attr]
        with pytest.raises(Invalid) as err:
            await world.svc.start_practice(world.a1, HOODIE)
        assert err.value.code == "already_practising" and "/end" in err.value.message["en"]
        assert_bilingual(err.value)
        await session.end()
        assert world.svc.active_session(world.a1) is None
        again, _ = await world.svc.start_practice(world.a1, HOODIE)  # fine once ended
        await again.end()

    asyncio.run(go())
    assert counts(world.store)["sessions"] == 2


# --- practice choices ----------------------------------------------------------------------


def test_practice_choices_list_assignments_first_then_every_scenario(world: World) -> None:
    svc = world.svc
    (kettle,), _ = svc.assign(world.mentor_a, [KETTLE], team=world.team_a, due=TODAY)
    (hoodie,), _ = svc.assign(
        world.mentor_a, [HOODIE], team=world.team_a, due=TODAY + timedelta(days=3), attempts=1
    )
    (skincare,), _ = svc.assign(world.mentor_a, [SKINCARE], trainee="@alice")
    every = sorted(svc.library.scenarios)

    choices = svc.practice_choices(world.a1)
    assert [c.assignment for c in choices[:3]] == [kettle, hoodie, skincare]  # soonest due first
    assert [(c.scenario_id, c.assignment) for c in choices[3:]] == [(s, None) for s in every]
    assert choices[0].title["en"].startswith("Damaged in transit")
    assert (choices[1].attempts_used, choices[1].attempts_left) == (0, 1)
    assert choices[0].attempts_left is None and choices[3].attempts_left is None

    play(svc, world.a1, GOOD, assignment_id=kettle.id)  # passed
    play(svc, world.a1, OFF_PLATFORM, scenario=HOODIE, assignment_id=hoodie.id)  # failed: none left
    choices = svc.practice_choices(world.a1)
    assert [(c.scenario_id, c.passed, c.attempts_left) for c in choices[:3]] == [
        (SKINCARE, False, None),  # pending
        (HOODIE, False, 0),  # pending, but no attempts left
        (KETTLE, True, None),  # passed ones last
    ]
    assert [c.scenario_id for c in choices[3:]] == every
    assert choices[2].attempts_used == 1


def test_practice_choices_count_an_adjusted_pass(world: World) -> None:
    svc = world.svc
    (row,), _ = svc.assign(world.mentor_a, [KETTLE], team=world.team_a)
    sid = play(svc, world.a1, BELOW_ONLY, assignment_id=row.id)
    assert not svc.practice_choices(world.a1)[0].passed
    number = _entry_number(world, sid, "accuracy.wrong.refund_timing")
    d = svc.open_dispute(world.a1, sid, number, "I corrected it right away")
    svc.resolve_dispute(world.mentor_a, d.id, "accepted", "agreed")
    assert svc.practice_choices(world.a1)[0].passed


def test_a_hard_customer_can_leave_a_perfect_score_unresolved(world: World) -> None:
    # the premise of the next test: 100 points, failed only because it is unresolved
    sid = play(world.svc, world.a1, GOOD, difficulty="hard")
    view = world.svc.session_view(world.a1, sid)
    assert view.card is not None and view.row.outcome == "trainee_ended"
    assert view.adjusted_total == 100.0 and view.adjusted_passed is False
    (reason,) = view.adjusted_reasons
    assert "not resolved" in reason["en"]


def test_a_failed_session_does_not_pass_its_assignment(world: World) -> None:
    svc = world.svc
    (row,), _ = svc.assign(world.mentor_a, [KETTLE], team=world.team_a, difficulty="hard")
    sid = play(svc, world.a1, GOOD, assignment_id=row.id)  # 100 points, customer not satisfied
    view = svc.session_view(world.a1, sid)
    assert view.adjusted_total == 100.0 and view.adjusted_passed is False
    assert not svc.practice_choices(world.a1)[0].passed
    assert svc.team_report(world.mentor_a, world.team_a).completed == 0


# --- team report ---------------------------------------------------------------------------


def test_team_report(world: World) -> None:
    svc = world.svc
    (row,), _ = svc.assign(
        world.mentor_a, [KETTLE], team=world.team_a, due=TODAY + timedelta(days=2)
    )
    (solo,), _ = svc.assign(world.mentor_a, [HOODIE], trainee="@alice")
    play(svc, world.a1, BELOW_ONLY, assignment_id=row.id)
    play(svc, world.a1, GOOD, assignment_id=row.id)
    for _ in range(2):  # free practice breaking the off-platform clause
        play(svc, world.a1, OFF_PLATFORM)
    play(svc, world.b1, OFF_PLATFORM * 2, scenario=HOODIE)  # team B: not in A's report

    async def active() -> None:  # an unfinished session counts as an attempt, not a result
        await svc.start_practice(world.a2, KETTLE, assignment_id=row.id)

    asyncio.run(active())

    report = svc.team_report(world.mentor_a, world.team_a)
    assert report.team == world.team_a
    assert [u.id for u in report.trainees] == [world.a1.id, world.a2.id]
    progress = {(p.trainee.id, p.assignment.id): p for p in report.progress}
    assert set(progress) == {(world.a1.id, row.id), (world.a2.id, row.id), (world.a1.id, solo.id)}
    a1_kettle = progress[world.a1.id, row.id]
    assert (a1_kettle.attempts, a1_kettle.best, a1_kettle.passed) == (2, 100.0, True)
    a2_kettle = progress[world.a2.id, row.id]
    assert (a2_kettle.attempts, a2_kettle.best, a2_kettle.passed) == (1, None, False)
    assert progress[world.a1.id, solo.id].attempts == 0
    assert report.completed == 1
    assert report.overdue == ()  # due in two days
    assert report.sessions == 4  # A1's ended sessions

    # dimension averages over the team's ended sessions
    cards = [
        s.scorecard
        for s in world.store.sessions_of([world.a1.user.trainee])
        if s.status == "ended" and s.scorecard
    ]
    expected = {}
    for dim in cards[0]["dimensions"]:
        scores = [
            d["score"] / d["max_score"] * 100
            for card in cards
            for d in card["dimensions"]
            if d["id"] == dim["id"] and d["score"] is not None
        ]
        expected[dim["title"]["en"]] = round(sum(scores) / len(scores), 1)
    assert {t["en"]: avg for t, avg in report.dimension_averages} == expected

    # most violated clauses: the off-platform offer tops the list; team B's are not counted
    cited = Counter(
        c
        for s in world.store.sessions_of([world.a1.user.trainee], ended_only=True)
        for e in world.store.ledger(s.id)
        if e["points"] > 0
        for c in e["clause_ids"]
    )
    assert {cid: n for cid, _, n in report.top_clauses} == dict(cited.most_common(5))
    top_id, _, top_count = report.top_clauses[0]
    assert (top_id, top_count) == ("CONDUCT-OFF-PLATFORM", 2)
    assert cited["REFUND-TIMING"] == 1
    assert report.top_clauses[0][1]["en"] and report.top_clauses[0][1]["zh"]

    # later, the due date has passed: A2 is overdue, A1 passed in time
    world.clock.day = TODAY + timedelta(days=3)
    late = svc.team_report(world.admin, world.team_a)
    assert [(p.trainee.id, p.assignment.id) for p in late.overdue] == [(world.a2.id, row.id)]
    assert late.completed == 1


def test_team_report_of_an_empty_team(world: World) -> None:
    team = world.svc.create_team("Gamma", world.admin)
    report = world.svc.team_report(world.admin, team)
    assert (report.trainees, report.progress, report.sessions, report.completed) == ((), (), 0, 0)
    assert report.dimension_averages == () and report.top_clauses == ()


def test_top_clauses_drop_a_deduction_a_mentor_took_back(world: World) -> None:
    svc = world.svc
    sid = play(svc, world.a1, BELOW_ONLY)
    top = [c for c, _, _ in svc.team_report(world.mentor_a, world.team_a).top_clauses]
    assert top == ["REFUND-TIMING"]
    number = _entry_number(world, sid, "accuracy.wrong.refund_timing")
    svc.override(world.mentor_a, sid, number, 0.0, "the timing was corrected at once")
    assert svc.team_report(world.mentor_a, world.team_a).top_clauses == ()


# --- profile -------------------------------------------------------------------------------


def test_profile_of_a_newcomer(world: World) -> None:
    profile = world.svc.profile(world.stranger)
    assert (profile.sessions, profile.average, profile.passed, profile.weakest) == (0, None, 0, ())
    assert profile.recent == ()
    assert profile.next_scenario is not None and profile.next_scenario.assignment is None
    assert profile.next_scenario.scenario_id in world.svc.library.scenarios


def test_profile_sums_up_results_and_recommends_what_to_practise(world: World) -> None:
    svc = world.svc
    good = play(svc, world.a1, GOOD)
    bad = play(svc, world.a1, OFF_PLATFORM)
    profile = svc.profile(world.a1)
    assert profile.sessions == 2 and profile.passed == 1
    assert profile.average == 50.0  # 100 and 0
    assert [s.id for s in profile.recent] == [bad, good]  # newest first
    weakest = [cid for cid, _, _ in profile.weakest]
    assert weakest[0] == "CONDUCT-OFF-PLATFORM"
    assert all(points > 0 for _, _, points in profile.weakest)
    assert profile.weakest[0][1]["zh"]
    # no assignment: a scenario not yet passed
    nxt = profile.next_scenario
    assert nxt is not None and nxt.assignment is None and nxt.scenario_id != KETTLE

    # a pending assignment comes first, even for an already passed scenario
    (row,), _ = svc.assign(world.mentor_a, [KETTLE], team=world.team_a)
    nxt = svc.profile(world.a1).next_scenario
    assert nxt is not None and nxt.assignment == row

    # once it is passed, back to free practice
    play(svc, world.a1, GOOD, assignment_id=row.id)
    nxt = svc.profile(world.a1).next_scenario
    assert nxt is not None and nxt.assignment is None and nxt.scenario_id != KETTLE


def test_profile_skips_an_assignment_without_attempts_left(world: World) -> None:
    svc = world.svc
    (row,), _ = svc.assign(world.mentor_a, [KETTLE], team=world.team_a, attempts=1)
    play(svc, world.a1, BELOW_ONLY, assignment_id=row.id)
    nxt = svc.profile(world.a1).next_scenario
    assert nxt is not None and nxt.assignment is None


def test_profile_counts_an_adjusted_pass(world: World) -> None:
    svc = world.svc
    sid = play(svc, world.a1, BELOW_ONLY)
    assert svc.profile(world.a1).passed == 0
    svc.override(world.mentor_a, sid, 4, 0.0, "the timing was corrected at once")
    profile = svc.profile(world.a1)
    assert profile.passed == 1 and profile.average is not None and profile.average > 80


# --- CSV export ----------------------------------------------------------------------------

HEADER = [
    "trainee", "user_id", "session", "scenario", "difficulty", "mode", "assignment",
    "started_at", "ended_at", "outcome", "total", "adjusted_total", "passed",
    "adjusted_passed", "empathy", "accuracy", "policy", "red_lines", "disputes",
]  # fmt: skip


def test_export_csv(world: World) -> None:
    svc = world.svc
    (row,), _ = svc.assign(world.mentor_a, [KETTLE], team=world.team_a)
    below = play(svc, world.a1, BELOW_ONLY, assignment_id=row.id)
    off = play(svc, world.a1, OFF_PLATFORM)
    zh = play(svc, world.a2, BELOW_ONLY)
    play(svc, world.b1, GOOD)  # team B: not exported
    svc.override(world.mentor_a, below, 4, 0.0, "the timing was corrected at once")
    svc.open_dispute(world.a2, zh, 1, "我有先道歉")

    async def active() -> str:
        session, _ = await svc.start_practice(world.a2, HOODIE)
        return session.id

    running = asyncio.run(active())

    text = svc.export_csv(world.mentor_a, world.team_a)
    assert text.startswith("\ufeff") and text.count("\ufeff") == 1
    assert text.encode("utf-8").decode("utf-8-sig") == text[1:]  # Excel's UTF-8 with BOM
    rows = list(csv.reader(io.StringIO(text[1:])))
    assert rows[0] == HEADER
    body = [dict(zip(HEADER, r, strict=True)) for r in rows[1:]]
    assert [(r["trainee"], r["session"]) for r in body] == [
        ("Alice", below),
        ("Alice", off),
        ("王小明", zh),
        ("王小明", running),
    ]
    first, second, third, fourth = body
    assert first["user_id"] == str(world.a1.id) and first["assignment"] == str(row.id)
    assert (first["scenario"], first["difficulty"], first["mode"]) == (KETTLE, "normal", "exam")
    assert (first["outcome"], first["total"], first["passed"]) == ("resolved", "75.8", "0")
    assert first["adjusted_total"] == "87.5" and first["adjusted_passed"] == "1"
    assert first["red_lines"] == "0" and first["disputes"] == "0"
    assert first["empathy"] and first["accuracy"] and first["policy"]
    assert second["assignment"] == "" and second["adjusted_total"] == second["total"] == "0.0"
    assert int(second["red_lines"]) >= 1 and second["adjusted_passed"] == "0"
    assert third["disputes"] == "1" and third["total"] == "75.8"
    assert fourth["ended_at"] == fourth["total"] == fourth["adjusted_total"] == ""
    assert fourth["passed"] == fourth["red_lines"] == fourth["empathy"] == ""
    # the admin gets the same file
    assert svc.export_csv(world.admin, world.team_a) == text


def test_export_csv_of_a_team_without_sessions_is_just_the_header(world: World) -> None:
    text = world.svc.export_csv(world.mentor_b, world.team_b)
    assert list(csv.reader(io.StringIO(text.removeprefix("\ufeff")))) == [HEADER]


# --- identity ------------------------------------------------------------------------------


def test_register_is_idempotent_and_refreshes_the_profile(world: World) -> None:
    svc = world.svc
    again = svc.register("10", name="Alice W.", lang="zh", username="alice_w")
    assert again.id == world.a1.id and again.user.name == "Alice W."
    assert again.user.chat_id == "10"  # kept when the update carries no chat
    assert again.trainee_in == {world.team_a.id}
    assert svc.set_lang(again, "zh").lang == "zh"
    with pytest.raises(NotFound):
        svc.actor(12345)


def test_team_named_finds_only_the_actors_teams(world: World) -> None:
    svc = world.svc
    assert svc.team_named(" alpha ", world.mentor_a) == world.team_a
    assert svc.team_named("Beta") == world.team_b
    assert svc.team_named("beta", world.admin) == world.team_b
    with pytest.raises(NotFound) as err:
        svc.team_named("Beta", world.mentor_a)
    assert err.value.message == {
        "zh": "没有名为「Beta」的团队。你的团队：Alpha",
        "en": "No team named 'Beta'. Your teams: Alpha",
    }
    with pytest.raises(NotFound) as err:
        svc.team_named("Omega", world.mentor_a)
    assert "Alpha" in err.value.message["en"] and "Beta" not in err.value.message["en"]


def _refusal(call: Callable[[], object]) -> tuple[type[ServiceError], str, dict[str, str]]:
    with pytest.raises(ServiceError) as err:
        call()
    return type(err.value), err.value.code, dict(err.value.message)


def test_a_team_not_yours_is_refused_exactly_like_a_missing_one(world: World) -> None:
    """Guessing team names tells an outsider nothing: same class, code and text."""
    svc = world.svc
    outsiders = [world.mentor_a, world.mentor_b, world.a1, world.b1, world.stranger]
    missing = {a.id: _refusal(lambda a=a: svc.team_named("Gamma", a)) for a in outsiders}
    gamma = svc.create_team("Gamma", world.admin)
    snapshot = counts(world.store)
    for actor in outsiders:
        foreign = _refusal(lambda a=actor: svc.team_named("Gamma", a))
        assert foreign == missing[actor.id]
        assert foreign[:2] == (NotFound, "no_team")
    for actor in (world.mentor_b, world.b1, world.stranger):  # Alpha is not theirs
        alpha = _refusal(lambda a=actor: svc.team_named("Alpha", a))
        omega = _refusal(lambda a=actor: svc.team_named("Omega", a))
        assert alpha == (
            omega[0],
            omega[1],
            {k: v.replace("Omega", "Alpha") for k, v in omega[2].items()},
        )
    assert missing[world.mentor_b.id][2] == {
        "zh": "没有名为「Gamma」的团队。你的团队：Beta",
        "en": "No team named 'Gamma'. Your teams: Beta",
    }
    assert missing[world.stranger.id][2]["en"] == "No team named 'Gamma'. Your teams: —"
    assert svc.team_named("gamma", world.admin) == gamma  # admins see every team
    assert counts(world.store) == snapshot


def test_a_dispute_not_yours_is_refused_exactly_like_a_missing_one(world: World) -> None:
    """Dispute ids are small integers: probing them tells an outsider nothing."""
    svc = world.svc
    sid = play(svc, world.a1, BELOW_ONLY)
    first = svc.open_dispute(world.a1, sid, 1, "I asked for the photos politely")
    next_id = first.id + 1  # the id the next dispute will get
    outsiders = [world.mentor_b, world.a2, world.b1, world.stranger]

    def refusals(dispute_id: int) -> dict[int, list[tuple[type[ServiceError], str, Any]]]:
        return {
            a.id: [
                _refusal(lambda a=a: svc.open_dispute_for_ruling(a, dispute_id)),
                _refusal(lambda a=a: svc.resolve_dispute(a, dispute_id, "accepted", "fair point")),
            ]
            for a in outsiders
        }

    missing = refusals(next_id)
    second = svc.open_dispute(world.a1, sid, 2, "I did correct the refund time")
    assert second.id == next_id
    snapshot, events = counts(world.store), svc.store.grade_events([sid])
    assert refusals(next_id) == missing  # exists now, and answered exactly the same
    for got in missing.values():
        assert (
            got
            == [
                (
                    NotFound,
                    "no_dispute",
                    {"zh": f"没有申诉 #{next_id}。", "en": f"No dispute #{next_id}."},
                )
            ]
            * 2
        )
    # The trainee who filed it knows it exists: they are told they may not rule on it.
    assert _refusal(lambda: svc.open_dispute_for_ruling(world.a1, next_id))[:2] == (
        Forbidden,
        "forbidden",
    )
    assert counts(world.store) == snapshot and svc.store.grade_events([sid]) == events
    # Once ruled on, those who may rule still hear it is closed; outsiders still nothing.
    svc.resolve_dispute(world.mentor_a, next_id, "rejected", "the time was wrong")
    for actor in (world.mentor_a, world.admin):
        closed = _refusal(lambda a=actor: svc.open_dispute_for_ruling(a, next_id))
        assert closed[:2] == (Invalid, "dispute_closed")
    assert refusals(next_id) == missing


def test_a_name_that_looks_like_a_formula_is_exported_as_text(world: World) -> None:
    svc = world.svc
    svc.register("10", name='=HYPERLINK("http://x")', lang="en", username="alice")
    play(svc, world.a1, BELOW_ONLY)
    rows = list(csv.reader(io.StringIO(svc.export_csv(world.mentor_a, world.team_a)[1:])))
    assert rows[1][0] == '\'=HYPERLINK("http://x")'


def test_nobody_changes_the_grades_of_their_own_session(world: World) -> None:
    svc = world.svc
    code = svc.create_invite("trainee", world.team_a)
    svc.join(world.mentor_a, code)  # the mentor practises in their own team
    mentor = svc.actor(world.mentor_a.id)
    sid = play(svc, mentor, BELOW_ONLY)
    with pytest.raises(Forbidden):
        svc.override(mentor, sid, 1, 0.0, "my own reply was fine")
    dispute = svc.open_dispute(mentor, sid, 1, "I disagree")
    with pytest.raises(Forbidden):
        svc.resolve_dispute(mentor, dispute.id, "accepted", "agreed with myself")
    assert svc.store.grade_events([sid]) == []


def test_trend_lists_adjusted_totals_up_to_the_session_oldest_first(world: World) -> None:
    svc = world.svc
    first = play(svc, world.a1, GOOD)
    second = play(svc, world.a1, BELOW_ONLY)
    play(svc, world.b1, GOOD)  # someone else's
    third = play(svc, world.a1, NEAR_FULL)
    svc.override(world.mentor_a, second, 1, 0.0, "too harsh")  # mentors changed #2
    views = [svc.session_view(world.a1, sid) for sid in (first, second, third)]
    totals = [v.adjusted_total for v in views]
    assert views[1].adjusted_total != views[1].card.total  # the override counts
    assert svc.trend(world.a1, third) == totals
    assert svc.trend(world.a1, second) == totals[:2]
    assert svc.trend(world.mentor_a, first) == totals[:1]  # their mentor sees the same
    with pytest.raises(Forbidden):
        svc.trend(world.b1, first)


def test_every_channel_shares_the_sessions_in_progress_and_their_reply_timer(
    library: ScenarioLibrary, store: Store
) -> None:
    """The service keeps the live session and times each reply from the customer's line."""
    now = [100.0]
    svc = Training(store, library, Engine(store, library), clock=lambda: now[0])
    actor = _join(svc, "10", "Alice", None)

    async def run() -> None:
        session, _ = await svc.start_practice(actor, KETTLE)
        found, pending = await svc.session_for(actor)
        assert found is session and pending is None  # the one in memory, not a rebuild
        now[0] += 12.5
        await svc.reply(session, "王女士您好，非常抱歉，麻烦您拍一下照片。", ref=None, postbox=None)
        now[0] += 3.0
        await svc.reply(session, "收到，马上为您补发。", ref=None, postbox=None)
        replies = [t for t in store.turns(session.id) if t.role == "trainee"]
        assert [t.latency_s for t in replies] == [12.5, 3.0]
        svc.forget(session.id)  # as after a restart: rebuilt from the store
        rebuilt, _ = await svc.session_for(actor)
        assert rebuilt is not None and rebuilt is not session and rebuilt.id == session.id
        await rebuilt.end()
        assert (await svc.session_for(actor)) == (None, None)

    asyncio.run(run())
    store.close()


def test_deductions_can_be_disputed_for_seven_days_after_the_session(world: World) -> None:
    sid = play(world.svc, world.a1, BELOW_ONLY)
    row = world.store.session(sid)
    assert row is not None and row.ended_at is not None
    ended = date.fromisoformat(row.ended_at[:10])
    world.clock.day = ended + timedelta(days=7)
    assert world.svc.dispute_open(row)
    world.clock.day = ended + timedelta(days=8)
    assert not world.svc.dispute_open(row)
    with pytest.raises(Invalid) as closed:
        world.svc.open_dispute(world.a1, sid, 1, "too late?")
    assert closed.value.code == "dispute_window" and "7 days" in closed.value.message["en"]
    assert world.store.disputes([sid]) == []
