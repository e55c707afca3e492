"""Grader gaps the season's scenario writers met (issue 19), each in both languages.

Written from their reports before the graders were changed, and frozen: tune on
scenarios/labels/dev.jsonl.
"""

from __future__ import annotations

import pytest

from bot.content import ScenarioLibrary
from graders.findings import find
from tests.conftest import Grading

VACUUM = {
    "zh": "三天前说好给我回电话，人呢？",
    "en": "You promised me a call three days ago. Where is it?",
}
PARCEL = {
    "zh": "物流六天没动了，我的耳机呢？",
    "en": "Tracking hasn't moved in six days. Where are my headphones?",
}


def _findings(library: ScenarioLibrary, scenario: str, lang: str, customer: str, reply: str):  # type: ignore[no-untyped-def]
    case = library.get(scenario)
    state = Grading(case, lang).customer(customer).tracker.context().state
    return find(reply, case, state)


def _wrong(findings) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(c.fact, c.stated) for c in findings.claims if c.verdict == "wrong"]


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "您不用再说一遍了，记录我都看到了，这次我负责跟到底。"),
        ("zh", "不必再说一遍，之前的情况我都清楚。"),
        ("en", "You don't need to say it all again; I can see the record and I'll see it through."),
    ],
)
def test_sparing_the_customer_a_repeat_is_no_insult(
    library: ScenarioLibrary, lang: str, reply: str
) -> None:
    found = _findings(library, "repeat-caller-vacuum", lang, VACUUM[lang], reply)
    assert not [v for v in found.violations if "CONDUCT-NO-INSULT" in v.clause_ids]


def test_saying_it_once_more_to_the_customer_is_still_condescending(
    library: ScenarioLibrary,
) -> None:
    found = _findings(
        library, "repeat-caller-vacuum", "zh", VACUUM["zh"], "我再说一遍，规定就是这样。"
    )
    assert [v for v in found.violations if "CONDUCT-NO-INSULT" in v.clause_ids]


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "现在还在签收后15天内，您可以选：一是换一台新的扫地机；二是退货退款。"),
        ("zh", "您的扫地机还在签收后15天内，属于质量问题，可以换新也可以退货退款。"),
        ("en", "You're still within 15 days of delivery, so you can choose a new one or a "
               "return with a full refund."),
    ],
)  # fmt: skip
def test_the_quality_window_is_read_as_the_quality_window(
    library: ScenarioLibrary, lang: str, reply: str
) -> None:
    found = _findings(library, "repeat-caller-vacuum", lang, VACUUM[lang], reply)
    assert _wrong(found) == []


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "1小时内回电我没法向您保证，物流专员会在24小时内给您回电。"),
        ("en", "A callback within 1 hour isn't something I can promise; our logistics specialist "
               "will call you back within 24 hours."),
    ],
)  # fmt: skip
def test_a_callback_time_turned_down_is_no_claim(
    library: ScenarioLibrary, lang: str, reply: str
) -> None:
    found = _findings(library, "lost-parcel-headphones", lang, PARCEL[lang], reply)
    callbacks = [c.verdict for c in found.claims if c.fact == "callback_time"]
    assert callbacks == ["correct"]


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "工单已经提交，明天这个时候之前会有专员给您回电。"),
        ("en", "The ticket is in; our logistics specialist will call you back by this time "
               "tomorrow."),
    ],
)  # fmt: skip
def test_a_callback_by_this_time_tomorrow_is_the_24_hours(
    library: ScenarioLibrary, lang: str, reply: str
) -> None:
    found = _findings(library, "lost-parcel-headphones", lang, PARCEL[lang], reply)
    assert [c.verdict for c in found.claims if c.fact == "callback_time"] == ["correct"]


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "耳机在路上丢了，还让您自己去问快递，换谁都会生气，真的很抱歉。"),
        ("en", "Your headphones were lost on the way and you even had to chase the courier "
               "yourself; anyone would be angry. I'm so sorry."),
    ],
)  # fmt: skip
def test_sympathy_for_having_chased_the_courier_is_no_deflection(
    library: ScenarioLibrary, lang: str, reply: str
) -> None:
    found = _findings(library, "lost-parcel-headphones", lang, PARCEL[lang], reply)
    assert not found.violations


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "发票的品名和金额必须跟订单一致，所以没法写成别的，我给您作废重开正确税号的发票。"),
        ("en", "The invoice must match the order's items and amount, so I'll void it and "
               "reissue it with the correct tax number."),
    ],
)  # fmt: skip
def test_in_an_invoice_case_the_invoice_is_no_made_up_condition(
    library: ScenarioLibrary, lang: str, reply: str
) -> None:
    customer = {"zh": "税号开错了！", "en": "The tax number on the invoice is wrong!"}[lang]
    found = _findings(library, "invoice-fix-monitor", lang, customer, reply)
    assert [c for c in found.claims if c.fact == "condition"] == []


def test_outside_an_invoice_case_an_invoice_is_still_a_made_up_condition(
    library: ScenarioLibrary,
) -> None:
    found = _findings(library, "damaged-kettle", "zh", "水壶裂了！", "必须提供发票才能给您退款。")
    assert ("condition", "wrong") in [(c.fact, c.verdict) for c in found.claims]


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "价保不适用于预售定金，到手价还是按约定的3799元。"),
        (
            "en",
            "Price protection doesn't apply to a presale deposit, so the final price stays ¥3,799.",
        ),
    ],
)
def test_a_remedy_the_rule_rules_out_is_not_offered(
    library: ScenarioLibrary, lang: str, reply: str
) -> None:
    customer = {"zh": "降价了，退我差价！", "en": "The price dropped. Refund me the difference!"}[
        lang
    ]
    found = _findings(library, "presale-deposit-tv", lang, customer, reply)
    assert "price_difference" not in found.offers and not found.violations


def test_a_remedy_offered_is_still_offered(library: ScenarioLibrary) -> None:
    found = _findings(
        library, "presale-deposit-tv", "zh", "降价了，退我差价！", "好的，给您退200元差价。"
    )
    assert [v.code for v in found.violations] == ["policy.forbidden_resolution"]
