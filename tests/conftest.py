"""Shared fixtures. Tests never touch the internet: any connection attempt to a
non-loopback address fails the test (servers the product talks to are stood up on
127.0.0.1 by the tests that need them)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bot.content import ScenarioLibrary
from bot.llm.client import forget_endpoints
from bot.scenario import ResolvedScenario
from bot.storage import Store
from graders import DialogueTracker, Grade, get_grader, grade_reply
from tests.databases import PgSchemas

ROOT = Path(__file__).resolve().parent.parent
_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: object) -> None:
    host = address[0] if isinstance(address, tuple) else address
    if (
        isinstance(host, str)
        and host not in ("127.0.0.1", "::1", "localhost")
        and not (self.family == socket.AF_UNIX)
    ):
        raise RuntimeError(f"test tried to reach {address!r}: tests must stay offline")
    _real_connect(self, address)  # type: ignore[arg-type]


LIVE_REASON = (
    "live test against a real LLM endpoint: opt in with --runapi or TRAINER_RUNAPI=1 "
    "(it uses OPENAI_BASE_URL, OPENAI_API_KEY and TRAINER_LLM_MODEL)"
)


REAL_LLM_REASON = (
    "runs a real llama.cpp server on 127.0.0.1: opt in with `python3 dev.py test --real-llm` "
    "(it builds .venv-llm once) or --real-llm"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runapi", action="store_true", help=LIVE_REASON)
    parser.addoption("--real-llm", action="store_true", help=REAL_LLM_REASON)
    parser.addoption(
        "--backend",
        choices=("both", *BACKENDS),
        default="both",
        help="run the tests that use a store on this database only (default: both)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    live = config.getoption("--runapi") or os.environ.get("TRAINER_RUNAPI") == "1"
    real = config.getoption("--real-llm")
    wanted = config.getoption("--backend")
    if wanted != "both":  # the other backend's tests are not collected (not skipped)
        other = [i for i in items if _backend_of(i) not in (None, wanted)]
        config.hook.pytest_deselected(items=other)
        items[:] = [i for i in items if i not in other]
    for item in items:
        if item.get_closest_marker("runapi") and not live:
            item.add_marker(pytest.mark.skip(reason=LIVE_REASON))
        if item.get_closest_marker("real_llm") and not real:
            item.add_marker(pytest.mark.skip(reason=REAL_LLM_REASON))


def _backend_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return None if callspec is None else callspec.params.get("backend")


@pytest.fixture(scope="session", autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Caches (the word model, matplotlib's fonts) go to this run's temp folder, not the user's.

    Processes the tests start inherit it, so each cache is built once per run.
    """
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("runapi") is None:  # live tests opted in to the network
        monkeypatch.setattr(socket.socket, "connect", _loopback_only)


@pytest.fixture(autouse=True)
def _fresh_llm_modes() -> Iterator[None]:
    """Each test's fake LLM server starts with no settled mode and a closed breaker."""
    forget_endpoints()
    yield
    forget_endpoints()


@pytest.fixture(scope="session")
def library() -> ScenarioLibrary:
    return ScenarioLibrary.load()


BACKENDS = ("sqlite", "postgresql")


_PG_SCHEMAS: list[PgSchemas] = []  # the session's, once a test asked for it


@pytest.fixture(scope="session")
def pg_schemas() -> Iterator[PgSchemas]:
    schemas = PgSchemas()
    _PG_SCHEMAS.append(schemas)
    yield schemas
    _PG_SCHEMAS.remove(schemas)
    schemas.close()


@pytest.fixture(autouse=True)
def _retire_pg_schemas() -> Iterator[None]:
    """After each test (its stores closed), its PostgreSQL schemas are dropped meanwhile."""
    yield
    for schemas in _PG_SCHEMAS:
        schemas.retire()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Which database the test's stores use: every test asking for one runs on both."""
    return str(request.param)


@pytest.fixture
def new_store(backend: str, request: pytest.FixtureRequest) -> Iterator[Callable[[], Store]]:
    """Opens empty stores on the test's backend (each as fresh as SQLite in memory)."""
    opened: list[Store] = []

    def make() -> Store:
        if backend == "sqlite":
            made = Store.open(None)
        else:
            made = Store.open(request.getfixturevalue("pg_schemas").new_url())
        opened.append(made)
        return made

    yield make
    for made in opened:
        with contextlib.suppress(Exception):  # the test may have closed it
            made.close()


@pytest.fixture
def store(new_store: Callable[[], Store]) -> Store:
    return new_store()


@pytest.fixture
def shared_db(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """An empty database processes can share: an SQLite file, or a PostgreSQL schema."""
    if backend == "sqlite":
        return str(tmp_path / "trainer.db")
    return str(request.getfixturevalue("pg_schemas").new_url())


@pytest.fixture
def sqlite_store() -> Iterator[Store]:
    """A store in memory, for tests of what only SQLite does."""
    made = Store.open(None)
    yield made
    made.close()


@pytest.fixture
def kettle(library: ScenarioLibrary) -> ResolvedScenario:
    return library.get("damaged-kettle")


class Grading:
    """Grade replies in a scenario after a scripted conversation prefix."""

    def __init__(self, scenario: ResolvedScenario, lang: str = "zh"):
        self.scenario = scenario
        self.lang = lang
        self.tracker = DialogueTracker(scenario, lang)  # type: ignore[arg-type]
        self.graders = [get_grader(n) for n in scenario.scenario.graders]

    def customer(self, text: str) -> Grading:
        self.tracker.customer(text)
        return self

    def reply(self, text: str) -> dict[str, Grade]:
        """Grade ``text`` and record it; returns grades by dimension."""
        ctx = self.tracker.context()
        grades = asyncio.run(grade_reply(text, ctx, self.graders))
        self.tracker.trainee(ctx.findings(text))
        return {g.dimension: g for g in grades}


@pytest.fixture
def grading(library: ScenarioLibrary):  # type: ignore[no-untyped-def]
    def make(scenario_id: str = "damaged-kettle", lang: str = "zh") -> Grading:
        return Grading(library.get(scenario_id), lang)

    return make
