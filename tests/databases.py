"""The databases tests run on: SQLite in memory, and fresh schemas on a real PostgreSQL.

PostgreSQL is the server on 127.0.0.1 that ``dev.py test`` starts or finds
(``TRAINER_TEST_PG`` names another). Each store gets a schema of its own, named after
the test process, so a store starts empty as an SQLite one in memory does; a thread drops
each test's schemas once the test is over (dropping them all at the end took ~15 s, as
long as the catalog work of ~500 schemas), and a run drops those of runs that died on the
way at its start. (Emptying
used schemas for the next test instead saved 3 s of the suite: the time PostgreSQL adds
is its round trips, ~0.3 ms each here, not the schemas.)
"""

from __future__ import annotations

import itertools
import os
import queue
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
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
        self._to_drop: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._dropper = threading.Thread(target=self._drop_retired, args=(url,), daemon=True)
        self._dropper.start()

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
        # Commits need not wait for the server's disk in tests (its own crash is not tested
        # here; tests/test_outages.py crashes a server of its own, with durable commits).
        options = f"-csynchronous_commit=off -csearch_path={name}"
        return f"{self.url}{joiner}options={quote(options)}"

    def retire(self) -> None:
        """The schemas made so far are no longer used: drop them in the background."""
        made, self.made = self.made, []
        for name in made:
            self._to_drop.put(name)

    def _drop_retired(self, url: str) -> None:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            while (name := self._to_drop.get()) is not None:
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')

    def close(self) -> None:
        """Drop every schema made here (waits for the drops in the background)."""
        self.retire()
        self._to_drop.put(None)
        self._dropper.join()
        self.conn.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PrivatePostgres:
    """A PostgreSQL server of the test's own, on a free port, that it may stop and start.

    Made with the installed server's ``initdb`` and ``pg_ctl`` in a folder of its own
    under the system's temporary folder (run as the ``postgres`` user when the tests run
    as root, which PostgreSQL refuses to run as); :meth:`close` removes it.
    """

    def __init__(self) -> None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        assert found, "PostgreSQL's server programs are missing: install Debian's postgresql"
        self.bin = found[-1].parent
        self.folder = Path(tempfile.mkdtemp(prefix="trainer-pg-"))
        self.data = self.folder / "data"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.as_postgres: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
            self.as_postgres = ["runuser", "-u", "postgres", "--"]
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        done = subprocess.run(
            [*self.as_postgres, *command], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"{command[0]} failed: {done.stdout}{done.stderr}"

    def start(self) -> None:
        """Start the server and wait until it takes connections."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-w",
                  "-l", str(self.folder / "server.log"), "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate``: as a crash would)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def close(self) -> None:
        """Stop the server if it runs, and remove its folder."""
        subprocess.run(
            [*self.as_postgres, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m",
             "immediate", "-w", "stop"], capture_output=True, timeout=120,
        )  # fmt: skip
        shutil.rmtree(self.folder, ignore_errors=True)
