"""The store: one interface over its parts, on SQLite or PostgreSQL."""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any

from bot.storage.backends import Backend, open_backend
from bot.storage.drills import DrillStore
from bot.storage.grades import GradeStore
from bot.storage.mailbox import MailboxStore
from bot.storage.models import ModelServerStore
from bot.storage.people import PeopleStore
from bot.storage.rows import StoreError
from bot.storage.sessions import SessionStore

log = logging.getLogger(__name__)


class Store(SessionStore, PeopleStore, GradeStore, MailboxStore, DrillStore, ModelServerStore):
    """All persistence of the trainer. Open with :meth:`open`; close when done."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._deferred = []
        self._sync_at_inbox = False

    @classmethod
    def open(cls, where: Path | str | None) -> Store:
        """Open (and migrate) the store at ``where``.

        An SQLite file path or ``sqlite:///path``, or ``postgresql://user@host/db``;
        ``None`` or ``":memory:"`` is SQLite in memory.
        """
        return cls(open_backend(where))

    @property
    def path(self) -> Path | None:
        """The SQLite file (None: in memory, or PostgreSQL)."""
        return self.backend.path

    @property
    def url(self) -> str:
        """Where the data is, to show: a file path, ``:memory:`` or a URL without password."""
        return self.backend.url

    @property
    def location(self) -> str | None:
        """What another process opens to share this database (None: in memory)."""
        return self.backend.location

    def installation(self) -> str:
        """The database's random name (the same through any address or file path)."""
        row = self.backend.fetchone("SELECT value FROM installation WHERE key = 'id'")
        assert row is not None
        return str(row[0])

    def ping(self) -> bool:
        """Whether the database answers a query now."""
        return self.backend.fetchone("SELECT 1") == (1,)

    def sync_at_inbox(self) -> None:
        """Wait for the disk only when an update enters the inbox (or :meth:`sync_wal`).

        Other commits skip the fsync (WAL with ``synchronous=NORMAL``): they still survive a
        crash of the process, and a power loss can undo only the last few of them, never an
        inbox entry (its fsync makes every earlier commit durable too). What a power loss
        undoes is redone from the inbox, whose updates stay pending until marked done.
        A file-backed SQLite store only; on PostgreSQL every commit is durable.
        """
        if not self._sync_at_inbox:
            self.flush()
            self._sync_at_inbox = self.backend.sync_at_inbox()

    def checkpoint_aside(self) -> None:
        """Stop commits from checkpointing the WAL themselves; :meth:`checkpoint` does it.

        SQLite's automatic checkpoint runs inside the commit that fills the WAL past 1000
        pages, copying them into the database file and waiting for the disk twice: on a
        server's event loop, every reply meanwhile waits too. After this call the server
        runs :meth:`checkpoint` in another thread now and then instead. A file-backed
        SQLite store only.
        """
        self.backend.checkpoint_aside()

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the database file, without waiting for writers.

        Safe in any thread (its own connection); nothing to do before
        :meth:`checkpoint_aside`.
        """
        self.backend.checkpoint()

    def close(self) -> None:
        """Write what was deferred and close the connections, even if that write fails.

        Deferred writes the database refuses (it cannot be reached, say) are lost, and an
        error line says how many of each table: an update marked done is processed again
        at the next start, a judge verdict is asked for again.
        """
        try:
            self.flush()
        except StoreError as exc:
            log.error("closing the store at %s: %s: %s", self.url, _lost(self._deferred), exc)
        finally:
            self.backend.close()


def _lost(deferred: list[tuple[str, list[Any]]]) -> str:
    """``3 deferred writes lost (updates: 2, judge_cache: 1)``."""
    tables = Counter(
        found.group(1) if (found := re.search(r"(?:INTO|UPDATE)\s+(\w+)", sql)) else "?"
        for sql, _ in deferred
    )
    each = ", ".join(f"{table}: {n}" for table, n in tables.most_common())
    return f"{len(deferred)} deferred write{'s' if len(deferred) != 1 else ''} lost ({each})"
