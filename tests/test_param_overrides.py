"""Parameter overrides: a scenario's `params`, partial `refund_days`, and what they change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from bot.cli import cli
from bot.content import ScenarioLibrary
from bot.scenario import PAYMENT_CHANNELS, ResolvedScenario
from tests.conftest import Grading

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PACK = ROOT / "scenarios" / "policies" / "default-shop.yaml"


def _draft(folder: Path, base: str, params: dict[str, Any] | None, **top: Any) -> Path:
    """A copy of a library scenario under a new id, with ``params`` (and other keys) set."""
    data = yaml.safe_load((ROOT / "scenarios" / f"{base}.yaml").read_text(encoding="utf-8"))
    data["id"] = f"draft-{base}"
    if params is not None:
        data["params"] = params
    data.update(top)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{base}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), "utf-8")
    return path


def _validate(*paths: Path) -> Any:
    return CliRunner().invoke(cli, ["scenarios", "validate", *map(str, paths)], obj={})


def _problems(output: str) -> list[str]:
    return [line for line in output.splitlines() if " — " in line]


# --- what an override changes -------------------------------------------------------


def test_overrides_reach_clause_texts_and_customer_lines(
    tmp_path: Path, library: ScenarioLibrary
) -> None:
    pack_case = library.get("damaged-kettle")
    pack_text = pack_case.policy.clause_text("COMP-CAP", "zh")  # filled (and kept) first
    case = library.get(
        str(
            _draft(tmp_path, "damaged-kettle", {"compensation_cap": 10, "ticket_callback_hours": 4})
        )
    )
    assert case.policy.params.compensation_cap == 10
    assert "不超过10元" in case.policy.clause_text("COMP-CAP", "zh")
    assert "up to ¥10 " in case.policy.clause_text("COMP-CAP", "en")
    assert case.render("{callback_hours}", "zh") == "4"
    # the pack and the other scenarios on it keep the pack's values
    assert "不超过20元" in pack_text
    assert pack_case.policy.clause_text("COMP-CAP", "zh") == pack_text
    assert library.packs["default-shop"].params.compensation_cap == 20
    assert pack_case.render("{callback_hours}", "zh") == "24"


def test_a_partial_refund_days_changes_one_channel_and_inherits_the_rest(
    tmp_path: Path, library: ScenarioLibrary
) -> None:
    case = library.get(
        str(_draft(tmp_path, "refund-dispute-blender", {"refund_days": {"bank_card": [1, 7]}}))
    )
    days = case.policy.params.refund_days
    assert days.bank_card == (1, 7)
    pack_days = library.packs["default-shop"].params.refund_days
    assert pack_days.bank_card == (3, 7)
    for channel in PAYMENT_CHANNELS:
        if channel != "bank_card":
            assert days.for_channel(channel) == pack_days.for_channel(channel)
    assert case.policy.template_values()["refund_days_bank_card"] == "1–7"


def test_a_shop_pack_may_change_one_refund_channel(
    tmp_path: Path, library: ScenarioLibrary
) -> None:
    (tmp_path / "quick-bank.yaml").write_text(
        "id: quick-bank\ntitle: {zh: 快退店, en: Quick refunds}\nextends: default-shop\n"
        "params: {refund_days: {bank_card: [1, 7]}, compensation_cap: 10}\n",
        "utf-8",
    )
    case = library.get(str(_draft(tmp_path, "refund-dispute-blender", None, policy="quick-bank")))
    params = case.policy.params
    assert params.refund_days.bank_card == (1, 7) and params.refund_days.alipay == (1, 3)
    assert params.compensation_cap == 10 and params.no_reason_return_days == 7
    assert case.policy.origins["refund_days.bank_card"] == "quick-bank"
    assert case.policy.origins["refund_days.alipay"] == "default-shop"


def test_a_pack_without_extends_must_set_every_refund_channel(tmp_path: Path) -> None:
    data = yaml.safe_load(DEFAULT_PACK.read_text(encoding="utf-8"))
    data.pop("calibration")
    data["id"] = "own-shop"
    data["params"]["refund_days"] = {"alipay": [1, 3], "bank_card": [1, 7]}
    pack = tmp_path / "own-shop.yaml"
    pack.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), "utf-8")
    result = _validate(pack)
    assert result.exit_code == 1
    [line] = _problems(result.output)
    assert "own-shop.yaml" in line and " params: missing parameters refund_days.wechat_pay" in line
    assert "refund_days.alipay" not in line and "refund_days.bank_card" not in line
    assert "set them here or 'extends' a pack that does" in line


# --- bad overrides ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "key", "hint"),
    [
        ({"compensaton_cap": 10}, "params.compensaton_cap", "did you mean 'compensation_cap'?"),
        ({"refund_days": {"bank": [1, 7]}}, "params.refund_days.bank", "did you mean 'bank_card'?"),
        ({"refund_day": {"bank_card": [1, 7]}}, "params.refund_day", "did you mean 'refund_days'?"),
    ],
)
def test_an_unknown_parameter_is_one_clear_line(
    tmp_path: Path, params: dict[str, Any], key: str, hint: str
) -> None:
    result = _validate(_draft(tmp_path, "damaged-kettle", params))
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    [line] = _problems(result.output)
    assert line.startswith(str(tmp_path / "damaged-kettle.yaml") + ":")
    assert f" {key}: unknown key — {hint}" in line


@pytest.mark.parametrize(("days", "shown"), [([7, 1], "[7, 1]"), ([-1, 3], "[-1, 3]")])
def test_a_bad_refund_range_is_rejected(tmp_path: Path, days: list[int], shown: str) -> None:
    result = _validate(
        _draft(tmp_path, "refund-dispute-blender", {"refund_days": {"bank_card": days}})
    )
    assert result.exit_code == 1
    [line] = _problems(result.output)
    assert f" params.refund_days.bank_card: {shown} is not [min, max] business days — " in line
    assert "0 <= min <= max" in line


def test_a_negative_cap_is_rejected(tmp_path: Path) -> None:
    result = _validate(_draft(tmp_path, "damaged-kettle", {"compensation_cap": -5}))
    assert result.exit_code == 1
    [line] = _problems(result.output)
    assert " params.compensation_cap: " in line and "greater than or equal to 0" in line


# --- trainer scenarios show ---------------------------------------------------------


def _show(path: Path, lang: str) -> list[str]:
    result = CliRunner().invoke(cli, ["scenarios", "show", str(path), "--lang", lang], obj={})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    start = lines.index("Params") + 1
    return lines[start : lines.index("", start)]


def test_show_prints_the_effective_params_and_where_each_came_from(tmp_path: Path) -> None:
    case = _draft(
        tmp_path,
        "refund-dispute-blender",
        {"compensation_cap": 10, "refund_days": {"bank_card": [1, 7]}},
    )
    en = _show(case, "en")
    assert "  compensation_cap = 10 (set by this scenario)" in en
    assert "  refund_days.bank_card = [1, 7] (set by this scenario)" in en
    assert "  refund_days.credit_card = [3, 7] (from default-shop)" in en
    assert "  no_reason_return_days = 7 (from default-shop)" in en
    assert len(en) == 17  # nine flat parameters and eight refund channels
    zh = _show(case, "zh")
    assert "  compensation_cap = 10 (本场景设置)" in zh
    assert "  refund_days.alipay = [1, 3] (来自 default-shop)" in zh


def test_show_names_the_shop_pack_that_set_a_param(tmp_path: Path) -> None:
    (tmp_path / "quick-bank.yaml").write_text(
        "id: quick-bank\ntitle: {zh: 快退店, en: Quick refunds}\nextends: default-shop\n"
        "params: {refund_days: {bank_card: [1, 7]}}\n",
        "utf-8",
    )
    en = _show(_draft(tmp_path, "refund-dispute-blender", None, policy="quick-bank"), "en")
    assert "  refund_days.bank_card = [1, 7] (from quick-bank)" in en
    assert "  refund_days.unionpay = [3, 7] (from default-shop)" in en


# --- grading ------------------------------------------------------------------------


def _policy(case: ResolvedScenario, reply: str, lang: str = "zh") -> list[tuple[str, ...]]:
    complaint = "水壶裂了，怎么赔？" if lang == "zh" else "The kettle is cracked. What do I get?"
    grade = Grading(case, lang).customer(complaint).reply(reply)["policy"]
    return [d.clause_ids for d in grade.deductions]


@pytest.mark.parametrize(
    ("reply", "lang"),
    [
        ("实在抱歉，给您一张15元的无门槛优惠券作为补偿。", "zh"),
        ("I'm so sorry. I'll give you a ¥15 coupon as compensation.", "en"),
    ],
)
def test_a_lower_cap_makes_the_same_coupon_a_violation(
    tmp_path: Path, library: ScenarioLibrary, reply: str, lang: str
) -> None:
    pack_case = library.get("damaged-kettle")
    assert _policy(pack_case, reply, lang) == []  # ¥15 is within the pack's ¥20
    capped = library.get(str(_draft(tmp_path, "damaged-kettle", {"compensation_cap": 10})))
    assert _policy(capped, reply, lang) == [("COMP-CAP",)]
    assert _policy(pack_case, reply, lang) == []  # and grading it again is not mixed up


def _timing(case: ResolvedScenario, reply: str) -> tuple[float | None, list[str], list[str]]:
    grades = Grading(case).customer("钱呢？什么时候到账？").reply(reply)
    accuracy = grades["accuracy"]
    reasons = [d.reason["zh"] for d in accuracy.deductions]
    return accuracy.score, reasons, [c for d in grades["policy"].deductions for c in d.clause_ids]


def test_faster_bank_cards_change_the_refund_timing_a_reply_must_state(
    tmp_path: Path, library: ScenarioLibrary
) -> None:
    pack_case = library.get("refund-dispute-blender")
    quick = library.get(
        str(
            _draft(
                tmp_path / "quick", "refund-dispute-blender", {"refund_days": {"bank_card": [1, 7]}}
            )
        )
    )
    two_days = "退款会原路退回您的银行卡，2个工作日到账。"
    score, reasons, broken = _timing(pack_case, two_days)
    assert score == 0 and "正确的是「3–7个工作日」" in reasons[0]
    assert "AUTH-NO-OVERPROMISE" in broken  # faster than the fastest bank card (3 days)
    score, reasons, broken = _timing(quick, two_days)
    assert score == 0 and "正确的是「1–7个工作日」" in reasons[0]
    assert "AUTH-NO-OVERPROMISE" not in broken  # 1–7 days: 2 is possible, only not the answer

    shorter = library.get(
        str(
            _draft(
                tmp_path / "five", "refund-dispute-blender", {"refund_days": {"bank_card": [1, 5]}}
            )
        )
    )
    five, seven = (
        "退款会原路退回您的银行卡，预计5个工作日内到账。",
        "退款会原路退回您的银行卡，预计7个工作日内到账。",
    )
    assert _timing(pack_case, seven)[0] == 2 and _timing(pack_case, five)[0] == 0
    assert _timing(shorter, five)[0] == 2 and _timing(shorter, seven)[0] == 0
