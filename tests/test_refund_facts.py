"""Facts a refund or return case needs (issue 19), read in the trainee's words in both languages.

A refund reference, the day the warehouse received the return, the approval's time of day,
UnionPay as a payment channel, and an escalation ticket with its team and callback time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from bot.cli import cli
from bot.content import ScenarioLibrary
from bot.scenario import ResolvedScenario
from graders.findings import find
from tests.conftest import Grading

ROOT = Path(__file__).resolve().parent.parent
BLENDER = ROOT / "scenarios" / "refund-dispute-blender.yaml"
REFERENCE = "RF20261118143000021"
ASKS = {
    "zh": "钱呢？退款到底到哪一步了？",
    "en": "Where's my money? What's happening with my refund?",
}


def _case(folder: Path, library: ScenarioLibrary, **order: Any) -> ResolvedScenario:
    data = yaml.safe_load(BLENDER.read_text(encoding="utf-8"))
    data["id"] = "draft-refund"
    data["order"].update(
        {
            "return_received_on": "2026-11-16 10:20",
            "refund_approved_on": "2026-11-18 14:30",
            "refund_reference": REFERENCE,
            **order,
        }
    )
    data["clauses"].append("TICKET-ESCALATE")
    data["answer_key"]["ticket"] = "finance"
    data["answer_key"]["required_facts"]["escalate"] = ["refund_timing", "callback_time"]
    path = folder / "draft-refund.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), "utf-8")
    return library.get(str(path))


@pytest.fixture
def case(tmp_path: Path, library: ScenarioLibrary) -> ResolvedScenario:
    return _case(tmp_path, library)


def _claims(scenario: ResolvedScenario, lang: str, reply: str) -> list[tuple[str, str]]:
    chat = Grading(scenario, lang).customer(ASKS[lang])
    findings = find(reply, scenario, chat.tracker.context().state)
    return [(c.fact, c.verdict) for c in findings.claims if c.fact != "resolution"]


def _accuracy_codes(scenario: ResolvedScenario, lang: str, reply: str) -> list[str]:
    grade = Grading(scenario, lang).customer(ASKS[lang]).reply(reply)["accuracy"]
    return [d.code for d in grade.deductions]


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", f"您的退款单号是{REFERENCE}，可以在退款详情里查到。"),
        ("zh", "退款单号：20261118143000021，您可以凭这个查询。"),
        ("en", f"Your refund reference is {REFERENCE}; you can look it up in the refund details."),
        ("en", "The refund reference number is rf 20261118143000021."),
    ],
)
def test_the_right_refund_reference_is_a_correct_fact(
    case: ResolvedScenario, lang: str, reply: str
) -> None:
    assert _claims(case, lang, reply) == [("refund_reference", "correct")]
    assert _accuracy_codes(case, lang, reply) == []


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "您的退款单号是RF20261118143000012，可以在退款详情里查到。"),
        ("en", "Your refund reference is RF20261118143000012."),
    ],
)
def test_a_wrong_refund_reference_is_a_wrong_reference_not_a_wrong_order_number(
    case: ResolvedScenario, lang: str, reply: str
) -> None:
    assert _claims(case, lang, reply) == [("refund_reference", "wrong")]
    assert _accuracy_codes(case, lang, reply) == ["accuracy.wrong.refund_reference"]


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", f"订单JD2026110503318的退款单号是{REFERENCE}。"),
        ("en", f"Order JD2026110503318 has the refund reference {REFERENCE}."),
    ],
)
def test_an_order_number_and_a_reference_in_one_reply_are_each_checked_as_what_they_are(
    case: ResolvedScenario, lang: str, reply: str
) -> None:
    assert sorted(_claims(case, lang, reply)) == [
        ("order_id", "correct"),
        ("refund_reference", "correct"),
    ]


def test_a_reference_where_the_case_has_none_is_unsupported(
    tmp_path: Path, library: ScenarioLibrary
) -> None:
    scenario = _case(tmp_path, library, refund_reference=None)
    assert _claims(scenario, "zh", f"您的退款单号是{REFERENCE}。") == [
        ("refund_reference", "unsupported")
    ]


@pytest.mark.parametrize(
    ("lang", "right", "wrong"),
    [
        ("zh", "仓库11月16日已经收到您寄回的料理机了。", "仓库11月15日已经收到您寄回的料理机了。"),
        (
            "en",
            "Our warehouse received your return on Nov 16.",
            "Our warehouse received your return on Nov 15.",
        ),
    ],
)
def test_the_warehouse_received_date_is_checked_against_the_case_not_the_sign_for_date(
    case: ResolvedScenario, lang: str, right: str, wrong: str
) -> None:
    assert _claims(case, lang, right) == [("return_received_on", "correct")]
    assert _claims(case, lang, wrong) == [("return_received_on", "wrong")]
    assert _accuracy_codes(case, lang, wrong) == ["accuracy.wrong.return_received_on"]


@pytest.mark.parametrize(
    ("lang", "right", "wrong"),
    [
        ("zh", "您的退款11月18日14:30审核通过了。", "您的退款11月18日10:00审核通过了。"),
        ("zh", "您的退款11月18日下午2点半审核通过了。", "您的退款11月18日上午9点审核通过了。"),
        (
            "en",
            "Your refund was approved on Nov 18 at 2:30 pm.",
            "Your refund was approved on Nov 18 at 10:00.",
        ),
    ],
)
def test_an_approval_time_of_day_is_checked_when_the_case_has_one(
    case: ResolvedScenario, lang: str, right: str, wrong: str
) -> None:
    assert _claims(case, lang, right) == [("refund_approved_on", "correct")]
    assert _claims(case, lang, wrong) == [("refund_approved_on", "wrong")]


@pytest.mark.parametrize(
    ("lang", "right", "wrong"),
    [
        (
            "zh",
            "这笔退款会原路退回您的云闪付，3–7个工作日到账。",
            "这笔退款会退回您的支付宝，3–7个工作日到账。",
        ),
        (
            "en",
            "The refund goes back to your UnionPay account, the original payment method, "
            "within 3–7 business days.",
            "The refund goes back to your Alipay within 3–7 business days.",
        ),
    ],
)
def test_unionpay_is_a_payment_channel_with_its_own_refund_time(
    tmp_path: Path, library: ScenarioLibrary, lang: str, right: str, wrong: str
) -> None:
    scenario = _case(tmp_path, library, payment="unionpay")
    assert scenario.policy.params.refund_days.for_channel("unionpay") == (3, 7)
    assert set(_claims(scenario, lang, right)) == {
        ("refund_channel", "correct"),
        ("refund_timing", "correct"),
    }
    assert ("refund_channel", "wrong") in _claims(scenario, lang, wrong)


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "我已经为您提交了财务加急工单，24小时内会有专员给您回电。"),
        ("zh", "已经给您提交财务工单了，专员会在1天内联系您。"),
        (
            "en",
            "I've opened an urgent ticket with our finance team; a specialist will call "
            "you back within 24 hours.",
        ),
    ],
)
def test_a_ticket_with_the_policy_callback_time_is_correct_and_no_refund_time(
    case: ResolvedScenario, lang: str, reply: str
) -> None:
    assert sorted(_claims(case, lang, reply)) == [
        ("callback_time", "correct"),
        ("ticket_team", "correct"),
    ]
    assert _accuracy_codes(case, lang, reply) == []


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "我已经为您提交了财务加急工单，2小时内会有专员给您回电。"),
        ("en", "I've opened a ticket with finance and they'll call you back within 2 hours."),
    ],
)
def test_a_callback_faster_than_the_policy_is_wrong(
    case: ResolvedScenario, lang: str, reply: str
) -> None:
    assert ("callback_time", "wrong") in _claims(case, lang, reply)
    assert "accuracy.wrong.callback_time" in _accuracy_codes(case, lang, reply)


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "我给您提交了物流工单，24小时内会有专员回电。"),
        ("en", "I've raised a logistics ticket; someone will call you back within 24 hours."),
    ],
)
def test_a_ticket_to_the_wrong_team_is_a_wrong_fact(
    case: ResolvedScenario, lang: str, reply: str
) -> None:
    assert ("ticket_team", "wrong") in _claims(case, lang, reply)


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "这个我这边没法提交工单，您过几天再来问吧。"),
        ("en", "I can't open a ticket for this. Come back in a few days and we'll see."),
    ],
)
def test_refusing_or_putting_off_the_ticket_breaks_the_ticket_clause(
    case: ResolvedScenario, lang: str, reply: str
) -> None:
    grade = Grading(case, lang).customer(ASKS[lang]).reply(reply)["policy"]
    assert "TICKET-ESCALATE" in grade.clause_ids


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "退款卡在银行了，我们也没法提交工单催，您过几天再来问吧。"),
        ("en", "I can't open a ticket for this. Come back in a few days."),
    ],
)
def test_the_ticket_clause_applies_only_where_a_scenario_lists_it(
    library: ScenarioLibrary, lang: str, reply: str
) -> None:
    grade = Grading(library.get("refund-dispute-blender"), lang).customer(ASKS[lang]).reply(reply)
    assert "TICKET-ESCALATE" not in grade["policy"].clause_ids


def test_a_case_that_checks_a_ticket_must_name_its_team(
    tmp_path: Path, library: ScenarioLibrary
) -> None:
    data = yaml.safe_load(BLENDER.read_text(encoding="utf-8"))
    data["id"] = "no-team"
    data["clauses"].append("TICKET-ESCALATE")
    path = tmp_path / "no-team.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), "utf-8")
    problems = [str(p) for p in library.check_files([path])[0]]
    assert any("answer_key has no ticket" in p for p in problems), problems


@pytest.mark.parametrize(
    ("lang", "labels"),
    [("zh", ("仓库收到退货", "退款审核通过", "退款单号")),
     ("en", ("return received", "refund approved", "refund reference"))],
)  # fmt: skip
def test_the_order_view_shows_the_refund_facts(
    case: ResolvedScenario, lang: str, labels: tuple[str, ...]
) -> None:
    db = case.source.parent / "t.db"
    args = ["--db", str(db), "play", str(case.source), "--difficulty", "easy", "--lang", lang]
    result = CliRunner().invoke(cli, [*args, "--plain"], input="/order\n/end\n", obj={})
    assert result.exit_code == 0, result.output
    for shown in (*labels, REFERENCE, "2026-11-16 10:20:00", "2026-11-18 14:30:00"):
        assert shown in result.output, shown


def test_the_refund_days_placeholder_follows_the_payment_channel_and_overrides(
    tmp_path: Path, library: ScenarioLibrary
) -> None:
    assert _case(tmp_path, library).render("{refund_days}", "zh") == "3–7"
    assert _case(tmp_path, library, payment="huabei").render("{refund_days}", "en") == "1–3"
    data = yaml.safe_load(BLENDER.read_text(encoding="utf-8"))
    data["id"] = "fast-bank"
    data["params"] = {"refund_days": {"bank_card": [1, 5]}}
    path = tmp_path / "fast-bank.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), "utf-8")
    assert library.get(str(path)).render("{refund_days}", "zh") == "1–5"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"return_received_on": "2026-11-05"}, "return_received_on (2026-11-05) is before"),
        ({"refund_reference": "2026111800123"}, "refund_reference"),
    ],
)
def test_refund_facts_that_cannot_be_true_are_errors(
    tmp_path: Path, library: ScenarioLibrary, change: dict[str, str], message: str
) -> None:
    data = yaml.safe_load(BLENDER.read_text(encoding="utf-8"))
    data["id"] = "broken"
    data["order"].update(change)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), "utf-8")
    problems = [str(p) for p in library.check_files([path])[0]]
    assert len(problems) == 1 and message in problems[0], problems


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "这笔退款会原路退回您云闪付绑定的银行卡，3–7个工作日到账。"),
        ("en", "The refund goes back to the bank card linked to your UnionPay within 3–7 "
               "business days."),
    ],
)  # fmt: skip
def test_the_card_behind_the_paying_channel_is_no_other_channel(
    tmp_path: Path, library: ScenarioLibrary, lang: str, reply: str
) -> None:
    scenario = _case(tmp_path, library, payment="unionpay")
    claims = _claims(scenario, lang, reply)
    assert ("refund_channel", "wrong") not in claims and ("refund_timing", "correct") in claims


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "您实付的399元已经全额退款了。"),
        ("en", "The full ¥399 you paid has been refunded."),
    ],
)
def test_the_amount_paid_said_to_be_refunded_is_the_refund_amount(
    case: ResolvedScenario, lang: str, reply: str
) -> None:
    assert ("refund_amount", "correct") in _claims(case, lang, reply)


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "仓库是11月16日签收的。"),
        ("en", "The warehouse received it on Nov 16."),
    ],
)
def test_a_date_the_warehouse_signed_for_is_the_return_received_date(
    case: ResolvedScenario, lang: str, reply: str
) -> None:
    assert _claims(case, lang, reply) == [("return_received_on", "correct")]


@pytest.mark.parametrize(
    ("lang", "customer", "reply"),
    [
        (
            "zh",
            "退款单号RF20261118143000012，你查查！",
            f"正确的退款单号是{REFERENCE}，您抄的RF20261118143000012最后一位错了。",
        ),
        (
            "en",
            "My refund reference is RF20261118143000012. Check it!",
            f"The right reference is {REFERENCE}, not RF20261118143000012.",
        ),
    ],
)
def test_correcting_the_customers_reference_states_only_the_right_one(
    case: ResolvedScenario, lang: str, customer: str, reply: str
) -> None:
    chat = Grading(case, lang).customer(customer)
    findings = find(reply, case, chat.tracker.context().state)
    claims = [(c.fact, c.verdict) for c in findings.claims if c.fact != "resolution"]
    assert claims == [("refund_reference", "correct")]


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "运费您先垫付，运费险理赔后会赔付到您的账户。"),
        ("zh", "无理由退货运费由买家承担，不过您这单有运费险，运费由运费险理赔。"),
        (
            "en",
            "You pay the postage first and the freight insurance reimburses it to your account.",
        ),
    ],
)
def test_how_freight_insurance_pays_back_is_no_wrong_payer(
    library: ScenarioLibrary, lang: str, reply: str
) -> None:
    coat = library.get("return-shipping-coat")
    chat = Grading(coat, lang).customer("运费谁出？" if lang == "zh" else "Who pays the postage?")
    claims = [c for c in find(reply, coat, chat.tracker.context().state).claims]
    payer = [c.verdict for c in claims if c.fact == "shipping_payer"]
    assert payer and set(payer) == {"correct"}, claims


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "您的订单编号，也就是售后单号JD2026110503318，我已经查到了。"),
        ("en", "Your order reference is JD2026110503318; I've found it."),
    ],
)
def test_the_order_number_called_a_reference_is_still_the_order_number(
    case: ResolvedScenario, lang: str, reply: str
) -> None:
    assert _claims(case, lang, reply) == [("order_id", "correct")]
