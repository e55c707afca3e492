from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from bot.content import ScenarioLibrary
from bot.engine import Engine
from bot.storage import Conflict, Store, StoreBusy, StoreError, StoreUnavailable, backends, breaker
from graders import Grade
from tests.databases import PgSchemas


def test_file_store_uses_wal_and_full_sync(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "x.db")
    assert store.backend.fetchone("PRAGMA journal_mode")[0] == "wal"
    assert store.backend.fetchone("PRAGMA synchronous")[0] == 2  # FULL
    store.close()


def test_sync_at_inbox_waits_for_the_disk_only_when_an_update_is_stored(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "x.db")
    store.sync_at_inbox()
    assert store.backend.fetchone("PRAGMA synchronous")[0] == 1  # NORMAL
    statements: list[str] = []
    store.backend.db.conn.set_trace_callback(statements.append)
    assert store.inbox_add(1, 7, "{}")
    store.backend.db.conn.set_trace_callback(None)
    full = statements.index("PRAGMA synchronous=FULL")
    commit = next(i for i, sql in enumerate(statements) if sql.upper().startswith("COMMIT"))
    normal = statements.index("PRAGMA synchronous=NORMAL")
    assert full < commit < normal  # the inbox commit itself ran with FULL
    assert store.backend.fetchone("PRAGMA synchronous")[0] == 1
    assert store.inbox_pending(1) == [(7, "{}")]
    store.close()
    reopened = Store.open(tmp_path / "x.db")  # a plain store is FULL again
    assert reopened.backend.db.execute("PRAGMA synchronous").fetchone()[0] == 2
    reopened.close()


def test_sync_at_inbox_leaves_a_memory_store_alone() -> None:
    store = Store.open(None)
    before = store.backend.fetchone("PRAGMA synchronous")[0]
    store.sync_at_inbox()
    assert store.backend.fetchone("PRAGMA synchronous")[0] == before
    assert store.inbox_add(1, 7, "{}")
    assert store.inbox_pending(1) == [(7, "{}")]


def _fill_the_wal(store: Store) -> None:
    """Commit ~6 MB, well past SQLite's automatic checkpoint at 1000 pages."""
    sid = store.create_session(trainee="ann", scenario_id="s", scenario_version=1,
                               scenario_source="s.yaml", lang="zh", difficulty="easy",
                               mode="coach", rubric="default", seed=1)  # fmt: skip
    for n in range(300):
        store.add_turn(sid, "trainee", f"{n} " + "很抱歉给您带来不便。" * 700)


@pytest.mark.parametrize("aside", [False, True])
def test_a_server_checkpoints_in_its_own_thread_not_in_the_commit(
    tmp_path: Path, aside: bool
) -> None:
    path = tmp_path / "x.db"
    store = Store.open(path)
    store.sync_at_inbox()
    if aside:
        store.checkpoint_aside()
    before = path.stat().st_size
    _fill_the_wal(store)
    grown = path.stat().st_size - before
    if not aside:  # SQLite's own checkpoint ran inside the commits
        assert grown > 4_000_000
        store.close()
        return
    assert grown == 0  # every commit is in the WAL alone
    worker = threading.Thread(target=store.checkpoint)
    worker.start()
    worker.join()
    assert path.stat().st_size - before > 4_000_000  # copied by the other thread
    store.add_turn(store.sessions("ann")[0].id, "customer", "好的")  # commits go on
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM turns").fetchone()[0] == 301


def test_migrations_are_idempotent_and_data_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    store = Store.open(path)
    sid = store.create_session(trainee="ann", scenario_id="s", scenario_version=1,
                               scenario_source="s.yaml", lang="zh", difficulty="easy",
                               mode="coach", rubric="default", seed=1)  # fmt: skip
    store.add_turn(sid, "customer", "你好")
    grade = Grade("empathy", "empathy", "scored", 3.0, 3.0, {"zh": "好", "en": "good"})
    store.add_grades(sid, 0, 1, [grade])
    store.close()
    store = Store.open(path)
    assert store.turns(sid)[0].text == "你好"
    assert store.grades(sid)[0][0] == grade
    assert store.session(sid[:6]).trainee == "ann"  # a unique prefix finds it
    store.close()


def test_grades_of_a_reply_are_stored_once(store: Store) -> None:
    sid = store.create_session(trainee="a", scenario_id="s", scenario_version=1,
                               scenario_source="", lang="zh", difficulty="easy", mode="coach",
                               rubric="default", seed=1)  # fmt: skip
    grade = Grade("empathy", "empathy", "scored", 3.0, 3.0, {"zh": "", "en": ""})
    store.add_grades(sid, 1, 1, [grade])
    with pytest.raises(Conflict):
        store.add_grades(sid, 1, 1, [grade])
    assert len(store.grades(sid)[1]) == 1  # the failed write left nothing behind


def test_unusable_path_gives_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "file"
    bad.write_text("not a database")
    with pytest.raises(StoreError, match="Cannot open the database"):
        Store.open(bad / "x.db")


def _fail_on(store: Store, table: str, event: str) -> None:
    """Make the database refuse every ``event`` (INSERT, UPDATE) on ``table``."""
    if store.backend.dialect == "sqlite":
        store.backend.execute(
            f"CREATE TEMP TRIGGER fail_{table} BEFORE {event} ON {table}"
            " BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
        return
    store.backend.execute(
        "CREATE FUNCTION fail() RETURNS trigger LANGUAGE plpgsql"
        " AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$"
    )
    store.backend.execute(
        f"CREATE TRIGGER fail_{table} BEFORE {event} ON {table}"
        " FOR EACH ROW EXECUTE FUNCTION fail()"
    )


def test_a_customer_message_and_its_state_are_saved_together(store: Store) -> None:
    sid = store.create_session(trainee="a", scenario_id="s", scenario_version=1,
                               scenario_source="", lang="zh", difficulty="easy", mode="coach",
                               rubric="default", seed=1)  # fmt: skip
    _fail_on(store, "sessions", "UPDATE")
    with pytest.raises(StoreError, match="disk full"):
        store.add_turn(sid, "customer", "怎么还不处理？", customer_state={"anger": 9})
    assert store.turns(sid) == []  # no message without its state


def test_what_follows_a_reply_is_stored_whole_or_not_at_all(
    library: ScenarioLibrary, store: Store
) -> None:
    """A reply's grades, the customer's answer and the state it leaves share one commit."""
    session, _ = asyncio.run(
        Engine(store, library).start(trainee="a", scenario="damaged-kettle", lang="zh", seed=3)
    )
    turns, state = store.turns(session.id), store.session(session.id).customer_state
    _fail_on(store, "sessions", "UPDATE")  # the last write of an answer that ends nothing
    with pytest.raises(StoreError, match="disk full"):
        asyncio.run(session.reply("您好，非常抱歉给您添麻烦了，请发一下订单号。"))
    after = store.turns(session.id)
    assert after[:-1] == turns and after[-1].role == "trainee"  # kept: stored before grading
    assert store.grades(session.id) == {}  # but no grade and no answer without the other
    assert store.session(session.id).customer_state == state


def test_a_writer_waits_for_another_process_lock_and_gets_it_soon_after(tmp_path: Path) -> None:
    """Two connections on one file, as the Telegram workers: the second writer waits for
    the first and goes on within milliseconds of the release (SQLite's own busy handler
    would sleep in growing steps of up to 100 ms)."""
    store = Store.open(tmp_path / "x.db")
    other = sqlite3.connect(str(tmp_path / "x.db"), isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    released: list[float] = []

    def release() -> None:
        time.sleep(0.13)  # SQLite's busy handler would try again at 128 ms, then 178 ms
        released.append(time.monotonic())
        other.execute("COMMIT")

    holder = threading.Thread(target=release)
    holder.start()
    store.inbox_add(1, 7, "{}")  # waits for the lock
    got = time.monotonic()
    holder.join()
    assert store.inbox_pending(1) == [(7, "{}")]
    assert 0 <= got - released[0] < 0.03  # SQLite alone: 48 ms
    assert store.backend.db.execute("PRAGMA busy_timeout").fetchone()[0] == 5000  # reads keep it
    other.close()
    store.close()


def test_updates_go_into_the_inbox_together_or_not_at_all(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "x.db")
    assert store.inbox_add(1, 5, "{}")
    assert store.inbox_add_many(1, [(6, '{"a": 1}'), (5, "{}"), (7, "{}"), (6, "{}")]) == [
        True,
        False,  # stored before
        True,
        False,  # twice in one batch: the first stays
    ]
    assert store.inbox_pending(1) == [(5, "{}"), (6, '{"a": 1}'), (7, "{}")]
    other = sqlite3.connect(str(tmp_path / "x.db"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(StoreBusy):
        store.inbox_add_many(1, [(8, "{}")], wait_for_lock=False)
    assert time.monotonic() - started < 0.05  # at once, not after the busy timeout
    other.execute("ROLLBACK")
    assert [u for u, _ in store.inbox_pending(1)] == [5, 6, 7]  # nothing half-written
    assert store.inbox_add_many(1, [(8, "{}")], wait_for_lock=False) == [True]
    other.close()
    store.close()


def test_a_writer_gives_up_when_the_lock_is_never_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backends, "BUSY_TIMEOUT_S", 0.05)
    store = Store.open(tmp_path / "x.db")
    other = sqlite3.connect(str(tmp_path / "x.db"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreError, match="locked"):
        store.inbox_add(1, 7, "{}")
    other.execute("ROLLBACK")
    assert store.inbox_add(1, 7, "{}")  # nothing was half-written; it works now
    other.close()
    store.close()


def test_a_commit_the_database_refuses_raises_a_store_error_and_writes_nothing(
    store: Store, backend: str
) -> None:
    """A constraint checked only at COMMIT fails it: a Conflict, the transaction undone."""
    if backend == "postgresql":
        store.backend.execute("CREATE TABLE once (x INT UNIQUE DEFERRABLE INITIALLY DEFERRED)")
        breaking = "INSERT INTO once (x) VALUES (1), (1)"
    else:
        breaking = (
            "INSERT INTO turns (session_id, idx, role, text, created_at)"
            " VALUES ('gone', 0, 'trainee', 'hi', '')"
        )
    with pytest.raises(Conflict) as raised, store.backend.transaction():
        if backend == "sqlite":
            store.backend.execute("PRAGMA defer_foreign_keys=ON")
        store.create_session(trainee="ann", scenario_id="s", scenario_version=1,
                             scenario_source="", lang="zh", difficulty="easy",
                             mode="coach", rubric="default", seed=1)  # fmt: skip
        store.backend.execute(breaking)
    driver_error = sqlite3.IntegrityError if backend == "sqlite" else psycopg.IntegrityError
    assert isinstance(raised.value.__cause__, driver_error)
    assert not store.backend.in_transaction
    assert store.backend.fetchall("SELECT id FROM sessions") == []  # nothing half-written
    assert store.inbox_add(1, 7, "{}")  # the store goes on working
    assert store.inbox_pending(1) == [(7, "{}")]


def _deny(conn: sqlite3.Connection, action: int, what: str, value: str | None = None) -> None:
    """Make SQLite refuse one kind of statement on ``conn`` (``value``: that one only)."""

    def authorize(asked: int, first: str | None, second: str | None, *_: object) -> int:
        refused = asked == action and first == what and value in (None, second)
        return sqlite3.SQLITE_DENY if refused else sqlite3.SQLITE_OK

    conn.set_authorizer(authorize)


def test_a_savepoint_that_cannot_be_rolled_back_raises_a_store_error_and_writes_nothing(
    store: Store, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A nested transaction's body fails after its ROLLBACK TO became impossible.

    On PostgreSQL the server ended the connection meanwhile (a restart, an administrator);
    SQLite's fails only when refused, here by an authorizer. A caller between the nested
    and the outer transaction gets a StoreError too, and the outer one writes nothing.
    """
    monkeypatch.setattr(breaker, "RETRY_S", 0.0)  # a lost connection opens the breaker
    caught: list[StoreError] = []
    with pytest.raises(StoreError) as raised, store.backend.transaction():
        store.create_session(trainee="ann", scenario_id="s", scenario_version=1,
                             scenario_source="", lang="zh", difficulty="easy",
                             mode="coach", rubric="default", seed=1)  # fmt: skip
        try:
            with store.backend.transaction():
                store.inbox_add(1, 7, "{}")
                if backend == "postgresql":
                    pid = store.backend.fetchone("SELECT pg_backend_pid()")
                    with psycopg.connect(str(store.backend.location), autocommit=True) as admin:
                        admin.execute("SELECT pg_terminate_backend(%s, 5000)", pid)
                else:
                    _deny(store.backend.conn, sqlite3.SQLITE_SAVEPOINT, "ROLLBACK")
                raise RuntimeError("the grader failed")
        except StoreError as exc:  # a caller that answers 503 and passes it on
            caught.append(exc)
            raise
    assert caught == [raised.value]
    driver_error = sqlite3.DatabaseError if backend == "sqlite" else psycopg.OperationalError
    assert isinstance(raised.value.__cause__, driver_error)
    assert not store.backend.in_transaction
    if backend == "sqlite":
        store.backend.conn.set_authorizer(None)
    else:
        with pytest.raises(StoreUnavailable):  # the breaker; its probe finds the server again
            store.ping()
        store.backend.breaker.wait()
    assert store.backend.fetchall("SELECT id FROM sessions") == []  # nothing half-written
    assert store.inbox_pending(1) == []
    assert store.inbox_add(1, 7, "{}")  # the store goes on working
    assert store.inbox_pending(1) == [(7, "{}")]


@pytest.mark.parametrize("nested", [False, True])
def test_a_raw_sqlite_error_in_a_transaction_reaches_its_callers_as_a_store_error(
    sqlite_store: Store, nested: bool
) -> None:
    """The body used the sqlite3 connection itself: a Conflict all the same, nothing kept."""
    store = sqlite_store
    assert store.inbox_add(1, 7, "{}")
    with pytest.raises(Conflict) as raised, store.backend.transaction():
        store.create_session(trainee="ann", scenario_id="s", scenario_version=1,
                             scenario_source="", lang="zh", difficulty="easy",
                             mode="coach", rubric="default", seed=1)  # fmt: skip
        with store.backend.transaction() if nested else contextlib.nullcontext():
            store.inbox_add(1, 8, "{}")
            store.backend.db.execute(
                "INSERT INTO updates (bot_id, update_id, payload, status, received_at)"
                " VALUES (1, 7, '{}', 'received', '')"
            )
    assert isinstance(raised.value.__cause__, sqlite3.IntegrityError)
    assert not store.backend.in_transaction
    assert store.backend.fetchall("SELECT id FROM sessions") == []
    assert store.inbox_pending(1) == [(7, "{}")]
    assert store.inbox_add(1, 8, "{}")
    assert store.inbox_pending(1) == [(7, "{}"), (8, "{}")]


def test_changing_the_disk_sync_inside_a_transaction_raises_a_store_error(
    tmp_path: Path,
) -> None:
    """SQLite refuses to change ``synchronous`` inside a transaction."""
    store = Store.open(tmp_path / "x.db")
    with pytest.raises(StoreError) as raised, store.transaction():
        store.sync_at_inbox()
    assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
    store.sync_at_inbox()
    with pytest.raises(StoreError) as raised, store.transaction():
        store.inbox_add(1, 7, "{}")  # this commit would wait for the disk
    assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
    assert store.inbox_pending(1) == []
    assert store.inbox_add(1, 7, "{}")
    assert store.inbox_pending(1) == [(7, "{}")]
    assert store.backend.fetchone("PRAGMA synchronous")[0] == 1  # NORMAL, as before
    store.close()


@pytest.mark.parametrize("value", ["0", "5000"])
def test_a_busy_timeout_the_database_refuses_raises_a_store_error_and_ends_the_transaction(
    sqlite_store: Store, value: str
) -> None:
    """A write sets the busy timeout to 0 before BEGIN IMMEDIATE and back after it."""
    conn = sqlite_store.backend.conn
    _deny(conn, sqlite3.SQLITE_PRAGMA, "busy_timeout", value)
    with pytest.raises(StoreError) as raised:
        sqlite_store.inbox_add(1, 7, "{}")
    assert isinstance(raised.value.__cause__, sqlite3.DatabaseError)
    assert not sqlite_store.backend.in_transaction  # a BEGIN taken is undone
    conn.set_authorizer(None)
    assert sqlite_store.inbox_pending(1) == []
    assert sqlite_store.inbox_add(1, 7, "{}")
    assert sqlite_store.inbox_pending(1) == [(7, "{}")]


def test_a_checkpoint_the_database_refuses_raises_a_store_error(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "x.db")
    store.checkpoint_aside()
    checkpointer = store.backend._checkpointer
    assert checkpointer is not None
    _deny(checkpointer, sqlite3.SQLITE_PRAGMA, "wal_checkpoint")
    with pytest.raises(StoreError) as raised:
        store.checkpoint()
    assert isinstance(raised.value.__cause__, sqlite3.DatabaseError)
    checkpointer.set_authorizer(None)
    store.checkpoint()  # tried again next time
    store.close()


def test_closing_when_the_deferred_writes_fail_still_closes_and_logs_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(backends, "BUSY_TIMEOUT_S", 0.05)
    store = Store.open(tmp_path / "x.db")
    store.checkpoint_aside()
    store.inbox_done(1, 7, defer=True)
    other = sqlite3.connect(str(tmp_path / "x.db"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the flush never gets the lock
    with caplog.at_level(logging.ERROR, logger="bot.storage"):
        store.close()
    other.close()
    backend = store.backend
    assert isinstance(backend, backends.SqliteBackend) and backend._checkpointer is None
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        backend.conn.execute("SELECT 1")
    (said,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "1 deferred write lost (updates: 1)" in said and "locked" in said, said


def test_what_a_model_server_decodes_at_once_is_kept_per_base_url(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.db")
    assert store.recall_slots("http://127.0.0.1:8080/v1") is None
    store.remember_slots("http://127.0.0.1:8080/v1", 2, "measured")
    store.remember_slots("http://127.0.0.1:8080/v1", 1, "reported")  # the server changed
    store.remember_slots(None, 2, "measured")  # the hosted default
    store.close()
    again = Store.open(tmp_path / "s.db")
    assert again.recall_slots("http://127.0.0.1:8080/v1") == (1, "reported")
    assert again.recall_slots(None) == (2, "measured")
    again.close()


def test_two_processes_appending_to_one_session_number_their_turns_in_turn(
    pg_schemas: PgSchemas,
) -> None:
    """On PostgreSQL two writers of one session wait for each other: no index twice."""
    url = pg_schemas.new_url()
    stores = [Store.open(url), Store.open(url)]
    sid = stores[0].create_session(trainee="a", scenario_id="s", scenario_version=1,
                                   scenario_source="", lang="zh", difficulty="easy",
                                   mode="coach", rubric="default", seed=1)  # fmt: skip

    def write(store: Store, who: str) -> list[int]:
        return [store.add_turn(sid, "trainee", f"{who}{i}") for i in range(40)]

    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(write, stores, "ab"))
    assert sorted(got[0] + got[1]) == list(range(80))
    assert [t.idx for t in stores[0].turns(sid)] == list(range(80))
    for store in stores:
        store.close()


def test_a_database_has_one_name_whatever_address_reaches_it(
    pg_schemas: PgSchemas, tmp_path: Path
) -> None:
    """Processes that reach one database by different addresses coordinate under one name."""
    url = pg_schemas.new_url()
    first, second = Store.open(url), Store.open(url.replace("127.0.0.1", "localhost"))
    assert first.installation() == second.installation()
    other = Store.open(pg_schemas.new_url())
    assert other.installation() != first.installation()
    files = Store.open(tmp_path / "a.db"), Store.open(f"sqlite:///{tmp_path}/./a.db")
    assert files[0].installation() == files[1].installation() != first.installation()
    for store in (first, second, other, *files):
        store.close()


def test_finding_a_trainees_live_session_reads_only_their_own_sessions(tmp_path: Path) -> None:
    """The web app asks for it on every page: its cost must not grow with other trainees'
    sessions (SQLite once read every practice session in the database for it)."""
    store = Store.open(tmp_path / "t.db")
    backend = store.backend
    assert isinstance(backend, backends.SqliteBackend)
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    def new(trainee: str) -> str:
        return store.create_session(
            trainee=trainee, scenario_id="damaged-kettle", scenario_version=1,
            scenario_source="shipped", lang="zh", difficulty="normal", mode="coach",
            rubric="default", seed=1,
        )  # fmt: skip

    def cost() -> int:
        nonlocal steps
        steps = 0
        backend.conn.set_progress_handler(count, 10)
        try:
            assert store.active_session("me") is not None
        finally:
            backend.conn.set_progress_handler(None, 10)
        return steps

    new("me")
    for i in range(200):
        new(f"other{i % 20}")
    few = cost()
    for i in range(2000):
        new(f"other{i % 20}")
    many = cost()
    assert many <= few + 5, (few, many)
    store.close()
