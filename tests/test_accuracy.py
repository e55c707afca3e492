"""Accuracy (0–2, or N/A): order facts and policy terms against the answer key."""

from pathlib import Path

import pytest
import yaml

OPENING = "你们发的水壶到手就是裂的！"


def acc(grading, reply: str, lang: str = "zh", scenario: str = "damaged-kettle", before=()):  # type: ignore[no-untyped-def]
    g = grading(scenario, lang).customer(OPENING)
    for text in before:
        g.customer(text)
    return g.reply(reply)["accuracy"]


def test_no_facts_means_not_applicable(grading) -> None:
    grade = acc(grading, "王女士您好，真的很抱歉，我马上为您处理。")
    assert grade.status == "not_applicable" and grade.score is None


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "全额退款299元，1-3个工作日原路退回您的支付宝。"),
        ("zh", "全额退款两百九十九元，三个工作日内退回您的支付宝。"),
        ("en", "We'll refund the full ¥299 to your Alipay within 1-3 business days."),
    ],
)
def test_correct_refund_facts_score_two(grading, lang: str, reply: str) -> None:
    grade = acc(grading, reply, lang)
    assert grade.score == 2
    assert {"REFUND-CHANNEL", "REFUND-TIMING"} <= set(grade.clause_ids)


@pytest.mark.parametrize(
    ("reply", "code", "expected"),
    [
        ("退款199元给您。", "accuracy.wrong.refund_amount", "299"),
        ("退款会退到您的微信。", "accuracy.wrong.refund_channel", "支付宝"),
        ("退款马上到账。", "accuracy.wrong.refund_timing", "1–3"),
        ("退款7个工作日到账。", "accuracy.wrong.refund_timing", "1–3"),
        ("您的订单号是JD2026111199999。", "accuracy.wrong.order_id", "JD2026111100123"),
        ("您的包裹是中通送的。", "accuracy.wrong.courier", "顺丰"),
        ("您是11月13日签收的。", "accuracy.wrong.signed_on", "11月14日"),
        ("寄回的运费由您承担。", "accuracy.wrong.shipping_payer", "商家承担"),
        ("我们48小时内不支持退货。", "accuracy.wrong.return_eligibility", "可以"),
    ],
)
def test_each_wrong_fact_costs_both_points_and_names_the_right_one(
    grading, reply, code, expected
) -> None:
    grade = acc(grading, reply)
    assert grade.score == 0
    deduction = next(d for d in grade.deductions if d.code == code)
    assert expected in deduction.reason["zh"]
    assert deduction.quote  # the words that were wrong


def test_a_made_up_condition_is_one_mistake_with_no_empty_right_answer(grading) -> None:
    grade = acc(grading, "破损补发有个前提：原包装和泡沫一样都不能少，缺了就没法补发。")
    assert grade.score == 0
    [deduction] = grade.deductions  # two patterns read the same words: one mistake
    assert deduction.code == "accuracy.wrong.condition"
    assert "「」" not in deduction.reason["zh"] and "“”" not in deduction.reason["en"]
    assert "没有依据" in deduction.reason["zh"] and "no basis" in deduction.reason["en"]


def test_an_amount_with_no_basis_costs_one(grading) -> None:
    grade = acc(grading, "给您一个88元的方案。")
    assert grade.score == 1
    assert grade.deductions[0].code == "accuracy.unsupported.amount"


def test_a_solution_that_does_not_fix_the_problem_costs_one(grading) -> None:
    grade = acc(grading, "我们可以免费帮您维修水壶。")
    assert grade.score == 1
    assert grade.deductions[0].code == "accuracy.unfit.resolution"


def test_numbers_inside_a_negated_clause_are_not_claims(grading) -> None:
    grade = acc(grading, "我没办法保证明天送到，48小时内补发。")
    assert grade.score == 2


def test_refusing_another_channel_names_the_right_one_correctly(grading) -> None:
    grade = acc(grading, "抱歉，退款没办法改退到微信，只能原路退回您的支付宝。")
    assert grade.score == 2
    en = acc(grading, "Sorry, we can't refund to WeChat; it goes back to your Alipay.", "en")
    assert en.score == 2


def test_asking_about_a_refund_is_not_refusing_or_offering_it(grading) -> None:
    g = grading().customer(OPENING)
    findings_reply = "我马上为您查询一下能不能换货。"
    grade = g.reply(findings_reply)["accuracy"]
    assert grade.status == "not_applicable"


def test_partial_refund_amount_is_checked_against_the_answer_key(grading) -> None:
    grade = acc(grading, "好的，整套329元全额退款给您。", scenario="missing-item-skincare")
    assert grade.score == 0
    assert "139" in grade.deductions[0].reason["zh"]


@pytest.mark.parametrize(
    ("lang", "reply", "wrong"),
    [
        ("zh", "包裹比承诺时间晚了2天，还不能补偿。", True),
        ("en", "It's only 2 days late, so no compensation yet.", True),
        ("en", "Compensation only applies once a parcel is 7 days past the promised date.", True),
        ("zh", "已经晚了4天了，真的抱歉，我马上催圆通。", False),
        ("en", "It's more than 3 days late, so I've added a ¥20 coupon for you.", False),
        ("en", "Ordering a week later would have been tight too, sorry.", False),
    ],
)
def test_how_late_the_parcel_is_is_checked_against_the_promised_date(
    grading, lang: str, reply: str, wrong: bool
) -> None:
    grade = acc(grading, reply, lang, "delivery-delay-gift")
    codes = [d.code for d in grade.deductions]
    assert ("accuracy.wrong.lateness" in codes) is wrong
    if wrong:
        assert (
            "4"
            in next(d for d in grade.deductions if d.code == "accuracy.wrong.lateness").reason["en"]
        )


@pytest.mark.parametrize(
    "case",
    yaml.safe_load((Path(__file__).parent / "data" / "paraphrases.yaml").read_text("utf-8"))[
        "credited"
    ],
    ids=lambda case: f"{case['lang']}-{case['reply'][:24]}",
)
def test_correct_statements_in_many_wordings_lose_nothing(grading, case) -> None:
    grade = acc(grading, case["reply"], case["lang"], case["scenario"])
    assert grade.deductions == () and grade.score in (2, None)
