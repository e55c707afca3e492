"""Customer players: the engine-owned state machine and the voices that phrase it."""

from bot.customers.mind import CustomerMind, Ending, Mood, Reaction
from bot.customers.scripted import ScriptedVoice

__all__ = ["CustomerMind", "Ending", "Mood", "Reaction", "ScriptedVoice"]
