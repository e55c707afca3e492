"""Grade every scenario's exemplar replies with the rule graders (an authoring aid).

Usage: python scripts/check_exemplars.py [SCENARIO_ID ...]

Exemplars are the model answers shown to trainees, so each should earn full marks on
every dimension at its stage. Prints one line per exemplar and exits 1 if any falls short.
"""

from __future__ import annotations

import asyncio
import sys

from bot.content import ScenarioLibrary
from bot.i18n import LANGS
from bot.scenario import STAGES
from graders import DialogueTracker, get_grader, grade_reply


def main(ids: list[str]) -> int:
    """Grade the exemplars of ``ids`` (all scenarios if empty); return the exit code."""
    library = ScenarioLibrary.load()
    failures = 0
    for scenario_id in ids or library.ids():
        resolved = library.get(scenario_id)
        graders = [get_grader(name) for name in resolved.scenario.graders]
        for lang in LANGS:
            tracker = DialogueTracker(resolved, lang)
            opening = resolved.lines_for("opening", "normal")[0].get(lang)
            tracker.customer(resolved.render(opening, lang))
            exemplars = resolved.scenario.answer_key.exemplars
            for stage in STAGES:  # in the order a chat goes, filled in as trainees see them
                reply = resolved.render(exemplars[stage].get(lang), lang)
                ctx = tracker.context()
                grades = asyncio.run(grade_reply(reply, ctx, graders))
                short = [g for g in grades if g.status == "scored" and g.score != g.max_score]
                mark = "ok " if not short else "LOW"
                failures += bool(short)
                summary = ", ".join(
                    f"{g.dimension}={'n/a' if g.score is None else f'{g.score:g}/{g.max_score:g}'}"
                    for g in grades
                )
                print(f"{mark} {scenario_id} {lang} {stage}: {summary}")
                for g in short:
                    print(f"      {g.dimension}: {g.reason[lang]}")
                tracker.trainee(ctx.findings(reply))
                for fact in resolved.scenario.customer.facts:  # the customer answers every ask
                    if set(fact.asked_by) & ctx.findings(reply).asks:
                        tracker.customer(resolved.render(fact.say[0].get(lang), lang))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
