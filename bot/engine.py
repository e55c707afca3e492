"""The conversation engine: start, reply, end and resume practice sessions.

It knows no chat app. An adapter (terminal, Telegram, web) calls :meth:`Engine.start`,
then :meth:`Session.reply` for each trainee message, and shows what comes back. Order of
work for each reply: store the reply, grade it with the rule graders, let the customer
react; then, at the same time, the customer's words, the LLM judge and the better reply
(whichever are configured); store all of it in one transaction, and only then return, so
feedback shown is always already saved.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from bot.content import ScenarioLibrary
from bot.customers import CustomerMind, Reaction, ScriptedVoice
from bot.customers.llm import LLMVoice, Spoken
from bot.i18n import LANGS, Lang, Refusal
from bot.llm.judge import Judge
from bot.llm.reasons import describe
from bot.llm.rewriter import Rewrite, Rewriter
from bot.llm.roles import Assistants
from bot.scenario import AgendaItem, Difficulty, ResolvedScenario
from bot.storage import Owed, SessionRow, Store
from graders._base import Bilingual, Grade
from graders.injection import strip as strip_injections
from graders.rubric import RUBRICS, Outcome, Scorecard, scorecard
from graders.session import ReplyRecord, SessionGrader, stage_of
from graders.text import clean

log = logging.getLogger(__name__)

MAX_REPLY_CHARS = 2000
MODES = ("coach", "exam")
PLAYERS = ("scripted", "llm")
JUDGES = ("rules", "llm")


class ReplyRejected(Refusal, ValueError):
    """A reply the engine will not send to the customer; ``message`` says why and what to do."""


class SessionClosed(RuntimeError):
    """Raised when replying to a session that has already ended."""


class SessionBusy(RuntimeError):
    """Another live process is answering the session's last reply; try again shortly."""


class Peers(Protocol):
    """The trainer processes sharing one database: which of them are alive."""

    me: str
    """This process's name, recorded with each reply it answers."""
    shared: bool
    """Whether other processes may share the sessions (False: this process is alone)."""

    async def alive(self, process: str) -> bool:
        """Whether ``process`` is running (and may still be answering a reply)."""


class Alone:
    """One process alone: a reply left unanswered was left by a process that died."""

    shared = False

    def __init__(self) -> None:
        self.me = uuid.uuid4().hex[:12]

    async def alive(self, process: str) -> bool:
        """Only this process."""
        return process == self.me


def prepare_reply(text: str) -> str:
    """Clean a trainee reply (control characters removed) or raise :class:`ReplyRejected`."""
    cleaned = clean(text).strip()
    if not cleaned:
        raise ReplyRejected(
            "empty",
            {
                "zh": "回复是空的，请输入要发给客户的内容。",
                "en": "The reply is empty. Type what you want to send the customer.",
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


def _lost(grades: tuple[Grade, ...]) -> bool:
    """Whether any scored grade took points."""
    return any(g.status == "scored" and g.lost for g in grades)


class NotConfigured(ValueError):
    """An LLM role was asked for explicitly but has no model configured."""


_FALLBACK_NOTE: Bilingual = {
    "zh": "（这条由脚本客户回复：{reason}）",
    "en": "(The scripted customer wrote this line: {reason}.)",
}
_SPLIT_WINDOW = 80
"""Characters of earlier replies searched with a new one for text aimed at the grader."""


@dataclass(frozen=True)
class TurnResult:
    """What one trainee reply produced."""

    record: ReplyRecord
    customer_text: str | None
    ended: Outcome | None
    scorecard: Scorecard | None
    better: Bilingual | None = None
    """A better version of the reply (coach mode shows it), or None when nothing was lost."""
    note: Bilingual | None = None
    """Shown with the customer's answer, e.g. that the LLM customer fell back to the script."""


class Postbox(Protocol):
    """What an adapter owes its user for each state change of a session.

    The engine asks for it before the change is stored and stores the answer in the same
    transaction (:class:`~bot.storage.Owed`); the adapter delivers it from there, so a
    crash means a message arrives late, never that it is lost.
    """

    def opening(self, session: Session, text: str) -> Owed:
        """The briefing and the customer's opening line."""

    def answer(self, session: Session, result: TurnResult) -> Owed:
        """What follows a trainee reply: feedback, the customer's answer, a scorecard."""

    def line(self, session: Session, text: str, *, ended: bool) -> Owed:
        """A customer line produced late (after a restart), and the scorecard if it ended."""

    def ending(self, session: Session, card: Scorecard) -> Owed:
        """The scorecard of a session ended without a reply (/end, a timeout)."""


class Session:
    """One practice session in progress."""

    def __init__(
        self,
        store: Store,
        row: SessionRow,
        scenario: ResolvedScenario,
        mind: CustomerMind,
        grader: SessionGrader,
        assistants: Assistants | None = None,
    ):
        self.store = store
        self.row = row
        self.scenario = scenario
        self.mind = mind
        self.grader = grader
        self.lang: Lang = row.lang  # type: ignore[assignment]
        self.difficulty: Difficulty = row.difficulty  # type: ignore[assignment]
        self.voice = ScriptedVoice(scenario, self.lang, self.difficulty, row.seed)
        helpers = assistants or Assistants()
        self.llm_voice = (
            LLMVoice(
                scenario,
                self.lang,
                self.voice,
                helpers.customer,
                session_id=row.id,
                seed=row.seed,
                budget_s=helpers.budget("customer"),
            )
            if row.player == "llm" and helpers.customer is not None
            else None
        )
        self.judge = (
            Judge(helpers.judge, budget_s=helpers.budget("judge"), cache=store)
            if row.judge == "llm" and helpers.judge is not None
            else None
        )
        self.rewriter = (
            Rewriter(helpers.rewriter, budget_s=helpers.budget("rewriter"))
            if helpers.rewriter is not None and row.mode == "coach"
            else None
        )
        self.chat: list[tuple[str, str]] = []
        """The conversation so far as ``(role, text)``, role ``customer`` or ``trainee``."""
        self.rewrites: dict[int, str] = {}
        """Accepted better replies by reply number."""
        self.docked: set[int] = set()
        """Numbers of the replies the rule graders took points from (before any judge)."""
        self.waiting_at: dict[int, AgendaItem] = {}
        """Reply number → the curveball the customer was waiting on when it was sent."""
        self.opening_note: Bilingual | None = None
        """Shown with the opening line, e.g. that the LLM customer fell back to the script."""
        self.outcome: Outcome | None = None
        self.card: Scorecard | None = None
        self._last_fallback: str | None = None
        self._started = time.monotonic()
        self.answered_by: str | None = None
        """The process answering this session's replies, recorded with each one when
        several processes share the sessions (see :class:`Peers`)."""

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
        """A model reply for this turn; its use is recorded.

        The answer to the curveball the customer is waiting on, else the exemplar for the
        current stage of the case.
        """
        self.store.add_turn(self.id, "system", "/hint", meta={"hint": True})
        stage = stage_of(self.scenario, self.grader.state)
        return self.scenario.model_reply(stage, self.mind.waiting_on())

    async def reply(
        self,
        text: str,
        latency_s: float | None = None,
        *,
        ref: str | None = None,
        postbox: Postbox | None = None,
    ) -> TurnResult:
        """Send one trainee reply; returns its grades and the customer's answer.

        ``ref`` identifies the incoming chat message (an adapter's update id); it is
        stored with the turn so an adapter can tell a re-delivered message from a new one.
        What the result owes the trainee (``postbox``) is stored with it.
        """
        if self.ended:
            raise SessionClosed(f"session {self.id} has ended")
        cleaned = prepare_reply(text)
        meta: dict[str, Any] = {} if ref is None else {"ref": ref}
        if self.answered_by is not None:
            meta["by"] = self.answered_by
        waiting = self.mind.waiting_on()
        if waiting is not None:  # its answer is the better reply, after a restart too
            meta["waiting"] = waiting.id
        # The reply is committed before grading (which may wait on a judge); what follows
        # from it (grades, the customer's answer, the ending) is committed together.
        turn_idx = self.store.add_turn(
            self.id, "trainee", cleaned, latency_s=latency_s, meta=meta or None
        )
        history = list(self.chat)
        record = await self.grader.trainee(cleaned, latency_s)
        if waiting is not None:
            self.waiting_at[record.number] = waiting
        self._note_docked(record)
        self.chat.append(("trainee", cleaned))
        reaction = self.mind.react(record.findings)
        # The model-backed parts run together: the trainee waits for the slowest, not the sum.
        grades, spoken, rewrite = await asyncio.gather(
            self._judged(record, history), self._speak(reaction), self._rewrite(record, history)
        )
        record = self.grader.settle(record, grades)
        if rewrite is not None and rewrite.text is not None:
            self.rewrites[record.number] = rewrite.text
        ending = self.mind.mood.ending
        card = self._scorecard(ending) if ending is not None else None
        result = TurnResult(
            record, spoken.text, ending, card, self.better_reply(record), self._note(spoken)
        )
        self.store.add_answer(
            self.id,
            (turn_idx, record.number, record.grades),
            spoken.text,
            meta=self._answer_meta(reaction, spoken, rewrite),
            customer_state=self.mind.snapshot(),
            ending=None if ending is None or card is None else (ending, card),
            owed=None if postbox is None else postbox.answer(self, result),
        )
        self._heard(spoken.text)
        if ending is not None:
            self.outcome, self.card = ending, card
        return result

    def curveball(self, item_id: str | None) -> AgendaItem | None:
        """The scenario's agenda item ``item_id`` (None if there is no such item)."""
        agenda = self.scenario.scenario.customer.agenda
        return next((a for a in agenda if item_id is not None and a.id == item_id), None)

    def _note_docked(self, record: ReplyRecord) -> None:
        """Remember a reply the rule graders took points from, before any judge settles it."""
        if _lost(record.grades):
            self.docked.add(record.number)

    def better_reply(self, record: ReplyRecord) -> Bilingual | None:
        """A better version of a reply that lost points, or None.

        The model's rewrite of the reply itself when one passed its checks, else the
        scenario's model reply for the turn (the answer to a curveball the customer was
        waiting on, else the stage's exemplar). A reply the rules docked gets one whether or
        not a judge answered: coach feedback never depends on the model.
        """
        if record.number not in self.docked and not _lost(record.grades):
            return None
        rewrite = self.rewrites.get(record.number)
        if rewrite is not None:
            return dict.fromkeys(LANGS, rewrite)
        return self.scenario.model_reply(record.stage, self.waiting_at.get(record.number))

    async def _judged(
        self, record: ReplyRecord, history: list[tuple[str, str]]
    ) -> tuple[Grade, ...]:
        if self.judge is None:
            return record.grades
        graded = await self.judge.grade_all(
            record.text,
            record.grades,
            scenario=self.scenario,
            lang=self.lang,
            history=history,
            tainted=self._tainted(record),
            reply_number=record.number,
        )
        return tuple(graded)

    def _tainted(self, record: ReplyRecord) -> bool:
        """Whether the trainee's replies so far hold text aimed at the grader.

        In one reply or split across several; the judge may not then raise a grade.
        """
        records = self.grader.records[: record.number]
        if any(r.findings.injection_quote for r in records):
            return True
        # Earlier replies were checked the same way, so only a phrase that ends in this
        # reply can be new: the tail of the chat before it is enough (phrases are short).
        separator = "" if self.lang == "zh" else " "
        before = separator.join(r.text for r in records[:-1])[-_SPLIT_WINDOW:]
        window = before + separator + record.text if before else record.text
        return bool(strip_injections(window).injected)  # only that: not the whole findings

    async def _speak(self, reaction: Reaction) -> Spoken:
        turn = self.mind.mood.turn
        if self.llm_voice is None:
            return Spoken(self.voice.say(reaction, turn), "scripted")
        try:
            return await self.llm_voice.say(reaction, turn, self.mind.mood, self.chat)
        except Exception:  # a bug must cost the model's wording, never the reply
            log.exception("LLM customer failed in session %s; the scripted line is used", self.id)
            return Spoken(self.voice.say(reaction, turn), "scripted", "error")

    async def _rewrite(self, record: ReplyRecord, history: list[tuple[str, str]]) -> Rewrite | None:
        if self.rewriter is None:
            return None
        try:
            return await self.rewriter.rewrite(
                record.text,
                record.grades,
                scenario=self.scenario,
                lang=self.lang,
                history=history,
                state=record.state,
                reply_number=record.number,
            )
        except Exception:  # a bug must cost the better reply, never the reply
            log.exception("rewriter failed in session %s; the model reply is shown", self.id)
            return Rewrite(None, "error", None, None, None)

    def _store_answer(self, reaction: Reaction, spoken: Spoken, owed: Owed | None = None) -> None:
        """Store the customer's message, its customer state and what it owes; hear it."""
        self.store.add_turn(
            self.id,
            "customer",
            spoken.text,
            meta=self._answer_meta(reaction, spoken, None),
            customer_state=self.mind.snapshot(),
            owed=owed,
        )
        self._heard(spoken.text)

    def _answer_meta(
        self, reaction: Reaction, spoken: Spoken, rewrite: Rewrite | None
    ) -> dict[str, Any]:
        """What is stored with the customer's message: why it said it, and who wrote it."""
        meta: dict[str, Any] = {
            "reactions": list(reaction.keys),
            "revealed": [f.id for f in reaction.reveals],
            "agenda": [a.id for a in reaction.agenda],
            "anger": round(self.mind.mood.anger, 2),
            "patience": self.mind.mood.patience,
        }
        if self.llm_voice is not None:
            meta["voice"] = {
                "by": spoken.voice,
                "fallback": spoken.fallback,
                "model": spoken.model,
                "prompt_sha": spoken.prompt_sha,
            }
        if rewrite is not None:
            meta["rewrite"] = dataclasses.asdict(rewrite)
        return meta

    def waited(self, text: str, anger: float = 1.0) -> dict[str, object]:
        """A customer left waiting sends ``text`` (a drill's nudge) and is angrier.

        The line enters the conversation like any customer line; returns the customer's
        state to store with it.
        """
        self.mind.mood.anger = min(10.0, self.mind.mood.anger + anger)
        self._heard(text)
        return self.mind.snapshot()

    def _heard(self, text: str) -> None:
        """The customer's stored message enters the conversation the graders follow."""
        self.grader.customer(text)
        self.chat.append(("customer", text))

    def _note(self, spoken: Spoken) -> Bilingual | None:
        """Tell the trainee when the LLM customer falls back to the script (once per change)."""
        previous, self._last_fallback = self._last_fallback, spoken.fallback
        if spoken.fallback is None or spoken.fallback == previous:
            return None
        why = describe(spoken.fallback)
        return {lang: _FALLBACK_NOTE[lang].format(reason=why[lang]) for lang in LANGS}

    async def end(
        self, outcome: Outcome = "trainee_ended", *, postbox: Postbox | None = None
    ) -> Scorecard:
        """End the session (idempotent) and store its scorecard (and what it owes)."""
        return self._close(outcome, postbox)

    def _close(self, outcome: Outcome, postbox: Postbox | None = None) -> Scorecard:
        if self.card is not None:
            return self.card
        card = self._scorecard(outcome)
        owed = None if postbox is None else postbox.ending(self, card)
        self.store.end_session(self.id, outcome, card, owed=owed)
        self.outcome, self.card = outcome, card
        return card

    def _scorecard(self, outcome: Outcome) -> Scorecard:
        return scorecard(
            self.row.rubric,
            self.scenario,
            self.grader.records,
            outcome,
            duration_s=time.monotonic() - self._started,
        )

    def transcript(self) -> dict[str, Any]:
        """The session as a transcript file (the format ``trainer grade`` reads)."""
        return {
            "language": self.lang,
            "scenario": self.scenario.id,
            "difficulty": self.difficulty,
            **({"outcome": self.outcome} if self.outcome else {}),  # none while it runs
            "turns": [
                {"role": t.role, "text": t.text, "timestamp": t.created_at}
                | ({"voice": t.meta["voice"]["by"]} if "voice" in t.meta else {})
                | (
                    {"fallback": t.meta["voice"]["fallback"]}
                    if t.meta.get("voice", {}).get("fallback")
                    else {}
                )
                for t in self.store.turns(self.id)
                if t.role in ("customer", "trainee")  # not /hint records
            ],
        }


class Engine:
    """Creates and resumes sessions over a store and a scenario library."""

    def __init__(
        self,
        store: Store,
        library: ScenarioLibrary,
        assistants: Assistants | None = None,
        *,
        peers: Peers | None = None,
    ):
        self.store = store
        self.library = library
        self.assistants = assistants or Assistants()
        self.assistants.remember_modes(store)
        self.peers: Peers = peers or Alone()

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
        player: str | None = None,
        judge: str | None = None,
        postbox: Postbox | None = None,
        drill_customer_id: int | None = None,
    ) -> tuple[Session, str]:
        """Start a session; returns it and the customer's opening message (already stored).

        What the opening owes the trainee is stored with it when a ``postbox`` is given.

        ``player`` (``scripted`` or ``llm``) and ``judge`` (``rules`` or ``llm``) default to
        the scenario's. Asked for explicitly, an LLM role must be configured
        (:class:`NotConfigured` otherwise); a scenario's own ``llm`` quietly uses the
        scripted customer or the rule graders when no model is configured.
        """
        if mode not in MODES:
            raise ValueError(f"unknown mode '{mode}'; use one of {', '.join(MODES)}")
        if rubric not in RUBRICS:
            raise ValueError(f"unknown rubric '{rubric}'; use one of {', '.join(RUBRICS)}")
        resolved = self.library.get(scenario)
        player = self._choose("player", player, resolved.scenario.player, PLAYERS, "customer")
        if judge == "llm" and rubric != "default":
            raise ValueError(
                f"the LLM judge grades the default rubric's dimensions; the {rubric} rubric "
                "counts the rule graders' findings, so use --judge rules with it"
            )
        judge = self._choose("judge", judge, resolved.scenario.judge, JUDGES, "judge")
        if rubric != "default":
            judge = "rules"  # a scenario's own judge: llm does not apply to this rubric
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
            player=player,
            judge=judge,
            assignment_id=assignment_id,
            drill_customer_id=drill_customer_id,
        )
        row = self.store.session(session_id)
        assert row is not None
        mind = CustomerMind(resolved, difficulty)
        session = Session(
            self.store, row, resolved, mind, SessionGrader(resolved, lang), self.assistants
        )
        session.answered_by = self.peers.me if self.peers.shared else None
        opening = mind.opening()
        spoken = await session._speak(opening)
        session.opening_note = session._note(spoken)
        owed = None if postbox is None else postbox.opening(session, spoken.text)
        session._store_answer(opening, spoken, owed)
        return session, spoken.text

    def _choose(
        self, key: str, asked: str | None, default: str, allowed: tuple[str, ...], role: str
    ) -> str:
        if asked is not None and asked not in allowed:
            raise ValueError(f"unknown {key} '{asked}'; use one of {', '.join(allowed)}")
        if (asked or default) != "llm":
            return asked or default
        if getattr(self.assistants, role) is not None:
            return "llm"
        if asked == "llm":
            raise NotConfigured(
                f"no model is configured for the {role} role: set TRAINER_LLM_MODEL (and "
                f"OPENAI_BASE_URL, OPENAI_API_KEY) or [llm.{role}] model = ... in the config "
                "file; `trainer llm check` tests the endpoint (see docs/llm.md)"
            )
        return allowed[0]

    async def resume(
        self, session_id: str, *, postbox: Postbox | None = None
    ) -> tuple[Session, str | None]:
        """Rebuild an active session from the store, exactly where it stopped.

        If the process died after a reply was stored but before the customer answered,
        the missing grades and the customer's answer are produced now; that answer is
        returned so the adapter can show it (otherwise ``None``), and what it owes is
        stored with it when a ``postbox`` is given.
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
        session = Session(self.store, row, resolved, mind, grader, self.assistants)
        session.answered_by = self.peers.me if self.peers.shared else None
        stored = self.store.grades(row.id)
        turns = self.store.turns(row.id)
        last = turns[-1] if turns else None
        if last is not None and last.role == "trainee":
            owner = last.meta.get("by")  # who stored the reply; is it still answering it?
            if owner is not None and owner != self.peers.me and await self.peers.alive(owner):
                raise SessionBusy(f"session {row.id}: process {owner} is answering it")
        for turn in turns:
            if turn.role == "customer":
                session._heard(turn.text)
                rewrite = turn.meta.get("rewrite") or {}
                if rewrite.get("text") and grader.records:
                    session.rewrites[grader.records[-1].number] = rewrite["text"]
                continue
            if turn.role != "trainee":
                continue
            history = list(session.chat)
            record = await grader.trainee(turn.text, turn.latency_s)
            session._note_docked(record)
            session.chat.append(("trainee", turn.text))
            waited = session.curveball(turn.meta.get("waiting"))
            if waited is not None:
                session.waiting_at[record.number] = waited
            if turn.idx in stored:  # as graded then (a judge's grade is not asked again)
                grader.settle(record, tuple(stored[turn.idx]))
            else:
                record = grader.settle(record, await session._judged(record, history))
                self.store.add_grades(row.id, turn.idx, record.number, record.grades)
        pending = None
        if not any(turn.role == "customer" for turn in turns):
            # The process died while the (LLM) customer was writing the opening line.
            opening = mind.opening()
            spoken = await session._speak(opening)
            owed = None if postbox is None else postbox.opening(session, spoken.text)
            session._store_answer(opening, spoken, owed)
            pending = spoken.text
        elif turns and turns[-1].role == "trainee" and mind.mood.turn < len(grader.records):
            reaction = mind.react(grader.records[-1].findings)
            spoken = await session._speak(reaction)
            ending = mind.mood.ending
            owed = (
                None if postbox is None else postbox.line(session, spoken.text, ended=bool(ending))
            )
            with self.store.transaction():  # the line and the scorecard it ends with
                session._store_answer(reaction, spoken, owed)
                if ending is not None:
                    session._close(ending)
            pending = spoken.text
        return session, pending
