"""The store's team tables (migration m002): upgrade, update inbox, chat state, invites, users."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sqlite_utils import Database

from bot.storage import Conflict, InviteRow, Store, StoreError, migrations

BOT = 777
M002_TABLES = {
    "users",
    "teams",
    "memberships",
    "invites",
    "assignments",
    "disputes",
    "grade_events",
    "updates",
    "chat_state",
}


ALL_MIGRATIONS = [
    "m001_initial",
    "m002_teams",
    "m003_judge",
    "m004_judge_cache",
    "m005_outbox",
    "m006_llm_modes",
    "m007_llm_servers",
    "m008_web_devices",
    "m009_grade_reviews",
    "m010_accounts",
    "m011_drills",
    "m012_drill_next_at",
    "m013_installation",
]


def _session(store: Store, trainee: str = "t") -> str:
    return store.create_session(trainee=trainee, scenario_id="s", scenario_version=1,
                                scenario_source="s.yaml", lang="zh", difficulty="easy",
                                mode="coach", rubric="default", seed=1)  # fmt: skip


def _applied(db: Database) -> list[str]:
    return [m.name for m in migrations.applied(db)]


# --- migration m002 ------------------------------------------------------------------------


def test_m002_upgrades_a_database_created_before_it(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = Database(sqlite3.connect(str(path)))
    migrations.apply(old, stop_before="m002_teams")
    assert _applied(old) == ["m001_initial"]
    assert not M002_TABLES & set(old.table_names())
    assert "assignment_id" not in old.table("sessions").columns_dict
    old.table("trainees").insert({"id": 1, "name": "ann", "created_at": "2025-01-01T00:00:00"})
    old.table("sessions").insert(
        {"id": "abc123def456", "trainee_id": 1, "scenario_id": "damaged-kettle",
         "scenario_version": 1, "scenario_source": "x.yaml", "lang": "zh",
         "difficulty": "normal", "mode": "coach", "rubric": "default", "seed": 7,
         "player": "scripted", "status": "ended", "outcome": "resolved",
         "started_at": "2025-01-01T00:00:00", "total": 91.5, "passed": 1}
    )  # fmt: skip
    old.table("turns").insert(
        {"session_id": "abc123def456", "idx": 0, "role": "customer", "text": "你好",
         "created_at": "2025-01-01T00:00:00", "meta": "{}"}
    )  # fmt: skip
    old.close()

    store = Store.open(path)
    assert _applied(store.backend.db) == ALL_MIGRATIONS
    assert set(store.backend.db.table_names()) >= M002_TABLES
    assert "outbox" in store.backend.db.table_names()  # owed messages, kept until delivered
    assert "attempts" in store.backend.db.table("updates").columns_dict
    triggers = {
        r[0]
        for r in store.backend.fetchall("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    }
    assert {"grade_events_no_update", "grade_events_no_delete"} <= triggers
    row = store.session("abc123def456")
    assert row is not None
    assert (row.trainee, row.total, row.passed, row.assignment_id) == ("ann", 91.5, True, None)
    assert store.turns(row.id)[0].text == "你好"
    # the new tables work on the upgraded file
    user = store.upsert_user("telegram", "42", name="Ann", lang="zh")
    team = store.create_team("Alpha")
    store.add_member(team.id, user.id, "trainee")
    assert store.memberships(user.id) == [(team.id, "trainee")]
    store.close()

    again = Store.open(path)  # reopening applies nothing twice
    assert _applied(again.backend.db) == ALL_MIGRATIONS
    assert again.user_by_external("telegram", "42") == user
    again.close()


def test_reopening_a_store_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    store = Store.open(path)
    assert _applied(store.backend.db) == ALL_MIGRATIONS
    assert set(store.backend.db.table_names()) >= M002_TABLES
    store.inbox_add(BOT, 1, "{}")
    store.set_chat_state("chat:1", "await_reason", {"session": "abc"})
    store.close()
    for _ in range(2):
        store = Store.open(path)
        assert _applied(store.backend.db) == ALL_MIGRATIONS
        assert store.inbox_pending(BOT) == [(1, "{}")]
        assert store.chat_state("chat:1") == ("await_reason", {"session": "abc"})
        store.close()


def test_sessions_get_an_assignment_column(store: Store) -> None:
    sid = store.create_session(trainee="t", scenario_id="s", scenario_version=1,
                               scenario_source="", lang="en", difficulty="easy", mode="exam",
                               rubric="default", seed=1, assignment_id=7)  # fmt: skip
    row = store.session(sid)
    assert row is not None and row.assignment_id == 7
    assert store.session(_session(store)).assignment_id is None  # type: ignore[union-attr]


# --- update inbox (per bot: update ids are only unique within one bot) --------------------


def test_inbox_stores_each_update_once(store: Store) -> None:
    assert store.inbox_add(BOT, 100, '{"text": "你好"}') is True
    assert store.inbox_add(BOT, 100, '{"text": "replayed"}') is False  # Telegram re-delivery
    assert store.inbox_pending(BOT) == [(100, '{"text": "你好"}')]  # the first payload is kept
    assert store.inbox_status(BOT, 100) == "received"
    assert store.inbox_status(BOT, 999) is None


def test_inbox_keeps_bots_apart(store: Store) -> None:
    assert store.inbox_add(1, 100, "bot one") is True
    assert store.inbox_add(2, 100, "bot two") is True  # same update id, another bot
    store.inbox_done(1, 100)
    assert store.inbox_pending(1) == []
    assert store.inbox_pending(2) == [(100, "bot two")]
    assert (store.inbox_status(1, 100), store.inbox_status(2, 100)) == ("done", "received")


def test_inbox_pending_lists_only_received_updates_in_order(store: Store) -> None:
    for update_id in (5, 3, 9, 7):
        store.inbox_add(BOT, update_id, f"p{update_id}")
    store.inbox_done(BOT, 3)
    store.inbox_done(BOT, 9, error="Traceback: boom")
    assert store.inbox_pending(BOT) == [(5, "p5"), (7, "p7")]
    assert store.inbox_status(BOT, 3) == "done"
    assert store.inbox_status(BOT, 9) == "failed"
    assert store.inbox_status(BOT, 5) == "received"
    row = store.backend.fetchone(
        "SELECT status, error, done_at IS NOT NULL FROM updates WHERE update_id = 9"
    )
    assert row == ("failed", "Traceback: boom", 1)
    row = store.backend.fetchone(
        "SELECT error, done_at IS NOT NULL FROM updates WHERE update_id = 3"
    )
    assert row == (None, 1)
    # a duplicate of a processed update is still refused and stays processed
    assert store.inbox_add(BOT, 3, "again") is False
    assert store.inbox_status(BOT, 3) == "done"


def test_inbox_done_of_an_unknown_update_is_harmless(store: Store) -> None:
    store.inbox_done(BOT, 12345)
    assert store.inbox_status(BOT, 12345) is None and store.inbox_pending(BOT) == []


def _commits(store: Store) -> list[str]:
    seen: list[str] = []
    store.backend.db.conn.set_trace_callback(
        lambda sql: seen.append(sql) if sql.strip().upper().startswith("COMMIT") else None
    )
    return seen


def test_deferred_done_marks_ride_on_the_next_transaction(sqlite_store: Store) -> None:
    store = sqlite_store  # counts commits with SQLite's trace callback
    for update_id in (1, 2, 3):
        store.inbox_add(BOT, update_id, "p")
    commits = _commits(store)
    store.inbox_done(BOT, 1, defer=True)
    store.inbox_done(BOT, 2, error="boom", defer=True)
    assert commits == []  # nothing written yet: a crash now re-runs both updates
    assert [u for u, _ in store.inbox_pending(BOT)] == [1, 2, 3]
    store.inbox_add(BOT, 4, "p")  # any transaction carries the marks along
    assert len(commits) == 1
    assert [u for u, _ in store.inbox_pending(BOT)] == [3, 4]
    assert store.inbox_status(BOT, 2) == "failed"
    store.inbox_done(BOT, 3, defer=True)
    store.flush()
    store.flush()  # nothing left: no empty commit
    assert len(commits) == 2 and store.inbox_status(BOT, 3) == "done"


def test_deferred_marks_survive_a_rolled_back_transaction_and_close(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "t.db")
    store.inbox_add(BOT, 1, "p")
    store.inbox_done(BOT, 1, defer=True)
    with pytest.raises(Conflict), store.transaction() as db:
        db.execute(  # the same update again: violates the primary key
            "INSERT INTO updates (bot_id, update_id, payload, status) VALUES (?, 1, 'p', 'x')",
            [BOT],
        )
    assert store.inbox_status(BOT, 1) == "received"  # rolled back with it, still queued
    store.close()
    reopened = Store.open(tmp_path / "t.db")
    assert reopened.inbox_status(BOT, 1) == "done"  # written on close
    reopened.close()


def test_a_transaction_groups_writes_into_one_commit(sqlite_store: Store) -> None:
    store = sqlite_store  # counts commits with SQLite's trace callback
    sid = _session(store)
    commits = _commits(store)
    with store.transaction():
        store.add_turn(sid, "trainee", "您好")
        store.add_turn(sid, "customer", "快点")
        store.set_chat_state("k", "s", {"a": 1})
    assert len(commits) == 1
    assert [t.text for t in store.turns(sid)] == ["您好", "快点"]


# --- chat state ------------------------------------------------------------------------------


def test_chat_state_set_get_and_delete(store: Store) -> None:
    assert store.chat_state("telegram:1") == (None, {})
    store.set_chat_state("telegram:1", "dispute_reason", {"session": "abc", "entry": 2})
    assert store.chat_state("telegram:1") == ("dispute_reason", {"session": "abc", "entry": 2})
    store.set_chat_state("telegram:1", "override_points", {"note": "理由：太严"})
    assert store.chat_state("telegram:1") == ("override_points", {"note": "理由：太严"})
    assert store.chat_state("telegram:2") == (None, {})  # keys are separate
    store.set_chat_state("telegram:1", None, {"draft": "x"})  # data without a state is kept
    assert store.chat_state("telegram:1") == (None, {"draft": "x"})
    store.set_chat_state("telegram:1", None, {})  # nothing left: the row goes
    assert store.chat_state("telegram:1") == (None, {})
    assert store.backend.fetchone("SELECT COUNT(*) FROM chat_state")[0] == 0
    store.set_chat_state("telegram:3", None, {})  # deleting what is not there is harmless
    store.set_chat_state("telegram:4", "menu", {})
    assert store.chat_state("telegram:4") == ("menu", {})


# --- invites ---------------------------------------------------------------------------------


def test_use_invite_stops_at_max_uses(store: Store) -> None:
    team = store.create_team("Alpha")
    store.create_invite("c0de", team_id=team.id, role="trainee", max_uses=3, created_by=None)
    used = [store.use_invite("c0de") for _ in range(5)]
    assert used[:3] == [InviteRow("c0de", team.id, "trainee", 3, n) for n in (1, 2, 3)]
    assert used[3:] == [None, None]
    assert store.backend.fetchone("SELECT uses FROM invites WHERE code = 'c0de'") == (3,)
    assert store.use_invite("unknown") is None
    assert store.use_invite("C0DE") is None  # codes are case-sensitive


def test_an_admin_invite_has_no_team(store: Store) -> None:
    store.create_invite("adm", team_id=None, role="admin", max_uses=1, created_by=None)
    assert store.use_invite("adm") == InviteRow("adm", None, "admin", 1, 1)
    assert store.use_invite("adm") is None


def test_use_invite_is_atomic_across_connections(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    main = Store.open(path)
    main.create_invite("race", team_id=None, role="admin", max_uses=10, created_by=None)
    threads, per_thread = 6, 5
    barrier = threading.Barrier(threads)
    results: list[InviteRow | None] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            store = Store.open(path)  # each thread its own connection
            try:
                barrier.wait()
                got = [store.use_invite("race") for _ in range(per_thread)]
            finally:
                store.close()
            with lock:
                results.extend(got)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=30)
    assert errors == []
    granted = [r for r in results if r is not None]
    assert len(results) == threads * per_thread
    assert sorted(r.uses for r in granted) == list(range(1, 11))  # each use handed out once
    assert main.backend.db.execute("SELECT uses FROM invites WHERE code = 'race'").fetchone() == (
        10,
    )
    main.close()


# --- users -----------------------------------------------------------------------------------


def test_find_users_by_id_external_id_or_username(store: Store) -> None:
    ann = store.upsert_user("telegram", "555001", name="Ann", lang="zh", username="AnnW")
    bob = store.upsert_user("telegram", "555002", name="Bob", lang="en", username=None)
    assert store.find_users(str(ann.id)) == [ann]
    assert store.find_users("555002") == [bob]
    for token in ("@AnnW", "@annw", "annw", "@ANNW"):
        assert store.find_users(token) == [ann]
    assert store.find_users("@nobody") == []
    assert store.find_users("@") == []
    assert store.find_users("") == []
    assert store.find_users("%") == []


def test_find_users_can_match_one_users_id_and_anothers_external_id(store: Store) -> None:
    first = store.upsert_user("telegram", "2", name="First", lang="zh")  # id 1
    second = store.upsert_user("telegram", "1", name="Second", lang="zh")  # id 2
    assert first.id == 1 and second.id == 2
    assert {u.name for u in store.find_users("1")} == {"First", "Second"}


def test_upsert_user_creates_once_and_refreshes(store: Store) -> None:
    user = store.upsert_user("telegram", "7", name="Ann", lang="zh", chat_id="c7", username="ann")
    assert (user.trainee, user.is_admin, user.chat_id) == ("telegram:7", False, "c7")
    again = store.upsert_user("telegram", "7", name="Ann Lee", lang="en", username=None)
    assert again.id == user.id and again.name == "Ann Lee" and again.username is None
    assert again.chat_id == "c7"  # an update without a chat keeps the known one
    assert again.lang == "zh"  # the language is the user's own choice (set_user_lang)
    store.set_user_lang(user.id, "en")
    store.set_admin(user.id)
    final = store.user(user.id)
    assert final is not None and (final.lang, final.is_admin) == ("en", True)
    other = store.upsert_user("web", "7", name="Ann", lang="zh")  # another platform
    assert other.id != user.id and other.trainee == "web:7"
    assert store.user(999) is None


def test_memberships_and_members(store: Store) -> None:
    a, b = store.create_team("Alpha"), store.create_team("beta")
    ann = store.upsert_user("telegram", "1", name="Ann", lang="zh")
    zed = store.upsert_user("telegram", "2", name="Zed", lang="zh")
    store.add_member(a.id, zed.id, "trainee")
    store.add_member(a.id, ann.id, "trainee")
    store.add_member(a.id, ann.id, "trainee")  # twice is a no-op
    store.add_member(b.id, ann.id, "mentor")
    assert store.memberships(ann.id) == [(a.id, "trainee"), (b.id, "mentor")]
    assert [u.name for u in store.members(a.id, "trainee")] == ["Ann", "Zed"]
    assert store.members(a.id, "mentor") == []
    assert store.team_by_name("ALPHA") == a and store.team_by_name("Gamma") is None
    assert [t.name for t in store.teams()] == ["Alpha", "beta"]
    with pytest.raises(Conflict):
        store.create_team("Alpha")


# --- turns by reference ----------------------------------------------------------------------


def test_turn_with_ref(store: Store) -> None:
    sid, other = _session(store, "a"), _session(store, "b")
    store.add_turn(sid, "customer", "你好")
    assert store.add_turn(sid, "trainee", "您好", meta={"ref": "u-17"}) == 1
    store.add_turn(sid, "customer", "快点")
    assert store.add_turn(sid, "trainee", "马上", meta={"ref": "u-18"}) == 3
    store.add_turn(other, "trainee", "hi", meta={"ref": "u-17"})
    assert store.turn_with_ref(sid, "u-17") == 1
    assert store.turn_with_ref(sid, "u-18") == 3
    assert store.turn_with_ref(other, "u-17") == 0  # a ref belongs to its session
    assert store.turn_with_ref(sid, "u-19") is None
    assert store.turn_with_ref("nope", "u-17") is None


# --- disputes and grade history --------------------------------------------------------------


def test_a_ruling_closes_only_an_open_dispute(store: Store) -> None:
    sid = _session(store)
    user = store.upsert_user("telegram", "1", name="Ann", lang="zh")
    dispute = store.add_dispute(sid, 1, user.id, "我道歉了")
    assert (dispute.status, dispute.entry, dispute.reason) == ("open", 1, "我道歉了")
    store.add_grade_event(session_id=sid, entry=1, kind="dispute", actor_id=user.id,
                          old_points=5, new_points=0, reason="ok", dispute_id=dispute.id,
                          verdict="accepted")  # fmt: skip
    store.add_grade_event(session_id=sid, entry=1, kind="dispute", actor_id=user.id,
                          old_points=0, new_points=0, reason="again", dispute_id=dispute.id,
                          verdict="rejected")  # fmt: skip
    assert store.dispute(dispute.id).status == "accepted"  # type: ignore[union-attr]
    assert store.disputes([sid], status="open") == []
    assert [d.id for d in store.disputes([sid])] == [dispute.id]
    assert store.disputes([]) == [] and store.grade_events([]) == []
    assert [e.verdict for e in store.grade_events([sid])] == ["accepted", "rejected"]


def test_grade_events_cannot_be_changed_or_deleted(store: Store) -> None:
    sid = _session(store)
    store.add_grade_event(session_id=sid, entry=1, kind="override", actor_id=None,
                          old_points=5, new_points=1, reason="too harsh")  # fmt: skip
    before = store.grade_events([sid])
    for sql in (
        "UPDATE grade_events SET reason = 'edited'",
        "UPDATE grade_events SET new_points = 5 WHERE entry = 1",
        "DELETE FROM grade_events",
    ):
        with pytest.raises(StoreError, match="append-only"):
            store.backend.execute(sql)
    assert store.grade_events([sid]) == before


def test_grade_reviews_cannot_be_changed_deleted_or_made_twice(store: Store) -> None:
    sid = _session(store)
    review = {"session_id": sid, "turn_idx": 1, "dimension": "policy", "actor_id": 1}
    store.add_grade_review(**review, verdict="accepted", reason="")
    before = store.grade_reviews([sid])
    for sql in ("UPDATE grade_reviews SET verdict = 'rejected'", "DELETE FROM grade_reviews"):
        with pytest.raises(StoreError, match="append-only"):
            store.backend.execute(sql)
    with pytest.raises(Conflict):  # one review per grade
        store.add_grade_review(**review, verdict="rejected", reason="second thoughts")
    assert store.grade_reviews([sid]) == before
