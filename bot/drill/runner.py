"""Running drills: customers arrive, wait, nudge and leave on the clock; replies reach them.

All of a drill's state is in the store (``drills``, ``drill_customers``, each customer's
session), and every event is applied at the time it was due, not when it was noticed:
after a restart, :meth:`DrillRunner.tick` replays what came due meanwhile in time order,
so the drill's clocks, queues and leaderboard are where they would have been. What an
event owes a Telegram trainee (the customer's line, labelled) is stored with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bot.content import ScenarioLibrary
from bot.drill.plan import DrillPlan, schedule
from bot.engine import Engine, Session, SessionBusy, SessionClosed, TurnResult
from bot.i18n import Lang, Refusal
from bot.notices import TELEGRAM
from bot.storage import (
    Conflict,
    DrillCustomerRow,
    DrillRow,
    Owed,
    StaleDrill,
    Store,
    StoreError,
    StoreUnavailable,
    UserRow,
)
from graders.rubric import OUTCOME_TEXT, Outcome, Scorecard, scorecard

log = logging.getLogger(__name__)
CLOCK_S = 0.2
"""How often a server moves its drills on (a pass with nothing due reads one index)."""
WAITING = ("queued", "open")
"""States of a customer who has arrived and not gone."""
LABEL = re.compile(r"^【(C\d+) · ")
"""The label a drill customer's line starts with in a chat app (``【C2 · 刘女士】…``)."""


class DrillRefused(Refusal, ValueError):
    """A drill action that cannot be done; ``message`` says why, in both languages."""


@dataclass(frozen=True, order=True)
class _Due:
    at: float
    order: int
    customer: int
    kind: str


class _Postbox:
    """What a drill customer's lines owe their trainee: in Telegram, labelled texts."""

    def __init__(self, user: UserRow, label: str, ref: str | None):
        self.user = user
        self.label = label
        self.ref = ref
        self.lang: Lang = "en" if user.lang == "en" else "zh"

    def owe(self, session: Session, *lines: str) -> Owed:
        if not self.user.chat_id:  # the web shows the workspace from the store
            return Owed("", self.ref, ())
        name = session.scenario.scenario.customer.persona.name.get(self.lang)
        text = "\n".join(line for line in lines if line)
        body = {"text": f"【{self.label} · {name}】{text}"}  # as LABEL reads it
        return Owed(f"{TELEGRAM}{self.user.chat_id}", self.ref, (("text", body),))

    def opening(self, session: Session, text: str) -> Owed:
        return self.owe(session, text)

    def answer(self, session: Session, result: TurnResult) -> Owed:
        ended = OUTCOME_TEXT[result.ended][self.lang] if result.ended else ""
        return self.owe(session, result.customer_text or "", f"（{ended}）" if ended else "")

    def line(self, session: Session, text: str, *, ended: bool) -> Owed:
        return self.owe(session, text)

    def ending(self, session: Session, card: Scorecard) -> Owed:
        return self.owe(session, f"（{OUTCOME_TEXT[card.outcome][self.lang]}）")


class DrillRunner:
    """Plans drills and moves them on: arrivals, nudges, departures, replies, the end."""

    def __init__(
        self,
        store: Store,
        library: ScenarioLibrary,
        engine: Engine,
        *,
        clock: Callable[[], float] = time.time,
    ):
        self.store = store
        self.library = library
        self.engine = engine
        self.clock = clock
        self._sessions: dict[int, Session] = {}
        self._plans: dict[int, DrillPlan] = {}
        self._checked: set[int] = set()
        """Drills whose half-done changes (a crash between two writes) were repaired."""
        self._clock_lock = asyncio.Lock()
        """One pass of the clock at a time."""
        self._hands: dict[int, asyncio.Lock] = {}
        """Per trainee: one change at a time to their customers."""
        self._watchers: dict[int, set[asyncio.Event]] = {}
        """Per trainee: the events of the workspaces that show their customers."""
        self.announce: Callable[[int], None] | None = None
        """Called with a trainee's user id when this process changed their customers (to
        tell the other processes sharing the database; see :meth:`heard`)."""

    # planning

    def plan(
        self,
        plan: DrillPlan,
        members: Sequence[UserRow],
        *,
        starts_at: float,
        seed: int,
        created_by: int | None = None,
    ) -> int:
        """Store a drill and its whole schedule of customers; returns its id."""
        unknown = sorted(set(plan.scenarios) - set(self.library.scenarios))
        if unknown:
            raise DrillRefused(
                "unknown_scenario",
                {
                    "zh": f"场景库里没有：{', '.join(unknown)}。",
                    "en": f"No such scenario in the library: {', '.join(unknown)}.",
                },
            )
        if not members:
            raise DrillRefused(
                "nobody",
                {"zh": "演练至少需要一名学员。", "en": "A drill needs at least one trainee."},
            )
        users = {user.trainee: user for user in members}
        arrivals = schedule(plan, sorted(users), seed)
        return self.store.create_drill(
            preset=plan.id,
            plan=plan.model_dump(mode="json", by_alias=True),
            seed=seed,
            created_by=created_by,
            starts_at=starts_at,
            ends_at=starts_at + plan.minutes * 60,
            customers=[
                (
                    users[a.trainee].id,
                    a.trainee,
                    a.number,
                    a.scenario,
                    a.difficulty,
                    a.seed,
                    round(starts_at + a.at_s, 3),
                )
                for a in arrivals
            ],
        )

    # the clock

    async def tick(self, part: Part | None = None) -> int:
        """Apply every event due by now in every started drill; how many were applied.

        With ``part`` (parts, mine), only for the trainees of this process's parts of the
        clock (``user_id % parts in mine``): several processes share the drills out.
        """
        async with self._clock_lock:
            now = self.clock()
            applied = 0
            for drill in self.store.drills(("planned", "running")):
                if drill.starts_at <= now:
                    applied += await self._advance(drill, now, part=part)
            return applied

    async def _advance(
        self, drill: DrillRow, now: float, user_id: int | None = None, part: Part | None = None
    ) -> int:
        """Apply what came due, in time order.

        For one trainee (whose lock the caller holds), or for everyone (of ``part``), each
        change under its trainee's lock, so the others' replies go on meanwhile.
        """
        plan = self._plan(drill)
        if drill.status == "planned":
            self.store.set_drill_status(drill.id, "running", drill.starts_at)
        horizon = min(now, drill.ends_at)
        if user_id is None and drill.id not in self._checked:  # what a crash left half done
            try:
                for row in self.store.drill_customers(drill.id, ("due", *WAITING)):
                    if _ours(part, row.user_id):
                        await self._reconcile(plan, row)
                for loose in self.store.drill_loose_ends(drill.id):
                    if _ours(part, loose.user_id):
                        session = await self._session(loose)
                        await session.end(loose.outcome or "abandoned")  # type: ignore[arg-type]
                        self._sessions.pop(loose.id, None)
                await self._refill(drill.id, plan, part)
            except (SessionBusy, StaleDrill):  # another process is at it: look again next pass
                return 0
            self._checked.add(drill.id)
        rows = {c.id: c for c in self.store.drill_due(drill.id, horizon, user_id, part)}
        heap: list[_Due] = []
        order = 0

        def push(row: DrillCustomerRow) -> None:
            nonlocal order
            due = _next(plan, row)
            if due is not None:
                order += 1
                heapq.heappush(heap, _Due(due[1], order, row.id, due[0]))

        for row in rows.values():
            push(row)
        applied = 0
        while heap and heap[0].at <= horizon:
            event = heapq.heappop(heap)
            owner = rows[event.customer].user_id
            held = self._hand(owner) if user_id is None else contextlib.nullcontext()
            async with held:
                row = self._row(event.customer)  # a reply may have changed it meanwhile
                if _next(plan, row) != (event.kind, event.at):
                    rows[row.id] = row
                    push(row)
                    continue
                hand = {
                    c.id: c for c in self.store.drill_customers(drill.id, WAITING, user_id=owner)
                }
                try:
                    changed = await self._apply(plan, row, event.kind, event.at, hand)
                except (StaleDrill, SessionBusy):  # another process is moving the drill on
                    self._sessions.clear()
                    self._checked.discard(drill.id)
                    return applied
            applied += 1
            for each in changed:
                rows[each.id] = each
                push(each)
            if user_id is None:
                await asyncio.sleep(0)  # replies go on between the clock's events
        if user_id is None and now >= drill.ends_at:
            applied += await self._finish(drill, plan, now, part)
        return applied

    def _plan(self, drill: DrillRow) -> DrillPlan:
        plan = self._plans.get(drill.id)
        if plan is None:
            plan = self._plans[drill.id] = DrillPlan.model_validate(drill.plan)
        return plan

    def _write(
        self,
        plan: DrillPlan,
        row: DrillCustomerRow,
        changes: dict[str, object],
        *,
        events: Sequence[tuple[str, float, float]] = (),
        turn: tuple[str, str, dict[str, Any]] | None = None,
        owed: Owed | None = None,
        expect: DrillCustomerRow | None = None,
    ) -> DrillCustomerRow:
        """Change a customer, with when they next have something due (``next_at``).

        Returns the row as now stored (the caller holds the trainee's lock, and
        ``expect`` guards against other processes).
        """
        changed = dataclasses.replace(row, **changes)  # type: ignore[arg-type]
        due = _next(plan, changed)
        next_at = None if due is None else due[1]
        self.store.update_drill_customer(
            row.id,
            {**changes, "next_at": next_at},
            events=events,
            turn=turn,
            owed=owed,
            expect=expect,
        )
        self._changed(row.user_id)
        return dataclasses.replace(changed, next_at=next_at)

    @contextlib.contextmanager
    def watch(self, user_id: int) -> Iterator[asyncio.Event]:
        """An event set whenever one of the trainee's customers changes.

        Changes made by another process are seen when it announces them (:meth:`heard`);
        a watcher still refreshes now and then, as an announcement can be lost.
        """
        changed = asyncio.Event()
        self._watchers.setdefault(user_id, set()).add(changed)
        try:
            yield changed
        finally:
            mine = self._watchers.get(user_id, set())
            mine.discard(changed)
            if not mine:
                self._watchers.pop(user_id, None)

    def _changed(self, user_id: int) -> None:
        self.heard(user_id)
        if self.announce is not None:
            self.announce(user_id)

    def heard(self, user_id: int) -> None:
        """A trainee's customers changed (here or in another process): wake their watchers."""
        for changed in self._watchers.get(user_id, ()):
            changed.set()

    def take_over(self) -> None:
        """Begin moving the drills on (as the new leader): look again for what is half done."""
        self._checked.clear()

    def _hand(self, user_id: int) -> asyncio.Lock:
        """One change at a time to one trainee's customers (the clock's or a reply)."""
        return self._hands.setdefault(user_id, asyncio.Lock())

    async def _apply(
        self,
        plan: DrillPlan,
        row: DrillCustomerRow,
        kind: str,
        at: float,
        hand: dict[int, DrillCustomerRow],
    ) -> list[DrillCustomerRow]:
        """Apply one due event at its time ``at``; the customers it changed.

        Each event is logged with when it was due and when it was applied (the clock
        now, not the pass's start): the scheduler's lag.

        ``hand`` holds the trainee's other waiting customers (those who may open now).
        """
        event = (kind, at, self.clock())
        if kind == "arrive" and _free_hand(plan, row, hand):
            new = await self._open(plan, row, at, arrival=event)  # one write for both
        elif kind == "arrive":
            new = self._write(
                plan, row, {"status": "queued", "waiting_since": at}, events=[event], expect=row
            )
        elif kind == "nudge":
            session = await self._session(row)
            user = self._user(row)
            text = plan.nudge(row.nudged, _lang(user))
            state = session.waited(text)
            new = self._write(
                plan,
                row,
                {"nudged": row.nudged + 1, "nudges": row.nudges + 1},
                events=[event],
                turn=(session.id, text, state),
                owed=_Postbox(user, row.label, None).owe(session, text),
                expect=row,
            )
        else:  # leave
            talking = await self._session(row) if row.status == "open" else None
            new = self._write(
                plan,
                row,
                {
                    "status": "abandoned",
                    "ended_at": at,
                    "outcome": "abandoned",
                    "waiting_since": None,
                    "score100": _assessed(talking, row, "abandoned", at),
                },
                events=[event],
                expect=row,
            )
            if talking is not None:
                await talking.end("abandoned", postbox=_Postbox(self._user(row), row.label, None))
                self._sessions.pop(row.id, None)
        return [new, *await self._fill(plan, new, at, hand)]

    async def _fill(
        self,
        plan: DrillPlan,
        row: DrillCustomerRow,
        at: float,
        hand: dict[int, DrillCustomerRow],
    ) -> list[DrillCustomerRow]:
        """Open queued customers of ``row``'s trainee while they have a free hand."""
        mine = [r for r in hand.values() if r.id != row.id] + [row]
        busy = sum(1 for r in mine if r.status == "open")
        queued = sorted((r for r in mine if r.status == "queued"), key=_in_turn)
        opened = []
        for waiting in queued[: max(0, plan.concurrency - busy)]:
            opened.append(await self._open(plan, waiting, at))
        return opened

    async def _open(
        self,
        plan: DrillPlan,
        row: DrillCustomerRow,
        at: float,
        arrival: tuple[str, float, float] | None = None,
    ) -> DrillCustomerRow:
        """Start the conversation of a queued customer (or adopt one a crash left behind).

        With ``arrival`` (its event), the customer arrives and is served at once.
        """
        user = self._user(row)
        existing = self.store.drill_session_of(row.id)
        if existing is None:
            try:
                session, _ = await self._start(plan, row, user)
            except Conflict:  # another process opened it first
                raise StaleDrill(f"drill customer {row.id} was opened elsewhere") from None
        else:  # an opening a crash left unsaid is said now, and owed
            session, _ = await self.engine.resume(existing, postbox=_Postbox(user, row.label, None))
        self._sessions[row.id] = session
        changes: dict[str, object] = {"status": "open", "session_id": session.id, "opened_at": at}
        if arrival is not None:
            changes["waiting_since"] = at
        opened = ("open", at, self.clock())
        return self._write(
            plan,
            row,
            changes,
            events=[opened] if arrival is None else [arrival, opened],
            expect=row,
        )

    async def _start(
        self, plan: DrillPlan, row: DrillCustomerRow, user: UserRow
    ) -> tuple[Session, str]:
        return await self.engine.start(
            trainee=row.trainee,
            scenario=row.scenario_id,
            lang=_lang(user),
            difficulty=row.difficulty,  # type: ignore[arg-type]
            mode=plan.mode,
            seed=row.seed,
            postbox=_Postbox(user, row.label, None),
            drill_customer_id=row.id,
        )

    async def _finish(
        self, drill: DrillRow, plan: DrillPlan, now: float, part: Part | None = None
    ) -> int:
        """The drill's time is up: conversations end, the queue goes home, it is over.

        With ``part``, for its trainees; the drill is over once no part has anyone left.
        """
        ended = 0
        for stale in self.store.drill_customers(drill.id, WAITING):
            if _ours(part, stale.user_id):
                async with self._hand(stale.user_id):
                    ended += await self._close(drill, plan, stale.id, now)
        if part is not None and self.store.drill_customers(drill.id, WAITING):
            return ended  # other parts still have customers to close
        self.store.set_drill_status(drill.id, "ended", drill.ends_at)
        return ended + 1

    async def _close(self, drill: DrillRow, plan: DrillPlan, customer_id: int, now: float) -> int:
        """End one customer's part in a drill whose time is up (1, or 0 if already gone)."""
        row = self._row(customer_id)
        if row.status not in WAITING:
            return 0
        outcome: Outcome = "abandoned"  # still queued: never served
        status, session = "abandoned", None
        if row.status == "open":
            session = await self._session(row)
            await session.end("drill_ended", postbox=_Postbox(self._user(row), row.label, None))
            self._sessions.pop(row.id, None)
            outcome, status = "drill_ended", "done"
        self._write(
            plan,
            row,
            {
                "status": status,
                "ended_at": drill.ends_at,
                "outcome": outcome,
                "waiting_since": None,
                "score100": _assessed(session, row, outcome, drill.ends_at),
            },
            events=[("end", drill.ends_at, now)],
        )
        return 1

    # replies

    async def reply(
        self, user: UserRow, drill_id: int, label: str, text: str, *, ref: str | None = None
    ) -> TurnResult | None:
        """A trainee's reply to their customer ``label`` (``C3``) in a running drill.

        Whatever came due before it is applied first (a customer who left cannot be
        answered). A reply whose ``ref`` the conversation already has returns None.
        """
        try:
            return await self._reply(user, drill_id, label, text, ref)
        except SessionBusy:
            raise DrillRefused(
                "busy",
                {
                    "zh": f"给 {label} 的上一条回复还在处理中，请稍等几秒再发。",
                    "en": f"Your previous reply to {label} is still being answered; send "
                    "again in a few seconds.",
                },
            ) from None

    async def _reply(
        self, user: UserRow, drill_id: int, label: str, text: str, ref: str | None
    ) -> TurnResult | None:
        async with self._hand(user.id):
            drill = self.store.drill(drill_id)
            now = self.clock()
            if (
                drill is None
                or drill.status == "ended"
                or not drill.starts_at <= now < drill.ends_at
            ):
                raise DrillRefused(
                    "not_running",
                    {"zh": "这场演练没有在进行。", "en": "This drill is not running."},
                )
            plan = self._plan(drill)
            answered = self._labelled(drill_id, user, label)
            if answered is not None and answered.id not in self._sessions:  # after a restart
                await self._replied(plan, answered)
            await self._advance(drill, now, user.id)
            row = self._customer(drill_id, user, label)
            session = await self._session(row)
            if ref is not None and self.store.turn_with_ref(session.id, ref) is not None:
                return None
            latency = None if row.waiting_since is None else now - row.waiting_since
            try:
                result = await session.reply(
                    text, latency, ref=ref, postbox=_Postbox(user, row.label, ref)
                )
            except StoreError:  # half done in memory: the store's copy is read next time
                self._sessions.pop(row.id, None)
                raise
            changes: dict[str, object] = {
                "waiting_since": now,
                "nudged": 0,
                "replies": row.replies + 1,
            }
            if row.first_reply_at is None:
                changes["first_reply_at"] = now
            if session.ended:
                self._sessions.pop(row.id, None)
                changes.update(
                    status="done",
                    ended_at=now,
                    outcome=session.outcome,
                    waiting_since=None,
                    score100=_assessed(session, row, session.outcome, now),
                )
            done = self._write(plan, row, changes)
            if session.ended:
                rows = {
                    c.id: c for c in self.store.drill_customers(drill_id, WAITING, user_id=user.id)
                }
                with contextlib.suppress(StaleDrill):  # opened elsewhere: nothing left to do
                    await self._fill(plan, done, now, rows)
            return result

    def _labelled(self, drill_id: int, user: UserRow, label: str) -> DrillCustomerRow | None:
        """The trainee's customer called ``label`` (``C3``), in whatever state."""
        number = label.strip().upper().removeprefix("C")
        rows = self.store.drill_customers(drill_id, user_id=user.id)
        return next((r for r in rows if number.isdigit() and r.number == int(number)), None)

    def _customer(self, drill_id: int, user: UserRow, label: str) -> DrillCustomerRow:
        found = self._labelled(drill_id, user, label)
        if found is None or found.status != "open":
            gone = found is not None and found.status in ("done", "abandoned")
            raise DrillRefused(
                "not_open",
                {
                    "zh": f"客户 {label} 已经离开了。"
                    if gone
                    else f"没有正在等你回复的客户 {label}。",
                    "en": f"Customer {label} has gone."
                    if gone
                    else f"No customer {label} is waiting for you.",
                },
            )
        return found

    async def conversation(self, row: DrillCustomerRow) -> Session | None:
        """The conversation of an open customer as this process holds it (None once over)."""
        async with self._hand(row.user_id):
            row = self._row(row.id)  # a reply may have ended it while we waited
            if row.status != "open" or row.session_id is None:
                return None
            try:
                return await self._session(row)
            except (SessionClosed, SessionBusy):  # ended, or being answered, elsewhere
                return None

    # helpers

    def _row(self, customer_id: int) -> DrillCustomerRow:
        row = self.store.drill_customer(customer_id)
        assert row is not None
        return row

    def _user(self, row: DrillCustomerRow) -> UserRow:
        user = self.store.user(row.user_id)
        assert user is not None
        return user

    async def _session(self, row: DrillCustomerRow) -> Session:
        session = self._sessions.get(row.id)
        if (
            session is not None
            and self.engine.peers.shared
            and row.session_id is not None
            and self.store.spoken_turns(row.session_id) != len(session.chat)
        ):
            session = None  # another process moved the conversation on: read it again
        if session is None:  # an answer a crash left unsaid is said now, and owed
            assert row.session_id is not None
            postbox = _Postbox(self._user(row), row.label, None)
            session, _ = await self.engine.resume(row.session_id, postbox=postbox)
            self._sessions[row.id] = session
        return session

    async def _reconcile(self, plan: DrillPlan, row: DrillCustomerRow) -> None:
        """Repair what a crash between two writes left, and set when the customer is due.

        A reply stored in the conversation but not on the row, or a conversation that
        ended before its row said so, is taken in; a store from before ``next_at`` holds
        an early bound.
        """
        row = await self._replied(plan, row)
        session = None if row.session_id is None else self.store.session(row.session_id)
        if row.status != "open" or session is None or session.status == "active":
            due = _next(plan, row)
            if row.next_at != (None if due is None else due[1]):
                self.store.update_drill_customer(
                    row.id, {"next_at": None if due is None else due[1]}
                )
            return
        status = "abandoned" if session.outcome == "abandoned" else "done"
        self._write(
            plan,
            row,
            {
                "status": status,
                "outcome": session.outcome,
                "waiting_since": None,
                "ended_at": row.waiting_since or row.opened_at,
            },
        )
        self._sessions.pop(row.id, None)

    async def _refill(self, drill_id: int, plan: DrillPlan, part: Part | None = None) -> None:
        """Open the queued customers a crash left behind a free hand, when it came free.

        A conversation's end and the queue moving up are two writes; in between, the
        latest customer to finish freed the hand.
        """
        mine: dict[int, list[DrillCustomerRow]] = {}
        for row in self.store.drill_customers(drill_id):
            if _ours(part, row.user_id):
                mine.setdefault(row.user_id, []).append(row)
        for user_id, rows in mine.items():
            hand = {r.id: r for r in rows if r.status in WAITING}
            queued = sorted((r for r in hand.values() if r.status == "queued"), key=_in_turn)
            if not queued or len(hand) - len(queued) >= plan.concurrency:
                continue
            ended = [r.ended_at or 0.0 for r in rows if r.status not in (*WAITING, "due")]
            freed = max(ended, default=0.0)  # none: it arrived to a free hand
            async with self._hand(user_id):
                await self._fill(plan, queued[0], max(freed, queued[0].waiting_since or 0.0), hand)

    async def _replied(self, plan: DrillPlan, row: DrillCustomerRow) -> DrillCustomerRow:
        """Take in a reply the conversation holds but the row does not (a crash between).

        The reply counts at the time it was sent (its wait is stored with it); a customer
        answer the crash left unsaid is said now.
        """
        if row.status != "open" or row.session_id is None:
            return row
        said = [t for t in self.store.turns(row.session_id) if t.role == "trainee"]
        if len(said) <= row.replies:
            return row
        waited = said[-1].latency_s
        at = (
            self.clock()
            if row.waiting_since is None or waited is None
            else row.waiting_since + waited
        )
        changes: dict[str, object] = {"waiting_since": at, "nudged": 0, "replies": len(said)}
        if row.first_reply_at is None:
            changes["first_reply_at"] = at
        stored = self.store.session(row.session_id)
        ended, outcome, session = True, None if stored is None else stored.outcome, None
        if stored is not None and stored.status == "active":
            session = await self._session(row)
            ended, outcome = session.ended, session.outcome
        if ended:
            self._sessions.pop(row.id, None)
            changes.update(status="done", ended_at=at, outcome=outcome, waiting_since=None)
            if session is not None and session.outcome is not None:
                changes["score100"] = _assessed(session, row, session.outcome, at)
        return self._write(plan, row, changes)


def _next(plan: DrillPlan, row: DrillCustomerRow) -> tuple[str, float] | None:
    """The next thing due for this customer: arriving, a nudge or leaving."""
    if row.status == "due":
        return "arrive", row.due_at
    if row.status not in WAITING or row.waiting_since is None:
        return None
    nudges = plan.nudge_times(row.difficulty)
    if row.status == "open" and row.nudged < len(nudges):
        # Nudges that fell due in the queue come when the conversation opens.
        return "nudge", max(row.waiting_since + nudges[row.nudged], row.opened_at or 0.0)
    return "leave", row.waiting_since + plan.patience(row.difficulty)


def _assessed(
    session: Session | None, row: DrillCustomerRow, outcome: Outcome | None, at: float
) -> float | None:
    """A conversation under the company's 100-point assessment (None: never served).

    Its duration is the drill's (opened until ``at``), so a restart changes nothing.
    """
    if session is None or outcome is None:
        return None
    card = scorecard(
        "assessment100",
        session.scenario,
        session.grader.records,
        outcome,
        duration_s=at - (row.opened_at or at),
    )
    return card.total


def _in_turn(row: DrillCustomerRow) -> tuple[float, int]:
    """Queued customers are served in the order they came."""
    return row.due_at, row.id


def _free_hand(plan: DrillPlan, row: DrillCustomerRow, hand: dict[int, DrillCustomerRow]) -> bool:
    """Whether the trainee can take ``row`` now: a free hand and nobody queued before."""
    others = [r for r in hand.values() if r.id != row.id]
    if any(r.status == "queued" for r in others):
        return False
    return sum(1 for r in others if r.status == "open") < plan.concurrency


Part = tuple[int, frozenset[int]]
"""Parts of the drill clock: (how many, the ones this process moves on)."""


def _ours(part: Part | None, user_id: int) -> bool:
    """Whether a trainee's customers are this process's to move on (None: all are)."""
    return part is None or user_id % part[0] in part[1]


def _lang(user: UserRow) -> Lang:
    return "en" if user.lang == "en" else "zh"


async def run_clock(
    runner: DrillRunner,
    every: float | None = None,
    after: Callable[[], None] | None = None,
    part: Callable[[], Part | None] | None = None,
) -> None:
    """Move every started drill on every ``every`` seconds (:data:`CLOCK_S`) until cancelled.

    ``after`` is called whenever something happened (a channel then delivers what the
    events owe). With ``part``, only the parts of the clock it says this process holds
    now (one process of several). A failure is logged and the clock goes on: one broken
    drill never stops the server.
    """
    every = CLOCK_S if every is None else every  # read now: tests shorten it in a server
    held: frozenset[int] = frozenset()
    waiting = False
    while True:
        try:
            mine = None if part is None else part()
            if mine is not None:
                if mine[1] - held:
                    runner.take_over()  # new parts: look at them for what was left half done
                held = mine[1]
            if (mine is None or mine[1]) and await runner.tick(mine) and after is not None:
                after()
            waiting = False
        except StoreUnavailable as exc:  # said once per outage: the clock goes on after it
            if not waiting:
                log.warning("the drills wait for the database to answer again: %s", exc)
            waiting = True
        except Exception:
            log.exception("moving the drills on failed; trying again in %g s", every)
        await asyncio.sleep(every)
