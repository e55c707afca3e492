"""What every part of the store shares: its backend, transactions and deferred writes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from bot.storage.backends import Backend
from bot.storage.rows import utc_now


class StorePart:
    """The base of the store's parts: each keeps the SQL of what it stores."""

    backend: Backend
    _deferred: list[tuple[str, list[Any]]]

    @contextmanager
    def _tx(self, *, wait: bool = True) -> Iterator[Backend]:
        if self.backend.in_transaction:
            with self.backend.transaction():  # nested: a savepoint
                yield self.backend
            return
        deferred, self._deferred = self._deferred, []
        try:
            with self.backend.transaction(wait=wait) as tx:
                for sql, params in deferred:
                    tx.execute(sql, params)
                yield tx
        except BaseException:
            self._deferred[:0] = deferred  # rolled back: still to be written
            raise

    def transaction(self) -> AbstractContextManager[Backend]:
        """Group the writes made inside into one commit (each commit waits for the disk).

        Synchronous code only: the store's connection is shared by every task, so the
        body must not await.
        """
        return self._tx()

    def flush(self) -> None:
        """Commit writes deferred to the next transaction, now."""
        if self._deferred:
            with self._tx():
                pass

    def trainee_id(self, name: str) -> int:
        """The id of trainee ``name``, created on first use."""
        row = self.backend.fetchone("SELECT id FROM trainees WHERE name = ?", [name])
        if row:
            return int(row[0])
        with self._tx() as tx:
            tx.execute(
                "INSERT INTO trainees (name, created_at) VALUES (?, ?)"
                " ON CONFLICT (name) DO NOTHING",
                [name, utc_now()],
            )
            found = tx.fetchone("SELECT id FROM trainees WHERE name = ?", [name])
        assert found is not None
        return int(found[0])
