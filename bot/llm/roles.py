"""The model-backed helpers a deployment has configured: customer, judge and rewriter.

Each role is optional: a role without a model is simply absent, and the engine keeps the
scripted customer, the rule graders and the scenario's exemplars in its place.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.llm.client import LLMClient, ModeMemory
from bot.llm.config import LLMSettings, Role


@dataclass
class Assistants:
    """One client per configured role, and each role's time budget per turn."""

    customer: LLMClient | None = None
    judge: LLMClient | None = None
    rewriter: LLMClient | None = None

    @classmethod
    def from_settings(cls, settings: LLMSettings) -> Assistants:
        """Clients for the roles ``settings`` configures."""

        def client(role: Role) -> LLMClient | None:
            found = settings.for_role(role)
            return LLMClient(found, role) if found else None

        return cls(client("customer"), client("judge"), client("rewriter"))

    def budget(self, role: Role) -> float:
        """Seconds a turn waits for ``role``: its request timeout, twice for the judge.

        The judge may re-ask once after an invalid answer, so it gets room for two
        requests. The customer and the rewriter keep the trainee waiting, so they get one:
        the SDK's retry fits only after a quick failure (a 429 or 5xx), not a timeout.
        """
        found = getattr(self, role)
        if found is None:
            return 0.0
        return float(found.settings.timeout_s) * (2 if role == "judge" else 1)

    def remember_modes(self, memory: ModeMemory) -> None:
        """Keep the structured modes the clients find in ``memory`` (and start from it)."""
        for found in (self.customer, self.judge, self.rewriter):
            if found is not None:
                found.memory = memory

    async def aclose(self) -> None:
        """Close every client."""
        for found in (self.customer, self.judge, self.rewriter):
            if found is not None:
                await found.aclose()
