"""Bilingual text: the two languages every trainee-facing text must exist in."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Lang = Literal["zh", "en"]
"""A user-facing language: Simplified Chinese or English."""

LANGS: tuple[Lang, ...] = ("zh", "en")


class Strict(BaseModel):
    """Base for content models: unknown keys are errors and values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Text(Strict):
    """A text in both languages; neither may be empty."""

    zh: str = Field(min_length=1, description="Simplified Chinese text.")
    en: str = Field(min_length=1, description="English text.")

    def get(self, lang: Lang) -> str:
        """Return the text in ``lang``."""
        return self.zh if lang == "zh" else self.en


class Phrases(Strict):
    """Phrase lists in both languages (either list may be empty)."""

    zh: list[str] = Field(default_factory=list, description="Chinese phrases.")
    en: list[str] = Field(default_factory=list, description="English phrases.")

    def get(self, lang: Lang) -> list[str]:
        """Return the phrases for ``lang``."""
        return self.zh if lang == "zh" else self.en


class Refusal(Exception):
    """Something refused, with a code and the reason for the user in both languages."""

    def __init__(self, code: str, message: dict[Lang, str]):
        self.code = code
        self.message = message
        super().__init__(message["en"])
