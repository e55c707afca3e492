"""The customer's state machine: anger, patience, what was revealed, and the ending.

The engine owns this state; a voice (scripted lines, or later an LLM) only phrases the
reaction it decides. It reads the same :class:`graders.Findings` the graders produce, so
the customer reacts to exactly what the graders saw.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from bot.scenario import AgendaItem, CustomerFact, Difficulty, ReactionKey, ResolvedScenario
from graders.findings import NEUTRAL_RESOLUTIONS, Findings, rules_for

Ending = Literal["resolved", "escalated", "left", "turn_limit"]


@dataclass
class Mood:
    """The customer's inner state; JSON-serialisable so a session can resume."""

    anger: float
    patience: int
    turn: int = 0
    acks: int = 0
    revealed: list[str] = field(default_factory=list)
    offered_ok: bool = False
    timeline: bool = False
    ownership: bool = False
    agenda_done: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    """Curveballs (agenda ids) whose expected answer has not come yet."""
    threatened_at: int = -10
    ending: Ending | None = None
    repeats: int = 0
    """How many messages in a row have repeated an unanswered curveball."""


@dataclass(frozen=True)
class Reaction:
    """What the customer does in one message, before it is put into words."""

    keys: tuple[ReactionKey, ...]
    reveals: tuple[CustomerFact, ...] = ()
    agenda: tuple[AgendaItem, ...] = ()
    ending: Ending | None = None
    repeat: int = 0
    """This message repeats its curveball for the n-th time (0: said for the first time)."""


class CustomerMind:
    """Decides how a customer reacts to each trainee reply, by difficulty profile."""

    def __init__(
        self, scenario: ResolvedScenario, difficulty: Difficulty, mood: Mood | None = None
    ):
        self.scenario = scenario
        self.difficulty = difficulty
        self.profile = scenario.profiles[difficulty]
        self.mood = mood or Mood(anger=self.profile.anger, patience=self.profile.patience)
        key = scenario.scenario.answer_key
        self.acceptable = set(key.acceptable_resolutions)
        self.forbidden = set(key.forbidden_resolutions)
        rules = rules_for(scenario)
        self.promise_clauses = set(rules.clauses("promise_beyond_authority")) | set(
            rules.clauses("compensation_cap")
        )

    def snapshot(self) -> dict[str, object]:
        """The mood as JSON-ready data."""
        return asdict(self.mood)

    @classmethod
    def restore(
        cls, scenario: ResolvedScenario, difficulty: Difficulty, data: dict[str, object]
    ) -> CustomerMind:
        """Rebuild a mind from :meth:`snapshot` data."""
        return cls(scenario, difficulty, Mood(**data))  # type: ignore[arg-type]

    def opening(self) -> Reaction:
        """The first message: the complaint, plus any facts given up front at this level."""
        volunteered = tuple(
            f for f in self.scenario.scenario.customer.facts if f.id in self.profile.volunteers
        )
        self.mood.revealed += [f.id for f in volunteered]
        return Reaction(("opening",), volunteered)

    def react(self, f: Findings) -> Reaction:
        """React to one trainee reply and decide whether the chat ends."""
        m, p = self.mood, self.profile
        m.turn += 1
        keys: list[ReactionKey] = []
        progress = False
        if f.insulted:
            m.ending = "escalated"
            return Reaction(("insulted",), ending="escalated")
        if f.blamed:
            m.anger += 2.5
            m.patience -= 1
            keys.append("blamed")
        elif f.deflected:
            m.anger += 2.0
            m.patience -= 1
            keys.append("deflected")

        facts = self.scenario.scenario.customer.facts
        reveals = [x for x in facts if x.id not in m.revealed and set(x.asked_by) & f.asks]
        if reveals:
            m.revealed += [x.id for x in reveals]
            progress = True
        elif f.asks:
            known = {i for x in facts for i in x.asked_by}
            if f.asks & self._answered_intents():
                m.anger += 1
                keys.append("repeat_ask")
            elif f.asks - known and not f.offers:
                keys.append("unknown")

        if f.acknowledged:
            m.anger -= p.ack_calm * p.ack_decay**m.acks
            progress = progress or m.acks == 0
            m.acks += 1
        elif f.ack_repeated_from is not None or (
            f.apologies and not f.offers and not reveals and not f.asks
        ):
            m.anger += 1
            keys.append("stock_phrase")
        if f.ownership_quote and not m.ownership:
            m.ownership = True
            m.anger -= 0.5

        offers = set(f.offers)
        good = offers & self.acceptable
        bad = (offers - self.acceptable - NEUTRAL_RESOLUTIONS) | (offers & self.forbidden)
        if good:
            if not m.offered_ok:
                m.anger -= p.resolution_calm
                progress = True
            m.offered_ok = True
        elif bad:
            m.anger += 1
            keys.append("offer_rejected")
        elif offers & NEUTRAL_RESOLUTIONS:
            m.anger -= 0.5
            progress = True
        settled = [
            a.id
            for a in self._agenda_items()
            if a.id in m.pending and set(a.expects) & (offers | f.asks | f.stated_facts)
        ]
        if settled:
            m.pending = [a for a in m.pending if a not in settled]
            m.anger -= 0.5
            progress = True
        if f.timeline and not m.timeline:  # a concrete time, even before the offer
            m.timeline = True
            m.anger -= 1.0 if (good or m.offered_ok) else 0.5
            progress = True
        if any(set(v.clause_ids) & set(self.promise_clauses) for v in f.violations):
            keys.append("overpromise")
        if f.stonewall:
            m.anger += 1
            keys.append("press")
        if progress:
            m.anger -= p.progress_calm  # the case moving forward calms a little every time
        else:
            m.patience -= 1
        m.anger = min(10.0, max(0.0, m.anger))
        return self._decide(keys, tuple(reveals))

    def waiting_on(self) -> AgendaItem | None:
        """The curveball the customer still waits to have answered (the one they repeat)."""
        pending = self.mood.pending
        return next((a for a in self._agenda_items() if pending and a.id == pending[0]), None)

    def _already_answered(self, item: AgendaItem) -> bool:
        """A curveball that only expects questions whose answers were already given.

        ("Read me my address" once identity is verified, "no unboxing video" once the
        photos are in): the trainee just answers; asking again is not required.
        """
        return set(item.expects) <= self._answered_intents()

    def _answered_intents(self) -> set[str]:
        """Questions whose answers the customer has already given."""
        facts = self.scenario.scenario.customer.facts
        return {i for f in facts if f.id in self.mood.revealed for i in f.asked_by}

    def _agenda_items(self) -> list[AgendaItem]:
        return self.scenario.scenario.customer.agenda

    def _decide(self, keys: list[ReactionKey], reveals: tuple[CustomerFact, ...]) -> Reaction:
        m, p = self.mood, self.profile
        agenda = self._agenda()
        m.pending += [a.id for a in agenda if a.expects and not self._already_answered(a)]
        accepted = (
            m.offered_ok
            and not m.pending
            and m.anger <= p.concede_at
            and (m.timeline or not p.needs_timeline)
            and (m.ownership or not p.needs_ownership)
        )
        if accepted:
            m.ending = "resolved"
            return Reaction((*_reactive(keys), "accept"), reveals, ending="resolved")
        if m.patience <= 0:
            m.ending = "escalated" if p.on_exhausted == "escalate" else "left"
            final: ReactionKey = "escalate" if m.ending == "escalated" else "leave"
            return Reaction((*_reactive(keys), final), reveals, ending=m.ending)
        if m.turn >= p.max_turns:
            m.ending = "turn_limit"
            return Reaction((*_reactive(keys), "turn_limit"), reveals, ending="turn_limit")
        repeat = 0
        if not agenda and m.pending:  # repeat the unanswered curveball, not word for word
            agenda = tuple(a for a in self._agenda_items() if a.id == m.pending[0])
            m.repeats += 1
            repeat = m.repeats
            keys.append("still_waiting")
        elif m.offered_ok:
            if p.needs_timeline and not m.timeline:
                keys.append("want_timeline")
            elif p.needs_ownership and not m.ownership:
                keys.append("want_ownership")
            elif not keys and not reveals and not agenda:
                keys.append("press")
        if m.patience <= 1 and m.turn - m.threatened_at >= 2:
            m.threatened_at = m.turn
            keys.append("threat")
        if not keys and not reveals and not agenda:
            keys.append(
                "calmer" if m.anger <= p.concede_at + 1 else "hurry" if m.ownership else "press"
            )
        if not repeat:
            m.repeats = 0
        return Reaction(tuple(dict.fromkeys(keys)), reveals, agenda, repeat=repeat)

    def _agenda(self) -> tuple[AgendaItem, ...]:
        """The curveball due now, if any: one per message, blocking ones first."""
        m = self.mood
        key = self.scenario.scenario.answer_key
        evidence_in = bool(key.evidence_required) and set(key.evidence_required) <= set(m.revealed)
        due = [
            item
            for item in self._agenda_items()
            if item.id not in m.agenda_done
            and (not item.only or self.difficulty in item.only)
            and (
                (item.after_turn is not None and item.after_turn <= m.turn)
                or (item.after_event == "resolution_offered" and m.offered_ok)
                or (item.after_event == "evidence_given" and evidence_in)
            )
        ]
        if not due:
            return ()
        due.sort(key=lambda item: not (item.expects and not self._already_answered(item)))
        m.agenda_done.append(due[0].id)
        return (due[0],)


def _reactive(keys: list[ReactionKey]) -> tuple[ReactionKey, ...]:
    """Keep only reactions that still make sense in a closing message."""
    return tuple(k for k in keys if k in ("blamed", "deflected", "overpromise", "offer_rejected"))
