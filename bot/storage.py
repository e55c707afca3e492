"""The SQLite store: trainees, sessions, turns, grades and the points ledger.

Every SQL statement of the project lives in this module so that another backend
(PostgreSQL) can be added behind the same :class:`Store` methods. The schema is built by
sqlite-utils' built-in migrations; the database runs in WAL mode with
``synchronous=FULL``, and each write is its own transaction, so an acknowledged reply or
grade survives a crash.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database, Migrations

from graders import Grade
from graders.rubric import Scorecard

migrations = Migrations("cs-trainer")


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


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


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


class Store:
    """All persistence of the trainer. Open with :meth:`open`; close when done."""

    def __init__(self, db: Database, path: Path | None):
        self.db = db
        self.path = path

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
                db = Database(sqlite3.connect(str(file_path), timeout=5.0))
            if file_path is not None:
                db.enable_wal()
                db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            db.execute("PRAGMA foreign_keys=ON")
            migrations.apply(db)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StoreError(f"Cannot open the database at {path}: {exc}") from exc
        return cls(db, file_path)

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    @contextmanager
    def _tx(self) -> Iterator[Database]:
        with self.db.atomic():
            yield self.db

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
    ) -> str:
        """Create an active session and return its id."""
        session_id = uuid.uuid4().hex[:12]
        trainee_id = self.trainee_id(trainee)
        with self._tx() as db:
            db.table("sessions").insert(
                {
                    "id": session_id,
                    "trainee_id": trainee_id,
                    "scenario_id": scenario_id,
                    "scenario_version": scenario_version,
                    "scenario_source": scenario_source,
                    "lang": lang,
                    "difficulty": difficulty,
                    "mode": mode,
                    "rubric": rubric,
                    "seed": seed,
                    "player": player,
                    "status": "active",
                    "started_at": _now(),
                }
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
    ) -> int:
        """Append a turn (committed before returning) and return its index.

        ``customer_state``, if given, is saved in the same transaction, so a customer's
        message and the state it left the customer in are never out of step.
        """
        with self._tx() as db:
            row = db.execute(
                "SELECT COALESCE(MAX(idx) + 1, 0) FROM turns WHERE session_id = ?", [session_id]
            ).fetchone()
            idx = int(row[0])
            db.table("turns").insert(
                {
                    "session_id": session_id,
                    "idx": idx,
                    "role": role,
                    "text": text,
                    "created_at": _now(),
                    "latency_s": latency_s,
                    "meta": json.dumps(meta or {}, ensure_ascii=False),
                }
            )
            if customer_state is not None:
                self._save_state(db, session_id, customer_state)
        return idx

    def add_grades(
        self, session_id: str, turn_idx: int, reply_number: int, grades: Iterable[Grade]
    ) -> None:
        """Store the grades of one reply (all or none)."""
        now = _now()
        with self._tx() as db:
            db.table("grades").insert_all(
                {
                    "session_id": session_id,
                    "turn_idx": turn_idx,
                    "reply_number": reply_number,
                    "dimension": g.dimension,
                    "grader": g.grader,
                    "status": g.status,
                    "score": g.score,
                    "max_score": g.max_score,
                    "data": json.dumps(g.to_dict(), ensure_ascii=False),
                    "created_at": now,
                }
                for g in grades
            )

    @staticmethod
    def _save_state(db: Database, session_id: str, state: dict[str, Any]) -> None:
        db.execute(
            "UPDATE sessions SET customer_state = ? WHERE id = ?",
            [json.dumps(state, ensure_ascii=False), session_id],
        )

    def end_session(self, session_id: str, outcome: str, card: Scorecard) -> None:
        """Mark a session ended and store its scorecard and ledger."""
        with self._tx() as db:
            db.execute(
                "UPDATE sessions SET status = 'ended', outcome = ?, ended_at = ?, scorecard = ?,"
                " total = ?, passed = ? WHERE id = ?",
                [
                    outcome,
                    _now(),
                    json.dumps(card.to_dict(), ensure_ascii=False),
                    card.total,
                    int(card.passed),
                    session_id,
                ],
            )
            db.execute("DELETE FROM ledger WHERE session_id = ?", [session_id])
            db.table("ledger").insert_all(
                {
                    "session_id": session_id,
                    "rubric": card.rubric,
                    "item": e.item,
                    "reply_number": e.reply,
                    "points": e.points,
                    "data": json.dumps(e.to_dict(), ensure_ascii=False),
                }
                for e in card.ledger
            )

    # reading

    _SESSION_SQL = (
        "SELECT s.id, t.name, s.scenario_id, s.scenario_version, s.scenario_source, s.lang,"
        " s.difficulty, s.mode, s.rubric, s.seed, s.player, s.status, s.outcome, s.started_at,"
        " s.ended_at, s.customer_state, s.scorecard, s.total, s.passed"
        " FROM sessions s JOIN trainees t ON t.id = s.trainee_id"
    )

    @staticmethod
    def _session(row: tuple[Any, ...]) -> SessionRow:
        (sid, trainee, scenario_id, version, source, lang, difficulty, mode, rubric, seed,
         player, status, outcome, started_at, ended_at, state, card, total, passed) = row  # fmt: skip
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
        )

    def session(self, session_id: str) -> SessionRow | None:
        """A session by id (a unique id prefix works too)."""
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

    def turns(self, session_id: str) -> list[TurnRow]:
        """The turns of a session in order."""
        rows = self.db.execute(
            "SELECT idx, role, text, created_at, latency_s, meta FROM turns"
            " WHERE session_id = ? ORDER BY idx",
            [session_id],
        ).fetchall()
        return [TurnRow(r[0], r[1], r[2], r[3], r[4], json.loads(r[5] or "{}")) for r in rows]

    def grades(self, session_id: str) -> dict[int, list[Grade]]:
        """Grades of a session by turn index."""
        rows = self.db.execute(
            "SELECT turn_idx, data FROM grades WHERE session_id = ? ORDER BY turn_idx, id",
            [session_id],
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
