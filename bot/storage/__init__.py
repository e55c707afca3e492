"""Persistence of the trainer, on SQLite (the default) or PostgreSQL.

Every SQL statement of the project lives in this package, split by what it stores:
people and teams (:mod:`.people`), sessions and turns (:mod:`.sessions`), grade history
(:mod:`.grades`), inbox and outbox (:mod:`.mailbox`), drills (:mod:`.drills`) and model
servers (:mod:`.models`). :class:`Store` puts them behind one interface; the schema is one
list of migrations rendered per dialect (:mod:`.schema`). While a PostgreSQL server cannot
be reached, calls fail at once rather than each waiting for it (:mod:`.breaker`). On
SQLite the database runs in WAL mode with ``synchronous=FULL``, and each write is its own
transaction, so an acknowledged reply or grade survives a crash; chat adapters with a
durable update inbox may move the wait for the disk to the inbox alone
(:meth:`Store.sync_at_inbox`).
"""

from bot.storage.backends import BUSY_TIMEOUT_S, Backend, open_backend, without_password
from bot.storage.rows import (
    AssignmentRow,
    Conflict,
    DeviceRow,
    DisputeRow,
    DrillCustomerRow,
    DrillRow,
    GradeEventRow,
    GradeReviewRow,
    InviteListing,
    InviteRow,
    OutboxRow,
    Owed,
    SessionRow,
    StaleDrill,
    StoreBusy,
    StoreError,
    StoreUnavailable,
    TeamRow,
    TurnRow,
    UserRow,
)
from bot.storage.schema import sqlite_migrations
from bot.storage.store import Store

migrations = sqlite_migrations()
"""The SQLite migrations as sqlite-utils records them (tests upgrade old files with it)."""

__all__ = [
    "BUSY_TIMEOUT_S",
    "AssignmentRow",
    "Backend",
    "Conflict",
    "DeviceRow",
    "DisputeRow",
    "DrillCustomerRow",
    "DrillRow",
    "GradeEventRow",
    "GradeReviewRow",
    "InviteListing",
    "InviteRow",
    "OutboxRow",
    "Owed",
    "SessionRow",
    "StaleDrill",
    "Store",
    "StoreBusy",
    "StoreError",
    "StoreUnavailable",
    "TeamRow",
    "TurnRow",
    "UserRow",
    "migrations",
    "open_backend",
    "without_password",
]
