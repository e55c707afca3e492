"""The SQLite store: trainees, sessions, turns, grades and the points ledger.

Every SQL statement of the project lives in this module so that another backend
(PostgreSQL) can be added behind the same :class:`Store` methods. The schema is built by
sqlite-utils' built-in migrations; the database runs in WAL mode with
``synchronous=FULL``, and each write is its own transaction, so an acknowledged reply or
grade survives a crash. Chat adapters with a durable update inbox may move the wait for the
disk to the inbox alone (:meth:`Store.sync_at_inbox`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database, Migrations

from graders import Grade
from graders.rubric import Scorecard

migrations = Migrations("cs-trainer")

BUSY_TIMEOUT_S = 5.0
"""How long a statement waits for a lock another connection holds before it fails."""


@migrations()
def m001_initial(db: Database) -> None:
    """Trainees, sessions, turns, grades and ledger entries."""
    db.table("trainees").create(
        {"id": int, "name": str, "created_at": str}, pk="id", not_null={"name", "created_at"}
    )
    db.table("trainees").create_index(["name"], unique=True)
    db.table("sessions").create(
        {
            "id": str,
            "trainee_id": int,
            "scenario_id": str,
            "scenario_version": int,
            "scenario_source": str,
            "lang": str,
            "difficulty": str,
            "mode": str,
            "rubric": str,
            "seed": int,
            "player": str,
            "status": str,
            "outcome": str,
            "started_at": str,
            "ended_at": str,
            "customer_state": str,
            "scorecard": str,
            "total": float,
            "passed": int,
        },
        pk="id",
        foreign_keys=[("trainee_id", "trainees", "id")],
        not_null={"trainee_id", "scenario_id", "lang", "difficulty", "mode", "status"},
    )
    db.table("sessions").create_index(["trainee_id", "started_at"])
    db.table("turns").create(
        {
            "id": int,
            "session_id": str,
            "idx": int,
            "role": str,
            "text": str,
            "created_at": str,
            "latency_s": float,
            "meta": str,
        },
        pk="id",
        foreign_keys=[("session_id", "sessions", "id")],
        not_null={"session_id", "idx", "role", "text", "created_at"},
    )
    db.table("turns").create_index(["session_id", "idx"], unique=True)
    db.table("grades").create(
        {
            "id": int,
            "session_id": str,
            "turn_idx": int,
            "reply_number": int,
            "dimension": str,
            "grader": str,
            "status": str,
            "score": float,
            "max_score": float,
            "data": str,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("session_id", "sessions", "id")],
        not_null={"session_id", "turn_idx", "dimension", "grader", "status", "data"},
    )
    db.table("grades").create_index(["session_id", "turn_idx", "dimension", "grader"], unique=True)
    db.table("ledger").create(
        {
            "id": int,
            "session_id": str,
            "rubric": str,
            "item": str,
            "reply_number": int,
            "points": float,
            "data": str,
        },
        pk="id",
        foreign_keys=[("session_id", "sessions", "id")],
    )
    db.table("ledger").create_index(["session_id"])


@migrations()
def m002_teams(db: Database) -> None:
    """Users, teams, invites, assignments, disputes, grade history, update inbox, chat state."""
    db.table("users").create(
        {
            "id": int,
            "platform": str,
            "external_id": str,
            "chat_id": str,
            "name": str,
            "username": str,
            "lang": str,
            "is_admin": int,
            "trainee_id": int,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("trainee_id", "trainees", "id")],
        not_null={"platform", "external_id", "name", "lang", "is_admin", "trainee_id"},
    )
    db.table("users").create_index(["platform", "external_id"], unique=True)
    db.table("teams").create(
        {"id": int, "name": str, "created_at": str}, pk="id", not_null={"name", "created_at"}
    )
    db.table("teams").create_index(["name"], unique=True)
    db.table("memberships").create(
        {"id": int, "team_id": int, "user_id": int, "role": str, "created_at": str},
        pk="id",
        foreign_keys=[("team_id", "teams", "id"), ("user_id", "users", "id")],
        not_null={"team_id", "user_id", "role"},
    )
    db.table("memberships").create_index(["team_id", "user_id", "role"], unique=True)
    db.table("invites").create(
        {
            "code": str,
            "team_id": int,
            "role": str,
            "max_uses": int,
            "uses": int,
            "created_by": int,
            "created_at": str,
        },
        pk="code",
        not_null={"role", "max_uses", "uses"},
    )
    db.table("assignments").create(
        {
            "id": int,
            "team_id": int,
            "user_id": int,
            "scenario_id": str,
            "difficulty": str,
            "mode": str,
            "rubric": str,
            "due": str,
            "pass_mark": float,
            "attempts": int,
            "created_by": int,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("team_id", "teams", "id")],
        not_null={"team_id", "scenario_id", "difficulty", "mode", "rubric", "pass_mark"},
    )
    db.table("sessions").add_column("assignment_id", int)
    db.table("disputes").create(
        {
            "id": int,
            "session_id": str,
            "entry": int,
            "user_id": int,
            "reason": str,
            "status": str,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("session_id", "sessions", "id"), ("user_id", "users", "id")],
        not_null={"session_id", "entry", "user_id", "reason", "status"},
    )
    db.table("grade_events").create(
        {
            "id": int,
            "session_id": str,
            "entry": int,
            "kind": str,
            "dispute_id": int,
            "verdict": str,
            "actor_id": int,
            "old_points": float,
            "new_points": float,
            "reason": str,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("session_id", "sessions", "id")],
        not_null={"session_id", "entry", "kind", "old_points", "new_points", "reason"},
    )
    db.table("grade_events").create_index(["session_id", "entry"])
    db.table("updates").create(
        {
            "bot_id": int,
            "update_id": int,
            "payload": str,
            "status": str,
            "error": str,
            "received_at": str,
            "done_at": str,
        },
        pk=("bot_id", "update_id"),
        not_null={"payload", "status"},
    )
    db.table("updates").create_index(["status"])
    db.table("chat_state").create(
        {"key": str, "state": str, "data": str, "updated_at": str}, pk="key"
    )
    # Append-only grade history: the database itself refuses edits and deletions.
    db.execute(
        "CREATE TRIGGER grade_events_no_update BEFORE UPDATE ON grade_events"
        " BEGIN SELECT RAISE(ABORT, 'grade_events is append-only'); END"
    )
    db.execute(
        "CREATE TRIGGER grade_events_no_delete BEFORE DELETE ON grade_events"
        " BEGIN SELECT RAISE(ABORT, 'grade_events is append-only'); END"
    )


@migrations()
def m003_judge(db: Database) -> None:
    """Which judge a session uses: ``rules`` (the rule graders) or ``llm`` (bounded by them)."""
    db.table("sessions").add_column("judge", str, not_null_default="rules")


@migrations()
def m004_judge_cache(db: Database) -> None:
    """Validated LLM judge answers by request, so a repeated request gets the same grade."""
    db.table("judge_cache").create(
        {"key": str, "answer": str, "model": str, "created_at": str},
        pk="key",
        not_null={"answer", "model"},
    )


@migrations()
def m005_outbox(db: Database) -> None:
    """What a state change owes a user, kept until delivered; how often an update was started."""
    db.table("updates").add_column("attempts", int, not_null_default=0)
    db.table("outbox").create(
        {
            "id": int,
            "address": str,
            "ref": str,
            "kind": str,
            "body": str,
            "status": str,
            "attempts": int,
            "error": str,
            "created_at": str,
            "sent_at": str,
        },
        pk="id",
        not_null={"address", "kind", "body", "status", "attempts", "created_at"},
        defaults={"status": "pending", "attempts": 0},
    )
    db.table("outbox").create_index(["status", "address"])
    db.table("outbox").create_index(["address", "ref"])


@migrations()
def m006_llm_modes(db: Database) -> None:
    """The structured-output mode each model server takes, as last found, with its date."""
    db.table("llm_modes").create(
        {"base_url": str, "model": str, "mode": str, "found_at": str},
        pk=("base_url", "model"),
        not_null={"mode", "found_at"},
    )


@migrations()
def m007_llm_servers(db: Database) -> None:
    """How many requests each model server decodes at once, as last found, and how."""
    db.table("llm_servers").create(
        {"base_url": str, "slots": int, "how": str, "found_at": str},
        pk="base_url",
        not_null={"slots", "how", "found_at"},
    )


@migrations()
def m008_web_devices(db: Database) -> None:
    """Browsers signed in to the web app: a token's hash per device, revocable."""
    db.table("web_devices").create(
        {
            "id": int,
            "user_id": int,
            "token_sha": str,
            "label": str,
            "created_at": str,
            "revoked_at": str,
        },
        pk="id",
        foreign_keys=[("user_id", "users", "id")],
        not_null={"user_id", "token_sha", "label", "created_at"},
    )
    db.table("web_devices").create_index(["token_sha"], unique=True)


@migrations()
def m009_grade_reviews(db: Database) -> None:
    """Mentors' reviews of grades flagged for one (append-only, like the grade history)."""
    db.table("grade_reviews").create(
        {
            "id": int,
            "session_id": str,
            "turn_idx": int,
            "dimension": str,
            "verdict": str,
            "actor_id": int,
            "reason": str,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("session_id", "sessions", "id")],
        not_null={"session_id", "turn_idx", "dimension", "verdict", "reason", "created_at"},
    )
    db.table("grade_reviews").create_index(["session_id", "turn_idx", "dimension"], unique=True)
    for event in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER grade_reviews_no_{event.lower()} BEFORE {event} ON grade_reviews"
            " BEGIN SELECT RAISE(ABORT, 'grade_reviews is append-only'); END"
        )


@migrations()
def m010_accounts(db: Database) -> None:
    """Revocable invites, one account across channels (linked identities, link codes)."""
    db.table("invites").add_column("revoked_at", str)
    db.table("identities").create(
        {"platform": str, "external_id": str, "user_id": int, "created_at": str},
        pk=("platform", "external_id"),
        foreign_keys=[("user_id", "users", "id")],
        not_null={"user_id", "created_at"},
    )
    db.table("link_codes").create(
        {"code_sha": str, "user_id": int, "created_at": str, "used_at": str},
        pk="code_sha",
        foreign_keys=[("user_id", "users", "id")],
        not_null={"user_id", "created_at"},
    )


@migrations()
def m011_drills(db: Database) -> None:
    """Festival drills: the plan, every scheduled customer, and each applied event."""
    db.table("drills").create(
        {
            "id": int,
            "preset": str,
            "plan": str,
            "seed": int,
            "created_by": int,
            "created_at": str,
            "starts_at": float,
            "ends_at": float,
            "status": str,
            "started_at": float,
            "ended_at": float,
        },
        pk="id",
        not_null={"preset", "plan", "seed", "created_at", "starts_at", "ends_at", "status"},
    )
    db.table("drill_customers").create(
        {
            "id": int,
            "drill_id": int,
            "user_id": int,
            "trainee_id": int,
            "number": int,
            "scenario_id": str,
            "difficulty": str,
            "seed": int,
            "due_at": float,
            "status": str,
            "session_id": str,
            "opened_at": float,
            "first_reply_at": float,
            "waiting_since": float,
            "nudged": int,
            "nudges": int,
            "ended_at": float,
            "outcome": str,
        },
        pk="id",
        foreign_keys=[("drill_id", "drills", "id"), ("session_id", "sessions", "id")],
        not_null={
            "drill_id",
            "user_id",
            "trainee_id",
            "number",
            "scenario_id",
            "difficulty",
            "seed",
            "due_at",
            "status",
            "nudged",
            "nudges",
        },
        defaults={"nudged": 0, "nudges": 0},
    )
    db.table("drill_customers").create_index(["drill_id", "user_id", "number"], unique=True)
    db.table("drill_customers").create_index(["drill_id", "status", "due_at"])
    db.table("drill_customers").create_index(["drill_id", "status", "waiting_since"])
    db.table("drill_events").create(
        {
            "id": int,
            "drill_id": int,
            "customer_id": int,
            "kind": str,
            "due_at": float,
            "done_at": float,
        },
        pk="id",
        foreign_keys=[("drill_id", "drills", "id")],
        not_null={"drill_id", "kind", "due_at", "done_at"},
    )
    db.table("sessions").add_column("drill_customer_id", int)
    db.table("sessions").create_index(["drill_customer_id"], unique=True)  # one per customer


@migrations()
def m012_drill_next_at(db: Database) -> None:
    """Drill customers: when next due, replies taken in, the 100-point assessment.

    The clock then reads only the customers with something due. Waiting customers start from an early bound (``waiting_since``); the drill runner sets
    the exact time the first time it looks at each drill.
    """
    db.table("drill_customers").add_column("next_at", float)
    db.table("drill_customers").add_column("replies", int, not_null_default=0)
    db.table("drill_customers").add_column("score100", float)
    db.execute(
        "UPDATE drill_customers SET replies = (SELECT count(*) FROM turns"
        " WHERE turns.session_id = drill_customers.session_id AND turns.role = 'trainee')"
        " WHERE session_id IS NOT NULL"
    )
    db.execute(
        "UPDATE drill_customers SET next_at = CASE status WHEN 'due' THEN due_at"
        " WHEN 'queued' THEN waiting_since WHEN 'open' THEN waiting_since END"
    )
    db.execute("DROP INDEX idx_drill_customers_drill_id_status_waiting_since")
    db.table("drill_customers").create_index(["drill_id", "next_at"])


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _drill(row: tuple[Any, ...]) -> DrillRow:
    drill_id, preset, plan, seed, created_by, starts_at, ends_at, status, started, ended = row
    return DrillRow(drill_id, preset, json.loads(plan), seed, created_by, starts_at, ends_at,
                    status, started, ended)  # fmt: skip


@dataclass(frozen=True)
class Owed:
    """Messages a state change owes a user, written in the same transaction as the change.

    ``address`` says where, in the channel's own form (``telegram:42``); ``ref`` what
    caused it (an update id), so a re-run of that update finds them instead of sending
    again; ``messages`` are (kind, body) pairs the channel knows how to send.
    """

    address: str
    ref: str | None
    messages: tuple[tuple[str, dict[str, Any]], ...]

    def rows(self) -> list[tuple[Any, ...]]:
        """The outbox rows (address, ref, kind, body, created_at)."""
        now = _now()
        return [
            (self.address, self.ref, kind, json.dumps(body, ensure_ascii=False), now)
            for kind, body in self.messages
        ]


def _write_owed(db: Database, owed: Owed | None) -> None:
    if owed is not None and owed.messages:
        db.conn.executemany(
            "INSERT INTO outbox (address, ref, kind, body, created_at, status, attempts)"
            " VALUES (?, ?, ?, ?, ?, 'pending', 0)",
            owed.rows(),
        )


@dataclass(frozen=True)
class OutboxRow:
    """One owed message not yet delivered."""

    id: int
    address: str
    ref: str | None
    kind: str
    body: dict[str, Any]
    attempts: int


@dataclass(frozen=True)
class SessionRow:
    """A stored session."""

    id: str
    trainee: str
    scenario_id: str
    scenario_version: int
    scenario_source: str
    lang: str
    difficulty: str
    mode: str
    rubric: str
    seed: int
    player: str
    status: str
    outcome: str | None
    started_at: str
    ended_at: str | None
    customer_state: dict[str, Any] | None
    scorecard: dict[str, Any] | None
    total: float | None
    passed: bool | None
    assignment_id: int | None = None
    judge: str = "rules"


@dataclass(frozen=True)
class DrillRow:
    """A stored drill; times are seconds since the epoch."""

    id: int
    preset: str
    plan: dict[str, Any]
    seed: int
    created_by: int | None
    starts_at: float
    ends_at: float
    status: str
    """``planned``, ``running`` or ``ended``."""
    started_at: float | None
    ended_at: float | None


@dataclass(frozen=True)
class DrillCustomerRow:
    """One scheduled customer of one trainee in a drill; times are epoch seconds."""

    id: int
    drill_id: int
    user_id: int
    trainee: str
    number: int
    scenario_id: str
    difficulty: str
    seed: int
    due_at: float
    status: str
    """``due`` (not arrived), ``queued`` (waiting for a free hand), ``open``, ``done``
    (the conversation ended) or ``abandoned`` (left unanswered)."""
    session_id: str | None
    opened_at: float | None
    first_reply_at: float | None
    waiting_since: float | None
    """When the customer's unanswered message came (None: the trainee spoke last)."""
    nudged: int
    """Nudges in the current wait."""
    nudges: int
    """Nudges over the whole conversation."""
    ended_at: float | None
    outcome: str | None
    next_at: float | None
    """When something is next due for the customer (None: nothing, ever)."""
    replies: int
    """The trainee's replies this row took into account (the transcript may hold one more
    if the process died in between)."""
    score100: float | None
    """The conversation under the company's 100-point assessment, once it ended."""

    @property
    def label(self) -> str:
        """The short name a trainee answers this customer by (``C3``)."""
        return f"C{self.number}"


@dataclass(frozen=True)
class TurnRow:
    """A stored chat turn."""

    idx: int
    role: str
    text: str
    created_at: str
    latency_s: float | None
    meta: dict[str, Any]


class StoreError(Exception):
    """A storage problem worth showing to the user (bad path, locked or corrupt file)."""


class StaleDrill(Exception):
    """A drill customer changed in another process between reading and writing it."""


class StoreBusy(Exception):
    """Another process holds the write lock, and the caller asked not to wait for it."""


class Store:
    """All persistence of the trainer. Open with :meth:`open`; close when done."""

    def __init__(self, db: Database, path: Path | None):
        self.db = db
        self.path = path
        self._deferred: list[tuple[str, list[Any]]] = []
        self._sync_at_inbox = False
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpointing = threading.Lock()

    @classmethod
    def open(cls, path: Path | str | None) -> Store:
        """Open (and migrate) the store at ``path``; ``None`` or ``":memory:"`` is in memory."""
        try:
            if path is None or str(path) == ":memory:":
                db = Database(memory=True)
                file_path = None
            else:
                file_path = Path(path)
                file_path.parent.mkdir(parents=True, exist_ok=True)
                db = Database(sqlite3.connect(str(file_path), timeout=BUSY_TIMEOUT_S))
            if file_path is not None:
                db.enable_wal()
                db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            db.execute("PRAGMA foreign_keys=ON")
            migrations.apply(db)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StoreError(f"Cannot open the database at {path}: {exc}") from exc
        return cls(db, file_path)

    def sync_at_inbox(self) -> None:
        """Wait for the disk only when an update enters the inbox (or :meth:`sync_wal`).

        Other commits skip the fsync (WAL with ``synchronous=NORMAL``): they still survive a
        crash of the process, and a power loss can undo only the last few of them, never an
        inbox entry (its fsync makes every earlier commit durable too). What a power loss
        undoes is redone from the inbox, whose updates stay pending until marked done.
        A file-backed store only; an in-memory store is left as it is.
        """
        if self.path is not None and not self._sync_at_inbox:
            self.flush()
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._sync_at_inbox = True

    def checkpoint_aside(self) -> None:
        """Stop commits from checkpointing the WAL themselves; :meth:`checkpoint` does it.

        SQLite's automatic checkpoint runs inside the commit that fills the WAL past 1000
        pages, copying them into the database file and waiting for the disk twice: on a
        server's event loop, every reply meanwhile waits too. After this call the server
        runs :meth:`checkpoint` in another thread now and then instead. A file-backed
        store only.
        """
        if self.path is not None and self._checkpointer is None:
            self.db.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = sqlite3.connect(
                str(self.path), timeout=BUSY_TIMEOUT_S, check_same_thread=False
            )

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the database file, without waiting for writers.

        Safe in any thread (its own connection); nothing to do before
        :meth:`checkpoint_aside`.
        """
        with self._checkpointing:
            if self._checkpointer is not None:
                self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        """Write what was deferred and close the connections."""
        self.flush()
        with self._checkpointing:
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None
        self.db.close()

    @contextmanager
    def _tx(self, *, wait: bool = True) -> Iterator[Database]:
        if self.db.conn.in_transaction:
            with self.db.atomic():  # nested: a savepoint
                yield self.db
            return
        # IMMEDIATE takes the write lock up front. With several processes on one file (the
        # Telegram workers), a transaction that reads first and then writes could otherwise
        # find its snapshot stale and fail at once with "database is locked", without the
        # busy timeout ever waiting.
        conn = self.db.conn
        self._begin_immediate(conn, wait)
        deferred, self._deferred = self._deferred, []
        try:
            for sql, params in deferred:
                conn.execute(sql, params)
            yield self.db
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._deferred[:0] = deferred  # rolled back: still to be written
            raise

    @staticmethod
    def _begin_immediate(conn: sqlite3.Connection, wait: bool = True) -> None:
        """Take the write lock, polling every 0.2 ms while another process holds it.

        SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20 ms... between tries, so under
        contention a writer (and the whole event loop with it) slept up to 40 ms for a
        lock that is free again within a millisecond. Other statements keep the 5 s busy
        timeout. Without ``wait``, a held lock raises :class:`StoreBusy` at once.
        """
        conn.execute("PRAGMA busy_timeout=0")
        try:
            deadline = None
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise
                    if not wait:
                        raise StoreBusy(str(exc)) from exc
                    now = time.monotonic()
                    deadline = deadline or now + BUSY_TIMEOUT_S
                    if now >= deadline:
                        raise
                time.sleep(0.0002)
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")

    def transaction(self) -> AbstractContextManager[Database]:
        """Group the writes made inside into one commit (each commit waits for the disk).

        Synchronous code only: the store's one connection is shared by every task, so the
        body must not await.
        """
        return self._tx()

    def flush(self) -> None:
        """Commit writes deferred to the next transaction, now."""
        if self._deferred:
            with self._tx():
                pass

    # trainees

    def trainee_id(self, name: str) -> int:
        """The id of trainee ``name``, created on first use."""
        row = self.db.execute("SELECT id FROM trainees WHERE name = ?", [name]).fetchone()
        if row:
            return int(row[0])
        with self._tx() as db:
            db.table("trainees").insert({"name": name, "created_at": _now()})
            return int(db.execute("SELECT id FROM trainees WHERE name = ?", [name]).fetchone()[0])

    # sessions

    def create_session(
        self,
        *,
        trainee: str,
        scenario_id: str,
        scenario_version: int,
        scenario_source: str,
        lang: str,
        difficulty: str,
        mode: str,
        rubric: str,
        seed: int,
        player: str = "scripted",
        judge: str = "rules",
        assignment_id: int | None = None,
        drill_customer_id: int | None = None,
    ) -> str:
        """Create an active session and return its id (one customer of a drill, or not)."""
        session_id = uuid.uuid4().hex[:12]
        trainee_id = self.trainee_id(trainee)
        with self._tx() as db:
            # Plain SQL, as on every hot path: sqlite-utils' insert inspects the table first.
            db.execute(
                "INSERT INTO sessions (id, trainee_id, scenario_id, scenario_version,"
                " scenario_source, lang, difficulty, mode, rubric, seed, player, judge,"
                " assignment_id, drill_customer_id, status, started_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?)",
                [
                    session_id,
                    trainee_id,
                    scenario_id,
                    scenario_version,
                    scenario_source,
                    lang,
                    difficulty,
                    mode,
                    rubric,
                    seed,
                    player,
                    judge,
                    assignment_id,
                    drill_customer_id,
                    _now(),
                ],
            )
        return session_id

    def add_turn(
        self,
        session_id: str,
        role: str,
        text: str,
        *,
        latency_s: float | None = None,
        meta: dict[str, Any] | None = None,
        customer_state: dict[str, Any] | None = None,
        owed: Owed | None = None,
    ) -> int:
        """Append a turn (committed before returning) and return its index.

        ``customer_state``, if given, is saved in the same transaction, so a customer's
        message and the state it left the customer in are never out of step; so is
        ``owed``, what the turn owes the user (:class:`Owed`).
        """
        turn = _Turn.encode(session_id, role, text, latency_s, meta, customer_state)
        with self._tx() as db:
            idx = turn.insert(db)
            _write_owed(db, owed)
            return idx

    def add_grades(
        self, session_id: str, turn_idx: int, reply_number: int, grades: Iterable[Grade]
    ) -> None:
        """Store the grades of one reply (all or none)."""
        rows = _grade_rows(session_id, turn_idx, reply_number, grades)
        with self._tx() as db:
            _insert_grades(db, rows)

    def end_session(
        self, session_id: str, outcome: str, card: Scorecard, *, owed: Owed | None = None
    ) -> None:
        """Mark a session ended and store its scorecard, ledger and what it owes the user."""
        end = _End.encode(session_id, outcome, card)
        with self._tx() as db:
            end.write(db)
            _write_owed(db, owed)

    def add_answer(
        self,
        session_id: str,
        reply: tuple[int, int, Iterable[Grade]],
        text: str,
        *,
        meta: dict[str, Any],
        customer_state: dict[str, Any],
        ending: tuple[str, Scorecard] | None = None,
        owed: Owed | None = None,
    ) -> int:
        """Store what follows from a trainee reply in one commit; returns the answer's index.

        ``reply`` is the reply's (turn index, number, grades); ``text``, ``meta`` and
        ``customer_state`` the customer's answer and the state it leaves the customer in;
        ``ending`` the outcome and scorecard when the session ends there; ``owed`` what
        all this owes the user. Everything is encoded before the write lock is taken:
        other processes wait while it is held.
        """
        rows = _grade_rows(session_id, *reply)
        turn = _Turn.encode(session_id, "customer", text, None, meta, customer_state)
        end = None if ending is None else _End.encode(session_id, *ending)
        with self._tx() as db:
            _insert_grades(db, rows)
            idx = turn.insert(db)
            if end is not None:
                end.write(db)
            _write_owed(db, owed)
        return idx

    # reading

    _SESSION_SQL = (
        "SELECT s.id, t.name, s.scenario_id, s.scenario_version, s.scenario_source, s.lang,"
        " s.difficulty, s.mode, s.rubric, s.seed, s.player, s.status, s.outcome, s.started_at,"
        " s.ended_at, s.customer_state, s.scorecard, s.total, s.passed, s.assignment_id, s.judge"
        " FROM sessions s JOIN trainees t ON t.id = s.trainee_id"
    )

    @staticmethod
    def _session(row: tuple[Any, ...]) -> SessionRow:
        (sid, trainee, scenario_id, version, source, lang, difficulty, mode, rubric, seed,
         player, status, outcome, started_at, ended_at, state, card, total, passed,
         assignment_id, judge) = row  # fmt: skip
        return SessionRow(
            id=sid,
            trainee=trainee,
            scenario_id=scenario_id,
            scenario_version=version,
            scenario_source=source,
            lang=lang,
            difficulty=difficulty,
            mode=mode,
            rubric=rubric,
            seed=seed,
            player=player,
            status=status,
            outcome=outcome,
            started_at=started_at,
            ended_at=ended_at,
            customer_state=json.loads(state) if state else None,
            scorecard=json.loads(card) if card else None,
            total=total,
            passed=None if passed is None else bool(passed),
            assignment_id=assignment_id,
            judge=judge,
        )

    def session(self, session_id: str) -> SessionRow | None:
        """A session by id (a unique id prefix works too)."""
        row = self.db.execute(self._SESSION_SQL + " WHERE s.id = ?", [session_id]).fetchone()
        if row is not None:
            return self._session(row)
        rows = self.db.execute(
            self._SESSION_SQL + " WHERE s.id LIKE ? ORDER BY s.started_at LIMIT 2",
            [session_id.replace("%", "").replace("_", "") + "%"],
        ).fetchall()
        return self._session(rows[0]) if len(rows) == 1 else None

    def sessions(self, trainee: str | None = None, limit: int = 20) -> list[SessionRow]:
        """Most recent sessions first, optionally of one trainee."""
        where, params = ("", []) if trainee is None else (" WHERE t.name = ?", [trainee])
        rows = self.db.execute(
            self._SESSION_SQL + where + " ORDER BY s.started_at DESC LIMIT ?", [*params, limit]
        ).fetchall()
        return [self._session(r) for r in rows]

    def turns(self, session_id: str, after: int = -1) -> list[TurnRow]:
        """The turns of a session in order (those after index ``after``)."""
        rows = self.db.execute(
            "SELECT idx, role, text, created_at, latency_s, meta FROM turns"
            " WHERE session_id = ? AND idx > ? ORDER BY idx",
            [session_id, after],
        ).fetchall()
        return [TurnRow(r[0], r[1], r[2], r[3], r[4], json.loads(r[5] or "{}")) for r in rows]

    def grades(self, session_id: str, after: int = -1) -> dict[int, list[Grade]]:
        """Grades of a session by turn index (of the turns after index ``after``)."""
        rows = self.db.execute(
            "SELECT turn_idx, data FROM grades WHERE session_id = ? AND turn_idx > ?"
            " ORDER BY turn_idx, id",
            [session_id, after],
        ).fetchall()
        out: dict[int, list[Grade]] = {}
        for turn_idx, data in rows:
            out.setdefault(turn_idx, []).append(Grade.from_dict(json.loads(data)))
        return out

    def ledger(self, session_id: str) -> list[dict[str, Any]]:
        """Ledger entries of an ended session."""
        rows = self.db.execute(
            "SELECT data FROM ledger WHERE session_id = ? ORDER BY id", [session_id]
        ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def sessions_of(
        self,
        trainees: Iterable[str],
        *,
        ended_only: bool = False,
        assignments: Iterable[int] | None = None,
    ) -> list[SessionRow]:
        """All sessions of these trainees (for these assignments only), oldest first."""
        names = list(trainees)
        if not names:
            return []
        marks = ",".join("?" * len(names))
        where = f" WHERE t.name IN ({marks})" + (" AND s.status = 'ended'" if ended_only else "")
        params: list[Any] = names
        if assignments is not None:
            ids = list(assignments)
            where += f" AND s.assignment_id IN ({','.join('?' * len(ids))})"
            params = [*names, *ids]
        rows = self.db.execute(self._SESSION_SQL + where + " ORDER BY s.started_at", params)
        return [self._session(r) for r in rows.fetchall()]

    def ended_totals(self, trainee: str) -> list[tuple[str, float | None]]:
        """(session id, stored total) of the trainee's ended sessions, oldest first.

        Cheap: no scorecard is read. The totals are as graded, before mentors' changes.
        """
        rows = self.db.execute(
            "SELECT s.id, s.total FROM sessions s JOIN trainees t ON t.id = s.trainee_id"
            " WHERE t.name = ? AND s.status = 'ended' ORDER BY s.started_at",
            [trainee],
        ).fetchall()
        return [(str(sid), None if total is None else float(total)) for sid, total in rows]

    def with_grade_events(self, session_ids: Iterable[str]) -> set[str]:
        """Which of these sessions have grade changes (overrides, dispute rulings)."""
        ids = list(session_ids)
        found: set[str] = set()
        for i in range(0, len(ids), 500):  # SQLite's limit on parameters
            chunk = ids[i : i + 500]
            rows = self.db.execute(
                "SELECT DISTINCT session_id FROM grade_events"
                f" WHERE session_id IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
            found.update(str(r[0]) for r in rows)
        return found

    def active_session(self, trainee: str) -> SessionRow | None:
        """The trainee's session in progress, if any (the most recent one)."""
        row = self.db.execute(
            self._SESSION_SQL + " WHERE t.name = ? AND s.status = 'active'"
            " AND s.drill_customer_id IS NULL ORDER BY s.started_at DESC LIMIT 1",
            [trainee],
        ).fetchone()
        return self._session(row) if row else None

    def turn_with_ref(self, session_id: str, ref: str) -> int | None:
        """Index of the turn stored for the incoming message ``ref``, if any."""
        row = self.db.execute(
            "SELECT idx FROM turns WHERE session_id = ? AND json_extract(meta, '$.ref') = ?",
            [session_id, ref],
        ).fetchone()
        return None if row is None else int(row[0])

    # users, teams and invites

    _USER_SQL = (
        "SELECT u.id, u.platform, u.external_id, u.chat_id, u.name, u.username, u.lang,"
        " u.is_admin, t.name FROM users u JOIN trainees t ON t.id = u.trainee_id"
    )

    @staticmethod
    def _user(row: tuple[Any, ...]) -> UserRow:
        uid, platform, external_id, chat_id, name, username, lang, is_admin, trainee = row
        return UserRow(
            uid, platform, external_id, chat_id, name, username, lang, bool(is_admin), trainee
        )

    def upsert_user(
        self,
        platform: str,
        external_id: str,
        *,
        name: str,
        lang: str,
        chat_id: str | None = None,
        username: str | None = None,
    ) -> UserRow:
        """Create the user on first contact; later calls refresh name, username and chat."""
        existing = self.user_by_external(platform, external_id)
        if existing is None:
            trainee_id = self.trainee_id(f"{platform}:{external_id}")
            with self._tx() as db:
                db.table("users").insert(
                    {
                        "platform": platform,
                        "external_id": external_id,
                        "chat_id": chat_id,
                        "name": name,
                        "username": username,
                        "lang": lang,
                        "is_admin": 0,
                        "trainee_id": trainee_id,
                        "created_at": _now(),
                    }
                )
        elif (existing.name, existing.username) != (name, username) or (
            chat_id is not None and existing.chat_id != chat_id
        ):
            with self._tx() as db:
                db.execute(
                    "UPDATE users SET name = ?, username = ?, chat_id = COALESCE(?, chat_id)"
                    " WHERE id = ?",
                    [name, username, chat_id, existing.id],
                )
        else:
            return existing  # unchanged: no need to read it again
        user = self.user_by_external(platform, external_id)
        assert user is not None
        return user

    def user_by_external(self, platform: str, external_id: str) -> UserRow | None:
        """A user by their chat-app identity (or the account that identity was linked to)."""
        row = (
            self.db.execute(
                self._USER_SQL + " WHERE u.id = (SELECT user_id FROM identities"
                " WHERE platform = ? AND external_id = ?)",
                [platform, external_id],
            ).fetchone()
            or self.db.execute(
                self._USER_SQL + " WHERE u.platform = ? AND u.external_id = ?",
                [platform, external_id],
            ).fetchone()
        )
        return self._user(row) if row else None

    def link_identity(self, platform: str, external_id: str, user_id: int) -> None:
        """From now on, this chat-app identity signs in as ``user_id``."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO identities (platform, external_id, user_id, created_at)"
                " VALUES (?, ?, ?, ?)",
                [platform, external_id, user_id, _now()],
            )

    def add_link_code(self, code_sha: str, user_id: int) -> None:
        """A one-time code that links another channel to ``user_id``."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO link_codes (code_sha, user_id, created_at) VALUES (?, ?, ?)",
                [code_sha, user_id, _now()],
            )

    def use_link_code(self, code_sha: str, max_age_s: float) -> int | None:
        """Spend a link code younger than ``max_age_s``: the user it links to (None: no such)."""
        oldest = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=max_age_s)).isoformat(
            timespec="milliseconds"
        )
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE link_codes SET used_at = ? WHERE code_sha = ? AND used_at IS NULL"
                " AND created_at >= ?",
                [_now(), code_sha, oldest],
            )
            if cursor.rowcount != 1:
                return None
            row = db.execute(
                "SELECT user_id FROM link_codes WHERE code_sha = ?", [code_sha]
            ).fetchone()
        return int(row[0])

    def has_history(self, user_id: int) -> bool:
        """Whether a user has sessions or memberships (an account with records of its own)."""
        row = self.db.execute(
            "SELECT EXISTS (SELECT 1 FROM memberships WHERE user_id = ?)"
            " OR EXISTS (SELECT 1 FROM sessions s JOIN users u ON u.trainee_id = s.trainee_id"
            " WHERE u.id = ?)",
            [user_id, user_id],
        ).fetchone()
        return bool(row[0])

    def user_by_trainee(self, trainee: str) -> UserRow | None:
        """The chat-app user whose sessions run under the engine's trainee name."""
        row = self.db.execute(self._USER_SQL + " WHERE t.name = ?", [trainee]).fetchone()
        return self._user(row) if row else None

    def user(self, user_id: int) -> UserRow | None:
        """A user by id."""
        row = self.db.execute(self._USER_SQL + " WHERE u.id = ?", [user_id]).fetchone()
        return self._user(row) if row else None

    def find_users(self, token: str) -> list[UserRow]:
        """Users whose id, chat-app id or @username is ``token``."""
        token = token.removeprefix("@")
        as_int = int(token) if token.isdigit() else -1
        rows = self.db.execute(
            self._USER_SQL + " WHERE u.id = ? OR u.external_id = ? OR lower(u.username) = lower(?)",
            [as_int, token, token],
        ).fetchall()
        return [self._user(r) for r in rows]

    def set_user_lang(self, user_id: int, lang: str) -> None:
        """Remember the user's language."""
        with self._tx() as db:
            db.execute("UPDATE users SET lang = ? WHERE id = ?", [lang, user_id])

    def set_admin(self, user_id: int) -> None:
        """Make the user an administrator."""
        with self._tx() as db:
            db.execute("UPDATE users SET is_admin = 1 WHERE id = ?", [user_id])

    def create_team(self, name: str) -> TeamRow:
        """Create a team (names are unique)."""
        with self._tx() as db:
            db.table("teams").insert({"name": name, "created_at": _now()})
        team = self.team_by_name(name)
        assert team is not None
        return team

    def team(self, team_id: int) -> TeamRow | None:
        """A team by id."""
        row = self.db.execute("SELECT id, name FROM teams WHERE id = ?", [team_id]).fetchone()
        return TeamRow(*row) if row else None

    def team_by_name(self, name: str) -> TeamRow | None:
        """A team by name (case-insensitive)."""
        row = self.db.execute(
            "SELECT id, name FROM teams WHERE lower(name) = lower(?)", [name]
        ).fetchone()
        return TeamRow(*row) if row else None

    def teams(self) -> list[TeamRow]:
        """All teams by name."""
        rows = self.db.execute("SELECT id, name FROM teams ORDER BY name").fetchall()
        return [TeamRow(*r) for r in rows]

    def add_member(self, team_id: int, user_id: int, role: str) -> None:
        """Add a user to a team as mentor or trainee (no-op if already there)."""
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO memberships (team_id, user_id, role, created_at)"
                " VALUES (?, ?, ?, ?)",
                [team_id, user_id, role, _now()],
            )

    def memberships(self, user_id: int) -> list[tuple[int, str]]:
        """(team id, role) pairs of a user."""
        rows = self.db.execute(
            "SELECT team_id, role FROM memberships WHERE user_id = ? ORDER BY team_id", [user_id]
        ).fetchall()
        return [(int(t), str(r)) for t, r in rows]

    def members(self, team_id: int, role: str) -> list[UserRow]:
        """Users with ``role`` in a team, by name."""
        rows = self.db.execute(
            self._USER_SQL + " JOIN memberships m ON m.user_id = u.id"
            " WHERE m.team_id = ? AND m.role = ? ORDER BY u.name, u.id",
            [team_id, role],
        ).fetchall()
        return [self._user(r) for r in rows]

    def create_invite(
        self, code: str, *, team_id: int | None, role: str, max_uses: int, created_by: int | None
    ) -> None:
        """Store an invite code."""
        with self._tx() as db:
            db.table("invites").insert(
                {
                    "code": code,
                    "team_id": team_id,
                    "role": role,
                    "max_uses": max_uses,
                    "uses": 0,
                    "created_by": created_by,
                    "created_at": _now(),
                }
            )

    def use_invite(self, code: str) -> InviteRow | None:
        """Spend one use of an invite; ``None`` if unknown, revoked or used up."""
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE invites SET uses = uses + 1 WHERE code = ? AND uses < max_uses"
                " AND revoked_at IS NULL",
                [code],
            )
            if cursor.rowcount != 1:
                return None
            row = db.execute(
                "SELECT code, team_id, role, max_uses, uses FROM invites WHERE code = ?", [code]
            ).fetchone()
        return InviteRow(*row)

    def invites(self, team_ids: Iterable[int] | None = None) -> list[InviteListing]:
        """Invites, newest first: all of them, or those of these teams."""
        sql = (
            "SELECT code, team_id, role, max_uses, uses, created_by, created_at, revoked_at"
            " FROM invites"
        )
        params: list[Any] = []
        if team_ids is not None:
            ids = list(team_ids)
            sql += f" WHERE team_id IN ({','.join('?' * len(ids))})"
            params = ids
        rows = self.db.execute(sql + " ORDER BY created_at DESC, code", params).fetchall()
        return [InviteListing(*r) for r in rows]

    def revoke_invite(self, code: str) -> None:
        """Stop an invite from being used again (uses so far stand)."""
        with self._tx() as db:
            db.execute(
                "UPDATE invites SET revoked_at = ? WHERE code = ? AND revoked_at IS NULL",
                [_now(), code],
            )

    # assignments

    _ASSIGNMENT_SQL = (
        "SELECT id, team_id, user_id, scenario_id, difficulty, mode, rubric, due, pass_mark,"
        " attempts, created_by, created_at FROM assignments"
    )

    def add_assignment(
        self,
        *,
        team_id: int,
        user_id: int | None,
        scenario_id: str,
        difficulty: str,
        mode: str,
        rubric: str,
        due: str | None,
        pass_mark: float,
        attempts: int | None,
        created_by: int | None,
    ) -> AssignmentRow:
        """Store an assignment for a team (``user_id`` None) or one trainee in it."""
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO assignments (team_id, user_id, scenario_id, difficulty, mode, rubric,"
                " due, pass_mark, attempts, created_by, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [team_id, user_id, scenario_id, difficulty, mode, rubric, due, pass_mark,
                 attempts, created_by, _now()],
            )  # fmt: skip
            new_id = cursor.lastrowid
        found = self.assignment(int(new_id or 0))
        assert found is not None
        return found

    def assignment(self, assignment_id: int) -> AssignmentRow | None:
        """An assignment by id."""
        row = self.db.execute(self._ASSIGNMENT_SQL + " WHERE id = ?", [assignment_id]).fetchone()
        return AssignmentRow(*row) if row else None

    def assignments(self, team_ids: Iterable[int]) -> list[AssignmentRow]:
        """Assignments of these teams, soonest due first."""
        ids = list(team_ids)
        if not ids:
            return []
        rows = self.db.execute(
            self._ASSIGNMENT_SQL + f" WHERE team_id IN ({','.join('?' * len(ids))})"
            " ORDER BY due IS NULL, due, id",
            ids,
        ).fetchall()
        return [AssignmentRow(*r) for r in rows]

    # disputes and grade history

    _DISPUTE_SQL = "SELECT id, session_id, entry, user_id, reason, status, created_at FROM disputes"

    def add_dispute(self, session_id: str, entry: int, user_id: int, reason: str) -> DisputeRow:
        """Open a dispute about one ledger entry."""
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO disputes (session_id, entry, user_id, reason, status, created_at)"
                " VALUES (?, ?, ?, ?, 'open', ?)",
                [session_id, entry, user_id, reason, _now()],
            )
            new_id = int(cursor.lastrowid or 0)
        found = self.dispute(new_id)
        assert found is not None
        return found

    def dispute(self, dispute_id: int) -> DisputeRow | None:
        """A dispute by id."""
        row = self.db.execute(self._DISPUTE_SQL + " WHERE id = ?", [dispute_id]).fetchone()
        return DisputeRow(*row) if row else None

    def disputes(
        self, session_ids: Iterable[str], *, status: str | None = None
    ) -> list[DisputeRow]:
        """Disputes about these sessions, oldest first."""
        ids = list(session_ids)
        if not ids:
            return []
        where = f" WHERE session_id IN ({','.join('?' * len(ids))})"
        params: list[Any] = ids
        if status is not None:
            where += " AND status = ?"
            params = [*ids, status]
        rows = self.db.execute(self._DISPUTE_SQL + where + " ORDER BY id", params).fetchall()
        return [DisputeRow(*r) for r in rows]

    def add_grade_event(
        self,
        *,
        session_id: str,
        entry: int,
        kind: str,
        actor_id: int | None,
        old_points: float,
        new_points: float,
        reason: str,
        dispute_id: int | None = None,
        verdict: str | None = None,
    ) -> None:
        """Append to a session's grade history (and close the dispute it resolves)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO grade_events (session_id, entry, kind, dispute_id, verdict, actor_id,"
                " old_points, new_points, reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [session_id, entry, kind, dispute_id, verdict, actor_id, old_points, new_points,
                 reason, _now()],
            )  # fmt: skip
            if dispute_id is not None:
                db.execute(
                    "UPDATE disputes SET status = ? WHERE id = ? AND status = 'open'",
                    [verdict, dispute_id],
                )

    def flagged_grades(
        self, session_ids: Iterable[str], flags: Sequence[str]
    ) -> list[tuple[str, int, int, Grade]]:
        """Grades with any of ``flags`` that no mentor has reviewed yet, by session and turn.

        Each as (session id, turn index, reply number, grade).
        """
        ids = list(session_ids)
        found: list[tuple[str, int, int, Grade]] = []
        marks = ",".join("?" * len(flags))
        for i in range(0, len(ids), 500):  # SQLite's limit on parameters
            chunk = ids[i : i + 500]
            rows = self.db.execute(
                "SELECT g.session_id, g.turn_idx, g.reply_number, g.data FROM grades g"
                f" WHERE g.session_id IN ({','.join('?' * len(chunk))})"
                " AND EXISTS (SELECT 1 FROM json_each(g.data, '$.flags') f"
                f" WHERE f.value IN ({marks}))"
                " AND NOT EXISTS (SELECT 1 FROM grade_reviews r WHERE r.session_id ="
                " g.session_id AND r.turn_idx = g.turn_idx AND r.dimension = g.dimension)"
                " ORDER BY g.session_id, g.turn_idx, g.id",
                [*chunk, *flags],
            ).fetchall()
            found.extend(
                (str(r[0]), int(r[1]), int(r[2]), Grade.from_dict(json.loads(r[3]))) for r in rows
            )
        return found

    def add_grade_review(
        self,
        *,
        session_id: str,
        turn_idx: int,
        dimension: str,
        verdict: str,
        actor_id: int,
        reason: str,
    ) -> None:
        """Record a mentor's review of a flagged grade (once per grade)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO grade_reviews (session_id, turn_idx, dimension, verdict, actor_id,"
                " reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [session_id, turn_idx, dimension, verdict, actor_id, reason, _now()],
            )

    def grade_reviews(self, session_ids: Iterable[str]) -> list[GradeReviewRow]:
        """Reviews of flagged grades in these sessions, oldest first."""
        ids = list(session_ids)
        if not ids:
            return []
        rows = self.db.execute(
            "SELECT id, session_id, turn_idx, dimension, verdict, actor_id, reason, created_at"
            f" FROM grade_reviews WHERE session_id IN ({','.join('?' * len(ids))}) ORDER BY id",
            ids,
        ).fetchall()
        return [GradeReviewRow(*r) for r in rows]

    def grade_events(self, session_ids: Iterable[str]) -> list[GradeEventRow]:
        """Grade history of these sessions, oldest first."""
        ids = list(session_ids)
        if not ids:
            return []
        rows = self.db.execute(
            "SELECT id, session_id, entry, kind, dispute_id, verdict, actor_id, old_points,"
            f" new_points, reason, created_at FROM grade_events"
            f" WHERE session_id IN ({','.join('?' * len(ids))}) ORDER BY id",
            ids,
        ).fetchall()
        return [GradeEventRow(*r) for r in rows]

    # LLM judge answers (a repeated request gets the stored answer)

    def recall_verdict(self, key: str) -> tuple[str, str] | None:
        """The judge answer and model stored under ``key``, if any."""
        for sql, params in self._deferred:  # not yet committed
            if sql.startswith("INSERT OR IGNORE INTO judge_cache") and params[0] == key:
                return str(params[1]), str(params[2])
        row = self.db.execute(
            "SELECT answer, model FROM judge_cache WHERE key = ?", [key]
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def remember_verdict(self, key: str, answer: str, model: str) -> None:
        """Store a validated judge answer; the first one stored for ``key`` stays.

        It rides on the next transaction (the reply's grades follow at once): losing it
        to a crash only means the model is asked again.
        """
        self._deferred.append(
            (
                "INSERT OR IGNORE INTO judge_cache (key, answer, model, created_at)"
                " VALUES (?, ?, ?, ?)",
                [key, answer, model, _now()],
            )
        )

    # model servers

    def recall_mode(self, base_url: str | None, model: str) -> tuple[str, str] | None:
        """The structured mode last found for a server and model, and when."""
        row = self.db.execute(
            "SELECT mode, found_at FROM llm_modes WHERE base_url = ? AND model = ?",
            [base_url or "", model],
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def remember_mode(self, base_url: str | None, model: str, mode: str) -> None:
        """Store the structured mode a server and model take (replacing an older finding)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO llm_modes (base_url, model, mode, found_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (base_url, model) DO UPDATE SET mode = excluded.mode,"
                " found_at = excluded.found_at",
                [base_url or "", model, mode, _now()],
            )

    def recall_slots(self, base_url: str | None) -> tuple[int, str] | None:
        """How many requests the server decodes at once, and how that was found."""
        row = self.db.execute(
            "SELECT slots, how FROM llm_servers WHERE base_url = ?", [base_url or ""]
        ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def remember_slots(self, base_url: str | None, slots: int, how: str) -> None:
        """Store how many requests a server decodes at once (``how``: reported, measured)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO llm_servers (base_url, slots, how, found_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (base_url) DO UPDATE SET slots = excluded.slots,"
                " how = excluded.how, found_at = excluded.found_at",
                [base_url or "", slots, how, _now()],
            )

    def has_admin(self) -> bool:
        """Whether any user is an admin."""
        return (
            self.db.execute("SELECT 1 FROM users WHERE is_admin = 1 LIMIT 1").fetchone() is not None
        )

    # web devices (a browser's sign-in; the token itself is never stored)

    def add_device(self, user_id: int, token_sha: str, label: str) -> int:
        """Record a signed-in browser; its id."""
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO web_devices (user_id, token_sha, label, created_at)"
                " VALUES (?, ?, ?, ?)",
                [user_id, token_sha, label[:120], _now()],
            )
            return int(cursor.lastrowid or 0)

    def devices(self, user_ids: Iterable[int]) -> list[DeviceRow]:
        """The signed-in browsers of these users, newest first (revoked ones too)."""
        ids = list(user_ids)
        if not ids:
            return []
        rows = self.db.execute(
            "SELECT id, user_id, token_sha, label, created_at, revoked_at FROM web_devices"
            f" WHERE user_id IN ({','.join('?' * len(ids))}) ORDER BY id DESC",
            ids,
        ).fetchall()
        return [DeviceRow(*r) for r in rows]

    def revoke_device(self, device_id: int) -> None:
        """Sign a browser out for good (its cookie no longer signs in)."""
        with self._tx() as db:
            db.execute(
                "UPDATE web_devices SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                [_now(), device_id],
            )

    def device_user(self, token_sha: str) -> int | None:
        """The user a browser's token signs in, unless the device was revoked."""
        row = self.db.execute(
            "SELECT user_id FROM web_devices WHERE token_sha = ? AND revoked_at IS NULL",
            [token_sha],
        ).fetchone()
        return None if row is None else int(row[0])

    # update inbox (each chat-app update is stored before it is processed)

    def inbox_add(
        self, bot_id: int, update_id: int, payload: str, *, wait_for_disk: bool = True
    ) -> bool:
        """Store an incoming update; False if this bot's update id was seen before.

        The commit waits for the disk even after :meth:`sync_at_inbox`, unless
        ``wait_for_disk`` is False: then the caller must call :meth:`sync_wal` before it
        treats the update as stored (and may share that call with other updates).
        """
        return self.inbox_add_many(bot_id, [(update_id, payload)], wait_for_disk=wait_for_disk)[0]

    def inbox_add_many(
        self,
        bot_id: int,
        updates: Sequence[tuple[int, str]],
        *,
        wait_for_disk: bool = True,
        wait_for_lock: bool = True,
    ) -> list[bool]:
        """Store incoming updates (update id, payload) in one commit, in order.

        Each flag says whether that update was new (False: this bot saw its id before).
        ``wait_for_disk`` as in :meth:`inbox_add`. Without ``wait_for_lock``, raises
        :class:`StoreBusy` instead of waiting while another process writes, and stores
        nothing: an event loop can retry later rather than stall.
        """
        full = self._sync_at_inbox and wait_for_disk
        if full:
            self.db.execute("PRAGMA synchronous=FULL")
        now = _now()
        try:
            with self._tx(wait=wait_for_lock) as db:
                added = [
                    db.execute(
                        "INSERT OR IGNORE INTO updates"
                        " (bot_id, update_id, payload, status, received_at)"
                        " VALUES (?, ?, ?, 'received', ?)",
                        [bot_id, update_id, payload, now],
                    ).rowcount
                    == 1
                    for update_id, payload in updates
                ]
        finally:
            if full:
                self.db.execute("PRAGMA synchronous=NORMAL")
        return added

    # drills

    def create_drill(
        self,
        *,
        preset: str,
        plan: dict[str, Any],
        seed: int,
        created_by: int | None,
        starts_at: float,
        ends_at: float,
        customers: Iterable[tuple[int, str, int, str, str, int, float]],
    ) -> int:
        """Store a planned drill and all its customers in one commit; returns its id.

        ``customers`` are (user id, trainee name, number, scenario, difficulty, seed, due
        at) tuples.
        """
        rows = [(uid, self.trainee_id(name), *rest) for uid, name, *rest in customers]
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO drills (preset, plan, seed, created_by, created_at, starts_at,"
                " ends_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, 'planned')",
                [
                    preset,
                    json.dumps(plan, ensure_ascii=False),
                    seed,
                    created_by,
                    _now(),
                    starts_at,
                    ends_at,
                ],
            )
            drill_id = int(cursor.lastrowid or 0)
            db.conn.executemany(
                "INSERT INTO drill_customers (drill_id, user_id, trainee_id, number,"
                " scenario_id, difficulty, seed, due_at, status, next_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'due', ?)",
                [(drill_id, *row, row[-1]) for row in rows],
            )
        return drill_id

    _DRILL_SQL = (
        "SELECT id, preset, plan, seed, created_by, starts_at, ends_at, status, started_at,"
        " ended_at FROM drills"
    )

    def drill(self, drill_id: int) -> DrillRow | None:
        """A drill by id."""
        row = self.db.execute(self._DRILL_SQL + " WHERE id = ?", [drill_id]).fetchone()
        return _drill(row) if row else None

    def drills(self, statuses: Sequence[str] = ("planned", "running", "ended")) -> list[DrillRow]:
        """Drills in these states, newest first."""
        marks = ", ".join("?" * len(statuses))
        sql = self._DRILL_SQL + f" WHERE status IN ({marks}) ORDER BY id DESC"
        return [_drill(row) for row in self.db.execute(sql, list(statuses)).fetchall()]

    def drills_of(self, user_id: int, statuses: Sequence[str]) -> list[DrillRow]:
        """Drills in these states that a trainee takes part in, the soonest first."""
        marks = ", ".join("?" * len(statuses))
        sql = (  # every chat message asks this: few drills run, so look in each one's index
            self._DRILL_SQL + f" WHERE status IN ({marks}) AND EXISTS (SELECT 1 FROM"
            " drill_customers c WHERE c.drill_id = drills.id AND c.user_id = ?)"
            " ORDER BY starts_at, id"
        )
        return [_drill(row) for row in self.db.execute(sql, [*statuses, user_id]).fetchall()]

    def drill_users(self, drill_id: int) -> set[int]:
        """The trainees (user ids) taking part in a drill."""
        rows = self.db.execute(
            "SELECT DISTINCT user_id FROM drill_customers WHERE drill_id = ?", [drill_id]
        ).fetchall()
        return {int(r[0]) for r in rows}

    def in_drill(self, drill_id: int, user_id: int) -> bool:
        """Whether the user takes part in the drill (as a trainee)."""
        sql = "SELECT EXISTS(SELECT 1 FROM drill_customers WHERE drill_id = ? AND user_id = ?)"
        return bool(self.db.execute(sql, [drill_id, user_id]).fetchone()[0])

    def set_drill_status(
        self, drill_id: int, status: str, at: float, *, owed: Sequence[Owed] = ()
    ) -> None:
        """Mark a drill running (``started_at``) or ended (``ended_at``), with its notices."""
        column = "started_at" if status == "running" else "ended_at"
        with self._tx() as db:
            db.execute(
                f"UPDATE drills SET status = ?, {column} = ? WHERE id = ?", [status, at, drill_id]
            )
            for one in owed:
                _write_owed(db, one)

    _CUSTOMER_SQL = (
        "SELECT c.id, c.drill_id, c.user_id, t.name, c.number, c.scenario_id, c.difficulty,"
        " c.seed, c.due_at, c.status, c.session_id, c.opened_at, c.first_reply_at,"
        " c.waiting_since, c.nudged, c.nudges, c.ended_at, c.outcome, c.next_at, c.replies,"
        " c.score100"
        " FROM drill_customers c JOIN trainees t ON t.id = c.trainee_id"
    )

    def drill_customers(
        self,
        drill_id: int,
        statuses: Sequence[str] | None = None,
        *,
        user_id: int | None = None,
        due_by: float | None = None,
    ) -> list[DrillCustomerRow]:
        """A drill's customers (in these states, of one trainee, due by a time), by due time."""
        where: list[str] = ["c.drill_id = ?"]
        params: list[Any] = [drill_id]
        if statuses is not None:
            # With a trainee named, "+" keeps SQLite on the (drill, user) index: the status
            # index would walk every open customer of the drill.
            column = "+c.status" if user_id is not None else "c.status"
            where.append(f"{column} IN ({', '.join('?' * len(statuses))})")
            params += list(statuses)
        if user_id is not None:
            where.append("c.user_id = ?")
            params.append(user_id)
        if due_by is not None:
            where.append("c.due_at <= ?")
            params.append(due_by)
        sql = f"{self._CUSTOMER_SQL} WHERE {' AND '.join(where)} ORDER BY c.due_at, c.id"
        return [DrillCustomerRow(*row) for row in self.db.execute(sql, params).fetchall()]

    def drill_due(
        self, drill_id: int, due_by: float, user_id: int | None = None
    ) -> list[DrillCustomerRow]:
        """Customers with something due by ``due_by`` (their ``next_at``, set by the runner)."""
        sql = self._CUSTOMER_SQL + " WHERE c.drill_id = ? AND c.next_at <= ?"
        params: list[Any] = [drill_id, due_by]
        if user_id is not None:
            sql += " AND c.user_id = ?"
            params.append(user_id)
        return [DrillCustomerRow(*row) for row in self.db.execute(sql, params).fetchall()]

    def drill_customer(self, customer_id: int) -> DrillCustomerRow | None:
        """One drill customer by id."""
        row = self.db.execute(self._CUSTOMER_SQL + " WHERE c.id = ?", [customer_id]).fetchone()
        return DrillCustomerRow(*row) if row else None

    def drill_loose_ends(self, drill_id: int) -> list[DrillCustomerRow]:
        """Customers gone or done whose conversation is still open (a crash between)."""
        sql = (
            self._CUSTOMER_SQL + " JOIN sessions s ON s.id = c.session_id"
            " WHERE c.drill_id = ? AND c.status IN ('done', 'abandoned') AND s.status = 'active'"
        )
        return [DrillCustomerRow(*row) for row in self.db.execute(sql, [drill_id]).fetchall()]

    def drill_session_of(self, customer_id: int) -> str | None:
        """The session opened for a drill customer, even one not yet recorded on it."""
        row = self.db.execute(
            "SELECT id FROM sessions WHERE drill_customer_id = ?", [customer_id]
        ).fetchone()
        return str(row[0]) if row else None

    _CUSTOMER_FIELDS = frozenset(
        {
            "status",
            "session_id",
            "opened_at",
            "first_reply_at",
            "waiting_since",
            "nudged",
            "nudges",
            "ended_at",
            "outcome",
            "next_at",
            "replies",
            "score100",
        }
    )

    def update_drill_customer(
        self,
        customer_id: int,
        changes: dict[str, Any],
        *,
        events: Sequence[tuple[str, float, float]] = (),
        turn: tuple[str, str, dict[str, Any]] | None = None,
        owed: Owed | None = None,
        expect: DrillCustomerRow | None = None,
    ) -> None:
        """Change a drill customer, with what came of it, in one commit.

        ``events`` (kind, due at, done at) are logged; ``turn`` (session, text, customer
        state) is a customer line stored with the state it leaves; ``owed`` what it owes
        the trainee. With ``expect`` (the row as the caller read it) nothing is written if
        another process changed the customer meanwhile: :class:`StaleDrill` is raised.
        """
        unknown = set(changes) - self._CUSTOMER_FIELDS
        if unknown:
            raise ValueError(f"not a drill customer field: {', '.join(sorted(unknown))}")
        encoded = None
        if turn is not None:  # a waiting customer's line: in the mood it leaves them in
            meta = {"drill": True, "anger": turn[2].get("anger")}
            encoded = _Turn.encode(turn[0], "customer", turn[1], None, meta, turn[2])
        with self._tx() as db:
            if changes:
                sets = ", ".join(f"{key} = ?" for key in changes)
                guard, params = "", [*changes.values(), customer_id]
                if expect is not None:
                    guard = " AND status = ? AND nudged = ? AND waiting_since IS ?"
                    params += [expect.status, expect.nudged, expect.waiting_since]
                cursor = db.execute(
                    f"UPDATE drill_customers SET {sets} WHERE id = ?{guard}", params
                )
                if expect is not None and cursor.rowcount == 0:
                    raise StaleDrill(f"drill customer {customer_id} changed meanwhile")
            for event in events:
                db.execute(
                    "INSERT INTO drill_events (drill_id, customer_id, kind, due_at, done_at)"
                    " SELECT drill_id, id, ?, ?, ? FROM drill_customers WHERE id = ?",
                    [*event, customer_id],
                )
            if encoded is not None:
                encoded.insert(db)
            _write_owed(db, owed)

    def drill_lags(self, drill_id: int) -> list[float]:
        """How late each applied event of a drill was, in seconds (its scheduler lag)."""
        rows = self.db.execute(
            "SELECT done_at - due_at FROM drill_events WHERE drill_id = ? ORDER BY id", [drill_id]
        ).fetchall()
        return [float(r[0]) for r in rows]

    def sync_wal(self) -> None:
        """Wait until every commit made so far is on the disk (an fsync of the WAL file).

        Touches no connection, so it may run in another thread. What the fsync covers is
        durable even if a checkpoint moved it into the main file first: a checkpoint syncs
        the WAL before and the main file after copying. An in-memory store has no disk.
        """
        if self.path is None:
            return
        for target in (Path(f"{self.path}-wal"), self.path):
            try:
                fd = os.open(target, os.O_RDONLY)
            except FileNotFoundError:
                continue  # no WAL (yet): the commits are in the main file
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            return

    def inbox_done(
        self, bot_id: int, update_id: int, error: str | None = None, *, defer: bool = False
    ) -> None:
        """Mark an update processed (or failed with ``error``).

        With ``defer`` the mark rides along with the next transaction (or :meth:`flush`)
        instead of paying for a commit of its own; if the process dies first, the update
        is processed again at the next start, as if the crash had come a moment earlier.
        """
        sql = (
            "UPDATE updates SET status = ?, error = ?, done_at = ?"
            " WHERE bot_id = ? AND update_id = ?"
        )
        params = ["failed" if error else "done", error, _now(), bot_id, update_id]
        if defer:
            self._deferred.append((sql, params))
            return
        with self._tx() as db:
            db.execute(sql, params)

    def inbox_pending(self, bot_id: int) -> list[tuple[int, str]]:
        """A bot's updates stored but not processed (a crash or shutdown interrupted them)."""
        rows = self.db.execute(
            "SELECT update_id, payload FROM updates WHERE bot_id = ? AND status = 'received'"
            " ORDER BY update_id",
            [bot_id],
        ).fetchall()
        return [(int(u), str(p)) for u, p in rows]

    def inbox_resume(self, bot_id: int, max_starts: int) -> list[tuple[int, str]]:
        """The pending updates to process again at a start, each counted as one more start.

        An update already started ``max_starts`` times (each ended by a crash) is marked
        failed instead: it must not stop every start of the bot.
        """
        with self._tx() as db:
            db.execute(
                "UPDATE updates SET status = 'failed', done_at = ?,"
                " error = 'stopped the bot ' || attempts || ' times; skipped'"
                " WHERE bot_id = ? AND status = 'received' AND attempts >= ?",
                [_now(), bot_id, max_starts],
            )
            db.execute(
                "UPDATE updates SET attempts = attempts + 1"
                " WHERE bot_id = ? AND status = 'received'",
                [bot_id],
            )
        return self.inbox_pending(bot_id)

    def inbox_error(self, bot_id: int, update_id: int) -> str | None:
        """Why a stored update failed (None when it did not)."""
        row = self.db.execute(
            "SELECT error FROM updates WHERE bot_id = ? AND update_id = ?", [bot_id, update_id]
        ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    # outbox (what state changes owe users, until it is delivered)

    def outbox_add(self, *owed: Owed) -> None:
        """Store owed messages (inside :meth:`transaction`, with the change that owes them)."""
        with self._tx() as db:
            for one in owed:
                _write_owed(db, one)

    def outbox_has(self, address: str, ref: str) -> bool:
        """Whether messages caused by ``ref`` were owed to ``address`` (sent or not)."""
        row = self.db.execute(
            "SELECT 1 FROM outbox WHERE address = ? AND ref = ? LIMIT 1", [address, ref]
        ).fetchone()
        return row is not None

    def outbox_pending(self, address: str) -> list[OutboxRow]:
        """An address's undelivered messages, oldest first."""
        rows = self.db.execute(
            "SELECT id, address, ref, kind, body, attempts FROM outbox"
            " WHERE status = 'pending' AND address = ? ORDER BY id",
            [address],
        ).fetchall()
        return [OutboxRow(i, a, r, k, json.loads(b), n) for i, a, r, k, b, n in rows]

    def outbox_addresses(self, prefix: str, ref: str | None = None) -> list[str]:
        """Addresses starting with ``prefix`` that are owed messages (caused by ``ref``)."""
        where = "" if ref is None else " AND ref = ?"
        rows = self.db.execute(
            "SELECT DISTINCT address FROM outbox WHERE status = 'pending'"
            f" AND substr(address, 1, ?) = ?{where} ORDER BY address",
            [len(prefix), prefix, *([] if ref is None else [ref])],
        ).fetchall()
        return [str(r[0]) for r in rows]

    def outbox_done(self, row_id: int, error: str | None = None) -> None:
        """Mark an owed message sent, or given up with ``error`` (it can never be sent)."""
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET status = ?, error = ?, sent_at = ?,"
                " attempts = attempts + 1 WHERE id = ?",
                ["failed" if error else "sent", error, _now(), row_id],
            )

    def outbox_retry(self, row_id: int, error: str) -> None:
        """Record a failed attempt; the message stays owed."""
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, error = ? WHERE id = ?",
                [error, row_id],
            )

    def outbox_counts(self) -> dict[str, int]:
        """How many owed messages are pending, sent and failed."""
        rows = self.db.execute("SELECT status, COUNT(*) FROM outbox GROUP BY status").fetchall()
        return {str(s): int(n) for s, n in rows}

    def inbox_backlog(self, bot_id: int) -> int:
        """How many of a bot's stored updates are not processed yet."""
        row = self.db.execute(
            "SELECT COUNT(*) FROM updates WHERE bot_id = ? AND status = 'received'", [bot_id]
        ).fetchone()
        return int(row[0])

    def inbox_status(self, bot_id: int, update_id: int) -> str | None:
        """The processing status of a stored update."""
        row = self.db.execute(
            "SELECT status FROM updates WHERE bot_id = ? AND update_id = ?", [bot_id, update_id]
        ).fetchone()
        return None if row is None else str(row[0])

    # chat state (the conversation state machine of chat adapters)

    def chat_state(self, key: str) -> tuple[str | None, dict[str, Any]]:
        """The state name and data stored under ``key``."""
        row = self.db.execute("SELECT state, data FROM chat_state WHERE key = ?", [key]).fetchone()
        if row is None:
            return None, {}
        return row[0], json.loads(row[1] or "{}")

    def set_chat_state(self, key: str, state: str | None, data: dict[str, Any]) -> None:
        """Replace the state and data under ``key`` (both empty removes the row)."""
        with self._tx() as db:
            if state is None and not data:
                db.execute("DELETE FROM chat_state WHERE key = ?", [key])
            else:
                db.execute(
                    "INSERT INTO chat_state (key, state, data, updated_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT(key) DO UPDATE SET state = excluded.state,"
                    " data = excluded.data, updated_at = excluded.updated_at",
                    [key, state, json.dumps(data, ensure_ascii=False), _now()],
                )


@dataclass(frozen=True)
class UserRow:
    """A person using a chat adapter; each user is also a trainee of the engine."""

    id: int
    platform: str
    external_id: str
    chat_id: str | None
    name: str
    username: str | None
    lang: str
    is_admin: bool
    trainee: str
    """The engine's trainee name for this user's sessions."""


@dataclass(frozen=True)
class TeamRow:
    """A team of trainees and their mentors."""

    id: int
    name: str


@dataclass(frozen=True)
class InviteRow:
    """An invite code: joins a team as mentor or trainee, or makes an admin."""

    code: str
    team_id: int | None
    role: str
    max_uses: int
    uses: int


@dataclass(frozen=True)
class InviteListing:
    """An invite as its page lists it."""

    code: str
    team_id: int | None
    role: str
    max_uses: int
    uses: int
    created_by: int | None
    created_at: str | None
    revoked_at: str | None


@dataclass(frozen=True)
class DeviceRow:
    """A browser signed in to the web app."""

    id: int
    user_id: int
    token_sha: str
    label: str
    created_at: str
    revoked_at: str | None


@dataclass(frozen=True)
class AssignmentRow:
    """A scenario assigned to a whole team (``user_id`` None) or one trainee."""

    id: int
    team_id: int
    user_id: int | None
    scenario_id: str
    difficulty: str
    mode: str
    rubric: str
    due: str | None
    pass_mark: float
    attempts: int | None
    created_by: int | None
    created_at: str


@dataclass(frozen=True)
class DisputeRow:
    """A trainee's objection to one ledger entry of a session."""

    id: int
    session_id: str
    entry: int
    """1-based position in the session's ledger."""
    user_id: int
    reason: str
    status: str
    """open, accepted, partly or rejected."""
    created_at: str


@dataclass(frozen=True)
class GradeEventRow:
    """One append-only change of a ledger entry's points: an override or a dispute ruling."""

    id: int
    session_id: str
    entry: int
    kind: str
    dispute_id: int | None
    verdict: str | None
    actor_id: int | None
    old_points: float
    new_points: float
    reason: str
    created_at: str


@dataclass(frozen=True)
class GradeReviewRow:
    """A mentor's review of a flagged grade: accepted, adjusted or rejected, and why."""

    id: int
    session_id: str
    turn_idx: int
    dimension: str
    verdict: str
    actor_id: int | None
    reason: str
    created_at: str


# Writes encoded ahead of their transaction (the write lock is held only for the SQL).
# Plain SQL on these hot paths: sqlite-utils' insert inspects the table each time.


@dataclass(frozen=True, slots=True)
class _Turn:
    values: tuple[Any, ...]  # session_id, role, text, created_at, latency_s, meta
    state: str | None

    @classmethod
    def encode(
        cls,
        session_id: str,
        role: str,
        text: str,
        latency_s: float | None,
        meta: dict[str, Any] | None,
        customer_state: dict[str, Any] | None,
    ) -> _Turn:
        meta_json = json.dumps(meta or {}, ensure_ascii=False)
        state = None if customer_state is None else json.dumps(customer_state, ensure_ascii=False)
        return cls((session_id, role, text, _now(), latency_s, meta_json), state)

    def insert(self, db: Database) -> int:
        session_id = self.values[0]
        row = db.execute(
            "SELECT COALESCE(MAX(idx) + 1, 0) FROM turns WHERE session_id = ?", [session_id]
        ).fetchone()
        idx = int(row[0])
        db.execute(
            "INSERT INTO turns (session_id, role, text, created_at, latency_s, meta, idx)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [*self.values, idx],
        )
        if self.state is not None:
            db.execute(
                "UPDATE sessions SET customer_state = ? WHERE id = ?", [self.state, session_id]
            )
        return idx


@dataclass(frozen=True, slots=True)
class _End:
    session: tuple[Any, ...]  # outcome, ended_at, scorecard, total, passed, id
    ledger: list[tuple[Any, ...]]

    @classmethod
    def encode(cls, session_id: str, outcome: str, card: Scorecard) -> _End:
        card_json = json.dumps(card.to_dict(), ensure_ascii=False)
        ledger = [
            (
                session_id,
                card.rubric,
                e.item,
                e.reply,
                e.points,
                json.dumps(e.to_dict(), ensure_ascii=False),
            )
            for e in card.ledger
        ]
        return cls((outcome, _now(), card_json, card.total, int(card.passed), session_id), ledger)

    def write(self, db: Database) -> None:
        db.execute(
            "UPDATE sessions SET status = 'ended', outcome = ?, ended_at = ?, scorecard = ?,"
            " total = ?, passed = ? WHERE id = ?",
            self.session,
        )
        db.execute("DELETE FROM ledger WHERE session_id = ?", [self.session[-1]])
        db.conn.executemany(
            "INSERT INTO ledger (session_id, rubric, item, reply_number, points, data)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            self.ledger,
        )


def _grade_rows(
    session_id: str, turn_idx: int, reply_number: int, grades: Iterable[Grade]
) -> list[tuple[Any, ...]]:
    now = _now()
    return [
        (
            session_id,
            turn_idx,
            reply_number,
            g.dimension,
            g.grader,
            g.status,
            g.score,
            g.max_score,
            json.dumps(g.to_dict(), ensure_ascii=False),
            now,
        )
        for g in grades
    ]


def _insert_grades(db: Database, rows: list[tuple[Any, ...]]) -> None:
    db.conn.executemany(
        "INSERT INTO grades (session_id, turn_idx, reply_number, dimension, grader,"
        " status, score, max_score, data, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
