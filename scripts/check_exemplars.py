"""Grade every scenario's exemplar replies with the rule graders (an authoring aid).

Usage: python scripts/check_exemplars.py [SCENARIO_ID ...]

Exemplars and the curveballs' written answers are the model replies shown to trainees,
so each should earn full marks on every dimension where it is shown. Prints one line per exemplar and exits 1 if any falls short.
"""

from __future__ import annotations

import asyncio
import sys

from bot.content import ScenarioLibrary
from bot.i18n import LANGS
from graders.session import grade_agenda_answers, grade_exemplars


def main(ids: list[str]) -> int:
    """Grade the exemplars of ``ids`` (all scenarios if empty); return the exit code."""
    library = ScenarioLibrary.load()
    failures = 0
    for scenario_id in ids or library.ids():
        for lang in LANGS:
            scenario = library.get(scenario_id)
            graded = [
                *asyncio.run(grade_exemplars(scenario, lang)),
                *asyncio.run(grade_agenda_answers(scenario, lang)),
            ]
            for stage, record in graded:
                short = [g for g in record.grades if g.status == "scored" and g.lost]
                failures += bool(short)
                summary = ", ".join(
                    f"{g.dimension}={'n/a' if g.score is None else f'{g.score:g}/{g.max_score:g}'}"
                    for g in record.grades
                )
                print(f"{'LOW' if short else 'ok '} {scenario_id} {lang} {stage}: {summary}")
                for g in short:
                    print(f"      {g.dimension}: {g.reason[lang]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
