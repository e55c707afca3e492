"""What changes grades after the fact, and the LLM judge's remembered answers.

Disputes, the append-only grade history and mentors' reviews of flagged grades.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from bot.storage.base import StorePart
from bot.storage.rows import DisputeRow, GradeEventRow, GradeReviewRow, utc_now

if TYPE_CHECKING:  # graders load on first use: `trainer --help` needs none of them
    from graders import Grade

CHUNK = 500
"""Ids per query when a list may be long (SQLite's limit on parameters)."""


class GradeStore(StorePart):
    """Disputes, grade events, grade reviews and the judge cache."""

    def with_grade_events(self, session_ids: Iterable[str]) -> set[str]:
        """Which of these sessions have grade changes (overrides, dispute rulings)."""
        ids = list(session_ids)
        found: set[str] = set()
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i : i + CHUNK]
            rows = self.backend.fetchall(
                "SELECT DISTINCT session_id FROM grade_events"
                f" WHERE session_id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            found.update(str(r[0]) for r in rows)
        return found

    _DISPUTE_SQL = "SELECT id, session_id, entry, user_id, reason, status, created_at FROM disputes"

    def add_dispute(self, session_id: str, entry: int, user_id: int, reason: str) -> DisputeRow:
        """Open a dispute about one ledger entry."""
        with self._tx() as tx:
            new_id = tx.insert(
                "INSERT INTO disputes (session_id, entry, user_id, reason, status, created_at)"
                " VALUES (?, ?, ?, ?, 'open', ?)",
                [session_id, entry, user_id, reason, utc_now()],
            )
        found = self.dispute(new_id)
        assert found is not None
        return found

    def dispute(self, dispute_id: int) -> DisputeRow | None:
        """A dispute by id."""
        row = self.backend.fetchone(self._DISPUTE_SQL + " WHERE id = ?", [dispute_id])
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
        rows = self.backend.fetchall(self._DISPUTE_SQL + where + " ORDER BY id", params)
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
        with self._tx() as tx:
            tx.execute(
                "INSERT INTO grade_events (session_id, entry, kind, dispute_id, verdict, actor_id,"
                " old_points, new_points, reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [session_id, entry, kind, dispute_id, verdict, actor_id, old_points, new_points,
                 reason, utc_now()],
            )  # fmt: skip
            if dispute_id is not None:
                tx.execute(
                    "UPDATE disputes SET status = ? WHERE id = ? AND status = 'open'",
                    [verdict, dispute_id],
                )

    def flagged_grades(
        self, session_ids: Iterable[str], flags: Sequence[str]
    ) -> list[tuple[str, int, int, Grade]]:
        """Grades with any of ``flags`` that no mentor has reviewed yet, by session and turn.

        Each as (session id, turn index, reply number, grade).
        """
        from graders import Grade

        ids = list(session_ids)
        found: list[tuple[str, int, int, Grade]] = []
        if not flags:
            return found
        marks = ",".join("?" * len(flags))
        items = self.backend.json_items("g.data", "flags", "f")
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i : i + CHUNK]
            rows = self.backend.fetchall(
                "SELECT g.session_id, g.turn_idx, g.reply_number, g.data FROM grades g"
                f" WHERE g.session_id IN ({','.join('?' * len(chunk))})"
                f" AND EXISTS (SELECT 1 FROM {items} WHERE f.value IN ({marks}))"
                " AND NOT EXISTS (SELECT 1 FROM grade_reviews r WHERE r.session_id ="
                " g.session_id AND r.turn_idx = g.turn_idx AND r.dimension = g.dimension)"
                " ORDER BY g.session_id, g.turn_idx, g.id",
                [*chunk, *flags],
            )
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
        with self._tx() as tx:
            tx.execute(
                "INSERT INTO grade_reviews (session_id, turn_idx, dimension, verdict, actor_id,"
                " reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [session_id, turn_idx, dimension, verdict, actor_id, reason, utc_now()],
            )

    def grade_reviews(self, session_ids: Iterable[str]) -> list[GradeReviewRow]:
        """Reviews of flagged grades in these sessions, oldest first."""
        ids = list(session_ids)
        if not ids:
            return []
        rows = self.backend.fetchall(
            "SELECT id, session_id, turn_idx, dimension, verdict, actor_id, reason, created_at"
            f" FROM grade_reviews WHERE session_id IN ({','.join('?' * len(ids))}) ORDER BY id",
            ids,
        )
        return [GradeReviewRow(*r) for r in rows]

    def grade_events(self, session_ids: Iterable[str]) -> list[GradeEventRow]:
        """Grade history of these sessions, oldest first."""
        ids = list(session_ids)
        if not ids:
            return []
        rows = self.backend.fetchall(
            "SELECT id, session_id, entry, kind, dispute_id, verdict, actor_id, old_points,"
            " new_points, reason, created_at FROM grade_events"
            f" WHERE session_id IN ({','.join('?' * len(ids))}) ORDER BY id",
            ids,
        )
        return [GradeEventRow(*r) for r in rows]

    # LLM judge answers (a repeated request gets the stored answer)

    _REMEMBER_VERDICT = (
        "INSERT INTO judge_cache (key, answer, model, created_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (key) DO NOTHING"
    )

    def recall_verdict(self, key: str) -> tuple[str, str] | None:
        """The judge answer and model stored under ``key``, if any."""
        for sql, params in self._deferred:  # not yet committed
            if sql == self._REMEMBER_VERDICT and params[0] == key:
                return str(params[1]), str(params[2])
        row = self.backend.fetchone("SELECT answer, model FROM judge_cache WHERE key = ?", [key])
        return None if row is None else (str(row[0]), str(row[1]))

    def remember_verdict(self, key: str, answer: str, model: str) -> None:
        """Store a validated judge answer; the first one stored for ``key`` stays.

        It rides on the next transaction (the reply's grades follow at once): losing it
        to a crash only means the model is asked again.
        """
        self._deferred.append((self._REMEMBER_VERDICT, [key, answer, model, utc_now()]))
