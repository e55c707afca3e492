"""LLM-played roles (customer, judge, rewriter) over any OpenAI-compatible server."""

from bot.llm.client import Completion, LLMClient, LLMError, ProbeResult
from bot.llm.config import LLMSettings, Role, RoleSettings, llm_settings

__all__ = [
    "Completion",
    "LLMClient",
    "LLMError",
    "LLMSettings",
    "ProbeResult",
    "Role",
    "RoleSettings",
    "llm_settings",
]
