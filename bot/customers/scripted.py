"""The scripted voice: puts a :class:`Reaction` into the scenario's own words.

Deterministic: the line for each reaction is chosen by a random generator seeded with
the session seed, the turn and the reaction, so the same seed and the same replies give
the same transcript, and a resumed session continues exactly as it would have.
"""

from __future__ import annotations

import random

from bot.customers.mind import Reaction
from bot.i18n import Lang
from bot.scenario import Difficulty, Line, ResolvedScenario


class ScriptedVoice:
    """Phrases reactions with the scenario's lines, in one language."""

    def __init__(self, scenario: ResolvedScenario, lang: Lang, difficulty: Difficulty, seed: int):
        self.scenario = scenario
        self.lang = lang
        self.difficulty = difficulty
        self.seed = seed

    def _pick(self, options: list[Line], turn: int, key: str) -> str:
        rng = random.Random(f"{self.seed}:{turn}:{key}")
        return self.scenario.render(rng.choice(options).get(self.lang), self.lang)

    def say(self, reaction: Reaction, turn: int) -> str:
        """The customer's message for ``reaction`` at ``turn``."""
        parts: list[str] = []
        leading = [k for k in reaction.keys if k in ("blamed", "deflected", "insulted", "opening")]
        for lead in leading:
            parts.append(self._pick(self.scenario.lines_for(lead, self.difficulty), turn, lead))
        for fact in reaction.reveals:
            usable = [line for line in fact.say if line.usable_at(self.difficulty)] or fact.say
            parts.append(self._pick(usable, turn, f"fact:{fact.id}"))
        for key in reaction.keys:
            if key not in leading:
                parts.append(self._pick(self.scenario.lines_for(key, self.difficulty), turn, key))
        parts = parts[:3]  # short messages, but a curveball is never cut off
        if reaction.repeat < 2:  # asked again once in full; after that, the reminder alone
            for item in reaction.agenda:
                parts.append(self.scenario.render(item.say.get(self.lang), self.lang))
        separator = "" if self.lang == "zh" else " "
        return separator.join(parts)
