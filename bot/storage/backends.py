"""The two databases the store runs on: an SQLite file (the default) and PostgreSQL.

The store's SQL is written once, with ``?`` placeholders, in the subset both dialects
share; a backend runs it, turns its driver's errors into :class:`StoreError` and its
subclasses, and supplies the few fragments the dialects spell differently.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from sqlite_utils import Database

from bot.storage.breaker import Breaker
from bot.storage.rows import Conflict, StoreBusy, StoreError, StoreUnavailable, utc_now
from bot.storage.schema import postgres_steps, sqlite_migrations

BUSY_TIMEOUT_S = 5.0
"""How long a statement waits for a lock (SQLite) or a free connection (PostgreSQL)."""

Params = Sequence[Any]


class Backend(Protocol):
    """What the store needs of a database."""

    dialect: str
    url: str
    """Where the data is, as ``--db`` takes it (no password)."""
    location: str | None
    """What another process opens to share this database (None: in memory)."""
    path: Path | None
    """The SQLite file (None: in memory, or not SQLite)."""

    def fetchall(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Rows of a query."""

    def fetchone(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        """The first row of a query."""

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; how many rows it changed."""

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        """Run a statement once per row."""

    def insert(self, sql: str, params: Params = ()) -> int:
        """Run an INSERT; the id of the new row."""

    def transaction(self, *, wait: bool = True) -> Any:
        """A context in which statements commit together (nested: a savepoint)."""

    @property
    def in_transaction(self) -> bool:
        """Whether this thread is inside :meth:`transaction`."""

    def next_turn(self, session_id: str) -> int:
        """The index of a session's next turn, held for this transaction's writer."""

    def columns(self, table: str) -> list[str]:
        """A table's columns in order."""

    def primary_key(self, table: str) -> list[str]:
        """A table's primary key columns."""

    def renumber(self, table: str) -> None:
        """Make new rows of ``table`` number after the highest id copied in."""

    def json_field(self, column: str, key: str) -> str:
        """SQL for the text of ``key`` in a JSON object column."""

    def json_items(self, column: str, key: str, alias: str) -> str:
        """A FROM item for the array ``key`` of a JSON column, with a ``value`` column."""

    def plain(self, column: str) -> str:
        """``column`` in a WHERE clause, kept from choosing an index (where that matters)."""

    def same(self, column: str) -> str:
        """``column`` equals ``?``, NULL included."""

    def durable_commits(self, on: bool) -> None:
        """Whether the next commits wait for the disk (SQLite after :meth:`sync_at_inbox`)."""

    def sync_at_inbox(self) -> bool:
        """Commit without waiting for the disk, except the update inbox (SQLite files)."""

    def checkpoint_aside(self) -> None:
        """Let :meth:`checkpoint` do what commits would (SQLite files)."""

    def checkpoint(self) -> None:
        """Copy the WAL into the database file (SQLite files; any thread)."""

    def sync_wal(self) -> None:
        """Wait until every commit so far is on the disk (any thread)."""

    def close(self) -> None:
        """Close every connection."""


def open_backend(where: Path | str | None) -> Backend:
    """The database at ``where``: a file path, ``sqlite:///path``, ``postgresql://…``.

    ``None`` or ``":memory:"`` is an SQLite database in memory.
    """
    text = "" if where is None else str(where)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresBackend(text)
    if text.startswith("sqlite:///"):
        text = text.removeprefix("sqlite:///")
    elif "://" in text:
        scheme = text.split("://", 1)[0]
        raise StoreError(
            f"--db {text}: unknown database kind {scheme!r}; use a file path, "
            "sqlite:///path or postgresql://user@host/database"
        )
    return SqliteBackend(None if text in ("", ":memory:") else Path(text))


class SqliteBackend:
    """One SQLite connection in WAL mode with ``synchronous=FULL``."""

    dialect = "sqlite"

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.url = ":memory:" if path is None else str(path)
        self.location = None if path is None else str(path)
        try:
            if path is None:
                self.db = Database(memory=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.db = Database(sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S))
                self.db.enable_wal()
                self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            self.db.execute("PRAGMA foreign_keys=ON")
            sqlite_migrations().apply(self.db)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StoreError(f"Cannot open the database at {path}: {exc}") from exc
        self.conn = self.db.conn
        self._sync_at_inbox = False
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpointing = threading.Lock()

    def fetchall(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Rows of a query."""
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _sqlite_error(exc) from exc

    def fetchone(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        """The first row of a query."""
        try:
            row: tuple[Any, ...] | None = self.conn.execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            raise _sqlite_error(exc) from exc
        return row

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; how many rows it changed."""
        try:
            return self.conn.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise _sqlite_error(exc) from exc

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        """Run a statement once per row."""
        try:
            self.conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise _sqlite_error(exc) from exc

    def insert(self, sql: str, params: Params = ()) -> int:
        """Run an INSERT; the id of the new row."""
        try:
            return int(self.conn.execute(sql, params).lastrowid or 0)
        except sqlite3.Error as exc:
            raise _sqlite_error(exc) from exc

    @property
    def in_transaction(self) -> bool:
        """Whether the connection is inside a transaction."""
        return self.conn.in_transaction

    @contextmanager
    def transaction(self, *, wait: bool = True) -> Iterator[SqliteBackend]:
        """BEGIN IMMEDIATE ... COMMIT (nested: a savepoint)."""
        if self.conn.in_transaction:
            with self._errors(), self.db.atomic():  # its SAVEPOINT statements are unmapped
                yield self
            return
        # IMMEDIATE takes the write lock up front. With several processes on one file (the
        # Telegram workers), a transaction that reads first and then writes could otherwise
        # find its snapshot stale and fail at once with "database is locked", without the
        # busy timeout ever waiting.
        with self._errors():  # a body that used the connection itself raises sqlite3 errors
            try:
                self._begin_immediate(wait)  # in the try: its BEGIN too is undone on errors
                yield self
                self.execute("COMMIT")  # can fail too: a deferred constraint, a full disk
            except BaseException:
                if self.conn.in_transaction:
                    self.execute("ROLLBACK")
                raise

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """sqlite3 errors raised inside as :class:`StoreError` (others as they are)."""
        try:
            yield
        except sqlite3.Error as exc:
            raise _sqlite_error(exc) from exc

    def _begin_immediate(self, wait: bool) -> None:
        """Take the write lock, polling every 0.2 ms while another process holds it.

        SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20 ms... between tries, so under
        contention a writer (and the whole event loop with it) slept up to 40 ms for a
        lock that is free again within a millisecond. Other statements keep the 5 s busy
        timeout. Without ``wait``, a held lock raises :class:`StoreBusy` at once.
        """
        self.execute("PRAGMA busy_timeout=0")
        try:
            deadline = None
            while True:
                try:
                    self.conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise _sqlite_error(exc) from exc
                    if not wait:
                        raise StoreBusy(str(exc)) from exc
                    now = time.monotonic()
                    deadline = deadline or now + BUSY_TIMEOUT_S
                    if now >= deadline:
                        raise StoreError(f"the database stayed locked: {exc}") from exc
                time.sleep(0.0002)
        finally:
            self.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")

    def next_turn(self, session_id: str) -> int:
        """One past the highest index (the transaction holds the database)."""
        row = self.fetchone(
            "SELECT COALESCE(MAX(idx) + 1, 0) FROM turns WHERE session_id = ?", [session_id]
        )
        return int(row[0]) if row else 0

    def columns(self, table: str) -> list[str]:
        """From ``PRAGMA table_info``."""
        return [str(row[1]) for row in self.fetchall(f"PRAGMA table_info({table})")]

    def primary_key(self, table: str) -> list[str]:
        """From ``PRAGMA table_info`` (its ``pk`` column is the position in the key)."""
        info = sorted((row[5], row[1]) for row in self.fetchall(f"PRAGMA table_info({table})"))
        return [str(name) for position, name in info if position]

    def renumber(self, table: str) -> None:
        """Nothing: SQLite numbers after the highest id itself."""

    def json_field(self, column: str, key: str) -> str:
        """``json_extract``."""
        return f"json_extract({column}, '$.{key}')"

    def json_items(self, column: str, key: str, alias: str) -> str:
        """``json_each``."""
        return f"json_each({column}, '$.{key}') {alias}"

    def plain(self, column: str) -> str:
        """A unary ``+``: SQLite then uses no index for the column."""
        return f"+{column}"

    def same(self, column: str) -> str:
        """``IS``."""
        return f"{column} IS ?"

    def durable_commits(self, on: bool) -> None:
        """Switch ``synchronous`` between FULL and NORMAL after :meth:`sync_at_inbox`."""
        if self._sync_at_inbox:
            self.execute(f"PRAGMA synchronous={'FULL' if on else 'NORMAL'}")

    def sync_at_inbox(self) -> bool:
        """``synchronous=NORMAL`` for a file; whether it is now in that mode."""
        if self.path is not None and not self._sync_at_inbox:
            self.execute("PRAGMA synchronous=NORMAL")  # refused inside a transaction
            self._sync_at_inbox = True
        return self._sync_at_inbox

    def checkpoint_aside(self) -> None:
        """Stop commits from checkpointing the WAL; open the checkpointer's connection."""
        if self.path is not None and self._checkpointer is None:
            self.conn.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = sqlite3.connect(
                str(self.path), timeout=BUSY_TIMEOUT_S, check_same_thread=False
            )

    def checkpoint(self) -> None:
        """A passive checkpoint on the checkpointer's own connection."""
        with self._checkpointing, self._errors():
            if self._checkpointer is not None:
                self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def sync_wal(self) -> None:
        """An fsync of the WAL file (or the database file when there is no WAL)."""
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

    def close(self) -> None:
        """Close the checkpointer's connection and the main one."""
        with self._checkpointing:
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None
        self.db.close()


def _sqlite_error(exc: sqlite3.Error) -> StoreError:
    if isinstance(exc, sqlite3.IntegrityError):
        return Conflict(str(exc))
    return StoreError(str(exc))


POOL_SIZE = 8
"""Connections a process keeps to PostgreSQL at most (one per thread using the store)."""


class PostgresBackend:
    """PostgreSQL through a psycopg 3 connection pool.

    Statements outside a transaction autocommit; a broken connection (a server restart)
    is replaced once per call. While the server cannot be reached, calls fail at once
    (:class:`~bot.storage.breaker.Breaker`) instead of each waiting for a connection.
    """

    dialect = "postgresql"
    path: Path | None = None

    def __init__(self, url: str) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool, PoolTimeout

        self._psycopg = psycopg
        self.url = without_password(url)
        self.location: str | None = url
        self._local = threading.local()
        self._sql: dict[str, str] = {}
        self.breaker = Breaker(f"PostgreSQL at {self.url}", self._probe)
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=POOL_SIZE,
            kwargs={"autocommit": True, "connect_timeout": int(BUSY_TIMEOUT_S)},
            timeout=BUSY_TIMEOUT_S,
            open=False,
            name="trainer",
        )
        try:
            self.pool.open(wait=True, timeout=BUSY_TIMEOUT_S)
        except PoolTimeout as exc:
            self.pool.close()
            raise StoreError(
                f"Cannot reach PostgreSQL at {self.url} within {BUSY_TIMEOUT_S:.0f} s: is the "
                "server running, and may this user connect to that database?"
            ) from exc
        try:
            self._migrate()
        except self._psycopg.Error as exc:
            self.pool.close()
            raise StoreError(f"Cannot prepare the database at {self.url}: {exc}") from exc

    def _migrate(self) -> None:
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('cs-trainer migrations'))")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS _migrations"
                " (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            done = {row[0] for row in conn.execute("SELECT name FROM _migrations")}
            for name, statements in postgres_steps():
                if name in done:
                    continue
                for statement in statements:
                    conn.execute(statement)  # no parameters: '%' in DDL stays as it is
                conn.execute(
                    "INSERT INTO _migrations (name, applied_at) VALUES (%s, %s)",
                    [name, utc_now()],
                )

    def _query(self, sql: str) -> str:
        found = self._sql.get(sql)
        if found is None:
            found = self._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
        return found

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        """The transaction's connection, or a pooled one for one statement."""
        conn = getattr(self._local, "conn", None)
        with self._errors():
            if conn is not None:
                yield conn
            else:
                with self.pool.connection() as pooled:
                    yield pooled

    @contextmanager
    def _reach(self) -> Iterator[None]:
        """Refuse a call at once while the breaker is open; open it if the server is gone.

        Around a call that takes a pooled connection; inside a transaction, nothing (the
        transaction's own call decides).
        """
        if self.in_transaction:
            yield
            return
        self.breaker.check()
        try:
            yield
        except StoreUnavailable as exc:
            if self._unreachable(exc.__cause__):
                self.breaker.trip(str(exc.__cause__).strip())
            raise

    def _unreachable(self, error: BaseException | None) -> bool:
        """Whether ``error`` says the server is out of reach (not that a statement failed)."""
        from psycopg_pool import PoolTimeout

        if isinstance(error, PoolTimeout):
            return True
        if not isinstance(error, self._psycopg.OperationalError):
            return False
        # No state: the connection was refused or lost; classes 08 and 57P: the server says
        # so. A deadlock or a cancelled statement has a state of its own.
        return (error.sqlstate or "08").startswith(("08", "57P"))

    def _probe(self) -> None:
        """The breaker's probe: a pooled connection answers (broken idle ones dropped)."""
        self.pool.check()
        with self.pool.connection() as conn:
            conn.execute("SELECT 1")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        from psycopg_pool import PoolTimeout

        psycopg = self._psycopg
        try:
            yield
        except PoolTimeout as exc:
            raise StoreUnavailable(f"PostgreSQL at {self.url} did not answer: {exc}") from exc
        except psycopg.errors.IntegrityError as exc:
            raise Conflict(str(exc).strip()) from exc
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"PostgreSQL at {self.url}: {str(exc).strip()}") from exc
        except psycopg.Error as exc:
            raise StoreError(str(exc).strip()) from exc

    def _run(self, sql: str, params: Params, fetch: str) -> Any:
        query = self._query(sql)
        with self._reach():
            for attempt in (1, 2):
                outside = getattr(self._local, "conn", None) is None
                try:
                    with self._connection() as conn:
                        cursor = conn.execute(query, params)
                        if fetch == "all":
                            return cursor.fetchall()
                        if fetch == "one":
                            return cursor.fetchone()
                        return cursor.rowcount
                except StoreUnavailable as exc:
                    from psycopg_pool import PoolTimeout

                    if attempt == 2 or not outside or isinstance(exc.__cause__, PoolTimeout):
                        raise
                    self.pool.check()  # a server restart broke the idle ones too: drop them

    def fetchall(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Rows of a query."""
        rows: list[tuple[Any, ...]] = self._run(sql, params, "all")
        return rows

    def fetchone(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        """The first row of a query."""
        row: tuple[Any, ...] | None = self._run(sql, params, "one")
        return row

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; how many rows it changed."""
        return int(self._run(sql, params, "count"))

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        """Run a statement once per row (pipelined by psycopg)."""
        if not rows:
            return
        with self._reach(), self._connection() as conn, self._errors(), conn.cursor() as cursor:
            cursor.executemany(self._query(sql), rows)

    def insert(self, sql: str, params: Params = ()) -> int:
        """INSERT ... RETURNING id."""
        row = self.fetchone(sql + " RETURNING id", params)
        assert row is not None
        return int(row[0])

    @property
    def in_transaction(self) -> bool:
        """Whether this thread is inside :meth:`transaction`."""
        return getattr(self._local, "conn", None) is not None

    @contextmanager
    def transaction(self, *, wait: bool = True) -> Iterator[PostgresBackend]:
        """BEGIN ... COMMIT on a connection this thread keeps meanwhile (nested: a savepoint).

        If the pooled connection broke since its last use, BEGIN fails before anything is
        written and the transaction starts again on a fresh one.
        """
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            depth = self._local.depth = self._local.depth + 1
            with self._errors():
                conn.execute(f"SAVEPOINT s{depth}")
            try:
                yield self
                with self._errors():
                    conn.execute(f"RELEASE SAVEPOINT s{depth}")
            except BaseException:
                if not conn.broken:
                    with self._errors():  # the connection may be lost without psycopg knowing
                        conn.execute(f"ROLLBACK TO SAVEPOINT s{depth}")
                raise
            finally:
                self._local.depth = depth - 1
            return
        with self._reach(), self._errors(), self.pool.connection() as conn:
            try:
                conn.execute("BEGIN")
            except self._psycopg.OperationalError:
                conn.close()  # broken (a server restart): the pool replaces it,
                self.pool.check()  # and the idle ones broken with it
                with self.pool.connection() as fresh:
                    yield from self._inside(fresh)
                return
            yield from self._inside(conn, begun=True)

    def _inside(self, conn: Any, begun: bool = False) -> Iterator[PostgresBackend]:
        if not begun:
            conn.execute("BEGIN")
        self._local.conn, self._local.depth = conn, 0
        try:
            yield self
            conn.execute("COMMIT")
        except BaseException:
            if not conn.broken:
                conn.execute("ROLLBACK")
            raise
        finally:
            self._local.conn = None

    def next_turn(self, session_id: str) -> int:
        """One past the highest index, with the session's row locked first.

        Two statements: a subquery in the locking one would read the turns as they were
        before it waited for the lock, and two writers would take the same index.
        """
        self.fetchone("SELECT 1 FROM sessions WHERE id = ? FOR UPDATE", [session_id])
        row = self.fetchone(
            "SELECT COALESCE(MAX(idx) + 1, 0) FROM turns WHERE session_id = ?", [session_id]
        )
        return int(row[0]) if row else 0

    def columns(self, table: str) -> list[str]:
        """From the information schema (the schema on the search path)."""
        rows = self.fetchall(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
            [table],
        )
        return [str(row[0]) for row in rows]

    def primary_key(self, table: str) -> list[str]:
        """From the catalog's primary key constraint."""
        rows = self.fetchall(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = ?::regclass AND i.indisprimary"
            " ORDER BY array_position(i.indkey::int2[], a.attnum)",
            [table],
        )
        return [str(row[0]) for row in rows]

    def renumber(self, table: str) -> None:
        """Move the identity sequence past the highest id."""
        if "id" not in self.columns(table):
            return
        if self.fetchone("SELECT pg_get_serial_sequence(?, 'id')", [table]) not in (None, (None,)):
            self.fetchone(
                f"SELECT setval(pg_get_serial_sequence(?, 'id'), COALESCE(MAX(id), 0) + 1,"
                f" false) FROM {table}",
                [table],
            )

    def json_field(self, column: str, key: str) -> str:
        """``->>`` on the column as jsonb."""
        return f"({column}::jsonb ->> '{key}')"

    def json_items(self, column: str, key: str, alias: str) -> str:
        """``jsonb_array_elements_text``."""
        return f"jsonb_array_elements_text({column}::jsonb -> '{key}') {alias}(value)"

    def plain(self, column: str) -> str:
        """The column as it is (PostgreSQL's planner needs no hint here)."""
        return column

    def same(self, column: str) -> str:
        """``IS NOT DISTINCT FROM``."""
        return f"{column} IS NOT DISTINCT FROM ?"

    def durable_commits(self, on: bool) -> None:
        """Nothing: every commit waits for the server's disk."""

    def sync_at_inbox(self) -> bool:
        """Nothing to change (the server's ``synchronous_commit`` decides)."""
        return False

    def checkpoint_aside(self) -> None:
        """Nothing: the server checkpoints."""

    def checkpoint(self) -> None:
        """Nothing: the server checkpoints."""

    def sync_wal(self) -> None:
        """Nothing: a commit returns once it is durable."""

    def close(self) -> None:
        """Close the pool (a probe waiting for a connection gives up)."""
        self.pool.close()
        self.breaker.wait()


def without_password(url: str) -> str:
    """The URL as it may be shown (a password replaced by ``***``)."""
    scheme, _, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if at and ":" in credentials:
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url
