"""The conversation engine: start, reply, end and resume practice sessions.

It knows no chat app. An adapter (terminal, Telegram, web) calls :meth:`Engine.start`,
then :meth:`Session.reply` for each trainee message, and shows what comes back. Order of
work for each reply: store the reply, grade it, store the grades, let the customer
react, store that, and only then return, so feedback shown is always already saved.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from bot.content import ResolvedScenario, ScenarioLibrary
from bot.customers import CustomerMind, ScriptedVoice
from bot.i18n import Lang
from bot.scenario import Difficulty
from bot.storage import SessionRow, Store
from graders._base import Bilingual
from graders.rubric import RUBRICS, Outcome, Scorecard, scorecard
from graders.session import ReplyRecord, SessionGrader, stage_of
from graders.text import clean

MAX_REPLY_CHARS = 2000
MODES = ("coach", "exam")


class ReplyRejected(ValueError):
    """A reply the engine will not send to the customer; ``message`` says why and what to do."""

    def __init__(self, code: str, message: Bilingual):
        self.code = code
        self.message = message
        super().__init__(message["en"])


class SessionClosed(RuntimeError):
    """Raised when replying to a session that has already ended."""


def prepare_reply(text: str) -> str:
    """Clean a trainee reply (control characters removed) or raise :class:`ReplyRejected`."""
    cleaned = clean(text).strip()
    if not cleaned:
        raise ReplyRejected(
            "empty",
            {
                "zh": "回复是空的，请输入要发给客户的内容（/end 结束会话）。",
                "en": "The reply is empty. Type what you want to send the customer (/end to finish).",
            },
        )
    if len(cleaned) > MAX_REPLY_CHARS:
        raise ReplyRejected(
            "too_long",
            {
                "zh": f"回复有 {len(cleaned)} 个字符，超过了 {MAX_REPLY_CHARS} 的上限。"
                "客服消息要简洁，请删减后再发（之前的对话都已保存）。",
                "en": f"The reply has {len(cleaned)} characters, over the {MAX_REPLY_CHARS} limit. "
                "Support messages should be short; please cut it down (the chat so far is saved).",
            },
        )
    return cleaned


@dataclass(frozen=True)
class TurnResult:
    """What one trainee reply produced."""

    record: ReplyRecord
    customer_text: str | None
    ended: Outcome | None
    scorecard: Scorecard | None


class Session:
    """One practice session in progress."""

    def __init__(
        self,
        store: Store,
        row: SessionRow,
        scenario: ResolvedScenario,
        mind: CustomerMind,
        grader: SessionGrader,
    ):
        self.store = store
        self.row = row
        self.scenario = scenario
        self.mind = mind
        self.grader = grader
        self.lang: Lang = row.lang  # type: ignore[assignment]
        self.difficulty: Difficulty = row.difficulty  # type: ignore[assignment]
        self.voice = ScriptedVoice(scenario, self.lang, self.difficulty, row.seed)
        self.outcome: Outcome | None = None
        self.card: Scorecard | None = None
        self._started = time.monotonic()

    @property
    def id(self) -> str:
        """The session id."""
        return self.row.id

    @property
    def mode(self) -> str:
        """``coach`` (feedback after each reply) or ``exam`` (feedback at the end)."""
        return self.row.mode

    @property
    def ended(self) -> bool:
        """Whether the session is over."""
        return self.outcome is not None

    def hint(self) -> Bilingual:
        """The exemplar reply for the current stage of the case; its use is recorded."""
        self.store.add_turn(self.id, "system", "/hint", meta={"hint": True})
        return self.scenario.exemplar(stage_of(self.scenario, self.grader.state))

    async def reply(
        self, text: str, latency_s: float | None = None, *, ref: str | None = None
    ) -> TurnResult:
        """Send one trainee reply; returns its grades and the customer's answer.

        ``ref`` identifies the incoming chat message (an adapter's update id); it is
        stored with the turn so an adapter can tell a re-delivered message from a new one.
        """
        if self.ended:
            raise SessionClosed(f"session {self.id} has ended")
        cleaned = prepare_reply(text)
        meta = {"ref": ref} if ref is not None else None
        # The reply is committed before grading (which may wait on a judge); what follows
        # from it (grades, the customer's answer, the ending) is committed together.
        turn_idx = self.store.add_turn(self.id, "trainee", cleaned, latency_s=latency_s, meta=meta)
        record = await self.grader.trainee(cleaned, latency_s)
        with self.store.transaction():
            self.store.add_grades(self.id, turn_idx, record.number, record.grades)
            customer_text = self._answer(record)
            ending = self.mind.mood.ending
            card = self._close(ending) if ending is not None else None
        return TurnResult(record, customer_text, ending, card)

    def _answer(self, record: ReplyRecord) -> str:
        """Let the customer react to a graded reply; store and return the message."""
        reaction = self.mind.react(record.findings)
        customer_text = self.voice.say(reaction, self.mind.mood.turn)
        self.store.add_turn(
            self.id,
            "customer",
            customer_text,
            meta={
                "reactions": list(reaction.keys),
                "revealed": [f.id for f in reaction.reveals],
                "agenda": [a.id for a in reaction.agenda],
                "anger": round(self.mind.mood.anger, 2),
                "patience": self.mind.mood.patience,
            },
            customer_state=self.mind.snapshot(),
        )
        self.grader.customer(customer_text)
        return customer_text

    async def end(self, outcome: Outcome = "trainee_ended") -> Scorecard:
        """End the session (idempotent) and store its scorecard."""
        return self._close(outcome)

    def _close(self, outcome: Outcome) -> Scorecard:
        if self.card is not None:
            return self.card
        self.outcome = outcome
        self.card = scorecard(
            self.row.rubric,
            self.scenario,
            self.grader.records,
            outcome,
            duration_s=time.monotonic() - self._started,
        )
        self.store.end_session(self.id, outcome, self.card)
        return self.card

    def transcript(self) -> dict[str, Any]:
        """The session as a transcript file (the format ``trainer grade`` reads)."""
        return {
            "language": self.lang,
            "scenario": self.scenario.id,
            "difficulty": self.difficulty,
            "outcome": self.outcome,
            "turns": [
                {"role": t.role, "text": t.text, "timestamp": t.created_at}
                for t in self.store.turns(self.id)
            ],
        }


class Engine:
    """Creates and resumes sessions over a store and a scenario library."""

    def __init__(self, store: Store, library: ScenarioLibrary):
        self.store = store
        self.library = library

    async def start(
        self,
        *,
        trainee: str,
        scenario: str,
        lang: Lang = "zh",
        difficulty: Difficulty = "normal",
        mode: str = "coach",
        rubric: str = "default",
        seed: int | None = None,
        assignment_id: int | None = None,
    ) -> tuple[Session, str]:
        """Start a session; returns it and the customer's opening message (already stored)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode '{mode}'; use one of {', '.join(MODES)}")
        if rubric not in RUBRICS:
            raise ValueError(f"unknown rubric '{rubric}'; use one of {', '.join(RUBRICS)}")
        resolved = self.library.get(scenario)
        seed = random.SystemRandom().randrange(1, 2**31) if seed is None else seed
        session_id = self.store.create_session(
            trainee=trainee,
            scenario_id=resolved.id,
            scenario_version=resolved.scenario.version,
            scenario_source=str(resolved.source),
            lang=lang,
            difficulty=difficulty,
            mode=mode,
            rubric=rubric,
            seed=seed,
            assignment_id=assignment_id,
        )
        row = self.store.session(session_id)
        assert row is not None
        mind = CustomerMind(resolved, difficulty)
        session = Session(self.store, row, resolved, mind, SessionGrader(resolved, lang))
        opening = session.voice.say(mind.opening(), 0)
        self.store.add_turn(
            session_id,
            "customer",
            opening,
            meta={"reactions": ["opening"]},
            customer_state=mind.snapshot(),
        )
        session.grader.customer(opening)
        return session, opening

    async def resume(self, session_id: str) -> tuple[Session, str | None]:
        """Rebuild an active session from the store, exactly where it stopped.

        If the process died after a reply was stored but before the customer answered,
        the missing grades and the customer's answer are produced now; that answer is
        returned so the adapter can show it (otherwise ``None``).
        """
        row = self.store.session(session_id)
        if row is None:
            raise LookupError(f"no session '{session_id}'")
        if row.status != "active":
            raise SessionClosed(f"session {row.id} has already ended ({row.outcome})")
        ref = row.scenario_id if row.scenario_id in self.library.scenarios else row.scenario_source
        resolved = self.library.get(ref)
        difficulty: Difficulty = row.difficulty  # type: ignore[assignment]
        mind = (
            CustomerMind.restore(resolved, difficulty, row.customer_state)
            if row.customer_state
            else CustomerMind(resolved, difficulty)
        )
        grader = SessionGrader(resolved, row.lang)  # type: ignore[arg-type]
        session = Session(self.store, row, resolved, mind, grader)
        stored = self.store.grades(row.id)
        turns = self.store.turns(row.id)
        for turn in turns:
            if turn.role == "customer":
                grader.customer(turn.text)
                continue
            record = await grader.trainee(turn.text, turn.latency_s)
            if turn.idx not in stored:
                self.store.add_grades(row.id, turn.idx, record.number, record.grades)
        pending = None
        if turns and turns[-1].role == "trainee" and mind.mood.turn < len(grader.records):
            pending = session._answer(grader.records[-1])
            if mind.mood.ending is not None:
                await session.end(mind.mood.ending)
        return session, pending
