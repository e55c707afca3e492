"""Festival drills: the plan, every scheduled customer, and each applied event."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from bot.storage.base import StorePart
from bot.storage.mailbox import write_owed
from bot.storage.rows import DrillCustomerRow, DrillRow, Owed, StaleDrill, utc_now
from bot.storage.sessions import EncodedTurn


def _drill(row: tuple[Any, ...]) -> DrillRow:
    drill_id, preset, plan, seed, created_by, starts_at, ends_at, status, started, ended = row
    return DrillRow(drill_id, preset, json.loads(plan), seed, created_by, starts_at, ends_at,
                    status, started, ended)  # fmt: skip


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


class DrillStore(StorePart):
    """Drills, drill customers and drill events."""

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
        with self._tx() as tx:
            drill_id = tx.insert(
                "INSERT INTO drills (preset, plan, seed, created_by, created_at, starts_at,"
                " ends_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, 'planned')",
                [preset, json.dumps(plan, ensure_ascii=False), seed, created_by, utc_now(),
                 starts_at, ends_at],
            )  # fmt: skip
            tx.executemany(
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
        row = self.backend.fetchone(self._DRILL_SQL + " WHERE id = ?", [drill_id])
        return _drill(row) if row else None

    def drills(self, statuses: Sequence[str] = ("planned", "running", "ended")) -> list[DrillRow]:
        """Drills in these states, newest first."""
        if not statuses:
            return []
        sql = self._DRILL_SQL + f" WHERE status IN ({_marks(statuses)}) ORDER BY id DESC"
        return [_drill(row) for row in self.backend.fetchall(sql, list(statuses))]

    def drills_of(self, user_id: int, statuses: Sequence[str]) -> list[DrillRow]:
        """Drills in these states that a trainee takes part in, the soonest first."""
        if not statuses:
            return []
        sql = (  # every chat message asks this: few drills run, so look in each one's index
            self._DRILL_SQL + f" WHERE status IN ({_marks(statuses)}) AND EXISTS (SELECT 1 FROM"
            " drill_customers c WHERE c.drill_id = drills.id AND c.user_id = ?)"
            " ORDER BY starts_at, id"
        )
        return [_drill(row) for row in self.backend.fetchall(sql, [*statuses, user_id])]

    def drill_users(self, drill_id: int) -> set[int]:
        """The trainees (user ids) taking part in a drill."""
        rows = self.backend.fetchall(
            "SELECT DISTINCT user_id FROM drill_customers WHERE drill_id = ?", [drill_id]
        )
        return {int(r[0]) for r in rows}

    def in_drill(self, drill_id: int, user_id: int) -> bool:
        """Whether the user takes part in the drill (as a trainee)."""
        sql = "SELECT EXISTS(SELECT 1 FROM drill_customers WHERE drill_id = ? AND user_id = ?)"
        row = self.backend.fetchone(sql, [drill_id, user_id])
        return bool(row and row[0])

    def set_drill_status(
        self, drill_id: int, status: str, at: float, *, owed: Sequence[Owed] = ()
    ) -> None:
        """Mark a drill running (``started_at``) or ended (``ended_at``), with its notices."""
        column = "started_at" if status == "running" else "ended_at"
        with self._tx() as tx:
            tx.execute(
                f"UPDATE drills SET status = ?, {column} = ? WHERE id = ?", [status, at, drill_id]
            )
            for one in owed:
                write_owed(tx, one)

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
            if not statuses:
                return []
            # With a trainee named, SQLite must stay on the (drill, user) index: the status
            # index would walk every open customer of the drill.
            column = self.backend.plain("c.status") if user_id is not None else "c.status"
            where.append(f"{column} IN ({_marks(statuses)})")
            params += list(statuses)
        if user_id is not None:
            where.append("c.user_id = ?")
            params.append(user_id)
        if due_by is not None:
            where.append("c.due_at <= ?")
            params.append(due_by)
        sql = f"{self._CUSTOMER_SQL} WHERE {' AND '.join(where)} ORDER BY c.due_at, c.id"
        return [DrillCustomerRow(*row) for row in self.backend.fetchall(sql, params)]

    def drill_due(
        self,
        drill_id: int,
        due_by: float,
        user_id: int | None = None,
        part: tuple[int, frozenset[int]] | None = None,
    ) -> list[DrillCustomerRow]:
        """Customers with something due by ``due_by`` (their ``next_at``, set by the runner).

        Of one trainee, or of the trainees in ``part`` (parts, mine: ``user_id % parts``
        in mine).
        """
        sql = self._CUSTOMER_SQL + " WHERE c.drill_id = ? AND c.next_at <= ?"
        params: list[Any] = [drill_id, due_by]
        if user_id is not None:
            sql += " AND c.user_id = ?"
            params.append(user_id)
        if part is not None:
            parts, mine = part[0], sorted(part[1])
            if not mine:
                return []
            sql += f" AND c.user_id % ? IN ({_marks(mine)})"
            params += [parts, *mine]
        return [DrillCustomerRow(*row) for row in self.backend.fetchall(sql, params)]

    def drill_customer(self, customer_id: int) -> DrillCustomerRow | None:
        """One drill customer by id."""
        row = self.backend.fetchone(self._CUSTOMER_SQL + " WHERE c.id = ?", [customer_id])
        return DrillCustomerRow(*row) if row else None

    def drill_loose_ends(self, drill_id: int) -> list[DrillCustomerRow]:
        """Customers gone or done whose conversation is still open (a crash between)."""
        sql = (
            self._CUSTOMER_SQL + " JOIN sessions s ON s.id = c.session_id"
            " WHERE c.drill_id = ? AND c.status IN ('done', 'abandoned') AND s.status = 'active'"
        )
        return [DrillCustomerRow(*row) for row in self.backend.fetchall(sql, [drill_id])]

    def drill_session_of(self, customer_id: int) -> str | None:
        """The session opened for a drill customer, even one not yet recorded on it."""
        row = self.backend.fetchone(
            "SELECT id FROM sessions WHERE drill_customer_id = ?", [customer_id]
        )
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
            encoded = EncodedTurn.encode(turn[0], "customer", turn[1], None, meta, turn[2])
        with self._tx() as tx:
            if changes:
                sets = ", ".join(f"{key} = ?" for key in changes)
                guard, params = "", [*changes.values(), customer_id]
                if expect is not None:
                    guard = f" AND status = ? AND nudged = ? AND {tx.same('waiting_since')}"
                    params += [expect.status, expect.nudged, expect.waiting_since]
                changed = tx.execute(
                    f"UPDATE drill_customers SET {sets} WHERE id = ?{guard}", params
                )
                if expect is not None and changed == 0:
                    raise StaleDrill(f"drill customer {customer_id} changed meanwhile")
            for event in events:
                tx.execute(
                    "INSERT INTO drill_events (drill_id, customer_id, kind, due_at, done_at)"
                    " SELECT drill_id, id, ?, ?, ? FROM drill_customers WHERE id = ?",
                    [*event, customer_id],
                )
            if encoded is not None:
                encoded.insert(tx)
            write_owed(tx, owed)

    def drill_lags(self, drill_id: int) -> list[float]:
        """How late each applied event of a drill was, in seconds (its scheduler lag)."""
        return [lag for _, lag in self.drill_event_lags(drill_id)]

    def drill_event_lags(self, drill_id: int) -> list[tuple[float, float]]:
        """(due at, seconds late) of each applied event of a drill, in the order applied."""
        rows = self.backend.fetchall(
            "SELECT due_at, done_at - due_at FROM drill_events WHERE drill_id = ? ORDER BY id",
            [drill_id],
        )
        return [(float(r[0]), float(r[1])) for r in rows]

    def drill_reply_count(self, drill_id: int) -> int:
        """How many trainee replies the drill's conversations hold."""
        row = self.backend.fetchone(
            "SELECT count(*) FROM turns t JOIN sessions s ON s.id = t.session_id"
            " JOIN drill_customers c ON c.id = s.drill_customer_id"
            " WHERE c.drill_id = ? AND t.role = 'trainee'",
            [drill_id],
        )
        return int(row[0]) if row else 0
