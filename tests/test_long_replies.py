"""Long replies: grading work grows with the reply's length, not its square.

The work is counted (Python calls made while grading), not timed: the count is the same
on any machine, however loaded. Its speed is measured in bench/bench_grading.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from click.testing import CliRunner

from bot.cli import cli
from bot.content import ScenarioLibrary
from bot.transcript import MAX_TURN_CHARS
from graders import DialogueTracker, get_grader, grade_reply
from graders.context import GradingContext
from graders.segment import _block_bounds
from graders.text import analyze

# Lines with what makes grading work: numbers, topics, negations, refusals, quotes.
LINES = {
    "zh": [
        "王女士您好，水壶到手就是裂的，真的很抱歉。麻烦发一下订单号和照片，我马上为您处理。",
        "照片收到了，给您添麻烦了。{n}小时内为您免费补发，或全额退款{amount}元，{a}-{b}个工作日原路退回。",
        "这是快递的问题，您自己联系快递吧，我们也没办法。",
        "理解您着急，我无法保证明天送到，但会马上帮您催件，预计{d}天内送达。",
        "您说的“微信直接转”我做不了，不会让您私下转账或者私聊。",
        "退款{amount}元会在{b}个工作日内退回您的支付宝，再给您补偿{c}元红包。",
    ],
    "en": [
        "I'm so sorry your kettle arrived cracked. Could you send the order number and a photo?",
        "We can send a replacement within {n} hours or refund ¥{amount} within {a}-{b} business days.",
        "I can't guarantee tomorrow, but I'll chase the courier now; it should arrive in {d} days.",
        "You said 'just transfer me on WeChat': I won't pay you privately or off the platform.",
        "Your refund of ¥{amount} goes back to your card, and here's a ¥{c} coupon for the trouble.",
    ],
}


def _reply(lang: str, chars: int) -> str:
    rng = random.Random(3)
    parts: list[str] = []
    while sum(map(len, parts)) < chars:
        line = rng.choice(LINES[lang])
        parts.append(
            line.format(
                n=rng.choice([24, 48, 72]),
                amount=rng.randint(5, 999),
                a=rng.randint(1, 3),
                b=rng.randint(3, 7),
                c=rng.randint(5, 50),
                d=rng.randint(1, 5),
            )
        )
    return (" " if lang == "en" else "").join(parts)[:chars]


def _calls(library: ScenarioLibrary, lang: str, text: str) -> int:
    """Python calls made while grading ``text`` as a reply to the opening (caches emptied)."""
    resolved = library.get("damaged-kettle")
    tracker = DialogueTracker(resolved, lang)
    opening = resolved.lines_for("opening", "normal")[0].get(lang)
    tracker.customer(resolved.render(opening, lang))
    graders = [get_grader(g) for g in resolved.scenario.graders]
    context = GradingContext(resolved, lang, tracker.state)
    asyncio.run(grade_reply("你好, hello: 48小时", context, graders))  # load what loads once
    analyze.cache_clear()
    _block_bounds.cache_clear()
    count = 0

    def counted(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal count
        count += event in ("call", "c_call")

    async def graded() -> None:
        sys.setprofile(counted)
        try:
            await grade_reply(text, context, graders)
        finally:
            sys.setprofile(None)

    asyncio.run(graded())
    return count


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_the_work_per_character_stays_flat_from_2_500_to_20_000_characters(
    library: ScenarioLibrary, lang: str
) -> None:
    """Eight times the text, at most 8 × 1.25 times the work (it was 40 × for Chinese)."""
    short = _calls(library, lang, _reply(lang, 2_500))
    long = _calls(library, lang, _reply(lang, 20_000))
    assert long / 20_000 <= 1.25 * short / 2_500, (short, long)


def test_trainer_grade_refuses_a_turn_over_the_length_limit_and_names_it(tmp_path: Path) -> None:
    chat = {
        "language": "zh",
        "scenario": "damaged-kettle",
        "turns": [
            {"role": "customer", "text": "水壶裂了！"},
            {"role": "trainee", "text": _reply("zh", MAX_TURN_CHARS)},
            {"role": "trainee", "text": "好" * (MAX_TURN_CHARS + 1)},
        ],
    }
    path = tmp_path / "long.json"
    path.write_text(json.dumps(chat, ensure_ascii=False), encoding="utf-8")
    result = CliRunner().invoke(cli, ["grade", str(path)], obj={})
    assert result.exit_code == 1
    assert "turns.2.text" in result.output and "at most 20,000" in result.output
    chat["turns"].pop()  # type: ignore[attr-defined]
    path.write_text(json.dumps(chat, ensure_ascii=False), encoding="utf-8")
    result = CliRunner().invoke(cli, ["grade", str(path)], obj={})
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)["replies"]) == 1
