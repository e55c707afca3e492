"""The transcript file format read by ``trainer grade`` (documented in docs/transcripts.md).

    {
      "language": "zh",                      # zh or en: the language of reasons and hints
      "scenario": "damaged-kettle",          # optional; --scenario overrides it
      "difficulty": "normal",                # optional
      "outcome": "resolved",                 # optional: resolved (default), escalated, left,
                                             #   turn_limit, trainee_ended, abandoned or
                                             #   drill_ended
      "turns": [
        {"role": "customer", "text": "...", "timestamp": "2026-11-15T10:00:00+08:00"},
        {"role": "trainee",  "text": "...", "timestamp": "2026-11-15T10:00:40+08:00"}
      ]
    }

Timestamps are optional; with them, reply times and the chat's length are measured.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from bot.i18n import Lang, Strict
from bot.scenario import Difficulty
from graders.rubric import Outcome
from graders.text import clean

MAX_TURN_CHARS = 20_000
"""The longest message ``trainer grade`` takes (grading it takes about 0.2 s)."""


class TranscriptTurn(Strict):
    """One message of a chat."""

    role: Literal["customer", "trainee", "system"]
    """``system``: a note of the trainer's in an exported session (e.g. a hint was shown);
    not part of the chat, so not graded and no reply's time counts from it."""
    text: str = Field(min_length=1)
    timestamp: dt.datetime | None = None
    voice: Literal["scripted", "llm"] | None = None
    """Who wrote a customer line in an exported session (informational, not graded)."""
    fallback: str | None = None
    """Why the scripted line replaced the model's (informational, not graded)."""
    grades: list[dict[str, Any]] | None = None
    """The grades a reply got live, in an exported session (informational, not read)."""

    @field_validator("text")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not clean(text).strip():
            raise ValueError("text is empty")
        if len(text) > MAX_TURN_CHARS:
            raise ValueError(
                f"text has {len(text):,} characters; a turn may have at most "
                f"{MAX_TURN_CHARS:,} (split a longer message into several turns)"
            )
        return text


class Transcript(Strict):
    """A chat to grade."""

    id: str | None = None
    """The chat's own reference (a ticket or session id), echoed in the results."""
    agent: str | None = None
    """Who answered the customer, for per-agent summaries."""
    language: Lang
    scenario: str | None = None
    difficulty: Difficulty = "normal"
    outcome: Outcome = "resolved"
    rubric: str | None = None
    """The scorecard preset (``trainer grade --rubric`` overrides it; default ``default``)."""
    turns: list[TranscriptTurn] = Field(min_length=1)
    # What `trainer history SESSION --json` adds about a practice session (informational):
    trainee: str | None = None
    mode: Literal["coach", "exam"] | None = None
    status: Literal["active", "ended"] | None = None
    started_at: str | None = None
    total: float | None = None
    passed: bool | None = None
    scorecard: dict[str, Any] | None = None

    @field_validator("turns")
    @classmethod
    def _has_trainee(cls, turns: list[TranscriptTurn]) -> list[TranscriptTurn]:
        if not any(t.role == "trainee" for t in turns):
            raise ValueError("no turn has role 'trainee', so there is nothing to grade")
        return turns

    def timed_turns(self) -> list[tuple[Literal["customer", "trainee"], str, float | None]]:
        """``(role, text, latency_s)`` of the chat's messages (system notes left out).

        A trainee's latency is the time since the last message.
        """
        out: list[tuple[Literal["customer", "trainee"], str, float | None]] = []
        previous: dt.datetime | None = None
        for turn in self.turns:
            if turn.role == "system":
                continue
            latency = None
            if turn.role == "trainee" and previous is not None and turn.timestamp is not None:
                latency = max(0.0, (turn.timestamp - previous).total_seconds())
            role: Literal["customer", "trainee"] = turn.role
            out.append((role, clean(turn.text).strip(), latency))
            if turn.timestamp is not None:
                previous = turn.timestamp
        return out

    def duration_s(self) -> float | None:
        """Seconds from the first to the last timestamp, if both exist."""
        stamps = [t.timestamp for t in self.turns if t.timestamp is not None and t.role != "system"]
        if len(stamps) < 2:
            return None
        return (stamps[-1] - stamps[0]).total_seconds()


class TranscriptError(ValueError):
    """A transcript file that cannot be read; the message names the file, key and fix."""


def load_transcript(path: Path) -> Transcript:
    """Read and validate a transcript file."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TranscriptError(f"{path}: file not found — check the path") from None
    except UnicodeDecodeError:
        raise TranscriptError(f"{path}: not UTF-8 text — save the file as UTF-8") from None
    return parse_transcript(raw, str(path))


def parse_transcript(raw: str, where: str, one_line: bool = False) -> Transcript:
    """Validate one transcript's JSON text; ``where`` names it in error messages.

    ``one_line``: ``raw`` is a line of a JSONL file and ``where`` already names the line.
    """
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        at = f"{where}: column {exc.colno}" if one_line else f"{where}:{exc.lineno}:{exc.colno}"
        raise TranscriptError(f"{at}: invalid JSON ({exc.msg}) — fix the syntax") from None
    except RecursionError:
        raise TranscriptError(
            f"{where}: JSON nested too deeply to be a transcript — see docs/transcripts.md"
        ) from None
    try:
        return Transcript.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            problems.append(f"{where}: {key}: {err['msg']} — see docs/transcripts.md")
        raise TranscriptError("\n".join(problems)) from None
