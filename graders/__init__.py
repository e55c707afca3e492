"""Graders: a small protocol, a registry by name, and the built-in rule graders.

Every grade carries a score (or is N/A / unscored and flagged), a reason in Chinese and
English, the quoted evidence and the policy clause ids involved. See docs/graders.md.
"""

import gc
from collections.abc import Iterable

from bot.scenario import ResolvedScenario
from graders import accuracy as _accuracy
from graders import context
from graders import empathy as _empathy
from graders import policy as _policy
from graders._base import (
    Deduction,
    Grade,
    Grader,
    Status,
    UnknownGrader,
    available_graders,
    get_grader,
    grader,
)
from graders.context import DialogueTracker, GradingContext, RuleGrader, grade_reply
from graders.dialogue import DialogueState
from graders.findings import Findings

del _accuracy, _empathy, _policy  # imported for their registrations


def warm_up(scenarios: Iterable[ResolvedScenario] = ()) -> None:
    """Load what grading reads now (about a second), not on the event loop at the first reply.

    The word model, the matcher of every lexicon phrase (hundreds of patterns compiled),
    the clause model and each scenario's compiled rules; a server calls this before it
    serves and before ``gc.freeze()``.
    """
    from graders import findings, learned, segment, text

    segment.warm_up()
    text.warm_up()
    learned.shipped()
    for scenario in scenarios:
        findings.rules_for(scenario)


def tune_gc() -> None:
    """Collect garbage so that grading never pauses long, for a process that grades.

    Grading allocates many short-lived objects and keeps large caches (analyses,
    findings, word cuts: ~250,000 objects once full, ~0.15 s to walk); Python's default
    thresholds then spend a large share of the time re-scanning those caches for cycles
    that the graders do not make. What is loaded when this is called (scenarios,
    lexicons, the word model) is frozen out of collection altogether. The youngest
    generation is collected every 32 graded replies (``context.PACER``: the interpreter's
    own trigger stops firing once full caches free an entry for every new one) and every
    5,000 allocations, so collecting it never takes long (at 50,000 objects a collection
    took ~0.1 s, most of a live chat's tail latency). The older generations, where the
    caches end up, are walked once per 10,000 young collections.
    """
    gc.freeze()
    gc.set_threshold(5_000, 10_000, 100)
    context.PACER.every = 32


__all__ = [
    "Deduction",
    "DialogueState",
    "DialogueTracker",
    "Findings",
    "Grade",
    "Grader",
    "GradingContext",
    "RuleGrader",
    "Status",
    "UnknownGrader",
    "available_graders",
    "get_grader",
    "grade_reply",
    "grader",
    "tune_gc",
    "warm_up",
]
