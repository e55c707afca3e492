"""Numbers in Chinese and Arabic forms: amounts, durations, dates, ids and phone numbers.

Works on normalised text (see :mod:`graders.text`): half-width digits, lower-case ASCII.
``¥299``, ``299元``, ``两百九十九元`` and ``RMB 299`` are all 299; ``1-3个工作日``,
``两三天`` and ``1 to 3 business days`` are ranges in hours.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from graders.prefilter import Gate

_CN_DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}
_CN_BIG = {"万": 10_000, "亿": 100_000_000}
_EN_WORDS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "fifteen": 15,
    "twenty": 20,
    "twenty-four": 24,
    "thirty": 30,
    "forty-eight": 48,
    "seventy-two": 72,
    "a": 1,
    "an": 1,
}

_CN_NUM = "[零〇一二两三四五六七八九十百千万亿]+(?:点[零〇一二三四五六七八九]+)?"
_AR_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?[万千]?"
NUM = f"(?:{_AR_NUM}|{_CN_NUM})"
_EN_NUM = "(?:" + "|".join(sorted((re.escape(w) for w in _EN_WORDS), key=len, reverse=True)) + ")"

_AMOUNT = re.compile(
    rf"(?:¥|rmb|cny)\s*(?P<a>{_AR_NUM})"
    rf"|(?P<b>{NUM})\s*(?:元|块钱|蚊|块(?=红包|券|现金|的红包|的券|钱)|块(?![\u4e00-\u9fff])|圆|\s?rmb\b|\s?yuan\b|\s?cny\b)"
)
_NOT_MONEY = (
    r"(?![\d.]*\s*(?:个|天|小时|件|工作日|号|月|日|%|点|分钟|分|周|星期|年|岁|套|台|瓶|次|遍|倍|"
    r"business|working|days?|hours?|items?|pieces?|%|times|am|pm|stars?|星|京豆|积分|jd beans|beans|points))"
)
_GIVEN_AMOUNT = re.compile(  # money given without a unit: 补您50, 50红包, "transfer you 50"
    r"(?:补|赔|补偿|赔偿|赔付|转|垫|送|退|多给|再给|另给|再加|另加|额外)(?:给)?(?:您|你)?(?P<c>\d+(?:\.\d+)?)"
    + _NOT_MONEY
    + r"|(?P<d>\d+(?:\.\d+)?)\s*(?:的)?(?:红包|无门槛券|优惠券|代金券|券|现金|补偿)"
    + r"|\b(?:send|transfer|pay|give|refund|credit|add|throw in|compensate|put)(?: you)?"
    r"(?: an? extra| another| the extra| extra| over)?\s+(?P<e>\d+(?:\.\d+)?)\b"
    + _NOT_MONEY
    + r"|\bextra (?P<f>\d+(?:\.\d+)?)\b"
    + _NOT_MONEY
    + r"|\b(?P<g>\d+(?:\.\d+)?) ?(?:yuan )?(?:coupon|voucher|red packet|credit|compensation)\b"
    + r"|(?P<h>\d{2,}(?:\.\d+)?)\s*块"
    + r"|(?P<i>\d{2,}(?:\.\d+)?)\s*(?:的)?(?:退款|货款|差价|的事)"
    + r"|(?:退款|差价|货款)\s*(?P<j>\d{2,}(?:\.\d+)?)"
    + _NOT_MONEY
    + r"|\b(?:the|your|of) (?P<k>\d{2,}(?:\.\d+)?)\b(?![ -]?(?:business|working|days?|hours?|items?|%|stars?|times|numbers?|ending|digits))"
)
_RANGE_SEP = r"\s*(?:-|~|到|至|—|–|to)\s*"
_DURATION_ZH = re.compile(
    rf"(?<![第从自])(?P<lo>{NUM})(?:{_RANGE_SEP}(?P<hi>{NUM}))?\s*个?\s*"
    r"(?P<unit>工作日|自然日|天|日(?!期|起|开始|那天|当天|零点|凌晨|上午|下午|晚)|小时|钟头|(?<=个)钟|分钟|周|星期|个月)"  # 48个钟: hours; 11日起 is a date
)
_DURATION_EN = re.compile(
    rf"\b(?P<lo>\d+(?:\.\d+)?|{_EN_NUM})(?:{_RANGE_SEP}(?P<hi>\d+(?:\.\d+)?|{_EN_NUM}))?(?:\s*|-)"
    r"(?P<unit>business days?|working days?|days?|hours?|hrs?|h|weeks?|minutes?|mins?)\b"
)
_SHORT_SPAN = re.compile(
    r"半个?(?:小时|钟头|钟)|\bhalf an? hour\b|(?<=within )the (?:next )?hour\b|(?<=in )the next hour\b"
)
_UNIT_HOURS = {
    "工作日": 24,
    "自然日": 24,
    "天": 24,
    "日": 24,
    "小时": 1,
    "钟头": 1,
    "钟": 1,
    "分钟": 1 / 60,
    "周": 168,
    "星期": 168,
    "个月": 720,
    "business day": 24,
    "working day": 24,
    "day": 24,
    "hour": 1,
    "hr": 1,
    "h": 1,
    "week": 168,
    "minute": 1 / 60,
    "min": 1 / 60,
}
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    )
}
_DATE_ZH = re.compile(rf"(?:(?P<y>\d{{4}})年)?(?P<m>{NUM})月(?P<d>{NUM})[日号]")
_MONTH_RE = r"(?P<mon>jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_DATE_EN = re.compile(
    rf"\b{_MONTH_RE}\s+(?P<d>\d{{1,2}})(?:st|nd|rd|th)?\b"
    rf"|\b(?P<d2>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<mon2>jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\b"
)
_DAY_ZH = re.compile(
    r"(?<![\d月路街道巷弄栋幢层室第.])(?<!今天是)(?<!今天)(?<!今天才)(?P<d>\d{1,2})\s*[号日](?![院楼线门店仓柜口室栋幢])"
)
_DAY_EN = re.compile(
    r"(?<!today's )(?<!today is )(?<!before )(?<!after )"
    r"\b(?:on|by|since|the|from|until|till) (?:the )?(?P<d>\d{1,2})(?:st|nd|rd|th)\b"
    r"(?! (?:business|working|day|floor|of (?:the )?(?:month|week)))"
)
_RELATIVE = re.compile(
    r"大后天|后天|明天|今天|今日|明日|听日|当天|今晚|明早|day after tomorrow|tomorrow|today|tonight|same day|same-day"
    r"|next (?:business|working) day"
)
_RELATIVE_DAYS = {
    "今天": 0,
    "今日": 0,
    "today": 0,
    "明天": 1,
    "明日": 1,
    "听日": 1,  # Cantonese 聽日
    "tomorrow": 1,
    "后天": 2,
    "day after tomorrow": 2,
    "大后天": 3,
    "当天": 0,
    "今晚": 0,
    "明早": 1,
    "tonight": 0,
    "same day": 0,
    "same-day": 0,
    "next business day": 1,
    "next working day": 1,
}
_WEEKDAY_ZH = re.compile(
    r"(?P<next>下下|下个?|这个?|本)?(?:周|星期|礼拜)(?P<d>[一二三四五六日天1-7])"
)
_WEEKDAY_EN = re.compile(
    r"\b(?:(?P<next>next|this|coming) )?(?P<d>monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b"
)
_WEEKDAYS_ZH = {"一": 0, "二": 1, "三": 2, "四": 3, "五": 4, "六": 5, "日": 6, "天": 6}
_WEEKDAYS_EN = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_ID = re.compile(
    r"(?<![a-z0-9])(?:[a-z]{1,4}[ -]?)?\d{3,20}(?:[-\u2010-\u2015]\d{2,20}){0,3}(?![a-z0-9])"
)
_CLOCK_TIME = re.compile(r"(?<![\d.:])(?:[01]?\d|2[0-3])[:：][0-5]\d(?![\d:])")
_ISO_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}")
_PHONE = re.compile(r"(?<!\d)1[3-9]\d(?:[ -]?\d{4}){2}(?!\d)")


_NON_DIGIT = re.compile(r"\D+")


def compact_digits(text: str) -> str:
    """The digits of an id, which is how two spellings of one id are compared."""
    return _NON_DIGIT.sub("", text)


def parse_chinese_int(text: str) -> int | None:
    """Parse a Chinese integer such as 两百九十九, 十五 or 二零二六; None if it is not one."""
    if not text or any(
        c not in _CN_DIGITS and c not in _CN_UNITS and c not in _CN_BIG for c in text
    ):
        return None
    if all(c in _CN_DIGITS for c in text):
        if len(text) == 1:
            return _CN_DIGITS[text]
        return int("".join(str(_CN_DIGITS[c]) for c in text))
    total = section = number = 0
    for char in text:
        if char in _CN_DIGITS:
            number = _CN_DIGITS[char]
        elif char in _CN_UNITS:
            section += (number or 1) * _CN_UNITS[char]
            number = 0
        else:
            total += (section + number) * _CN_BIG[char]
            section = number = 0
    return total + section + number


def parse_number(text: str) -> float | None:
    """Parse an Arabic, Chinese or mixed number (299, 1,299.00, 两百九十九, 1.5万, 九十九点九)."""
    text = text.strip().replace(",", "")
    if not text:
        return None
    multiplier = 1
    if text[-1] in "万千" and text[:-1].replace(".", "", 1).isdigit():
        multiplier = _CN_BIG.get(text[-1]) or _CN_UNITS[text[-1]]
        text = text[:-1]
    try:
        return float(text) * multiplier
    except ValueError:
        pass
    whole, _, fraction = text.partition("点")
    value = parse_chinese_int(whole)
    if value is None:
        return None
    if fraction:
        digits = "".join(str(_CN_DIGITS.get(c, "")) for c in fraction)
        return float(f"{value}.{digits}") if digits else float(value)
    return float(value)


def _parse_range(text: str) -> tuple[float, float] | None:
    """Like :func:`parse_number` but reads 两三 / 三五 / 一两 as a range."""
    if len(text) == 2 and all(c in _CN_DIGITS for c in text):
        lo, hi = _CN_DIGITS[text[0]], _CN_DIGITS[text[1]]
        if 0 < lo < hi:
            return float(lo), float(hi)
    value = parse_number(text) if text not in _EN_WORDS else float(_EN_WORDS[text])
    return None if value is None else (value, value)


@dataclass(frozen=True, slots=True)
class Amount:
    """A money amount in yuan."""

    value: float
    start: int
    end: int
    handed: bool = False
    """Written without a unit after a giving verb (补您50, "send you 50")."""


@dataclass(frozen=True, slots=True)
class Duration:
    """A time span as a range in hours (``lo_hours`` == ``hi_hours`` for a single value)."""

    lo_hours: float
    hi_hours: float
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class DateRef:
    """A calendar date (month, day), a relative day (today = 0, tomorrow = 1) or a weekday."""

    month: int | None
    day: int | None
    relative_days: int | None
    start: int
    end: int
    weekday: int | None = None
    """0 = Monday … 6 = Sunday, for 周三 / "next Friday"."""
    weeks_ahead: int = 0
    """1 for 下周三 / "next Friday"."""

    def days_from(self, today_weekday: int) -> int | None:
        """Days from a day with ``today_weekday`` to this date, when it is relative."""
        if self.relative_days is not None:
            return self.relative_days
        if self.weekday is None:
            return None
        if self.weeks_ahead:  # 下周三: that day of the next calendar week (weeks start Monday)
            return 7 - today_weekday + self.weekday + 7 * (self.weeks_ahead - 1)
        return (self.weekday - today_weekday) % 7


@dataclass(frozen=True, slots=True)
class Token:
    """An id-like or phone-like string."""

    value: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Numbers:
    """All numeric mentions in a text."""

    amounts: tuple[Amount, ...]
    durations: tuple[Duration, ...]
    dates: tuple[DateRef, ...]
    ids: tuple[Token, ...]
    phones: tuple[Token, ...]
    late: tuple[Duration, ...] = ()
    """How late something is (已经晚了4天, "4 days late"): no promise, but a checkable fact."""


def _mask(text: str, spans: list[tuple[int, int]]) -> str:
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


_DIGITISH = re.compile(
    r"[\d零〇一二两三四五六七八九十百千]|今天|今日|明天|明日|听日|后天|周|星期|礼拜|半个?(?:小时|钟)"
)
_EN_NUMBERISH = re.compile(
    rf"\btoday\b|\btomorrow\b|\b(?:{'|'.join(w for w in _EN_WORDS if w not in ('a', 'an'))})\b"
    r"|day\b"
    r"|\ban? (?:day|hour|week|business day|working day)"
    r"|\bthe (?:next )?hour\b"
)
_HAS_CJK = re.compile(r"[\u3400-\u9fff]")
_HAS_LATIN = re.compile(r"[a-z]")


_OVERDUE_WORDS = r"晚了|超了|延误了|延迟了|拖了|超时了?|late by|overdue by"
_OVERDUE_BY = re.compile(rf"(?:{_OVERDUE_WORDS})\s*$")
"""Before a duration: how late the parcel is (已经晚了4天)."""
_LATE_BY = re.compile(rf"(?:{_OVERDUE_WORDS}|等了|多等了?|久等了?|白等了?|耽误了?|waited)\s*$")
"""Before a duration: how late, or how long the customer waited: no promise either way."""
_OVERDUE_AFTER = re.compile(
    r"\s*(?:late|overdue|past (?:the|its|your) (?:promised|delivery|due))\b"
)
_LATE_AFTER = re.compile(r"\s*(?:late|overdue|past (?:the|its|your)|behind|of waiting|了都|都没)")
_FREQUENCY = re.compile(r"\s*(?:\S{0,3}[遍次趟]|\s*(?:times|a time))")


_GATES: dict[re.Pattern[str], Gate] = {}
_DIGIT = re.compile(r"\d")
_DIGIT_RUN = re.compile(r"\d{3}")


_LISTED_DAY = re.compile(r"\d\s*[日号][^。！？\d]{0,8}[、，,]\s*$")


def _matches(pattern: re.Pattern[str], text: str) -> Iterator[re.Match[str]]:
    """``pattern.finditer(text)``, skipped when the text lacks a word the pattern needs."""
    gate = _GATES.get(pattern)
    if gate is None:
        gate = _GATES[pattern] = Gate(pattern)
    return pattern.finditer(text) if gate.open(text) else iter(())


def extract(text: str) -> Numbers:
    """Find amounts, durations, dates, ids and phone numbers in normalised ``text``."""
    cjk = _HAS_CJK.search(text) is not None
    latin = _HAS_LATIN.search(text) is not None
    if not _DIGITISH.search(text) and not (latin and _EN_NUMBERISH.search(text)):
        return Numbers((), (), (), (), ())
    dates: list[DateRef] = []
    for match in _matches(_DATE_ZH, text) if cjk else ():
        month, day = parse_number(match["m"]), parse_number(match["d"])
        if month and day and 1 <= month <= 12 and 1 <= day <= 31:
            dates.append(DateRef(int(month), int(day), None, match.start(), match.end()))
    for match in _matches(_DATE_EN, text) if latin else ():
        mon = (match["mon"] or match["mon2"])[:3]
        day_text = match["d"] or match["d2"]
        if 1 <= int(day_text) <= 31:
            dates.append(DateRef(_MONTHS[mon], int(day_text), None, match.start(), match.end()))
    taken = [(d.start, d.end) for d in dates]
    for pattern in [p for p, on in ((_DAY_ZH, cjk), (_DAY_EN, latin)) if on]:
        for match in _matches(pattern, text):  # 12号签收, "on the 14th": the month is implied
            if 1 <= int(match["d"]) <= 31 and not any(s <= match.start() < e for s, e in taken):
                dates.append(DateRef(None, int(match["d"]), None, match.start(), match.end()))
    for match in _matches(_RELATIVE, text):
        dates.append(DateRef(None, None, _RELATIVE_DAYS[match.group()], match.start(), match.end()))
    for match in _matches(_WEEKDAY_ZH, text) if cjk else ():
        digit = match["d"]
        day = int(digit) - 1 if digit.isdigit() else _WEEKDAYS_ZH[digit]
        ahead = {"下下": 2, "下": 1, "下个": 1}.get(match["next"] or "", 0)
        dates.append(DateRef(None, None, None, match.start(), match.end(), day, ahead))
    for match in _matches(_WEEKDAY_EN, text) if latin else ():
        ahead = 1 if match["next"] == "next" else 0
        day = _WEEKDAYS_EN.index(match["d"])
        dates.append(DateRef(None, None, None, match.start(), match.end(), day, ahead))
    dated_starts = [d.start for d in dates if d.month is not None]
    dates = [  # "Friday, Nov 27", 周五（11月27日）: the calendar date is the claim
        d for d in dates if d.weekday is None or not any(0 <= s - d.end <= 3 for s in dated_starts)
    ]
    long_number = _DIGIT_RUN.search(text) is not None  # ids and phones have 3+ digits
    phones = [
        Token(m.group(), m.start(), m.end()) for m in (_PHONE.finditer(text) if long_number else ())
    ]
    ids = [
        Token(m.group(), m.start(), m.end())
        for m in (_ID.finditer(text) if long_number else ())
        if len(compact_digits(m.group())) >= 8
        and not _PHONE.fullmatch(compact_digits(m.group()))
        and not _PHONE.fullmatch(m.group())
        and not _ISO_DATE.fullmatch(m.group())
    ]
    listed = [  # 11月3日下单、5日发货、6日签收: a day after another date in a list is a date
        (d.start, d.end)
        for d in dates
        if d.month is None and d.day and _LISTED_DAY.search(text, max(0, d.start - 24), d.start)
    ]
    clock_times = [(m.start(), m.end()) for m in _CLOCK_TIME.finditer(text)]  # 14:30: no amount
    masked = _mask(
        text,
        [(d.start, d.end) for d in dates if d.month]
        + listed
        + [(t.start, t.end) for t in ids]
        + clock_times,
    )
    amounts = []
    for match in _matches(_AMOUNT, masked):
        value = parse_number(match["a"] or match["b"])
        if value is not None:
            amounts.append(Amount(value, match.start(), match.end()))
    masked = _mask(masked, [(a.start, a.end) for a in amounts])
    for match in _GIVEN_AMOUNT.finditer(masked) if _DIGIT.search(masked) else ():
        group = next(g for g in "cdefghijk" if match[g] is not None)
        handed = group in "ce"  # a giving verb right before the number
        amounts.append(Amount(float(match[group]), match.start(group), match.end(group), handed))
    amounts.sort(key=lambda a: a.start)
    masked = _mask(masked, [(a.start, a.end) for a in amounts])
    durations = [  # 半小时内, "half an hour", "within the hour"
        Duration(hours, hours, match.start(), match.end())
        for match in _matches(_SHORT_SPAN, masked)
        for hours in [0.5 if match.group().startswith(("半", "half")) else 1.0]
    ]
    masked = _mask(masked, [(d.start, d.end) for d in durations])
    late: list[Duration] = []
    patterns = [p for p, on in ((_DURATION_ZH, cjk), (_DURATION_EN, latin)) if on]
    for pattern in patterns:
        for match in _matches(pattern, masked):
            lo = _parse_range(match["lo"])
            hi = _parse_range(match["hi"]) if match["hi"] else lo
            if lo is None or hi is None or _FREQUENCY.match(masked, match.end()):
                continue  # 一天刷八遍: how often, not how long
            unit = match["unit"].rstrip("s") if match["unit"].isascii() else match["unit"]
            hours = _UNIT_HOURS[unit]
            span = Duration(lo[0] * hours, hi[1] * hours, match.start(), match.end())
            before = masked[max(0, match.start() - 6) : match.start()]
            if _LATE_BY.search(before) or _LATE_AFTER.match(masked, match.end()):
                # 已经晚了4天, "4 days past the promised date": how late, not a promise
                if _OVERDUE_BY.search(before) or _OVERDUE_AFTER.match(masked, match.end()):
                    late.append(span)
                continue
            if masked[max(0, match.start() - 1) : match.start()] == "每":
                continue
            durations.append(span)
    return Numbers(
        tuple(amounts), tuple(durations), tuple(dates), tuple(ids), tuple(phones), tuple(late)
    )
