import pytest

from graders.numbers import extract, parse_chinese_int, parse_number
from graders.text import normalize


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("两百九十九", 299),
        ("十五", 15),
        ("一千零一", 1001),
        ("二零二六", 2026),
        ("三万", 30000),
        ("十", 10),
        ("一百", 100),
    ],
)
def test_chinese_integers(text: str, value: int) -> None:
    assert parse_chinese_int(text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [("299", 299.0), ("1,299.00", 1299.0), ("九十九点九", 99.9), ("1.5万", 15000.0), ("abc", None)],
)
def test_numbers_in_any_form(text: str, value: float | None) -> None:
    assert parse_number(text) == value


def _amounts(text: str) -> list[float]:
    return [a.value for a in extract(normalize(text).text).amounts]


@pytest.mark.parametrize(
    "text",
    [
        "退款¥299",
        "退款￥299.00",
        "退款299元",
        "退款两百九十九元",
        "refund of 299 yuan",
        "RMB 299 back",
        "退您299块钱",
    ],
)
def test_the_same_amount_in_every_form(text: str) -> None:
    assert _amounts(text) == [299.0]


def test_amounts_ignore_measure_words_and_percentages() -> None:
    assert _amounts("一块屏幕裂了，100%负责") == []


def _durations(text: str) -> list[tuple[float, float]]:
    return [(d.lo_hours, d.hi_hours) for d in extract(normalize(text).text).durations]


@pytest.mark.parametrize(
    ("text", "hours"),
    [
        ("1-3个工作日", (24, 72)),
        ("1–3个工作日", (24, 72)),
        ("两三天", (48, 72)),
        ("48小时内", (48, 48)),
        ("七天无理由", (168, 168)),
        ("within 1 to 3 business days", (24, 72)),
        ("within 24 hours", (24, 24)),
        ("two days", (48, 48)),
        ("48个钟内出货", (48, 48)),
        ("钱半小时内到账", (0.5, 0.5)),
        ("in half an hour", (0.5, 0.5)),
        ("back within the hour", (1, 1)),
    ],
)
def test_durations_become_hour_ranges(text: str, hours: tuple[int, int]) -> None:
    assert _durations(text) == [hours]


def test_ordinal_days_and_dates_are_not_durations() -> None:
    assert _durations("第二天就到了，11月18日签收") == []


def test_dates_and_relative_days() -> None:
    found = extract(normalize("11月18日签收，明天送到，Nov 20th").text).dates
    assert [(d.month, d.day, d.relative_days) for d in found] == [
        (11, 18, None),
        (11, 20, None),
        (None, None, 1),
    ]


def test_phones_are_not_order_ids() -> None:
    found = extract(normalize("订单号JD2026111100123，电话13812345678，138****5678").text)
    assert [t.value for t in found.ids] == ["jd2026111100123"]
    assert [t.value for t in found.phones] == ["13812345678"]


@pytest.mark.parametrize(
    ("text", "today", "days"),
    [
        ("下周一", 4, 3),  # said on a Friday: the coming Monday
        ("下周三", 4, 5),
        ("下周一", 0, 7),  # said on a Monday: a week today
        ("周三", 4, 5),
        ("next Friday", 4, 7),
    ],
)
def test_weekdays_count_from_today(text: str, today: int, days: int) -> None:
    (date,) = extract(normalize(text).text).dates
    assert date.days_from(today) == days


@pytest.mark.parametrize(
    ("text", "day"),
    [("我看您是12号签收的", 12), ("it was signed for on the 14th", 14), ("预计20号送达", 20)],
)
def test_a_day_without_its_month_is_a_date(text: str, day: int) -> None:
    assert [(d.month, d.day) for d in extract(normalize(text).text).dates] == [(None, day)]


@pytest.mark.parametrize(
    "text", ["阜通东大街6号院2号楼1703室", "the 7th business day", "today's the 18th", "今天16号"]
)
def test_house_numbers_ordinals_and_today_are_no_day_dates(text: str) -> None:
    assert all(d.day is None for d in extract(normalize(text).text).dates)
