"""Graders: a small protocol, a registry by name, and the built-in rule graders.

Every grade carries a score (or is N/A / unscored and flagged), a reason in Chinese and
English, the quoted evidence and the policy clause ids involved. See docs/graders.md.
"""

import gc

from graders import accuracy as _accuracy
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


def tune_gc() -> None:
    """Collect garbage rarely, for a process that grades many replies.

    Grading allocates many short-lived objects and keeps large caches (analyses,
    findings, word cuts); Python's default thresholds then spend a large share of the
    time re-scanning those caches for cycles that the graders do not make. What is
    loaded when this is called (scenarios, lexicons, the word model) is frozen out of
    collection altogether. The youngest generation stays small enough that collecting it
    never pauses a server long (at 50,000 a collection took ~0.1 s, most of a live
    chat's tail latency); the older ones are reached every million allocations.
    """
    gc.freeze()
    gc.set_threshold(5_000, 200, 100)


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
]
