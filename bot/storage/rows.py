"""What the store returns and raises: frozen rows, owed messages and storage errors."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any


def utc_now() -> str:
    """The current UTC time as stored (ISO 8601, milliseconds)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Owed:
    """Messages a state change owes a user, written in the same transaction as the change.

    ``address`` says where, in the channel's own form (``telegram:42``); ``ref`` what
    caused it (an update id), so a re-run of that update finds them instead of sending
    again; ``messages`` are (kind, body) pairs the channel knows how to send.
    """

    address: str
    ref: str | None
    messages: tuple[tuple[str, dict[str, Any]], ...]

    def rows(self) -> list[tuple[Any, ...]]:
        """The outbox rows (address, ref, kind, body, created_at)."""
        now = utc_now()
        return [
            (self.address, self.ref, kind, json.dumps(body, ensure_ascii=False), now)
            for kind, body in self.messages
        ]


@dataclass(frozen=True)
class OutboxRow:
    """One owed message not yet delivered."""

    id: int
    address: str
    ref: str | None
    kind: str
    body: dict[str, Any]
    attempts: int


@dataclass(frozen=True)
class SessionRow:
    """A stored session."""

    id: str
    trainee: str
    scenario_id: str
    scenario_version: int
    scenario_source: str
    lang: str
    difficulty: str
    mode: str
    rubric: str
    seed: int
    player: str
    status: str
    outcome: str | None
    started_at: str
    ended_at: str | None
    customer_state: dict[str, Any] | None
    scorecard: dict[str, Any] | None
    total: float | None
    passed: bool | None
    assignment_id: int | None = None
    judge: str = "rules"


@dataclass(frozen=True)
class DrillRow:
    """A stored drill; times are seconds since the epoch."""

    id: int
    preset: str
    plan: dict[str, Any]
    seed: int
    created_by: int | None
    starts_at: float
    ends_at: float
    status: str
    """``planned``, ``running`` or ``ended``."""
    started_at: float | None
    ended_at: float | None


@dataclass(frozen=True)
class DrillCustomerRow:
    """One scheduled customer of one trainee in a drill; times are epoch seconds."""

    id: int
    drill_id: int
    user_id: int
    trainee: str
    number: int
    scenario_id: str
    difficulty: str
    seed: int
    due_at: float
    status: str
    """``due`` (not arrived), ``queued`` (waiting for a free hand), ``open``, ``done``
    (the conversation ended) or ``abandoned`` (left unanswered)."""
    session_id: str | None
    opened_at: float | None
    first_reply_at: float | None
    waiting_since: float | None
    """When the customer's unanswered message came (None: the trainee spoke last)."""
    nudged: int
    """Nudges in the current wait."""
    nudges: int
    """Nudges over the whole conversation."""
    ended_at: float | None
    outcome: str | None
    next_at: float | None
    """When something is next due for the customer (None: nothing, ever)."""
    replies: int
    """The trainee's replies this row took into account (the transcript may hold one more
    if the process died in between)."""
    score100: float | None
    """The conversation under the company's 100-point assessment, once it ended."""

    @property
    def label(self) -> str:
        """The short name a trainee answers this customer by (``C3``)."""
        return f"C{self.number}"


@dataclass(frozen=True)
class TurnRow:
    """A stored chat turn."""

    idx: int
    role: str
    text: str
    created_at: str
    latency_s: float | None
    meta: dict[str, Any]


@dataclass(frozen=True)
class UserRow:
    """A person using a chat adapter; each user is also a trainee of the engine."""

    id: int
    platform: str
    external_id: str
    chat_id: str | None
    name: str
    username: str | None
    lang: str
    is_admin: bool
    trainee: str
    """The engine's trainee name for this user's sessions."""


@dataclass(frozen=True)
class TeamRow:
    """A team of trainees and their mentors."""

    id: int
    name: str


@dataclass(frozen=True)
class InviteRow:
    """An invite code: joins a team as mentor or trainee, or makes an admin."""

    code: str
    team_id: int | None
    role: str
    max_uses: int
    uses: int


@dataclass(frozen=True)
class InviteListing:
    """An invite as its page lists it."""

    code: str
    team_id: int | None
    role: str
    max_uses: int
    uses: int
    created_by: int | None
    created_at: str | None
    revoked_at: str | None


@dataclass(frozen=True)
class DeviceRow:
    """A browser signed in to the web app."""

    id: int
    user_id: int
    token_sha: str
    label: str
    created_at: str
    revoked_at: str | None


@dataclass(frozen=True)
class AssignmentRow:
    """A scenario assigned to a whole team (``user_id`` None) or one trainee."""

    id: int
    team_id: int
    user_id: int | None
    scenario_id: str
    difficulty: str
    mode: str
    rubric: str
    due: str | None
    pass_mark: float
    attempts: int | None
    created_by: int | None
    created_at: str


@dataclass(frozen=True)
class DisputeRow:
    """A trainee's objection to one ledger entry of a session."""

    id: int
    session_id: str
    entry: int
    """1-based position in the session's ledger."""
    user_id: int
    reason: str
    status: str
    """open, accepted, partly or rejected."""
    created_at: str


@dataclass(frozen=True)
class GradeEventRow:
    """One append-only change of a ledger entry's points: an override or a dispute ruling."""

    id: int
    session_id: str
    entry: int
    kind: str
    dispute_id: int | None
    verdict: str | None
    actor_id: int | None
    old_points: float
    new_points: float
    reason: str
    created_at: str


@dataclass(frozen=True)
class GradeReviewRow:
    """A mentor's review of a flagged grade: accepted, adjusted or rejected, and why."""

    id: int
    session_id: str
    turn_idx: int
    dimension: str
    verdict: str
    actor_id: int | None
    reason: str
    created_at: str


class StoreError(Exception):
    """A storage problem worth showing to the user (bad path, locked or corrupt file)."""


class StaleDrill(Exception):
    """A drill customer changed in another process between reading and writing it."""


class StoreBusy(Exception):
    """Another process holds the write lock, and the caller asked not to wait for it."""


class Conflict(StoreError):
    """A write broke a uniqueness or other integrity rule (another process got there first)."""


class StoreUnavailable(StoreError):
    """The database server could not be reached; nothing of the failed write was stored."""
