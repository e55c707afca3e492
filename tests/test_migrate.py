"""`trainer migrate`: a team's whole history copied between SQLite and PostgreSQL.

The source is a real history made through the service (teams, invites, sessions with
grades and ledgers, an override, a dispute and its ruling, a planned drill); the target
is a fresh schema on the real PostgreSQL server the suite runs against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner

from bot.cli import cli
from bot.content import ScenarioLibrary
from bot.storage import Store
from bot.storage.schema import TABLES
from tests.databases import PgSchemas
from tests.test_service import BELOW_ONLY, make_world, play


def _history(library: ScenarioLibrary, where: str) -> None:
    world = make_world(library, Store.open(where))
    svc = world.svc
    sid = play(svc, world.a1, BELOW_ONLY)
    play(svc, world.b1, BELOW_ONLY)
    svc.override(world.mentor_a, sid, 1, 0.0, "too harsh")
    dispute = svc.open_dispute(world.a1, sid, 2, "I was correcting the facts")
    svc.resolve_dispute(world.mentor_a, dispute.id, "rejected", "the slip still counts")
    svc.plan_drill(world.mentor_a, "double11-peak", teams=[world.team_a])
    world.store.close()


def _rows(where: str) -> dict[str, list[tuple[Any, ...]]]:
    store = Store.open(where)
    try:
        found = {}
        for table in TABLES:
            order = ", ".join(store.backend.primary_key(table))
            columns = ", ".join(store.backend.columns(table))
            found[table] = store.backend.fetchall(f"SELECT {columns} FROM {table} ORDER BY {order}")
        return found
    finally:
        store.close()


def _migrate(source: str, target: str) -> Any:
    return CliRunner().invoke(cli, ["migrate", "--from", source, "--to", target], obj={})


def test_a_history_moves_to_postgresql_and_back_row_for_row(
    library: ScenarioLibrary, pg_schemas: PgSchemas, tmp_path: Path
) -> None:
    source = str(tmp_path / "trainer.db")
    _history(library, source)
    before = _rows(source)
    assert before["grades"] and before["grade_events"] and before["drill_customers"]

    target = pg_schemas.new_url()
    result = _migrate(source, target)
    assert result.exit_code == 0, result.output
    assert "every count matches" in result.output
    assert f"grades {len(before['grades'])}" in " ".join(result.output.split())
    assert _rows(target) == before  # every row, every value, the same ids

    moved = Store.open(target)  # the copy is a working store: new rows number after old
    original = Store.open(source)
    assert moved.installation() != original.installation()  # another database
    original.close()
    team = moved.create_team("Gamma")
    assert team.id == max(row[0] for row in before["teams"]) + 1
    moved.close()

    back = str(tmp_path / "back.db")
    result = _migrate(target, back)
    assert result.exit_code == 0, result.output
    after = _rows(back)
    assert {t: rows for t, rows in after.items() if t != "teams"} == {
        t: rows for t, rows in before.items() if t != "teams"
    }


def test_a_target_with_data_is_refused_in_one_line_and_left_as_it_was(
    library: ScenarioLibrary, pg_schemas: PgSchemas, tmp_path: Path
) -> None:
    source = str(tmp_path / "trainer.db")
    _history(library, source)
    target = pg_schemas.new_url()
    Store.open(target).create_team("Already here")
    result = _migrate(source, target)
    assert result.exit_code == 1
    assert "already holds data (teams)" in result.output and "Traceback" not in result.output
    assert [row[1] for row in _rows(target)["teams"]] == ["Already here"]


def test_a_database_that_cannot_be_opened_is_named_in_one_line(tmp_path: Path) -> None:
    result = _migrate(str(tmp_path / "a.db"), "mysql://somewhere/db")
    assert result.exit_code == 1
    assert "--to mysql://somewhere/db" in result.output and "postgresql://" in result.output
    assert "Traceback" not in result.output
    unreachable = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"
    result = _migrate(str(tmp_path / "a.db"), unreachable)
    assert result.exit_code == 1 and "Cannot reach PostgreSQL" in result.output
