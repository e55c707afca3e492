"""Trainees, practice sessions and their turns; the writes of a reply and of an ending."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.storage.backends import Backend
from bot.storage.base import StorePart
from bot.storage.mailbox import write_owed
from bot.storage.rows import Owed, SessionRow, TurnRow, utc_now

if TYPE_CHECKING:  # graders load on first use: `trainer --help` needs none of them
    from graders import Grade
    from graders.rubric import Scorecard


class SessionStore(StorePart):
    """Trainees, sessions, turns, per-reply grades and the points ledger."""

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
        with self._tx() as tx:
            tx.execute(
                "INSERT INTO sessions (id, trainee_id, scenario_id, scenario_version,"
                " scenario_source, lang, difficulty, mode, rubric, seed, player, judge,"
                " assignment_id, drill_customer_id, status, started_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?)",
                [session_id, trainee_id, scenario_id, scenario_version, scenario_source, lang,
                 difficulty, mode, rubric, seed, player, judge, assignment_id,
                 drill_customer_id, utc_now()],
            )  # fmt: skip
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
        turn = EncodedTurn.encode(session_id, role, text, latency_s, meta, customer_state)
        with self._tx() as tx:
            idx = turn.insert(tx)
            write_owed(tx, owed)
            return idx

    def add_grades(
        self, session_id: str, turn_idx: int, reply_number: int, grades: Iterable[Grade]
    ) -> None:
        """Store the grades of one reply (all or none)."""
        rows = _grade_rows(session_id, turn_idx, reply_number, grades)
        with self._tx() as tx:
            _insert_grades(tx, rows)

    def end_session(
        self, session_id: str, outcome: str, card: Scorecard, *, owed: Owed | None = None
    ) -> None:
        """Mark a session ended and store its scorecard, ledger and what it owes the user."""
        end = _End.encode(session_id, outcome, card)
        with self._tx() as tx:
            end.write(tx)
            write_owed(tx, owed)

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
        turn = EncodedTurn.encode(session_id, "customer", text, None, meta, customer_state)
        end = None if ending is None else _End.encode(session_id, *ending)
        with self._tx() as tx:
            _insert_grades(tx, rows)
            idx = turn.insert(tx)
            if end is not None:
                end.write(tx)
            write_owed(tx, owed)
        return idx

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
        """A session by id (a unique id prefix works too, in any case)."""
        row = self.backend.fetchone(self._SESSION_SQL + " WHERE s.id = ?", [session_id])
        if row is not None:
            return self._session(row)
        prefix = session_id.lower().replace("%", "").replace("_", "")
        rows = self.backend.fetchall(
            self._SESSION_SQL + " WHERE s.id LIKE ? ORDER BY s.started_at LIMIT 2", [prefix + "%"]
        )
        return self._session(rows[0]) if len(rows) == 1 else None

    def sessions(self, trainee: str | None = None, limit: int = 20) -> list[SessionRow]:
        """Most recent sessions first, optionally of one trainee."""
        where, params = ("", []) if trainee is None else (" WHERE t.name = ?", [trainee])
        rows = self.backend.fetchall(
            self._SESSION_SQL + where + " ORDER BY s.started_at DESC LIMIT ?", [*params, limit]
        )
        return [self._session(r) for r in rows]

    def turns(self, session_id: str, after: int = -1) -> list[TurnRow]:
        """The turns of a session in order (those after index ``after``)."""
        rows = self.backend.fetchall(
            "SELECT idx, role, text, created_at, latency_s, meta FROM turns"
            " WHERE session_id = ? AND idx > ? ORDER BY idx",
            [session_id, after],
        )
        return [TurnRow(r[0], r[1], r[2], r[3], r[4], json.loads(r[5] or "{}")) for r in rows]

    def grades(self, session_id: str, after: int = -1) -> dict[int, list[Grade]]:
        """Grades of a session by turn index (of the turns after index ``after``)."""
        rows = self.backend.fetchall(
            "SELECT turn_idx, data FROM grades WHERE session_id = ? AND turn_idx > ?"
            " ORDER BY turn_idx, id",
            [session_id, after],
        )
        from graders import Grade

        out: dict[int, list[Grade]] = {}
        for turn_idx, data in rows:
            out.setdefault(turn_idx, []).append(Grade.from_dict(json.loads(data)))
        return out

    def ledger(self, session_id: str) -> list[dict[str, Any]]:
        """Ledger entries of an ended session."""
        rows = self.backend.fetchall(
            "SELECT data FROM ledger WHERE session_id = ? ORDER BY id", [session_id]
        )
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
            if not ids:
                return []
            where += f" AND s.assignment_id IN ({','.join('?' * len(ids))})"
            params = [*names, *ids]
        rows = self.backend.fetchall(self._SESSION_SQL + where + " ORDER BY s.started_at", params)
        return [self._session(r) for r in rows]

    def ended_totals(self, trainee: str) -> list[tuple[str, float | None]]:
        """(session id, stored total) of the trainee's ended sessions, oldest first.

        Cheap: no scorecard is read. The totals are as graded, before mentors' changes.
        """
        rows = self.backend.fetchall(
            "SELECT s.id, s.total FROM sessions s JOIN trainees t ON t.id = s.trainee_id"
            " WHERE t.name = ? AND s.status = 'ended' ORDER BY s.started_at",
            [trainee],
        )
        return [(str(sid), None if total is None else float(total)) for sid, total in rows]

    def active_session(self, trainee: str) -> SessionRow | None:
        """The trainee's session in progress, if any (the most recent one)."""
        # "+" keeps SQLite off the drill-customer index: its planner took that unique index
        # for IS NULL and read every practice session of every trainee on each call.
        row = self.backend.fetchone(
            self._SESSION_SQL + " WHERE t.name = ? AND s.status = 'active'"
            " AND +s.drill_customer_id IS NULL ORDER BY s.started_at DESC LIMIT 1",
            [trainee],
        )
        return self._session(row) if row else None

    def spoken_turns(self, session_id: str) -> int:
        """How many customer and trainee messages a session holds (system turns aside)."""
        row = self.backend.fetchone(
            "SELECT count(*) FROM turns WHERE session_id = ? AND role IN ('customer', 'trainee')",
            [session_id],
        )
        return int(row[0]) if row else 0

    def turn_with_ref(self, session_id: str, ref: str) -> int | None:
        """Index of the turn stored for the incoming message ``ref``, if any."""
        ref_of = self.backend.json_field("meta", "ref")
        row = self.backend.fetchone(
            f"SELECT idx FROM turns WHERE session_id = ? AND {ref_of} = ?", [session_id, ref]
        )
        return None if row is None else int(row[0])


# Writes encoded ahead of their transaction (the write lock is held only for the SQL).


@dataclass(frozen=True, slots=True)
class EncodedTurn:
    """A turn ready to insert: JSON already encoded."""

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
    ) -> EncodedTurn:
        """Encode a turn and the customer state it leaves (if any)."""
        meta_json = json.dumps(meta or {}, ensure_ascii=False)
        state = None if customer_state is None else json.dumps(customer_state, ensure_ascii=False)
        return cls((session_id, role, text, utc_now(), latency_s, meta_json), state)

    def insert(self, tx: Backend) -> int:
        """Insert as the session's next turn (inside a transaction); its index."""
        session_id = self.values[0]
        idx = tx.next_turn(session_id)
        tx.execute(
            "INSERT INTO turns (session_id, role, text, created_at, latency_s, meta, idx)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [*self.values, idx],
        )
        if self.state is not None:
            tx.execute(
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
        return cls(
            (outcome, utc_now(), card_json, card.total, int(card.passed), session_id), ledger
        )

    def write(self, tx: Backend) -> None:
        tx.execute(
            "UPDATE sessions SET status = 'ended', outcome = ?, ended_at = ?, scorecard = ?,"
            " total = ?, passed = ? WHERE id = ?",
            self.session,
        )
        tx.execute("DELETE FROM ledger WHERE session_id = ?", [self.session[-1]])
        tx.executemany(
            "INSERT INTO ledger (session_id, rubric, item, reply_number, points, data)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            self.ledger,
        )


def _grade_rows(
    session_id: str, turn_idx: int, reply_number: int, grades: Iterable[Grade]
) -> list[tuple[Any, ...]]:
    now = utc_now()
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


def _insert_grades(tx: Backend, rows: list[tuple[Any, ...]]) -> None:
    tx.executemany(
        "INSERT INTO grades (session_id, turn_idx, reply_number, dimension, grader,"
        " status, score, max_score, data, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
