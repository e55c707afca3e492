"""Copying a team's whole history from one database to another (``trainer migrate``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot.storage.rows import StoreError
from bot.storage.schema import TABLES
from bot.storage.store import Store

BATCH = 2000
"""Rows read and written at a time."""


@dataclass(frozen=True)
class Copied:
    """One table's rows as counted on both sides after the copy."""

    table: str
    source: int
    target: int


def count(store: Store, table: str) -> int:
    """How many rows a table holds."""
    row = store.backend.fetchone(f"SELECT COUNT(*) FROM {table}")
    return int(row[0]) if row else 0


def copy_history(
    source: Store, target: Store, progress: Callable[[str, int, int], None] | None = None
) -> list[Copied]:
    """Copy every table from ``source`` into the empty ``target`` in one transaction.

    Rows keep their ids, so links between tables hold. ``progress(table, done, total)`` is
    called as rows go. Raises :class:`StoreError` if the target already holds data or the
    counts differ afterwards (then nothing was kept: the transaction rolled back).
    """
    holding = [table for table in TABLES if count(target, table)]
    if holding:
        raise StoreError(
            f"the target {target.url} already holds data ({', '.join(holding)}); "
            "migrate into a new, empty database"
        )
    totals = {table: count(source, table) for table in TABLES}
    with target.transaction() as tx:
        for table in TABLES:
            columns = source.backend.columns(table)
            names = ", ".join(columns)
            marks = ", ".join("?" * len(columns))
            order = ", ".join(source.backend.primary_key(table))
            done = 0
            while done < totals[table]:
                rows = source.backend.fetchall(
                    f"SELECT {names} FROM {table} ORDER BY {order} LIMIT ? OFFSET ?",
                    [BATCH, done],
                )
                if not rows:
                    break
                tx.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)
                done += len(rows)
                if progress is not None:
                    progress(table, done, totals[table])
            tx.renumber(table)
        copied = [Copied(table, totals[table], count(target, table)) for table in TABLES]
        wrong = [c for c in copied if c.source != c.target]
        if wrong:
            raise StoreError(
                "the counts differ after the copy ("
                + ", ".join(f"{c.table}: {c.source} read, {c.target} written" for c in wrong)
                + "); nothing was kept"
            )
    return copied
