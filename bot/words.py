"""Words every channel shows the same way, in Simplified Chinese and English."""

from __future__ import annotations

from graders._base import Bilingual

DIMENSIONS: dict[str, Bilingual] = {
    "empathy": {"zh": "共情", "en": "Empathy"},
    "accuracy": {"zh": "准确", "en": "Accuracy"},
    "policy": {"zh": "合规", "en": "Policy"},
}
"""The three grade dimensions, as a grade's label."""

CHOICES: dict[str, Bilingual] = {
    "easy": {"zh": "简单", "en": "Easy"},
    "normal": {"zh": "普通", "en": "Normal"},
    "hard": {"zh": "困难", "en": "Hard"},
    "coach": {"zh": "教练模式", "en": "Coach"},
    "exam": {"zh": "考试模式", "en": "Exam"},
}
"""Difficulties and modes, as a trainee picks them."""
