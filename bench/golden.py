"""The golden transcripts of ``tests/golden/`` as benchmark cases (shared by the benches)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden"


@dataclass(frozen=True)
class Case:
    """A golden transcript: what one simulated trainee practises and says."""

    scenario: str
    lang: str
    difficulty: str
    seed: int
    replies: tuple[str, ...]


def load_cases() -> list[Case]:
    """Every golden transcript, in file-name order."""
    cases = []
    for path in sorted(GOLDEN.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        cases.append(
            Case(
                data["scenario"],
                data["language"],
                data["difficulty"],
                data["seed"],
                tuple(data["replies"]),
            )
        )
    return cases
