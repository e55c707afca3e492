"""Garbage collection while grading: no long pause, whatever the caches hold.

Once the graders' caches are full, each new entry frees an old one, so Python's own
trigger (allocations minus deallocations) stops firing and the young generation grew to
100,000+ objects: collecting it paused grading for 40-100 ms. ``tune_gc`` freezes what
was loaded and has grading collect the young generation itself every few replies. What
is checked here is which collections run and how much they walk, never their speed
(that is ``bench/bench_grading.py``).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest

from bot.scenario import ResolvedScenario
from graders import DialogueTracker, get_grader, grade_reply, tune_gc
from graders.context import PACER, GradingContext
from graders.text import analyze

LINES = [
    "王女士您好，水壶到手就裂了，真的很抱歉。麻烦发一下订单号和照片，我马上为您处理。第{i}条",
    "I'm so sorry your kettle arrived cracked. Could you send the order number? (note {i})",
    "照片收到了，{i}小时内为您免费补发，或全额退款299元，3-5个工作日原路退回。",
    "We can refund ¥{i} within 3-5 business days, or send a replacement.",
]


@pytest.fixture
def tuned() -> Iterator[None]:
    """``tune_gc()`` for one test; the thresholds and the pacer are put back after it."""
    thresholds, every, frozen = gc.get_threshold(), PACER.every, gc.get_freeze_count()
    tune_gc()
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        PACER.every = every
        if not frozen:
            gc.unfreeze()


class Collections:
    """Every collection while it listens: its generation and how many objects it walked."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            generation = info["generation"]
            walked = sum(len(gc.get_objects(g)) for g in range(generation + 1))
            self.seen.append((generation, walked))

    def __enter__(self) -> Collections:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


async def grade_many(scenario: ResolvedScenario, count: int, every: int = 0) -> list[int]:
    """Grade ``count`` different replies; the young generation's size every ``every``."""
    graders = [get_grader(name) for name in scenario.scenario.graders]
    sizes = []
    for i in range(count):
        lang = "zh" if i % 4 in (0, 2) else "en"
        tracker = DialogueTracker(scenario, lang)
        await grade_reply(
            LINES[i % 4].format(i=i), GradingContext(scenario, lang, tracker.state), graders
        )
        if every and i % every == 0:
            sizes.append(len(gc.get_objects(0)))
    return sizes


def test_what_was_loaded_is_frozen_and_grading_collects_the_young_generation_itself(
    tuned: None, kettle: ResolvedScenario
) -> None:
    assert gc.get_freeze_count() > 0  # the scenarios, lexicons and word model
    gc.set_threshold(0)  # the interpreter's own trigger off: only what grading runs
    try:
        with Collections() as collections:
            asyncio.run(grade_many(kettle, 3 * PACER.every + 1))
    finally:
        tune_gc()
    assert [generation for generation, _ in collections.seen] == [0, 0, 0]


def test_full_caches_leave_the_young_generation_small_and_the_oldest_untouched(
    tuned: None, kettle: ResolvedScenario
) -> None:
    """Enough different replies to fill the analysis cache, then as many again."""
    analyze.cache_clear()
    replies = 2 * (analyze.cache_info().maxsize or 0)
    with Collections() as collections:
        sizes = asyncio.run(grade_many(kettle, replies, every=100))
    assert max(sizes) < 20_000, sizes  # without the pacer: 100,000+ by the end
    assert all(walked < 50_000 for _, walked in collections.seen), collections.seen
    assert 2 not in {generation for generation, _ in collections.seen}
