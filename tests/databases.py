"""The databases tests run on: SQLite in memory, and fresh schemas on a real PostgreSQL.

PostgreSQL is the server on 127.0.0.1 that ``dev.py test`` starts or finds
(``TRAINER_TEST_PG`` names another). Each store gets a schema of its own, named after
the test process, so a store starts empty as an SQLite one in memory does; a run drops
its schemas at the end, and those of runs that died on the way at its start.
"""

from __future__ import annotations

import itertools
import os
import re
from urllib.parse import quote

import psycopg

PG_URL = os.environ.get("TRAINER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
PREFIX = "trainer_test_"


class PgSchemas:
    """Creates empty schemas on the test server and drops them again."""

    def __init__(self, url: str = PG_URL) -> None:
        try:
            self.conn = psycopg.connect(url, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as exc:
            raise RuntimeError(
                f"PostgreSQL is not reachable at {url} ({exc}); `python3 dev.py test` starts "
                "the local server, or set TRAINER_TEST_PG to one the tests may use"
            ) from None
        self.url = url
        self.made: list[str] = []
        self._numbers = itertools.count(1)
        self._drop_orphans()

    def _drop_orphans(self) -> None:
        rows = self.conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", [PREFIX + "%"]
        ).fetchall()
        for (name,) in rows:
            found = re.match(rf"{PREFIX}(\d+)_", name)
            if found and not _alive(int(found.group(1))):
                self.conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')

    def new_url(self) -> str:
        """The URL of a new, empty schema."""
        name = f"{PREFIX}{os.getpid()}_{next(self._numbers)}"
        self.conn.execute(f'CREATE SCHEMA "{name}"')
        self.made.append(name)
        joiner = "&" if "?" in self.url else "?"
        return f"{self.url}{joiner}options={quote(f'-csearch_path={name}')}"

    def close(self) -> None:
        """Drop every schema made here."""
        for name in self.made:
            self.conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        self.conn.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
