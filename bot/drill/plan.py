"""What a festival drill is: the plan (data), its customers' schedule and its load.

A plan says who takes part, for how long, which scenarios and difficulties arrive, how
many customers each trainee handles at once, how they arrive (steady, or a surge first),
the first-response standard, how long a customer waits before nudging and leaving, and
what passes. Presets ship as YAML in ``scenarios/drills/``; a mentor starts from one.

Everything here is a pure function of the plan and a seed: the same plan, trainees and
seed give the same customers at the same times, so a drill can be stored, resumed after
a restart and compared with the next one.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from pydantic import Field, model_validator

from bot.i18n import Lang, Strict, Text
from bot.scenario import Difficulty, Slug

TELEGRAM_BOT_RATE = 30.0
"""Messages per second one Telegram bot may send (all chats together)."""
TELEGRAM_HEADROOM = 0.8
"""The share of that rate a drill may plan for. At the full rate, messages queue: in
bench_drill.py, 136 trainees (100 %) waited up to 12.7 s (p99) in the outbox."""
TYPING_S = 10.0
"""The fastest pace an agent keeps up for long: one reply every ten seconds."""
OPENING_GAP_S = 2.0
"""Seconds between the first customers of one trainee (a chat gets ~1 message/s)."""


class Surge(Strict):
    """The peak: for the first minutes, customers arrive faster."""

    minutes: float = Field(gt=0, le=120, description="How long the surge lasts from the start.")
    factor: float = Field(gt=1, le=10, description="Arrival rate during the surge × this.")


class PassCriteria(Strict):
    """What a trainee must reach in the drill to pass it."""

    min_average: float = Field(
        default=70, ge=0, le=100, description="Mean 100-point total of their customers."
    )
    max_first_response_p90_s: float = Field(
        default=60, gt=0, description="90th percentile of first-response times, seconds."
    )
    max_abandon_rate: float = Field(
        default=0.1, ge=0, le=1, description="Share of their customers who left unanswered."
    )
    max_red_lines: int = Field(default=0, ge=0, description="Red-line deductions allowed.")


class DrillPlan(Strict):
    """A drill's settings; a preset file holds one, with its ``id``."""

    id: Slug = Field(description="Stable id of the preset, e.g. double11-peak.")
    title: Text = Field(description="Shown to trainees and on the report.")
    minutes: float = Field(ge=1, le=480, description="How long customers keep arriving.")
    scenarios: dict[Slug, float] = Field(
        min_length=1, description="Scenario ids and their weights in the mix."
    )
    difficulties: dict[Difficulty, float] = Field(
        min_length=1, description="Difficulties and their weights in the mix."
    )
    concurrency: int = Field(ge=1, le=5, description="Customers one trainee handles at once.")
    customers_per_hour: float = Field(
        gt=0, le=600, description="Arrivals per trainee per hour outside a surge."
    )
    surge: Surge | None = Field(default=None, description="A faster start (Double 11 midnight).")
    first_response_s: float = Field(
        default=30, gt=0, le=600, description="The first-response standard, seconds."
    )
    patience_s: dict[Difficulty, float] = Field(
        description="Seconds an unanswered customer waits before leaving, by difficulty."
    )
    nudges: list[Text] = Field(
        description="What a waiting customer sends, in order, spread over their patience."
    )
    mode: str = Field(default="exam", pattern=r"^(coach|exam)$", description="coach or exam.")
    pass_: PassCriteria = Field(default_factory=PassCriteria, alias="pass")

    @model_validator(mode="after")
    def _weights_positive(self) -> DrillPlan:
        for key, weights in (("scenarios", self.scenarios), ("difficulties", self.difficulties)):
            if any(w <= 0 for w in weights.values()):
                raise ValueError(f"{key} weights must be above 0 — give each a positive weight")
        missing = set(self.difficulties) - set(self.patience_s)
        if missing:
            raise ValueError(
                f"patience_s has no value for {', '.join(sorted(missing))} — add one per "
                "difficulty in the mix"
            )
        return self

    def patience(self, difficulty: str) -> float:
        """Seconds a customer of ``difficulty`` waits unanswered before leaving."""
        return self.patience_s[difficulty]  # type: ignore[index]

    def nudge_times(self, difficulty: str) -> list[float]:
        """Seconds after the customer's unanswered message at which each nudge comes."""
        patience = self.patience(difficulty)
        count = len(self.nudges)
        return [patience * (k + 1) / (count + 1) for k in range(count)]

    def nudge(self, number: int, lang: Lang) -> str:
        """The ``number``-th nudge (from 0) in ``lang``."""
        return self.nudges[min(number, len(self.nudges) - 1)].get(lang)


@dataclass(frozen=True)
class Arrival:
    """One customer of one trainee: when they come and what their case is."""

    trainee: str
    number: int
    """1, 2, … per trainee, in order of arrival."""
    at_s: float
    """Seconds after the drill's start."""
    scenario: str
    difficulty: str
    seed: int

    @property
    def label(self) -> str:
        """A short name the trainee answers by (``C3``): stable for the whole drill."""
        return f"C{self.number}"


def rate_at(plan: DrillPlan, at_s: float) -> float:
    """Arrivals per trainee per second at ``at_s`` seconds into the drill."""
    rate = plan.customers_per_hour / 3600
    if plan.surge is not None and at_s < plan.surge.minutes * 60:
        rate *= plan.surge.factor
    return rate


def schedule(plan: DrillPlan, trainees: list[str], seed: int) -> list[Arrival]:
    """Every customer of every trainee, in order of arrival (deterministic).

    Each trainee starts with ``concurrency`` customers a couple of seconds apart; then
    customers arrive as a Poisson process at the plan's rate (faster in a surge), drawn
    from the scenario and difficulty mixes. Each trainee's draws depend only on the seed
    and their name, so adding a trainee never changes another's customers.
    """
    out: list[Arrival] = []
    end = plan.minutes * 60
    peak = max(rate_at(plan, 0), rate_at(plan, end))
    for trainee in trainees:
        rng = random.Random(f"{seed}/{trainee}")
        times = [k * OPENING_GAP_S for k in range(plan.concurrency)]
        at = times[-1]
        while True:  # thinning: candidates at the peak rate, kept in proportion
            at += rng.expovariate(peak)
            if at >= end:
                break
            if rng.random() * peak <= rate_at(plan, at):
                times.append(at)
        for number, at_s in enumerate(times, start=1):
            out.append(
                Arrival(
                    trainee,
                    number,
                    round(at_s, 3),
                    _pick(rng, plan.scenarios),
                    _pick(rng, plan.difficulties),
                    rng.randrange(1, 2**31),
                )
            )
    out.sort(key=lambda a: (a.at_s, a.trainee, a.number))
    return out


def _pick(rng: random.Random, weights: dict[str, float] | dict[Difficulty, float]) -> str:
    keys = sorted(weights)
    return rng.choices(keys, [weights[k] for k in keys])[0]  # type: ignore[index]


@dataclass(frozen=True)
class Load:
    """What a drill asks of a channel at its busiest."""

    messages_per_s: float
    """Messages the bot sends per second with every trainee at the plan's pace."""
    per_trainee: float
    telegram_trainees: int
    """Trainees one Telegram bot carries at that pace (80 % of its ~30 messages/s)."""

    def fits_telegram(self, trainees: int) -> bool:
        """Whether one Telegram bot carries ``trainees`` without customers queueing."""
        return trainees <= self.telegram_trainees


def load(plan: DrillPlan, trainees: int) -> Load:
    """The messages a drill of ``trainees`` sends per second at its busiest.

    A trainee answers each of their customers within the first-response standard but
    never faster than one reply per :data:`TYPING_S`; each reply brings the customer's
    answer (and in coach mode its feedback), and a waiting customer's nudges come on top.
    """
    replies = min(plan.concurrency / plan.first_response_s, 1 / TYPING_S)
    per_reply = 2 if plan.mode == "coach" else 1
    patience = min(plan.patience_s.values())
    nudges = plan.concurrency * len(plan.nudges) / patience if plan.nudges else 0.0
    per_trainee = replies * per_reply + nudges
    return Load(
        messages_per_s=per_trainee * trainees,
        per_trainee=per_trainee,
        telegram_trainees=math.floor(TELEGRAM_HEADROOM * TELEGRAM_BOT_RATE / per_trainee),
    )
