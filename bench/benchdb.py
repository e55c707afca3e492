"""The database a bench runs on: a fresh SQLite file, or a fresh PostgreSQL schema.

--db sqlite                  a file in a temporary folder (the default)
--db postgresql              a new schema on TRAINER_BENCH_PG (default: the local
                             server, postgresql://postgres@127.0.0.1:5432/test),
                             dropped afterwards
--db postgresql://...        that database as it is (it must be empty)
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg

LOCAL_PG = os.environ.get("TRAINER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
CHOICES_HELP = "sqlite (a temporary file, default), postgresql (a new schema), or a URL"


@contextlib.contextmanager
def database(choice: str, folder: Path) -> Iterator[str]:
    """Where the bench's store is, for ``Store.open`` and ``trainer --db``."""
    if choice == "sqlite":
        yield str(folder / "bench.db")
        return
    if choice != "postgresql":
        yield choice
        return
    name = f"bench_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(LOCAL_PG, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise SystemExit(
            f"--db postgresql: cannot reach {LOCAL_PG} ({exc}); set TRAINER_BENCH_PG"
        ) from None
    with admin:
        admin.execute(f'CREATE SCHEMA "{name}"')
        joiner = "&" if "?" in LOCAL_PG else "?"
        try:
            yield f"{LOCAL_PG}{joiner}options={quote(f'-csearch_path={name}')}"
        finally:
            admin.execute(f'DROP SCHEMA "{name}" CASCADE')
