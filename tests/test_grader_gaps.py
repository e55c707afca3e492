"""Grader gaps a newcomer hit in five minutes (issue 18), each in both languages.

Written before the graders were tuned for them and frozen: tune on scenarios/labels/dev.jsonl.
"""

from __future__ import annotations

import pytest

KETTLE = {"zh": "你们发的水壶到手就是裂的！", "en": "The kettle you sent arrived CRACKED!"}
ACKED = {
    "zh": "王女士，水壶到手就裂了真的很抱歉，我这就帮您处理。",
    "en": "I'm so sorry the kettle arrived cracked, Ms. Wang. I'll sort this out for you right away.",
}


def codes(grade) -> list[str]:  # type: ignore[no-untyped-def]
    return [d.code for d in grade.deductions]


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "行行行，给你退299，不用拍照了。"),
        ("zh", "好好好，直接给您退299元，照片就不用发了。"),
        ("en", "Fine, fine, I'll refund you 299, no need for photos."),
    ],
)
def test_a_refund_promised_without_the_photos_breaks_the_damage_clause(
    grading, lang: str, reply: str
) -> None:
    policy = grading(lang=lang).customer(KETTLE[lang]).reply(reply)["policy"]
    assert "DMG-TRANSIT" in policy.clause_ids and policy.score == 0


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "发照片过来，收到后给你退299。"),
        (
            "en",
            "Send me photos of the crack and the box, and once I have them I'll refund the ¥299.",
        ),
    ],
)
def test_a_refund_that_waits_for_the_photos_breaks_nothing(grading, lang: str, reply: str) -> None:
    policy = grading(lang=lang).customer(KETTLE[lang]).reply(reply)["policy"]
    assert policy.score == policy.max_score and not policy.clause_ids


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "好的，麻烦您核对一下收货人姓名和手机号后四位。"),
        (
            "en",
            "Thank you. Please confirm the recipient's name and the last four digits of the phone.",
        ),
    ],
)
def test_an_identity_check_after_an_acknowledgement_is_full_marks(
    grading, lang: str, reply: str
) -> None:
    chat = grading(lang=lang).customer(KETTLE[lang])
    chat.reply(ACKED[lang])
    chat.customer(
        "订单号JD2026111100123，快点。" if lang == "zh" else "Order JD2026111100123. Hurry."
    )
    assert chat.reply(reply)["empathy"].score == 3


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        (
            "zh",
            "水壶到手就裂了，真的很抱歉。为了帮您查询订单，麻烦您核对一下收货人姓名和手机号后四位。",
        ),
        (
            "en",
            "I'm sorry it arrived cracked. To look up your order, please confirm the recipient's "
            "name and the last four digits of the phone.",
        ),
    ],
)
def test_an_acknowledged_identity_check_that_says_what_it_is_for_is_full_marks(
    grading, lang: str, reply: str
) -> None:
    assert grading(lang=lang).customer(KETTLE[lang]).reply(reply)["empathy"].score == 3


@pytest.mark.parametrize(
    ("lang", "asked", "reply"),
    [
        ("zh", "[图片] 钱什么时候能到？", "1-3个工作日就能收到。"),
        ("en", "[photo] Fine. So when do I get the money?", "You'll get it in 1–3 business days."),
        ("en", "[photo] When do I get my money back?", "It will arrive in 1–3 business days."),
    ],
)
def test_a_time_answering_when_the_money_comes_is_refund_timing_every_time(
    grading, lang: str, asked: str, reply: str
) -> None:
    offer = {
        "zh": "王女士真抱歉，麻烦发张照片，收到后我给您退299到支付宝，1-3个工作日到账。",
        "en": "I'm so sorry, Ms. Wang. Send me a photo and I'll refund the ¥299 to your Alipay; "
        "it reaches you in 1–3 business days.",
    }
    chat = grading(lang=lang).customer(KETTLE[lang])
    first = chat.reply(offer[lang])["accuracy"]
    second = chat.customer(asked).reply(reply)["accuracy"]
    assert first.score == first.max_score
    assert second.score == second.max_score, second.reason["en"]
    assert "accuracy.unsupported.eta" not in codes(second)


@pytest.mark.parametrize(
    ("lang", "asked", "reply"),
    [
        ("zh", "[图片] 拍了。退回去运费要我出吗？", "您别担心，退回的运费我们出。"),
        (
            "en",
            "[photo] Here. And do I have to pay to send it back?",
            "Do not worry, we pay the return shipping.",
        ),
    ],
)
def test_lifting_the_worry_the_customer_just_raised_is_not_cold(
    grading, lang: str, asked: str, reply: str
) -> None:
    chat = grading(lang=lang).customer(KETTLE[lang])
    chat.reply(ACKED[lang])
    empathy = chat.customer(asked).reply(reply)["empathy"]
    assert empathy.score >= 2 and "empathy.cold" not in codes(empathy)


@pytest.mark.parametrize(
    ("lang", "reply"),
    [("zh", "您别担心，退回的运费我们承担。"), ("en", "Do not worry, we pay the return shipping.")],
)
def test_reassurance_is_courtesy_not_coldness(grading, lang: str, reply: str) -> None:
    empathy = grading(lang=lang).customer(KETTLE[lang]).reply(reply)["empathy"]
    assert empathy.score == 1 and codes(empathy) == ["empathy.no_acknowledgement"]


@pytest.mark.parametrize(
    ("lang", "reply", "wrong"),
    [
        ("zh", "李女士您好，非常抱歉水壶到手就裂了，麻烦发一下照片，我马上处理。", "李女士"),
        (
            "en",
            "Ms. Li, I'm so sorry the kettle arrived cracked. Could you send a photo so I can sort "
            "it out right away?",
            "Ms. Li",
        ),
        ("zh", "张先生，水壶裂了真的很抱歉，麻烦发一下照片，我马上处理。", "张先生"),
    ],
)
def test_calling_the_customer_by_a_wrong_name_is_a_wrong_fact(
    grading, lang: str, reply: str, wrong: str
) -> None:
    grades = grading(lang=lang).customer(KETTLE[lang]).reply(reply)
    accuracy = grades["accuracy"]
    assert accuracy.score == 0 and "INFO-ACCURATE" in accuracy.clause_ids
    assert any(wrong in e for e in accuracy.evidence)
    assert grades["empathy"].score <= 2  # a wrong fact caps empathy (docs/labelling.md)


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "王女士您好，非常抱歉水壶到手就裂了，麻烦发一下照片，我马上处理。"),
        ("zh", "王芳女士您好，非常抱歉水壶到手就裂了，麻烦发一下照片，我马上处理。"),
        (
            "en",
            "Ms. Wang, I'm so sorry the kettle arrived cracked. Could you send a photo so I can sort it out?",
        ),
        (
            "en",
            "I'm so sorry the kettle arrived cracked, Ms. Li says the same happened to her. Could you send a photo?",
        ),
    ],
)
def test_the_right_name_or_a_name_that_is_not_the_customer_is_no_wrong_fact(
    grading, lang: str, reply: str
) -> None:
    accuracy = grading(lang=lang).customer(KETTLE[lang]).reply(reply)["accuracy"]
    assert accuracy.score is None or accuracy.score == accuracy.max_score


# Look-alikes a review found after the rules above were written: none of them is the gap.


@pytest.mark.parametrize(
    ("scenario", "lang", "asked", "reply"),
    [
        (
            "delivery-delay-gift",
            "zh",
            "礼物到底什么时候到？再不到我就申请退款！",
            "刘女士真抱歉，我查了，明天中午前一定能到。",
        ),
        (
            "delivery-delay-gift",
            "en",
            "When is the present going to arrive? If it doesn't, I'm asking for a refund!",
            "I'm so sorry, Ms. Liu. It will definitely arrive by noon tomorrow.",
        ),
        (
            "wrong-item-hoodie",
            "zh",
            "正确的什么时候能到？不行我就退款了！",
            "赵女士抱歉，正确的黑色M码预计5到7天能到。",
        ),
        (
            "wrong-item-hoodie",
            "en",
            "When will the right one arrive? Otherwise I want a refund!",
            "Sorry, Ms. Zhao. The black M should arrive in 5 to 7 days.",
        ),
    ],
)
def test_a_refund_threat_does_not_turn_a_delivery_time_into_refund_timing(
    grading, scenario: str, lang: str, asked: str, reply: str
) -> None:
    accuracy = grading(scenario, lang).customer(asked).reply(reply)["accuracy"]
    assert not any(c.startswith("accuracy.wrong.refund_timing") for c in codes(accuracy))
    assert "REFUND-TIMING" not in accuracy.clause_ids
    if scenario == "delivery-delay-gift":  # the date still has to match the courier's estimate
        assert "accuracy.wrong.eta" in codes(accuracy), accuracy.reason["en"]


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "谢谢女士，水壶裂了真的很抱歉，麻烦发一下照片，我马上处理。"),
        ("zh", "明白先生，水壶裂了真的很抱歉，麻烦发一下照片，我马上处理。"),
        ("zh", "我们的售后主管，刘先生，会给您回电，麻烦发一下照片。"),
        ("zh", "联系人：张先生，电话稍后发您，麻烦先发一下照片。"),
        (
            "en",
            "Our courier, Mr. Wu, will pick it up tomorrow. Could you send a photo of the crack?",
        ),
        ("zh", "收货人是王女士您本人吗？麻烦发一下照片。"),
        ("zh", "收货人白天在家吗？麻烦发一下照片。"),
        ("zh", "收货人方便接电话吗？麻烦发一下照片。"),
    ],
)
def test_titles_and_names_that_are_not_the_customer_misnamed_are_no_wrong_fact(
    grading, lang: str, reply: str
) -> None:
    accuracy = grading(lang=lang).customer(KETTLE[lang]).reply(reply)["accuracy"]
    assert "accuracy.wrong.customer_name" not in codes(accuracy)


def test_a_recipient_read_back_given_name_first_is_the_right_name(grading) -> None:
    chat = grading("price-protection-airfryer", "en").customer("The price dropped by ¥100!")
    accuracy = chat.reply("Thanks. The order is under Hao Chen, right?")["accuracy"]
    assert "accuracy.wrong.customer_name" not in codes(accuracy)


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "麻烦您耐心等待，收件人会收到短信通知。"),
        ("zh", "请您放心，收货人信息我们都会保密。"),
        ("en", "Please be patient, the recipient's name will show on the tracking page."),
    ],
)
def test_a_request_that_only_mentions_the_recipient_is_no_identity_check(
    grading, lang: str, reply: str
) -> None:
    chat = grading(lang=lang).customer(KETTLE[lang])
    chat.reply(ACKED[lang])
    empathy = chat.customer("然后呢？" if lang == "zh" else "And then?").reply(reply)["empathy"]
    assert empathy.score is not None and empathy.score < 3
