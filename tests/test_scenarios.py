"""Scenario and policy content: everything shipped validates; every mistake is explained."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
import yaml

from bot.cli import schema_text
from bot.content import ContentError, ScenarioLibrary, UnknownScenario
from bot.i18n import LANGS
from bot.scenario import DIFFICULTIES, REACTION_KEYS
from graders import DialogueTracker, get_grader, grade_reply
from graders.dialogue import revealed_in
from graders.session import grade_agenda_answers, grade_exemplars

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"
REQUIRED_CATEGORIES = {"damaged_shipment", "wrong_item", "refund_dispute", "missing_item",
                       "price_protection", "delivery_delay"}  # fmt: skip


def test_the_shipped_library_is_valid(library: ScenarioLibrary) -> None:
    assert ScenarioLibrary().problems == []
    assert {s.scenario.category for s in library.scenarios.values()} >= REQUIRED_CATEGORIES


def test_every_scenario_is_playable_at_every_difficulty_in_both_languages(library) -> None:
    for resolved in library.scenarios.values():
        for level in DIFFICULTIES:
            for key in REACTION_KEYS:
                lines = resolved.lines_for(key, level)
                assert lines, f"{resolved.id}: no '{key}' line at {level}"
                for lang in LANGS:
                    assert resolved.render(lines[0].get(lang), lang)


def test_every_reveal_is_recognised_in_the_transcript(library) -> None:
    for resolved in library.scenarios.values():
        for fact in resolved.scenario.customer.facts:
            for line in fact.say:
                for lang in LANGS:
                    text = resolved.render(line.get(lang), lang)
                    assert fact.id in revealed_in(resolved, text), (resolved.id, fact.id, lang)


@pytest.mark.parametrize("lang", LANGS)
def test_exemplars_earn_full_marks(library, lang: str) -> None:
    for resolved in library.scenarios.values():
        graded = asyncio.run(grade_exemplars(resolved, lang))  # type: ignore[arg-type]
        assert [stage for stage, _ in graded] == ["opening", "investigate", "resolve", "follow_up"]
        for stage, record in graded:
            for g in record.grades:
                assert g.status != "scored" or g.score == g.max_score, (
                    resolved.id, lang, stage, g.dimension, g.reason[lang])  # fmt: skip


@pytest.mark.parametrize("lang", LANGS)
def test_curveball_answers_earn_full_marks_right_after_the_curveball(library, lang: str) -> None:
    for resolved in library.scenarios.values():
        blocking = [a.id for a in resolved.scenario.customer.agenda if a.expects]
        graded = asyncio.run(grade_agenda_answers(resolved, lang))  # type: ignore[arg-type]
        assert blocking and set(blocking) <= {item for item, _ in graded}, resolved.id
        for item, record in graded:
            assert record.state.last_customer == resolved.render(
                next(a for a in resolved.scenario.customer.agenda if a.id == item).say.get(lang),
                lang,  # type: ignore[arg-type]
            )
            for g in record.grades:
                assert g.status != "scored" or g.score == g.max_score, (
                    resolved.id, lang, item, g.dimension, g.reason[lang])  # fmt: skip


def test_template_values_are_a_copy_so_rendering_cannot_be_corrupted(library) -> None:
    scenario = library.get("damaged-kettle")
    values = scenario.template_values("en")
    order_id = values["order_id"]
    values["order_id"] = "HACKED"
    assert scenario.template_values("en")["order_id"] == order_id
    assert scenario.render("order {order_id}", "en") == f"order {order_id}"
    assert scenario.render("{item}", "zh") != scenario.render("{item}", "en")


def test_committed_json_schema_is_current() -> None:
    assert (ROOT / "docs" / "scenario.schema.json").read_text(encoding="utf-8") == schema_text()


def test_unknown_scenario_suggests_close_ids(library) -> None:
    with pytest.raises(UnknownScenario) as err:
        library.get("damaged-ketle")
    assert "damaged-kettle" in str(err.value)


# --- authoring mistakes, each with a precise message --------------------------------


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copytree(SCENARIOS, tmp_path / "scenarios")
    return tmp_path / "scenarios"


def _edit(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


def _problems(root: Path) -> list[str]:
    return [str(p) for p in ScenarioLibrary(root).problems]


def test_unknown_key_names_file_line_and_suggestion(workdir: Path) -> None:
    path = workdir / "damaged-kettle.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("briefing:", "breifing:"), "utf-8")
    problems = _problems(workdir)
    assert any(
        p.startswith("scenarios/damaged-kettle.yaml:")
        and "breifing: unknown key" in p
        and "did you mean 'briefing'" in p
        for p in problems
    ), problems


def test_missing_language_is_reported(workdir: Path) -> None:
    _edit(workdir / "damaged-kettle.yaml", lambda d: d["title"].pop("en"))
    assert any("title.en: required key is missing" in p for p in _problems(workdir))


def test_unknown_clause_id_suggests_the_closest(workdir: Path) -> None:
    _edit(workdir / "damaged-kettle.yaml", lambda d: d.update(clauses=["DMG-TRANSITT"]))
    assert any(
        "unknown clause 'DMG-TRANSITT'" in p and "DMG-TRANSIT" in p for p in _problems(workdir)
    )


def test_malformed_clause_id_says_what_form_is_expected(workdir: Path) -> None:
    _edit(workdir / "damaged-kettle.yaml", lambda d: d.update(clauses=["dmg transit"]))
    problem = next(p for p in _problems(workdir) if "clauses.0" in p)
    assert "'dmg transit'" in problem and "DMG-TRANSIT" in problem


def test_duplicate_yaml_keys_are_errors(workdir: Path) -> None:
    path = workdir / "damaged-kettle.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "\ntoday: 2026-11-16\n", "utf-8")
    assert any("duplicate key 'today'" in p for p in _problems(workdir))


def test_invalid_yaml_reports_the_line(workdir: Path) -> None:
    path = workdir / "damaged-kettle.yaml"
    path.write_text("id: x\ntitle: [unclosed\n", "utf-8")
    assert any("damaged-kettle.yaml:" in p and "invalid YAML" in p for p in _problems(workdir))


def test_a_reveal_that_would_not_be_recognised_is_an_error(workdir: Path) -> None:
    def change(d):  # type: ignore[no-untyped-def]
        d["customer"]["facts"][0]["say"] = [{"zh": "自己查！", "en": "Look it up!"}]

    _edit(workdir / "damaged-kettle.yaml", change)
    assert any("would not be recognised" in p and "{order_id}" in p for p in _problems(workdir))


def test_unknown_placeholder_is_an_error(workdir: Path) -> None:
    def change(d):  # type: ignore[no-untyped-def]
        d["customer"]["lines"]["press"][0]["zh"] = "{refund_id} 呢？"

    _edit(workdir / "damaged-kettle.yaml", change)
    assert any("placeholder {refund_id}" in p for p in _problems(workdir))


def test_policy_pack_can_extend_another_and_override_params(workdir: Path) -> None:
    (workdir / "policies" / "flagship.yaml").write_text(
        "id: flagship\ntitle: {zh: 旗舰店, en: Flagship}\nextends: default-shop\n"
        "params: {compensation_cap: 50}\n",
        "utf-8",
    )
    _edit(workdir / "damaged-kettle.yaml", lambda d: d.update(policy="flagship"))
    library = ScenarioLibrary.load(workdir)
    resolved = library.get("damaged-kettle")
    assert resolved.policy.params.compensation_cap == 50
    assert resolved.policy.params.no_reason_return_days == 7  # inherited
    tracker = DialogueTracker(resolved, "zh")
    ctx = tracker.context()
    grades = asyncio.run(grade_reply("给您补偿50元红包。", ctx, [get_grader("policy")]))
    assert grades[0].score == 2  # within this shop's limit


def test_pack_extending_a_missing_pack_is_an_error(workdir: Path) -> None:
    (workdir / "policies" / "broken.yaml").write_text(
        "id: broken\ntitle: {zh: 坏, en: Broken}\nextends: defualt-shop\n", "utf-8"
    )
    assert any(
        "unknown pack 'defualt-shop'" in p and "default-shop" in p for p in _problems(workdir)
    )


def test_scenario_file_outside_the_library_loads_with_library_policies(
    tmp_path: Path, library
) -> None:
    outside = tmp_path / "my-case.yaml"
    shutil.copy(SCENARIOS / "damaged-kettle.yaml", outside)
    _edit(outside, lambda d: d.update(id="my-case"))
    assert library.get(str(outside)).id == "my-case"
    with pytest.raises(ContentError):
        library.get(str(tmp_path / "missing.yaml"))


def test_lone_brace_is_a_message_not_a_crash(workdir: Path) -> None:
    def change(d):  # type: ignore[no-untyped-def]
        d["customer"]["lines"]["press"][0]["en"] = "Where is it} now?"

    _edit(workdir / "damaged-kettle.yaml", change)
    assert any(
        "unbalanced brace" in p and "customer.lines.press.0.en" in p for p in _problems(workdir)
    )


def test_bad_regular_expression_in_a_pack_is_caught(workdir: Path) -> None:
    (workdir / "policies" / "shop.yaml").write_text(
        "id: shop\ntitle: {zh: 店, en: Shop}\nextends: default-shop\nclauses:\n"
        "  - id: SHOP-X\n    title: {zh: 规则, en: Rule}\n    text: {zh: 规则, en: Rule}\n"
        "    severity: minor\n    checks:\n"
        "      - {kind: forbidden_phrases, phrases: {zh: ['re:(unclosed'], en: []}}\n",
        "utf-8",
    )
    assert any("bad regular expression" in p and "shop.yaml" in p for p in _problems(workdir))


def test_duplicate_pack_ids_are_errors(workdir: Path) -> None:
    shutil.copy(workdir / "policies" / "default-shop.yaml", workdir / "policies" / "zz-copy.yaml")
    assert any("pack id 'default-shop' is also used" in p for p in _problems(workdir))


def test_placeholders_in_curveballs_and_exemplars_are_checked(workdir: Path) -> None:
    def change(d):  # type: ignore[no-untyped-def]
        d["customer"]["agenda"][0]["say"]["zh"] = "{coupon}呢？"
        d["answer_key"]["exemplars"]["resolve"]["en"] = "Your {tracking} is here."

    _edit(workdir / "damaged-kettle.yaml", change)
    problems = _problems(workdir)
    assert any("customer.agenda.0.say.zh" in p and "{coupon}" in p for p in problems)
    assert any("answer_key.exemplars.resolve.en" in p and "{tracking}" in p for p in problems)


def test_a_required_fact_no_clause_can_check_is_an_error(workdir: Path) -> None:
    def change(d):  # type: ignore[no-untyped-def]
        d["answer_key"]["required_facts"]["reship"] = ["reship_timing"]
        d["clauses"] = ["SHIP-FEE"]  # drops DMG-TRANSIT, the only clause checking reship timing

    _edit(workdir / "damaged-kettle.yaml", change)
    assert any("'reship_timing' can never be credited" in p for p in _problems(workdir))


def test_validate_a_pack_file_by_path(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from bot.cli import cli

    pack = tmp_path / "flagship.yaml"
    pack.write_text("id: flagship\ntitle: {zh: 旗舰, en: Flagship}\nextends: default-shop\n"
                    "params: {compensation_cap: 50}\n", "utf-8")  # fmt: skip
    result = CliRunner().invoke(cli, ["scenarios", "validate", str(pack)], obj={})
    assert result.exit_code == 0, result.output
    pack.write_text("id: flagship\ntitle: {zh: 旗舰, en: Flagship}\nextends: nope\n", "utf-8")
    result = CliRunner().invoke(cli, ["scenarios", "validate", str(pack)], obj={})
    assert result.exit_code == 1 and "unknown pack 'nope'" in result.output
