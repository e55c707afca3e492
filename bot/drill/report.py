"""What a drill shows: the live leaderboard and, when it ends, the report.

Both are computed from the store alone (the drill's customers, their sessions and
scorecards), so a restarted server shows the same board, and a report can be made again
at any time.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bot.content import ScenarioLibrary
from bot.drill.plan import DrillPlan
from bot.storage import DrillCustomerRow, DrillRow, Store
from graders._base import Bilingual
from graders.rubric import Scorecard


@dataclass(frozen=True)
class Standing:
    """One trainee's (or the whole drill's) figures."""

    user_id: int | None
    """None for the whole drill."""
    name: str
    arrived: int
    handled: int
    """Conversations the trainee answered that ended before the customer gave up."""
    abandoned: int
    resolved: int
    first_response_mean_s: float | None
    first_response_p90_s: float | None
    reply_mean_s: float | None
    per_hour: float
    """Customers handled per hour of the drill."""
    score: float | None
    """Mean 100-point total (the default rubric) of the customers with a scorecard."""
    assessment: float | None
    """Mean of the company's 100-point assessment (``assessment100``) of the ended
    conversations."""
    dimensions: dict[str, float]
    """Mean score of each grade dimension (empathy, accuracy, policy)."""
    red_lines: int
    clauses: list[tuple[str, int]]
    """The most-broken policy clauses and how often, most first."""
    passed: bool | None = None
    reasons: tuple[Bilingual, ...] = field(default=())
    """Why the trainee did not pass (empty when passed)."""

    @property
    def abandon_rate(self) -> float:
        """Share of the arrived customers who left unanswered."""
        return self.abandoned / self.arrived if self.arrived else 0.0

    @property
    def resolution_rate(self) -> float:
        """Share of the arrived customers whose problem was resolved."""
        return self.resolved / self.arrived if self.arrived else 0.0


@dataclass(frozen=True)
class DrillReport:
    """A drill's standings: each trainee's and the whole drill's."""

    drill: DrillRow
    plan: DrillPlan
    trainees: list[Standing]
    team: Standing
    previous: Standing | None
    """The whole-drill figures of the last earlier drill with any of these trainees."""


def standings(store: Store, drill: DrillRow) -> DrillReport:
    """Everyone's figures now (live while the drill runs, final once it ended)."""
    plan = DrillPlan.model_validate(drill.plan)
    rows = store.drill_customers(drill.id)
    by_user: dict[int, list[DrillCustomerRow]] = {}
    for row in rows:
        by_user.setdefault(row.user_id, []).append(row)
    talks = _talks(store, rows)
    trainees = []
    for user_id, mine in by_user.items():
        user = store.user(user_id)
        standing = _standing(plan, mine, talks, user_id, user.name if user else str(user_id))
        trainees.append(_judged(plan, standing) if drill.status == "ended" else standing)
    trainees.sort(key=_rank)
    team = _standing(plan, rows, talks, None, "")
    return DrillReport(drill, plan, trainees, team, _previous(store, drill, set(by_user)))


def _rank(s: Standing) -> tuple[float, int, float]:
    """Best first: score, then customers handled, then the fastest first response."""
    return (-(s.score or 0.0), -s.handled, s.first_response_mean_s or math.inf)


_Talk = tuple[Scorecard | None, list[float]]
"""A customer's conversation as the report needs it: its scorecard, and the reply times."""


def _talks(store: Store, rows: Sequence[DrillCustomerRow]) -> dict[int, _Talk]:
    """Each served customer's conversation, read once for every standing that counts it."""
    talks: dict[int, _Talk] = {}
    for row in rows:
        if row.session_id is None:
            continue
        session = store.session(row.session_id)
        card = Scorecard.from_dict(session.scorecard) if session and session.scorecard else None
        waits = [
            t.latency_s
            for t in store.turns(row.session_id)
            if t.role == "trainee" and t.latency_s is not None
        ]
        talks[row.id] = (card, waits)
    return talks


def _standing(
    plan: DrillPlan,
    rows: Sequence[DrillCustomerRow],
    talks: dict[int, _Talk],
    user_id: int | None,
    name: str,
) -> Standing:
    arrived = [r for r in rows if r.status != "due"]
    handled = sum(1 for r in arrived if r.status == "done" and r.first_reply_at is not None)
    firsts = [r.first_reply_at - r.due_at for r in arrived if r.first_reply_at is not None]
    cards = []
    latencies: list[float] = []
    for row in arrived:
        card, waits = talks.get(row.id, (None, []))
        if card is not None:
            cards.append(card)
        latencies += waits
    totals = [c.total for c in cards if c.total is not None]
    dimensions: dict[str, list[float]] = {}
    clauses: Counter[str] = Counter()
    for card in cards:
        for dim in card.dimensions:
            if dim.score is not None:
                dimensions.setdefault(dim.id, []).append(dim.score)
        for entry in card.ledger:
            clauses.update(entry.clause_ids)
    return Standing(
        user_id=user_id,
        name=name,
        arrived=len(arrived),
        handled=handled,
        abandoned=sum(1 for r in arrived if r.status == "abandoned"),
        resolved=sum(1 for r in arrived if r.outcome == "resolved"),
        first_response_mean_s=_mean(firsts),
        first_response_p90_s=_p90(firsts),
        reply_mean_s=_mean(latencies),
        per_hour=handled / (plan.minutes / 60),
        score=_mean(totals),
        assessment=_mean([r.score100 for r in arrived if r.score100 is not None]),
        dimensions={key: round(sum(v) / len(v), 1) for key, v in dimensions.items()},
        red_lines=sum(len(c.red_lines) for c in cards),
        clauses=clauses.most_common(5),
    )


def _judged(plan: DrillPlan, s: Standing) -> Standing:
    """The standing with the plan's pass criteria applied."""
    rules = plan.pass_
    reasons: list[Bilingual] = []
    if s.score is None or s.score < rules.min_average:
        shown = "—" if s.score is None else f"{s.score:.1f}"
        reasons.append(
            {
                "zh": f"平均分 {shown}，低于 {rules.min_average:g}",
                "en": f"average score {shown}, under {rules.min_average:g}",
            }
        )
    p90 = s.first_response_p90_s
    if p90 is None or p90 > rules.max_first_response_p90_s:
        shown = "—" if p90 is None else f"{p90:.0f}"
        reasons.append(
            {
                "zh": f"首次响应 P90 {shown} 秒，超过 {rules.max_first_response_p90_s:g} 秒",
                "en": f"first-response p90 {shown} s, over {rules.max_first_response_p90_s:g} s",
            }
        )
    if s.abandon_rate > rules.max_abandon_rate:
        reasons.append(
            {
                "zh": f"流失率 {s.abandon_rate:.0%}，超过 {rules.max_abandon_rate:.0%}",
                "en": f"abandonment {s.abandon_rate:.0%}, over {rules.max_abandon_rate:.0%}",
            }
        )
    if s.red_lines > rules.max_red_lines:
        reasons.append(
            {
                "zh": f"红线 {s.red_lines} 次，上限 {rules.max_red_lines}",
                "en": f"{s.red_lines} red lines, at most {rules.max_red_lines}",
            }
        )
    return Standing(**{**s.__dict__, "passed": not reasons, "reasons": tuple(reasons)})


def _previous(store: Store, drill: DrillRow, users: set[int]) -> Standing | None:
    for earlier in store.drills(("ended",)):
        if earlier.id >= drill.id:
            continue
        rows = store.drill_customers(earlier.id)
        if users & {r.user_id for r in rows}:
            plan = DrillPlan.model_validate(earlier.plan)
            return _standing(plan, rows, _talks(store, rows), None, "")
    return None


def follow_up(library: ScenarioLibrary, standing: Standing, count: int = 2) -> list[str]:
    """The scenarios that train a trainee's most-broken clauses best, most overlap first."""
    weak = {clause for clause, _ in standing.clauses[:3]}
    ranked = sorted(
        (-len(weak & set(library.get(sid).applicable_clauses)), sid) for sid in library.ids()
    )
    return [sid for overlap, sid in ranked if overlap < 0][:count]


def _mean(values: Iterable[float]) -> float | None:
    items = list(values)
    return round(sum(items) / len(items), 1) if items else None


def _p90(values: Sequence[float]) -> float | None:
    """The 90th percentile (nearest rank)."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)], 1)


CSV_COLUMNS = (
    "trainee", "arrived", "handled", "abandoned", "abandon_rate", "resolution_rate",
    "first_response_mean_s", "first_response_p90_s", "reply_mean_s", "handled_per_hour",
    "score", "assessment100", "empathy", "accuracy", "policy", "red_lines", "top_clauses",
    "passed",
)  # fmt: skip


def to_csv(report: DrillReport) -> str:
    """The report as CSV: a row per trainee, then one for the whole drill."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for s in [*report.trainees, report.team]:
        writer.writerow(
            [
                s.name if s.user_id is not None else "(all)",
                s.arrived,
                s.handled,
                s.abandoned,
                f"{s.abandon_rate:.3f}",
                f"{s.resolution_rate:.3f}",
                _cell(s.first_response_mean_s),
                _cell(s.first_response_p90_s),
                _cell(s.reply_mean_s),
                f"{s.per_hour:.1f}",
                _cell(s.score),
                _cell(s.assessment),
                _cell(s.dimensions.get("empathy")),
                _cell(s.dimensions.get("accuracy")),
                _cell(s.dimensions.get("policy")),
                s.red_lines,
                " ".join(f"{clause}×{n}" for clause, n in s.clauses),
                "" if s.passed is None else ("yes" if s.passed else "no"),
            ]
        )
    return out.getvalue()


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:g}"
