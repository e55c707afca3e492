"""Scenario format details real cases need: dashed order ids, times of day, drafts with packs."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bot.cli import cli
from bot.content import ScenarioLibrary
from graders.dialogue import revealed_in
from tests.conftest import Grading

ROOT = Path(__file__).resolve().parent.parent
KETTLE = ROOT / "scenarios" / "damaged-kettle.yaml"
SHIPPED = len(list((ROOT / "scenarios").glob("*.yaml")))
"""The library's own scenarios, which `scenarios validate` checks with any draft."""


def _draft(folder: Path, change=None, name: str = "case.yaml") -> Path:  # type: ignore[no-untyped-def]
    data = yaml.safe_load(KETTLE.read_text(encoding="utf-8"))
    data["id"] = "draft-kettle"
    if change:
        change(data)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), "utf-8")
    return path


def _dashed(data: dict) -> None:  # type: ignore[type-arg]
    data["order"]["order_id"] = "JD20261201-0042"


@pytest.mark.parametrize(
    "written",
    ["JD20261201-0042", "jd20261201-0042", "JD202612010042", "JD20261201—0042", "20261201-0042"],
)
def test_a_dashed_order_id_is_recognised_however_the_customer_writes_it(
    tmp_path: Path, library: ScenarioLibrary, written: str
) -> None:
    scenario = library.get(str(_draft(tmp_path, _dashed)))
    assert "order-number" in revealed_in(scenario, f"订单号{written}，自己查。")


def test_a_dashed_order_id_is_checked_as_one_fact(tmp_path: Path, library: ScenarioLibrary) -> None:
    scenario = library.get(str(_draft(tmp_path, _dashed)))
    right = Grading(scenario).customer("水壶裂了").reply("您的订单JD20261201-0042我查到了。")
    assert right["accuracy"].score == 2
    wrong = Grading(scenario).customer("水壶裂了").reply("您的订单JD20261201-0043我查到了。")
    assert wrong["accuracy"].score == 0
    assert wrong["accuracy"].deductions[0].code == "accuracy.wrong.order_id"


def test_dates_may_carry_a_time_of_day(tmp_path: Path, library: ScenarioLibrary) -> None:
    def timed(data: dict) -> None:  # type: ignore[type-arg]
        data["today"] = "2026-11-15 09:30"
        data["order"]["signed_on"] = "2026-11-14 18:05"

    scenario = library.get(str(_draft(tmp_path, timed)))
    assert scenario.scenario.today == dt.datetime(2026, 11, 15, 9, 30)
    assert scenario.render("{signed_on}", "zh") == "11月14日 18:05"
    assert scenario.render("{signed_on}", "en") == "Nov 14, 18:05"
    assert "signed-date" in revealed_in(scenario, "11月14日 18:05签收的，当天拆开就这样。")
    grade = Grading(scenario).customer("水壶裂了").reply("您是11月13日签收的。")["accuracy"]
    assert grade.deductions[0].code == "accuracy.wrong.signed_on"


def test_a_sign_for_time_before_the_order_is_an_error(tmp_path: Path) -> None:
    def backwards(data: dict) -> None:  # type: ignore[type-arg]
        data["order"]["ordered_on"] = "2026-11-14 20:00"
        data["order"]["shipped_on"] = "2026-11-14 20:00"
        data["order"]["signed_on"] = "2026-11-14 18:05"

    result = CliRunner().invoke(
        cli, ["scenarios", "validate", str(_draft(tmp_path, backwards))], obj={}
    )
    assert result.exit_code == 1 and "signed_on" in result.output and "before" in result.output


PACK = (
    "id: corner-shop\ntitle: {zh: 街角小店, en: Corner shop}\nextends: default-shop\n"
    "params: {compensation_cap: 10}\n"
)


def _uses_pack(data: dict) -> None:  # type: ignore[type-arg]
    data["policy"] = "corner-shop"


@pytest.mark.parametrize("order", ["scenario first", "pack first"])
def test_validate_answers_the_same_whatever_the_order_of_files(tmp_path: Path, order: str) -> None:
    drafts = tmp_path / "drafts"
    case = _draft(drafts, _uses_pack)
    pack = tmp_path / "elsewhere" / "corner.yaml"
    pack.parent.mkdir()
    pack.write_text(PACK, "utf-8")
    files = [str(case), str(pack)] if order == "scenario first" else [str(pack), str(case)]
    result = CliRunner().invoke(cli, ["scenarios", "validate", *files], obj={})
    assert result.exit_code == 0, result.output
    assert f"OK: {SHIPPED + 1} scenarios and 2 policy packs are valid." in result.output


def test_a_pack_beside_a_draft_is_found(tmp_path: Path, library: ScenarioLibrary) -> None:
    case = _draft(tmp_path, _uses_pack)
    (tmp_path / "corner.yaml").write_text(PACK, "utf-8")
    result = CliRunner().invoke(cli, ["scenarios", "validate", str(case)], obj={})
    assert result.exit_code == 0, result.output
    assert library.get(str(case)).policy.params.compensation_cap == 10


def test_a_pack_in_a_policies_folder_next_to_a_draft_is_found(tmp_path: Path) -> None:
    _draft(tmp_path, _uses_pack)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "corner.yaml").write_text(PACK, "utf-8")
    result = CliRunner().invoke(cli, ["scenarios", "validate", str(tmp_path)], obj={})
    assert result.exit_code == 0, result.output
    assert f"OK: {SHIPPED + 1} scenarios and 2 policy packs are valid." in result.output


def test_the_ok_line_counts_a_pack_as_a_pack(tmp_path: Path) -> None:
    pack = tmp_path / "corner.yaml"
    pack.write_text(PACK, "utf-8")
    result = CliRunner().invoke(cli, ["scenarios", "validate", str(pack)], obj={})
    assert f"OK: {SHIPPED} scenarios and 2 policy packs are valid." in result.output


def test_a_draft_folder_with_a_broken_pack_names_the_pack(tmp_path: Path) -> None:
    case = _draft(tmp_path, _uses_pack)
    (tmp_path / "corner.yaml").write_text(PACK.replace("default-shop", "nope"), "utf-8")
    result = CliRunner().invoke(cli, ["scenarios", "validate", str(case)], obj={})
    assert result.exit_code == 1 and "corner.yaml" in result.output
    assert "unknown pack 'nope'" in result.output


@pytest.mark.parametrize(
    ("zh", "en", "greeting", "lang"),
    [
        ("李女士", "Ms. Li", "李女士您好，水壶裂了真是抱歉。", "zh"),
        ("李女士", "Ms. Li", "Hello Ms. Li, I'm sorry the kettle is cracked.", "en"),
        ("陈先生", "Mr. Chen", "Hello Mr. Chen, I'm sorry about the kettle.", "en"),
        ("王芳", "Wang Fang", "王女士您好，水壶裂了真是抱歉。", "zh"),
        ("王芳", "Wang Fang", "Hello Ms. Wang, I'm sorry about the kettle.", "en"),
    ],
)
def test_greeting_by_surname_and_title_is_not_a_disclosure(
    tmp_path: Path, library: ScenarioLibrary, zh: str, en: str, greeting: str, lang: str
) -> None:
    def named(data: dict) -> None:  # type: ignore[type-arg]
        data["order"]["receiver"]["name"] = {"zh": zh, "en": en}

    scenario = library.get(str(_draft(tmp_path, named)))
    policy = Grading(scenario, lang).customer("水壶裂了").reply(greeting)["policy"]
    assert "PRIV-VERIFY" not in policy.clause_ids


def test_the_full_recipient_name_before_verification_is_still_a_disclosure(library) -> None:
    policy = (
        Grading(library.get("damaged-kettle"), "en")
        .customer("cracked!")
        .reply("I see the parcel was signed for by Wang Fang.")["policy"]
    )
    assert "PRIV-VERIFY" in policy.clause_ids


def test_the_library_still_refuses_a_draft_dropped_into_it(tmp_path: Path) -> None:
    root = tmp_path / "scenarios"
    shutil.copytree(ROOT / "scenarios", root)
    _draft(root, lambda d: d.update(policy="corner-shop"), "draft.yaml")
    problems = [str(p) for p in ScenarioLibrary(root).problems]
    assert any("unknown policy pack 'corner-shop'" in p for p in problems)


def test_a_date_without_a_time_is_any_time_that_day(
    tmp_path: Path, library: ScenarioLibrary
) -> None:
    def same_day(data: dict) -> None:  # type: ignore[type-arg]
        data["order"]["ordered_on"] = "2026-11-12 20:00"
        data["order"]["shipped_on"] = "2026-11-12"

    result = CliRunner().invoke(
        cli, ["scenarios", "validate", str(_draft(tmp_path, same_day))], obj={}
    )
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("written", ["JD20261201 0042", "JD20261201_0042", "2026 1201 0042"])
def test_an_order_id_split_by_spaces_is_still_the_order_id(
    tmp_path: Path, library: ScenarioLibrary, written: str
) -> None:
    scenario = library.get(str(_draft(tmp_path, _dashed)))
    assert "order-number" in revealed_in(scenario, f"订单号{written}，自己查。")


@pytest.mark.parametrize("written", ["JD20261201 0042", "JD20261201_0042"])
def test_a_trainee_writing_the_order_id_split_is_not_marked_wrong(
    tmp_path: Path, library: ScenarioLibrary, written: str
) -> None:
    scenario = library.get(str(_draft(tmp_path, _dashed)))
    grade = Grading(scenario).customer("水壶裂了").reply(f"您的订单{written}我查到了。")["accuracy"]
    assert grade.score == 2, grade.deductions
