"""Fail fast while a database server cannot be reached, and find out when it is back.

The store is called synchronously on a server's event loop: waiting there for a database
that is down (a connect timeout, seconds) would stall every request and chat of the
process, once per call. After one call found the server unreachable, the breaker opens:
calls fail at once, and at most once per :data:`RETRY_S` one probe tries the server again
in a thread of its own, never on the caller's. The probe that gets an answer closes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from bot.storage.rows import StoreUnavailable

log = logging.getLogger(__name__)

RETRY_S = 1.0
"""How long calls fail at once after the server was found unreachable before a probe."""


class Breaker:
    """The reachability of one database server, shared by every thread of a store."""

    def __init__(self, where: str, probe: Callable[[], None]) -> None:
        self.where = where
        self.probe = probe
        """Raises unless the server answers (run in the probe's thread)."""
        self.clock: Callable[[], float] = time.monotonic
        """The time probes are due by (tests move their own)."""
        self._lock = threading.Lock()
        self._down: str | None = None
        """Why the server was last found unreachable; None: closed."""
        self._retry_at = 0.0
        self._probing: threading.Thread | None = None

    def check(self) -> None:
        """Raise :class:`StoreUnavailable` at once while open; start a probe when one is due."""
        if self._down is None:
            return
        with self._lock:
            down = self._down
            if down is None:
                return
            if self._probing is None and self.clock() >= self._retry_at:
                self._probing = threading.Thread(
                    target=self._probe, name="store-probe", daemon=True
                )
                self._probing.start()
        raise StoreUnavailable(f"{self.where} cannot be reached (tried in the background): {down}")

    def trip(self, why: str) -> None:
        """The server was found unreachable: open (again) for :data:`RETRY_S`."""
        with self._lock:
            if self._down is None:
                log.warning("%s cannot be reached; calls fail at once until it answers", self.where)
            self._down = why
            self._retry_at = self.clock() + RETRY_S

    def wait(self, timeout: float | None = None) -> None:
        """Wait until no probe runs."""
        probing = self._probing
        if probing is not None:
            probing.join(timeout)

    def _probe(self) -> None:
        try:
            self.probe()
        except Exception as exc:
            with self._lock:
                self._down = str(exc).strip() or type(exc).__name__
                self._retry_at = self.clock() + RETRY_S
                self._probing = None
            return
        with self._lock:
            self._down = None
            self._probing = None
        log.warning("%s answers again", self.where)
