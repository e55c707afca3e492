"""In and out: the update inbox, the outbox and chat adapters' state.

Each chat-app update is stored before it is processed; what a state change owes a user
stays in the outbox until delivered.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bot.storage.backends import Backend
from bot.storage.base import StorePart
from bot.storage.rows import OutboxRow, Owed, utc_now


def write_owed(tx: Backend, owed: Owed | None) -> None:
    """Write what a change owes a user, inside the change's transaction."""
    if owed is not None and owed.messages:
        tx.executemany(
            "INSERT INTO outbox (address, ref, kind, body, created_at, status, attempts)"
            " VALUES (?, ?, ?, ?, ?, 'pending', 0)",
            owed.rows(),
        )


class MailboxStore(StorePart):
    """The update inbox, the outbox and chat state."""

    _sync_at_inbox: bool

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
            self.backend.durable_commits(True)
        now = utc_now()
        try:
            with self._tx(wait=wait_for_lock) as tx:
                added = [
                    tx.execute(
                        "INSERT INTO updates (bot_id, update_id, payload, status, received_at)"
                        " VALUES (?, ?, ?, 'received', ?) ON CONFLICT (bot_id, update_id)"
                        " DO NOTHING",
                        [bot_id, update_id, payload, now],
                    )
                    == 1
                    for update_id, payload in updates
                ]
        finally:
            if full:
                self.backend.durable_commits(False)
        return added

    def sync_wal(self) -> None:
        """Wait until every commit made so far is on the disk (an fsync of the WAL file).

        Touches no connection, so it may run in another thread. What the fsync covers is
        durable even if a checkpoint moved it into the main file first: a checkpoint syncs
        the WAL before and the main file after copying. An in-memory store has no disk,
        and on PostgreSQL a commit returns once it is durable.
        """
        self.backend.sync_wal()

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
        params = ["failed" if error else "done", error, utc_now(), bot_id, update_id]
        if defer:
            self._deferred.append((sql, params))
            return
        with self._tx() as tx:
            tx.execute(sql, params)

    def inbox_pending(self, bot_id: int) -> list[tuple[int, str]]:
        """A bot's updates stored but not processed (a crash or shutdown interrupted them)."""
        rows = self.backend.fetchall(
            "SELECT update_id, payload FROM updates WHERE bot_id = ? AND status = 'received'"
            " ORDER BY update_id",
            [bot_id],
        )
        return [(int(u), str(p)) for u, p in rows]

    def inbox_resume(self, bot_id: int, max_starts: int) -> list[tuple[int, str]]:
        """The pending updates to process again at a start, each counted as one more start.

        An update already started ``max_starts`` times (each ended by a crash) is marked
        failed instead: it must not stop every start of the bot.
        """
        with self._tx() as tx:
            tx.execute(
                "UPDATE updates SET status = 'failed', done_at = ?,"
                " error = 'stopped the bot ' || attempts || ' times; skipped'"
                " WHERE bot_id = ? AND status = 'received' AND attempts >= ?",
                [utc_now(), bot_id, max_starts],
            )
            tx.execute(
                "UPDATE updates SET attempts = attempts + 1"
                " WHERE bot_id = ? AND status = 'received'",
                [bot_id],
            )
        return self.inbox_pending(bot_id)

    def inbox_error(self, bot_id: int, update_id: int) -> str | None:
        """Why a stored update failed (None when it did not)."""
        row = self.backend.fetchone(
            "SELECT error FROM updates WHERE bot_id = ? AND update_id = ?", [bot_id, update_id]
        )
        return None if row is None or row[0] is None else str(row[0])

    def inbox_backlog(self, bot_id: int) -> int:
        """How many of a bot's stored updates are not processed yet."""
        row = self.backend.fetchone(
            "SELECT COUNT(*) FROM updates WHERE bot_id = ? AND status = 'received'", [bot_id]
        )
        return int(row[0]) if row else 0

    def inbox_status(self, bot_id: int, update_id: int) -> str | None:
        """The processing status of a stored update."""
        row = self.backend.fetchone(
            "SELECT status FROM updates WHERE bot_id = ? AND update_id = ?", [bot_id, update_id]
        )
        return None if row is None else str(row[0])

    # outbox

    def outbox_add(self, *owed: Owed) -> None:
        """Store owed messages (inside :meth:`transaction`, with the change that owes them)."""
        with self._tx() as tx:
            for one in owed:
                write_owed(tx, one)

    def outbox_has(self, address: str, ref: str) -> bool:
        """Whether messages caused by ``ref`` were owed to ``address`` (sent or not)."""
        row = self.backend.fetchone(
            "SELECT 1 FROM outbox WHERE address = ? AND ref = ? LIMIT 1", [address, ref]
        )
        return row is not None

    def outbox_pending(self, address: str) -> list[OutboxRow]:
        """An address's undelivered messages, oldest first."""
        rows = self.backend.fetchall(
            "SELECT id, address, ref, kind, body, attempts FROM outbox"
            " WHERE status = 'pending' AND address = ? ORDER BY id",
            [address],
        )
        return [OutboxRow(i, a, r, k, json.loads(b), n) for i, a, r, k, b, n in rows]

    def outbox_addresses(self, prefix: str, ref: str | None = None) -> list[str]:
        """Addresses starting with ``prefix`` that are owed messages (caused by ``ref``)."""
        where = "" if ref is None else " AND ref = ?"
        rows = self.backend.fetchall(
            "SELECT DISTINCT address FROM outbox WHERE status = 'pending'"
            f" AND substr(address, 1, ?) = ?{where} ORDER BY address",
            [len(prefix), prefix, *([] if ref is None else [ref])],
        )
        return [str(r[0]) for r in rows]

    def outbox_done(self, row_id: int, error: str | None = None) -> None:
        """Mark an owed message sent, or given up with ``error`` (it can never be sent)."""
        with self._tx() as tx:
            tx.execute(
                "UPDATE outbox SET status = ?, error = ?, sent_at = ?,"
                " attempts = attempts + 1 WHERE id = ?",
                ["failed" if error else "sent", error, utc_now(), row_id],
            )

    def outbox_retry(self, row_id: int, error: str) -> None:
        """Record a failed attempt; the message stays owed."""
        with self._tx() as tx:
            tx.execute(
                "UPDATE outbox SET attempts = attempts + 1, error = ? WHERE id = ?",
                [error, row_id],
            )

    def outbox_deliveries(self) -> list[tuple[str, str]]:
        """(owed at, sent at) of every delivered message, oldest first."""
        rows = self.backend.fetchall(
            "SELECT created_at, sent_at FROM outbox WHERE sent_at IS NOT NULL ORDER BY id"
        )
        return [(str(made), str(sent)) for made, sent in rows]

    def inbox_failures(self) -> list[str]:
        """Why each failed update failed, of every bot."""
        rows = self.backend.fetchall("SELECT error FROM updates WHERE status = 'failed'")
        return [str(r[0] or "") for r in rows]

    def outbox_counts(self) -> dict[str, int]:
        """How many owed messages are pending, sent and failed."""
        rows = self.backend.fetchall("SELECT status, COUNT(*) FROM outbox GROUP BY status")
        return {str(s): int(n) for s, n in rows}

    # chat state (the conversation state machine of chat adapters)

    def chat_state(self, key: str) -> tuple[str | None, dict[str, Any]]:
        """The state name and data stored under ``key``."""
        row = self.backend.fetchone("SELECT state, data FROM chat_state WHERE key = ?", [key])
        if row is None:
            return None, {}
        return row[0], json.loads(row[1] or "{}")

    def set_chat_state(self, key: str, state: str | None, data: dict[str, Any]) -> None:
        """Replace the state and data under ``key`` (both empty removes the row)."""
        with self._tx() as tx:
            if state is None and not data:
                tx.execute("DELETE FROM chat_state WHERE key = ?", [key])
            else:
                tx.execute(
                    "INSERT INTO chat_state (key, state, data, updated_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT(key) DO UPDATE SET state = excluded.state,"
                    " data = excluded.data, updated_at = excluded.updated_at",
                    [key, state, json.dumps(data, ensure_ascii=False), utc_now()],
                )
