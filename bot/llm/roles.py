"""The model-backed helpers a deployment has configured: customer, judge and rewriter.

Each role is optional: a role without a model is simply absent, and the engine keeps the
scripted customer, the rule graders and the scenario's exemplars in its place.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.llm.client import LLMClient
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
            return LLMClient(found) if found else None

        return cls(client("customer"), client("judge"), client("rewriter"))

    def budget(self, role: Role) -> float:
        """Seconds a turn waits for ``role`` (its request timeout; one retry must fit)."""
        found = getattr(self, role)
        return float(found.settings.timeout_s) if found is not None else 0.0

    async def aclose(self) -> None:
        """Close every client."""
        for found in (self.customer, self.judge, self.rewriter):
            if found is not None:
                await found.aclose()
