"""The schema as one list of migrations, rendered for SQLite and for PostgreSQL.

Each migration is a function of a :class:`Schema`: it names tables, columns, indexes and
append-only rules once, and each backend turns them into its own DDL. SQLite keeps
sqlite-utils' migration records (a file made by an older version upgrades in place);
PostgreSQL records applied migrations in ``_migrations``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from sqlite_utils import Database, Migrations

ColumnType = type[int] | type[str] | type[float]


class Schema(Protocol):
    """The operations a migration may use; every backend implements all of them."""

    def create_table(
        self,
        name: str,
        columns: dict[str, ColumnType],
        *,
        pk: str | tuple[str, ...],
        not_null: Iterable[str] = (),
        defaults: dict[str, Any] | None = None,
        foreign_keys: Sequence[tuple[str, str, str]] = (),
    ) -> None:
        """Create a table (an ``int`` primary key named ``id`` numbers itself)."""

    def add_column(
        self, table: str, name: str, kind: ColumnType, not_null_default: Any = None
    ) -> None:
        """Add a column (NOT NULL with a default when ``not_null_default`` is given)."""

    def create_index(self, table: str, columns: Sequence[str], *, unique: bool = False) -> None:
        """Create the index ``idx_<table>_<columns>``."""

    def drop_index(self, table: str, columns: Sequence[str]) -> None:
        """Drop the index :meth:`create_index` made on these columns."""

    def append_only(self, table: str) -> None:
        """Make the database itself refuse updates and deletions of the table's rows."""

    def execute(self, sql: str) -> None:
        """Run SQL both dialects understand alike (data changes inside a migration)."""


Migration = Callable[[Schema], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    """Register a migration; they run in the order they are defined, each once."""
    MIGRATIONS.append(fn)
    return fn


def index_name(table: str, columns: Sequence[str]) -> str:
    """The name sqlite-utils gives an index (kept on PostgreSQL too)."""
    return f"idx_{table}_{'_'.join(columns)}"


@migration
def m001_initial(s: Schema) -> None:
    """Trainees, sessions, turns, grades and ledger entries."""
    s.create_table(
        "trainees", {"id": int, "name": str, "created_at": str}, pk="id",
        not_null={"name", "created_at"},
    )  # fmt: skip
    s.create_index("trainees", ["name"], unique=True)
    s.create_table(
        "sessions",
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
    s.create_index("sessions", ["trainee_id", "started_at"])
    s.create_table(
        "turns",
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
    s.create_index("turns", ["session_id", "idx"], unique=True)
    s.create_table(
        "grades",
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
    s.create_index("grades", ["session_id", "turn_idx", "dimension", "grader"], unique=True)
    s.create_table(
        "ledger",
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
    s.create_index("ledger", ["session_id"])


@migration
def m002_teams(s: Schema) -> None:
    """Users, teams, invites, assignments, disputes, grade history, update inbox, chat state."""
    s.create_table(
        "users",
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
    s.create_index("users", ["platform", "external_id"], unique=True)
    s.create_table(
        "teams", {"id": int, "name": str, "created_at": str}, pk="id",
        not_null={"name", "created_at"},
    )  # fmt: skip
    s.create_index("teams", ["name"], unique=True)
    s.create_table(
        "memberships",
        {"id": int, "team_id": int, "user_id": int, "role": str, "created_at": str},
        pk="id",
        foreign_keys=[("team_id", "teams", "id"), ("user_id", "users", "id")],
        not_null={"team_id", "user_id", "role"},
    )
    s.create_index("memberships", ["team_id", "user_id", "role"], unique=True)
    s.create_table(
        "invites",
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
    s.create_table(
        "assignments",
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
    s.add_column("sessions", "assignment_id", int)
    s.create_table(
        "disputes",
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
    s.create_table(
        "grade_events",
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
    s.create_index("grade_events", ["session_id", "entry"])
    s.create_table(
        "updates",
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
    s.create_index("updates", ["status"])
    s.create_table(
        "chat_state", {"key": str, "state": str, "data": str, "updated_at": str}, pk="key"
    )
    s.append_only("grade_events")  # the grade history: the database refuses edits


@migration
def m003_judge(s: Schema) -> None:
    """Which judge a session uses: ``rules`` (the rule graders) or ``llm`` (bounded by them)."""
    s.add_column("sessions", "judge", str, not_null_default="rules")


@migration
def m004_judge_cache(s: Schema) -> None:
    """Validated LLM judge answers by request, so a repeated request gets the same grade."""
    s.create_table(
        "judge_cache", {"key": str, "answer": str, "model": str, "created_at": str},
        pk="key", not_null={"answer", "model"},
    )  # fmt: skip


@migration
def m005_outbox(s: Schema) -> None:
    """What a state change owes a user, kept until delivered; how often an update was started."""
    s.add_column("updates", "attempts", int, not_null_default=0)
    s.create_table(
        "outbox",
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
    s.create_index("outbox", ["status", "address"])
    s.create_index("outbox", ["address", "ref"])


@migration
def m006_llm_modes(s: Schema) -> None:
    """The structured-output mode each model server takes, as last found, with its date."""
    s.create_table(
        "llm_modes", {"base_url": str, "model": str, "mode": str, "found_at": str},
        pk=("base_url", "model"), not_null={"mode", "found_at"},
    )  # fmt: skip


@migration
def m007_llm_servers(s: Schema) -> None:
    """How many requests each model server decodes at once, as last found, and how."""
    s.create_table(
        "llm_servers", {"base_url": str, "slots": int, "how": str, "found_at": str},
        pk="base_url", not_null={"slots", "how", "found_at"},
    )  # fmt: skip


@migration
def m008_web_devices(s: Schema) -> None:
    """Browsers signed in to the web app: a token's hash per device, revocable."""
    s.create_table(
        "web_devices",
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
    s.create_index("web_devices", ["token_sha"], unique=True)


@migration
def m009_grade_reviews(s: Schema) -> None:
    """Mentors' reviews of grades flagged for one (append-only, like the grade history)."""
    s.create_table(
        "grade_reviews",
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
    s.create_index("grade_reviews", ["session_id", "turn_idx", "dimension"], unique=True)
    s.append_only("grade_reviews")


@migration
def m010_accounts(s: Schema) -> None:
    """Revocable invites, one account across channels (linked identities, link codes)."""
    s.add_column("invites", "revoked_at", str)
    s.create_table(
        "identities",
        {"platform": str, "external_id": str, "user_id": int, "created_at": str},
        pk=("platform", "external_id"),
        foreign_keys=[("user_id", "users", "id")],
        not_null={"user_id", "created_at"},
    )
    s.create_table(
        "link_codes",
        {"code_sha": str, "user_id": int, "created_at": str, "used_at": str},
        pk="code_sha",
        foreign_keys=[("user_id", "users", "id")],
        not_null={"user_id", "created_at"},
    )


@migration
def m011_drills(s: Schema) -> None:
    """Festival drills: the plan, every scheduled customer, and each applied event."""
    s.create_table(
        "drills",
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
    s.create_table(
        "drill_customers",
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
    s.create_index("drill_customers", ["drill_id", "user_id", "number"], unique=True)
    s.create_index("drill_customers", ["drill_id", "status", "due_at"])
    s.create_index("drill_customers", ["drill_id", "status", "waiting_since"])
    s.create_table(
        "drill_events",
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
    s.add_column("sessions", "drill_customer_id", int)
    s.create_index("sessions", ["drill_customer_id"], unique=True)  # one per customer


@migration
def m012_drill_next_at(s: Schema) -> None:
    """Drill customers: when next due, replies taken in, the 100-point assessment.

    The clock then reads only the customers with something due. Waiting customers start
    from an early bound (``waiting_since``); the drill runner sets the exact time the
    first time it looks at each drill.
    """
    s.add_column("drill_customers", "next_at", float)
    s.add_column("drill_customers", "replies", int, not_null_default=0)
    s.add_column("drill_customers", "score100", float)
    s.execute(
        "UPDATE drill_customers SET replies = (SELECT count(*) FROM turns"
        " WHERE turns.session_id = drill_customers.session_id AND turns.role = 'trainee')"
        " WHERE session_id IS NOT NULL"
    )
    s.execute(
        "UPDATE drill_customers SET next_at = CASE status WHEN 'due' THEN due_at"
        " WHEN 'queued' THEN waiting_since WHEN 'open' THEN waiting_since END"
    )
    s.drop_index("drill_customers", ["drill_id", "status", "waiting_since"])
    s.create_index("drill_customers", ["drill_id", "next_at"])


@migration
def m013_installation(s: Schema) -> None:
    """A random name of this database, the same whatever address a process reaches it by.

    Trainer processes sharing the database coordinate under it in Redis.
    """
    s.create_table("installation", {"key": str, "value": str}, pk="key", not_null={"value"})
    s.execute(f"INSERT INTO installation (key, value) VALUES ('id', '{uuid.uuid4().hex}')")


TABLES = (
    "trainees", "sessions", "turns", "grades", "ledger", "users", "teams", "memberships",
    "invites", "assignments", "disputes", "grade_events", "updates", "chat_state",
    "judge_cache", "outbox", "llm_modes", "llm_servers", "web_devices", "grade_reviews",
    "identities", "link_codes", "drills", "drill_customers", "drill_events",
)  # fmt: skip
"""Every table, parents before the tables that refer to them (the order a copy takes).

Not ``installation``: a copy is another database, with a name of its own."""


# SQLite: sqlite-utils' table API and migration records, as the store always used.


class SqliteSchema:
    """:class:`Schema` on a sqlite-utils database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create_table(
        self,
        name: str,
        columns: dict[str, ColumnType],
        *,
        pk: str | tuple[str, ...],
        not_null: Iterable[str] = (),
        defaults: dict[str, Any] | None = None,
        foreign_keys: Sequence[tuple[str, str, str]] = (),
    ) -> None:
        """Create a table with sqlite-utils."""
        self.db.table(name).create(
            dict(columns), pk=pk, not_null=set(not_null), defaults=defaults,
            foreign_keys=list(foreign_keys) or None,
        )  # fmt: skip

    def add_column(
        self, table: str, name: str, kind: ColumnType, not_null_default: Any = None
    ) -> None:
        """Add a column with sqlite-utils."""
        self.db.table(table).add_column(name, kind, not_null_default=not_null_default)

    def create_index(self, table: str, columns: Sequence[str], *, unique: bool = False) -> None:
        """Create an index with sqlite-utils (it names it as :func:`index_name`)."""
        self.db.table(table).create_index(list(columns), unique=unique)

    def drop_index(self, table: str, columns: Sequence[str]) -> None:
        """Drop an index by its sqlite-utils name."""
        self.db.execute(f"DROP INDEX {index_name(table, columns)}")

    def append_only(self, table: str) -> None:
        """Triggers that abort any update or delete."""
        for event in ("UPDATE", "DELETE"):
            self.db.execute(
                f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table}"
                f" BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )

    def execute(self, sql: str) -> None:
        """Run SQL as it is."""
        self.db.execute(sql)


def sqlite_migrations() -> Migrations:
    """The migrations as sqlite-utils records them (same names as ever)."""
    found = Migrations("cs-trainer")
    for step in MIGRATIONS:
        found(name=step.__name__)(_on_sqlite(step))
    return found


def _on_sqlite(step: Migration) -> Callable[[Database], None]:
    def apply(db: Database) -> None:
        step(SqliteSchema(db))

    return apply


# PostgreSQL: the same migrations as DDL; applied ones are recorded in _migrations.

_PG_TYPES: dict[ColumnType, str] = {int: "BIGINT", str: "TEXT", float: "DOUBLE PRECISION"}


def _quote(name: str) -> str:
    return f'"{name}"'


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


class PostgresSchema:
    """:class:`Schema` as PostgreSQL DDL, collected into statements."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def create_table(
        self,
        name: str,
        columns: dict[str, ColumnType],
        *,
        pk: str | tuple[str, ...],
        not_null: Iterable[str] = (),
        defaults: dict[str, Any] | None = None,
        foreign_keys: Sequence[tuple[str, str, str]] = (),
    ) -> None:
        """CREATE TABLE; an ``int`` primary key ``id`` is an identity column."""
        required, defaults = set(not_null), defaults or {}
        parts = []
        for column, kind in columns.items():
            spec = f"{_quote(column)} {_PG_TYPES[kind]}"
            if pk == column and kind is int:
                spec += " GENERATED BY DEFAULT AS IDENTITY"
            if column in required:
                spec += " NOT NULL"
            if column in defaults:
                spec += f" DEFAULT {_literal(defaults[column])}"
            parts.append(spec)
        keys = (pk,) if isinstance(pk, str) else pk
        parts.append(f"PRIMARY KEY ({', '.join(map(_quote, keys))})")
        for column, other, other_column in foreign_keys:
            parts.append(f"FOREIGN KEY ({_quote(column)}) REFERENCES {other} ({other_column})")
        self.statements.append(f"CREATE TABLE {name} ({', '.join(parts)})")

    def add_column(
        self, table: str, name: str, kind: ColumnType, not_null_default: Any = None
    ) -> None:
        """ALTER TABLE ... ADD COLUMN."""
        spec = f"{_quote(name)} {_PG_TYPES[kind]}"
        if not_null_default is not None:
            spec += f" NOT NULL DEFAULT {_literal(not_null_default)}"
        self.statements.append(f"ALTER TABLE {table} ADD COLUMN {spec}")

    def create_index(self, table: str, columns: Sequence[str], *, unique: bool = False) -> None:
        """CREATE [UNIQUE] INDEX under the sqlite-utils name."""
        kind = "UNIQUE INDEX" if unique else "INDEX"
        self.statements.append(
            f"CREATE {kind} {index_name(table, columns)} ON {table}"
            f" ({', '.join(map(_quote, columns))})"
        )

    def drop_index(self, table: str, columns: Sequence[str]) -> None:
        """DROP INDEX by name."""
        self.statements.append(f"DROP INDEX {index_name(table, columns)}")

    def append_only(self, table: str) -> None:
        """A trigger that raises on any update or delete."""
        self.statements.append(
            "CREATE OR REPLACE FUNCTION trainer_append_only() RETURNS trigger LANGUAGE plpgsql"
            " AS $$ BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$"
        )
        self.statements.append(
            f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION trainer_append_only()"
        )

    def execute(self, sql: str) -> None:
        """Run SQL as it is."""
        self.statements.append(sql)


def postgres_steps() -> list[tuple[str, list[str]]]:
    """Each migration's name and its PostgreSQL statements, in order."""
    steps = []
    for step in MIGRATIONS:
        schema = PostgresSchema()
        step(schema)
        steps.append((step.__name__, schema.statements))
    return steps
