"""Empathy (0–3): acknowledgement, ownership, next step; not sentiment, not keywords."""

import pytest

OPENING = "你们发的水壶到手就是裂的！"


def codes(grade) -> list[str]:  # type: ignore[no-untyped-def]
    return [d.code for d in grade.deductions]


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        (
            "zh",
            "王女士您好，新水壶到手就裂了，换谁都会生气，真的很抱歉。麻烦发一下订单号，我马上为您处理。",
        ),
        ("zh", "王女士您好，新水壺到手就裂了，真的很抱歉，我馬上為您處理。"),  # Traditional
        (
            "en",
            "I'm so sorry your new kettle arrived cracked. I'll sort it out for you right away.",
        ),
        (
            "en",
            "I understand how frustrating a broken kettle is. Let me arrange a replacement for you.",
        ),
    ],
)
def test_acknowledge_own_and_next_step_is_full_marks(grading, lang: str, reply: str) -> None:
    grade = grading(lang=lang).customer(OPENING).reply(reply)["empathy"]
    assert grade.score == 3
    assert grade.evidence  # quotes the acknowledgement


def test_courtesy_without_acknowledging_this_problem_is_one(grading) -> None:
    grade = (
        grading().customer(OPENING).reply("亲，给您带来不便非常抱歉，请问订单号是多少？")["empathy"]
    )
    assert grade.score == 1
    assert codes(grade) == ["empathy.no_acknowledgement"]


def test_acknowledgement_without_ownership_is_two(grading) -> None:
    grade = grading().customer(OPENING).reply("水壶到手就裂了，真的很抱歉。")["empathy"]
    assert grade.score == 2
    assert codes(grade) == ["empathy.no_ownership"]


def test_cold_reply_is_zero(grading) -> None:
    grade = grading().customer(OPENING).reply("订单号发来。")["empathy"]
    assert grade.score == 0
    assert codes(grade) == ["empathy.cold"]


@pytest.mark.parametrize(
    ("lang", "reply", "quoted"),
    [
        ("zh", "非常抱歉，这是快递的问题，您自己联系快递吧。", "这是快递的问题，您自己联系快递吧"),
        ("en", "Sorry, but that's your own fault for not checking.", "that's your own fault"),
    ],
)
def test_blaming_or_deflecting_is_zero_even_with_an_apology(grading, lang, reply, quoted) -> None:
    grade = grading(lang=lang).customer(OPENING).reply(reply)["empathy"]
    assert grade.score == 0
    assert codes(grade) == ["empathy.dismissive"]
    assert quoted in grade.deductions[0].quote


def test_helping_with_the_courier_is_not_deflection(grading) -> None:
    grade = grading().customer(OPENING).reply("水壶裂了真抱歉，我帮您联系快递员催一下。")["empathy"]
    assert grade.score == 3


def test_stuffed_apologies_cap_at_one(grading) -> None:
    grade = (
        grading()
        .customer(OPENING)
        .reply("抱歉抱歉，非常抱歉，真的很抱歉，水壶裂了，我来处理。")["empathy"]
    )
    assert grade.score == 1
    assert "empathy.stuffed" in codes(grade)


def test_a_stock_line_repeated_turn_after_turn_does_not_count(grading) -> None:
    g = grading().customer(OPENING)
    first = g.reply("水壶裂了真的很抱歉，我马上为您处理。")["empathy"]
    second = g.reply("水壶裂了真的很抱歉，我马上为您处理。")["empathy"]
    assert first.score == 3
    assert second.score == 1
    assert codes(second) == ["empathy.repeated"]
    assert "1" in second.reason["en"]  # names the reply it repeats


def test_apology_around_wrong_facts_cannot_earn_full_marks(grading) -> None:
    grade = (
        grading().customer(OPENING).reply("水壶裂了真的很抱歉，我马上为您退款199元。")["empathy"]
    )
    assert grade.score == 2
    assert "empathy.wrong_facts" in codes(grade)


def test_follow_up_that_moves_the_case_on_keeps_full_marks(grading) -> None:
    g = grading().customer(OPENING)
    g.reply("水壶到手就裂了，真的很抱歉，麻烦发一下订单号，我马上为您处理。")
    g.customer("订单号JD2026111100123")
    assert g.reply("好的，感谢您提供，我这就为您安排48小时内补发。")["empathy"].score == 3


def test_follow_up_without_courtesy_loses_a_point(grading) -> None:
    # a bare 您 is not courtesy (docs/labelling.md): the step alone earns 2
    g = grading().customer(OPENING)
    g.reply("水壶到手就裂了，真的很抱歉，麻烦发一下订单号，我马上为您处理。")
    g.customer("订单号JD2026111100123")
    grade = g.reply("好的，我这就为您安排48小时内补发。")["empathy"]
    assert grade.score == 2
    assert "empathy.no_courtesy" in codes(grade)


def test_sentiment_words_alone_do_not_score(grading) -> None:
    # an upbeat but dismissive reply must not get credit for being "positive"
    grade = (
        grading(lang="en")
        .customer("It's cracked!")
        .reply("Great news! Read the manual, deal with it.")["empathy"]
    )
    assert grade.score == 0


@pytest.mark.parametrize(
    "reply",
    [
        "A cracked kettle the day you unpack it, I'd be fuming too. I'll set up the replacement now.",
        "I get why this feels unfair, Ms. Wang. I'm submitting the replacement now.",
        "You're right, you shouldn't have to chase anyone. I'm logging it with SF myself now.",
        "I know a coupon is not what you asked for. I'll arrange the new kettle today.",
    ],
)
def test_english_acknowledgement_without_an_apology_word_counts(grading, reply: str) -> None:
    grade = grading(lang="en").customer("My new kettle arrived cracked!").reply(reply)["empathy"]
    assert grade.score == 3, grade.reason["en"]


@pytest.mark.parametrize(
    "reply",
    [
        "Checking now.",
        "Intercept requested.",
        "Replacement's booked.",
        "Photo of the crack please, looking into it now.",
        "Done, I've changed the pickup time to Saturday.",
    ],
)
def test_a_clipped_status_of_the_agents_own_work_is_a_next_step(grading, reply: str) -> None:
    grade = grading(lang="en").customer("My new kettle arrived cracked!").reply(reply)["empathy"]
    assert grade.score == 1 and "empathy.no_acknowledgement" in codes(grade)


def test_a_status_nobody_acts_on_is_not_a_next_step(grading) -> None:
    reply = "The refund has been approved, please be patient."
    grade = grading(lang="en").customer("My new kettle arrived cracked!").reply(reply)["empathy"]
    assert grade.score == 0


@pytest.mark.parametrize("reply", ["We owe you nothing beyond the policy.", "Noted."])
def test_a_refusal_or_a_bare_noted_is_no_acknowledgement_or_next_step(grading, reply: str) -> None:
    grade = grading(lang="en").customer("My new kettle arrived cracked!").reply(reply)["empathy"]
    assert grade.score == 0


@pytest.mark.parametrize(
    ("scenario", "lang", "opening", "reply"),
    [
        (  # a question about the problem names it; the photo request is another sentence
            "damaged-kettle",
            "zh",
            OPENING,
            "王女士，壶是一拆开就裂了吗？麻烦拍张照片给我，我好给您登记处理。",
        ),
        (
            "refund-dispute-blender",
            "en",
            "Where is my refund?",
            "Sorry this has dragged on, Mr. Chen. I'll log an urgent trace with finance now.",
        ),
    ],
)
def test_naming_the_problem_in_other_words_is_an_acknowledgement(
    grading, scenario: str, lang: str, opening: str, reply: str
) -> None:
    grade = grading(scenario, lang).customer(opening).reply(reply)["empathy"]
    assert grade.score == 3, grade.reason["en"]


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("稍等，我核对下订单。", 2),  # after an earlier acknowledgement: a step, no courtesy
        ("好的，麻烦稍等，我去跟仓库确认一下。", 3),
        ("出库记录正在为您核实，核实完马上回复您。", 2),
        ("我核对了，订单没问题。", 0),  # done, not a next step
    ],
)
def test_a_terse_step_of_the_agents_own_after_an_acknowledgement(
    grading, reply: str, score: int
) -> None:
    g = grading().customer(OPENING)
    g.reply("水壶到手就裂了，换谁都会生气，真的很抱歉。麻烦发一下订单号，我马上为您处理。")
    g.customer("订单号JD2026111100123")
    grade = g.reply(reply)["empathy"]
    assert grade.score == score, grade.reason["en"]


@pytest.mark.parametrize(
    ("worry", "score"),
    [
        ("退货的运费是不是得我自己先垫？", 3),  # the reply lifts the worry they raised
        ("订单号JD2026111100123", 1),  # nobody asked: the same words acknowledge nothing
    ],
)
def test_lifting_the_worry_the_customer_raised_is_an_acknowledgement(
    grading, worry: str, score: int
) -> None:
    g = grading().customer(OPENING)
    g.reply("您好，麻烦发一下订单号和照片。")
    g.customer(worry)
    grade = g.reply("运费不用您垫，麻烦您拍下裂缝，我马上安排快递上门取件。")["empathy"]
    assert grade.score == score, grade.reason["en"]


@pytest.mark.parametrize(
    ("lang", "acknowledged", "reply", "score"),
    [
        ("zh", True, "48小时内发出，单号出来发您。", 2),  # the step and its time, no subject
        ("zh", False, "48小时内发出，单号出来发您。", 0),  # without a subject, only after one
        ("en", True, "Ships within 48h, tracking no. goes here once it's out.", 2),
        ("en", True, "I get how stressful this is with the guests tomorrow.", 0),  # no step
        ("zh", True, "退不了，今天也一样。", 0),  # what cannot be done is no step
    ],
)
def test_the_step_and_its_time_answer_the_customer_after_an_acknowledgement(
    grading, lang: str, acknowledged: bool, reply: str, score: int
) -> None:
    opening = OPENING if lang == "zh" else "The kettle you sent arrived CRACKED!"
    g = grading(lang=lang).customer(opening)
    g.reply(
        ("水壶到手就裂了，真的很抱歉。" if acknowledged else "您好。")
        if lang == "zh"
        else ("A cracked kettle on day one, I'm so sorry." if acknowledged else "Hello.")
    )
    g.customer("补发吧，多久能发？" if lang == "zh" else "Replacement. When does it ship?")
    grade = g.reply(reply)["empathy"]
    assert grade.score == score, grade.reason["en"]


@pytest.mark.parametrize(
    ("lang", "worry", "reply", "score"),
    [
        ("en", "Did I mess something up?", "No, that isn't anything you did wrong.", 2),
        ("en", "Order number JD2026110503318.", "No, that isn't anything you did wrong.", 0),
        ("zh", "是不是我退货的时候哪里弄错了？", "不是您的问题，退货按时到了，现在在银行处理。", 2),
    ],
)
def test_lifting_a_fear_of_their_own_fault_is_an_acknowledgement(
    grading, lang: str, worry: str, reply: str, score: int
) -> None:
    g = grading("refund-dispute-blender", lang).customer(worry)
    grade = g.reply(reply)["empathy"]
    assert grade.score == score, grade.reason["en"]


@pytest.mark.parametrize(
    ("lang", "reply"),
    [
        ("zh", "理解您想尽快用上新水壶，我现在就给您安排补发。"),
        ("en", "I get wanting this settled before the weekend. I'll arrange the replacement now."),
        ("en", "You asked me to skip the forms, fair enough. I'll file the claim myself now."),
        (
            "en",
            "A crack on day one, I'd be checking every inch of the box too. I'll arrange the new one now.",
        ),
    ],
)
def test_naming_what_the_customer_wants_is_an_acknowledgement(
    grading, lang: str, reply: str
) -> None:
    grade = grading(lang=lang).customer(OPENING).reply(reply)["empathy"]
    assert grade.score == 3, grade.reason["en"]
