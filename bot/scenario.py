"""Scenario and policy-pack models: the content format, loaded from YAML with strict validation.

Scenarios live in ``scenarios/*.yaml`` (one per file), policy packs in
``scenarios/policies/*.yaml`` and the customer defaults shared by every scenario in
``scenarios/shared/customer.yaml``. The format is documented in ``docs/scenarios.md``;
``docs/scenario.schema.json`` is generated from these models.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from bot.i18n import LANGS, Lang, Phrases, Strict, Text

Slug = Annotated[str, Field(pattern=r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$", max_length=64)]
ClauseId = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+$", max_length=40)]

Severity = Literal["critical", "major", "minor"]
Difficulty = Literal["easy", "normal", "hard"]
DIFFICULTIES: tuple[Difficulty, ...] = ("easy", "normal", "hard")

Category = Literal[
    "damaged_shipment",
    "wrong_item",
    "refund_dispute",
    "missing_item",
    "price_protection",
    "delivery_delay",
    "quality_defect",
    "return_refused",
    "return_shipping",
    "lost_parcel",
    "rejected_delivery",
    "presale_deposit",
    "missing_gift",
    "invoice",
    "address_change",
    "order_cancelled",
    "repeat_contact",
]
PaymentChannel = Literal[
    "alipay",
    "wechat_pay",
    "bank_card",
    "credit_card",
    "unionpay",
    "huabei",
    "jd_baitiao",
    "balance",
]
PAYMENT_CHANNELS: tuple[PaymentChannel, ...] = PaymentChannel.__args__  # type: ignore[attr-defined]
Courier = Literal["sf", "jd", "zto", "yto", "sto", "yunda", "ems", "jt", "deppon"]

COURIER_NAMES: dict[Courier, dict[Lang, str]] = {
    "sf": {"zh": "顺丰速运", "en": "SF Express"},
    "jd": {"zh": "京东物流", "en": "JD Logistics"},
    "zto": {"zh": "中通快递", "en": "ZTO Express"},
    "yto": {"zh": "圆通速递", "en": "YTO Express"},
    "sto": {"zh": "申通快递", "en": "STO Express"},
    "yunda": {"zh": "韵达快递", "en": "Yunda Express"},
    "ems": {"zh": "中国邮政", "en": "China Post EMS"},
    "jt": {"zh": "极兔速递", "en": "J&T Express"},
    "deppon": {"zh": "德邦快递", "en": "Deppon Express"},
}
"""Display names; the graders' lexicon lists these and the other ways people write them."""
PAYMENT_NAMES: dict[PaymentChannel, dict[Lang, str]] = {
    "alipay": {"zh": "支付宝", "en": "Alipay"},
    "wechat_pay": {"zh": "微信支付", "en": "WeChat Pay"},
    "bank_card": {"zh": "银行卡", "en": "bank card"},
    "credit_card": {"zh": "信用卡", "en": "credit card"},
    "unionpay": {"zh": "云闪付", "en": "UnionPay"},
    "huabei": {"zh": "花呗", "en": "Huabei"},
    "jd_baitiao": {"zh": "京东白条", "en": "JD Baitiao"},
    "balance": {"zh": "账户余额", "en": "account balance"},
}
PHOTO_MARKERS: dict[Lang, tuple[str, ...]] = {
    "zh": ("[图片]", "[照片]", "[视频]", "[截图]"),
    "en": ("[photo]", "[image]", "[video]", "[screenshot]"),
}
"""How a chat shows that the customer sent a picture."""


def _local_time(value: dt.date) -> dt.date:
    """A datetime keeps the wall-clock time it was written with; a zone is dropped."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.replace(tzinfo=None)
    return value


When = Annotated[dt.date | dt.datetime, AfterValidator(_local_time)]
"""A date, optionally with a time of day (``2026-11-14`` or ``2026-11-14 10:30``)."""


def day_of(value: dt.date) -> dt.date:
    """The calendar day of a date or datetime."""
    return value.date() if isinstance(value, dt.datetime) else value


def _before(later: dt.date, earlier: dt.date) -> bool:
    """Whether ``later`` comes before ``earlier``.

    By the clock when both carry a time of day, else by the calendar day (a date alone
    is any time that day).
    """
    if isinstance(later, dt.datetime) and isinstance(earlier, dt.datetime):
        return later < earlier
    return day_of(later) < day_of(earlier)


ORDER_ID_PATTERN = r"^[A-Z]{0,4}\d{6,20}(?:-[0-9A-Z]{1,12}){0,3}$"
REFERENCE_PATTERN = r"^[A-Z]{2,4}\d{8,24}$"
TicketTeam = Literal["finance", "logistics", "quality", "supervisor"]
TICKET_TEAMS: dict[TicketTeam, dict[Lang, str]] = {
    "finance": {"zh": "财务", "en": "finance"},
    "logistics": {"zh": "物流", "en": "logistics"},
    "quality": {"zh": "质检", "en": "quality control"},
    "supervisor": {"zh": "主管", "en": "supervisor"},
}


AskIntent = Literal[
    "order_id",
    "identity",
    "photos",
    "signed_time",
    "problem_detail",
    "item_received",
    "tracking",
    "preference",
    "payment",
]
"""What a trainee can ask the customer for; each has a phrase list in the graders' lexicon."""

ResolutionKind = Literal[
    "refund",
    "price_difference",
    "reship",
    "exchange",
    "repair",
    "compensation",
    "escalate",
    "urge_courier",
    "cancel",
]
"""What a trainee can offer; each has a phrase list in the graders' lexicon."""

FactKind = Literal["order_id", "identity", "photos", "signed_time", "detail"]
ReactionKey = Literal[
    "opening",
    "press",
    "hurry",
    "calmer",
    "stock_phrase",
    "deflected",
    "blamed",
    "insulted",
    "repeat_ask",
    "still_waiting",
    "unknown",
    "offer_rejected",
    "want_timeline",
    "want_ownership",
    "overpromise",
    "threat",
    "accept",
    "escalate",
    "leave",
    "turn_limit",
]
REACTION_KEYS: tuple[ReactionKey, ...] = ReactionKey.__args__  # type: ignore[attr-defined]

RequiredFact = Literal[
    "refund_amount",
    "refund_channel",
    "refund_timing",
    "reship_timing",
    "price_difference",
    "shipping_payer",
    "eta",
    "callback_time",
]
Stage = Literal["opening", "investigate", "resolve", "follow_up"]
STAGES: tuple[Stage, ...] = ("opening", "investigate", "resolve", "follow_up")

SimpleCheckKind = Literal[
    "order_facts",
    "refund_channel",
    "refund_timing",
    "return_window",
    "exchange_window",
    "damage_report_window",
    "price_protection_window",
    "reship_timing",
    "shipping_fee_payer",
    "eligibility",
    "resolution_fit",
    "promise_beyond_authority",
    "compensation_cap",
    "identity_before_disclosure",
    "evidence_before_commitment",
    "forbidden_resolution",
    "delivery_guarantee",
    "escalation_ticket",
]

LINE_PLACEHOLDERS = frozenset(
    {
        "order_id",
        "item",
        "price",
        "courier",
        "tracking_no",
        "ordered_on",
        "shipped_on",
        "signed_on",
        "promised_by",
        "receiver_name",
        "phone_last4",
        "address",
        "eta",
        "price_difference",
        "refund_amount",
        "refund_reference",
        "refund_approved_on",
        "return_received_on",
        "callback_hours",
        "ticket_team",
        "refund_days",
    }
)


def check_patterns(phrases: list[str]) -> None:
    """Raise ValueError naming the first phrase whose ``re:`` regular expression is invalid."""
    for phrase in phrases:
        if phrase.startswith("re:"):
            try:
                re.compile(phrase[3:])
            except re.error as exc:
                raise ValueError(
                    f"bad regular expression {phrase!r} ({exc}) — fix it or drop the 're:'"
                ) from None


def placeholders(template: str) -> set[str]:
    """Return the ``{name}`` placeholders used in a format string.

    Raises ValueError for a lone ``{`` or ``}`` (write ``{{`` or ``}}`` for a brace).
    """
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name}
    except ValueError:
        raise ValueError(
            f"unbalanced brace in {template[:40]!r} — write {{{{ or }}}} for a literal brace"
        ) from None


# --- calibration against labelled replies -----------------------------------------


class CalibrationTargets(Strict):
    """Minimum agreement between the graders and labelled replies (each optional)."""

    empathy_qwk: float | None = Field(
        default=None, ge=-1, le=1, description="Quadratic weighted kappa, in each language."
    )
    empathy_exact: float | None = Field(default=None, ge=0, le=1)
    clause_recall: float | None = Field(
        default=None, ge=0, le=1, description="Share of labelled clause violations found."
    )
    clause_precision: float | None = Field(
        default=None, ge=0, le=1, description="Share of flagged clause violations that are real."
    )
    clause_recall_each: float | None = Field(
        default=None, ge=0, le=1, description="Recall of every clause with enough examples."
    )
    clause_precision_each: float | None = Field(
        default=None, ge=0, le=1, description="Precision of every clause with enough flags."
    )
    min_support: int = Field(
        default=5, ge=1, description="Examples a clause needs before its own figures count."
    )
    red_line_recall: float | None = Field(
        default=None, ge=0, le=1, description="Share of labelled red lines (critical) found."
    )
    accuracy_wrong_caught: float | None = Field(
        default=None, ge=0, le=1, description="Share of 'wrong' replies graded below full."
    )
    accuracy_correct_credited: float | None = Field(
        default=None, ge=0, le=1, description="Share of 'correct' replies graded full marks."
    )


class Calibration(Strict):
    """Labelled replies the graders must agree with before a scenario is used to assess."""

    labels: list[str] = Field(
        min_length=1, description="JSONL files of labelled replies, relative to this file."
    )
    min: CalibrationTargets = Field(description="Agreement required on those replies.")


# --- policy packs -----------------------------------------------------------------


def clause_placeholders() -> set[str]:
    """Placeholders a clause text may use: flat params plus ``refund_days_<channel>``."""
    flat = {name for name in PolicyParams.model_fields if name != "refund_days"}
    return flat | {f"refund_days_{channel}" for channel in PAYMENT_CHANNELS}


class SimpleCheck(Strict):
    """A rule check whose parameters come from the pack's ``params`` and the scenario."""

    kind: SimpleCheckKind = Field(description="Which rule the graders apply for this clause.")


class PhraseCheck(Strict):
    """Forbidden wording: a lexicon category of the graders and/or extra phrases."""

    kind: Literal["forbidden_phrases"] = "forbidden_phrases"
    lexicon: str | None = Field(
        default=None, description="A forbidden-phrase category in graders/data/lexicon.yaml."
    )
    phrases: Phrases = Field(
        default_factory=Phrases,
        description="Extra phrases; a phrase starting with 're:' is a regular expression.",
    )
    negatable: bool = Field(
        default=True, description="Whether a preceding negation (无法/不会/not) cancels a hit."
    )

    @model_validator(mode="after")
    def _needs_source(self) -> PhraseCheck:
        if self.lexicon is None and not (self.phrases.zh or self.phrases.en):
            raise ValueError("give a 'lexicon' category or some 'phrases'")
        check_patterns([*self.phrases.zh, *self.phrases.en])
        return self


Check = Annotated[SimpleCheck | PhraseCheck, Field(discriminator="kind")]


def _day_range(value: tuple[int, int]) -> tuple[int, int]:
    lo, hi = value
    if not 0 <= lo <= hi:
        raise ValueError(
            f"[{lo}, {hi}] is not [min, max] business days — write [min, max] with "
            "0 <= min <= max, e.g. [1, 7]"
        )
    return value


DayRange = Annotated[tuple[int, int], AfterValidator(_day_range)]
"""Business days [min, max] until a refund arrives."""


class RefundDays(Strict):
    """Business days until a refund arrives, per original payment channel: [min, max]."""

    alipay: DayRange
    wechat_pay: DayRange
    bank_card: DayRange
    credit_card: DayRange
    unionpay: DayRange
    huabei: DayRange
    jd_baitiao: DayRange
    balance: DayRange

    def for_channel(self, channel: PaymentChannel) -> tuple[int, int]:
        """Return the [min, max] days for ``channel``."""
        value: tuple[int, int] = getattr(self, channel)
        return value


class PolicyParams(Strict):
    """Shop parameters the clauses and graders use; every pack resolves to a full set."""

    no_reason_return_days: int = Field(ge=0, description="No-reason return window after sign-for.")
    quality_exchange_days: int = Field(ge=0, description="Quality-problem exchange window.")
    damage_report_hours: int = Field(ge=0, description="Hours after sign-for to report damage.")
    reship_within_hours: int = Field(ge=0, description="Hours to ship a replacement.")
    price_protection_days: int = Field(ge=0, description="Price-protection window after purchase.")
    compensation_cap: int = Field(ge=0, description="Largest goodwill compensation (yuan).")
    delay_compensation_days: int = Field(
        ge=0,
        description="Days past the promised date after which a delay earns compensation "
        "(used in clause text; no grader checks it).",
    )
    ticket_callback_hours: int = Field(
        ge=1, description="Hours within which a finance or logistics ticket gets a callback."
    )
    invoice_days: int = Field(
        ge=0, description="Business days to issue or reissue an electronic invoice."
    )
    refund_days: RefundDays = Field(description="Refund arrival time per payment channel.")


class RefundDaysPatch(Strict):
    """The channels whose refund time a pack or scenario sets; the others are inherited."""

    alipay: DayRange | None = None
    wechat_pay: DayRange | None = None
    bank_card: DayRange | None = None
    credit_card: DayRange | None = None
    unionpay: DayRange | None = None
    huabei: DayRange | None = None
    jd_baitiao: DayRange | None = None
    balance: DayRange | None = None


class PolicyParamsPatch(Strict):
    """Parameters a pack or scenario sets; the rest come from the pack it builds on."""

    no_reason_return_days: int | None = Field(default=None, ge=0)
    quality_exchange_days: int | None = Field(default=None, ge=0)
    damage_report_hours: int | None = Field(default=None, ge=0)
    reship_within_hours: int | None = Field(default=None, ge=0)
    price_protection_days: int | None = Field(default=None, ge=0)
    compensation_cap: int | None = Field(default=None, ge=0)
    delay_compensation_days: int | None = Field(default=None, ge=0)
    ticket_callback_hours: int | None = Field(default=None, ge=1)
    invoice_days: int | None = Field(default=None, ge=0)
    refund_days: RefundDaysPatch | None = Field(
        default=None, description="Channels to change; the others keep the inherited days."
    )


def patch_params(values: dict[str, Any], patch: PolicyParamsPatch) -> dict[str, Any]:
    """``values`` with what ``patch`` sets on top; ``refund_days`` merges channel by channel."""
    given = patch.model_dump(exclude_none=True)
    merged = {**values, **given}
    if "refund_days" in given and "refund_days" in values:
        merged["refund_days"] = {**values["refund_days"], **given["refund_days"]}
    return merged


def param_items(values: dict[str, Any]) -> dict[str, Any]:
    """Parameters by name, with one ``refund_days.<channel>`` entry per refund channel."""
    flat = {name: value for name, value in values.items() if name != "refund_days"}
    for channel, days in values.get("refund_days", {}).items():
        flat[f"refund_days.{channel}"] = days
    return flat


class Clause(Strict):
    """One policy rule with a stable id that grades cite."""

    id: ClauseId = Field(description="Stable id, e.g. RET-7D. Never reuse an id for a new rule.")
    title: Text
    text: Text = Field(description="The rule; may use {param} placeholders from the pack params.")
    severity: Severity = Field(
        description="critical = red line that fails the session; major; minor."
    )
    scope: Literal["always", "scenario"] = Field(
        default="scenario",
        description="'always' applies to every scenario; 'scenario' only where a scenario lists it.",
    )
    checks: list[Check] = Field(default_factory=list, description="Rules the graders apply.")

    @field_validator("text")
    @classmethod
    def _known_params(cls, text: Text) -> Text:
        known = clause_placeholders()
        for lang_text in (text.zh, text.en):
            unknown = placeholders(lang_text) - known
            if unknown:
                raise ValueError(
                    f"unknown placeholder {{{sorted(unknown)[0]}}}; use one of "
                    + ", ".join(sorted(known))
                )
        return text


class PolicyPack(Strict):
    """A shop's policy: parameters and clauses. May extend another pack."""

    id: Slug
    title: Text
    extends: Slug | None = Field(default=None, description="Pack whose params/clauses to inherit.")
    params: PolicyParamsPatch = Field(default_factory=PolicyParamsPatch)
    clauses: list[Clause] = Field(default_factory=list)
    calibration: Calibration | None = Field(
        default=None,
        description="Agreement required on labelled replies of this pack's scenarios "
        "(`trainer scenarios validate --calibrated`); not inherited by packs that extend it.",
    )

    @field_validator("clauses")
    @classmethod
    def _unique_ids(cls, clauses: list[Clause]) -> list[Clause]:
        seen: set[str] = set()
        for clause in clauses:
            if clause.id in seen:
                raise ValueError(f"clause id {clause.id} appears twice; ids must be unique")
            seen.add(clause.id)
        return clauses


# --- scenarios --------------------------------------------------------------------


class Receiver(Strict):
    """Who the order ships to: the data identity verification protects."""

    name: Text
    phone: str = Field(pattern=r"^1\d{10}$", description="11-digit mainland mobile number.")
    address: Text


class Order(Strict):
    """The order facts, as the shop's back office shows them."""

    order_id: str = Field(
        pattern=ORDER_ID_PATTERN,
        description="Up to 4 capital letters, digits, and optional dash-separated groups "
        "(JD2026111100123, JD20261201-0042). Matched however a customer writes it.",
    )
    item: Text
    quantity: int = Field(default=1, ge=1)
    price: float = Field(gt=0, description="Amount the customer paid for the item (yuan).")
    shipping_fee: float = Field(default=0, ge=0)
    freight_insurance: bool = Field(default=False, description="运费险 bought with the order.")
    payment: PaymentChannel
    courier: Courier
    tracking_no: str | None = Field(default=None, pattern=r"^[A-Z0-9]{8,20}$")
    ordered_on: When = Field(description="Order date, optionally with a time of day.")
    shipped_on: When | None = None
    signed_on: When | None = Field(
        default=None, description="Sign-for date, optionally with a time; None = not yet."
    )
    promised_by: When | None = Field(default=None, description="Promised delivery date.")
    return_received_on: When | None = Field(
        default=None,
        description="When the warehouse received the returned or refused parcel; None = not yet.",
    )
    refund_approved_on: When | None = Field(
        default=None, description="When the refund was approved (refund cases); None = not yet."
    )
    refund_reference: str | None = Field(
        default=None,
        pattern=REFERENCE_PATTERN,
        description="The refund's reference number (退款单号), e.g. RF20261118143000021. "
        "Not an order number: graders read it as a reference.",
    )
    receiver: Receiver

    def refund_facts(self) -> list[tuple[str, object]]:
        """The refund facts the case records, for the order view: (name, value)."""
        facts = [
            ("received_back", self.return_received_on),
            ("refund_approved", self.refund_approved_on),
            ("refund_reference", self.refund_reference),
        ]
        return [(name, value) for name, value in facts if value is not None]

    @model_validator(mode="after")
    def _date_order(self) -> Order:
        dates = [("ordered_on", self.ordered_on), ("shipped_on", self.shipped_on)]
        dates.append(("signed_on", self.signed_on))
        known = [(k, v) for k, v in dates if v is not None]
        for (k1, v1), (k2, v2) in itertools.pairwise(known):
            if _before(v2, v1):
                raise ValueError(f"{k2} ({v2}) is before {k1} ({v1})")
        back = self.return_received_on
        for k1, v1 in known:
            if back is not None and _before(back, v1):
                raise ValueError(f"return_received_on ({back}) is before {k1} ({v1})")
        return self


class Line(Strict):
    """One customer line in both languages; ``only`` limits it to some difficulties."""

    zh: str = Field(min_length=1)
    en: str = Field(min_length=1)
    only: list[Difficulty] | None = Field(
        default=None, description="Difficulties this line is used at; all when omitted."
    )

    def get(self, lang: Lang) -> str:
        """Return the line in ``lang``."""
        return self.zh if lang == "zh" else self.en

    def usable_at(self, difficulty: Difficulty) -> bool:
        """Whether this line may be said at ``difficulty``."""
        return self.only is None or difficulty in self.only


Lines = dict[ReactionKey, list[Line]]


class CustomerFact(Strict):
    """Something the customer knows and reveals only when the trainee asks for it."""

    id: Slug
    kind: FactKind = Field(
        description="order_id, identity, photos and signed_time are detected in text "
        "automatically; 'detail' uses 'markers'."
    )
    asked_by: list[AskIntent] = Field(min_length=1, description="Questions that reveal it.")
    say: list[Line] = Field(min_length=1, description="How the customer reveals it.")
    markers: Phrases = Field(
        default_factory=Phrases,
        description="Words whose presence in a customer message shows this fact was given "
        "(required for kind 'detail').",
    )


class AgendaItem(Strict):
    """A curveball the customer raises once: at a turn or after an event."""

    id: Slug
    after_turn: int | None = Field(default=None, ge=1, description="After this trainee reply.")
    after_event: Literal["resolution_offered", "evidence_given"] | None = None
    only: list[Difficulty] | None = None
    say: Text
    expects: list[ResolutionKind | AskIntent | RequiredFact] = Field(
        default_factory=list,
        description="What answers this curveball: an offer (e.g. compensation, escalate), a "
        "question (e.g. identity) or a fact stated correctly (e.g. shipping_payer). Until a "
        "later reply gives one, the customer will not accept any offer and repeats the demand.",
    )
    answer: Text | None = Field(
        default=None,
        description="A model reply to this curveball. While the customer waits for an answer, "
        "/hint and the better reply after a docked reply show it instead of the stage's "
        "exemplar; it should earn full marks right after the curveball.",
    )

    @model_validator(mode="after")
    def _one_trigger(self) -> AgendaItem:
        if (self.after_turn is None) == (self.after_event is None):
            raise ValueError("set exactly one of 'after_turn' and 'after_event'")
        return self


class Persona(Strict):
    """Who the customer is (not graded).

    The name labels their messages; the description guides authors and LLM players.
    """

    name: Text
    description: Text = Field(description="Temper, habits, how they write.")


class Customer(Strict):
    """The customer's knowledge, goals and lines."""

    persona: Persona
    wants: Text = Field(description="What the customer wants out of the chat.")
    facts: list[CustomerFact] = Field(default_factory=list)
    unknown: list[Text] = Field(
        default_factory=list,
        description="Things the customer does not know and must not invent (for LLM players; "
        "the scripted customer answers any question it has no fact for with an 'unknown' line).",
    )
    lines: Lines = Field(
        default_factory=dict, description="Scenario lines; keys missing here come from shared."
    )
    agenda: list[AgendaItem] = Field(default_factory=list)


class DifficultyProfile(Strict):
    """How a customer behaves at one difficulty: the numbers, not a label."""

    anger: float = Field(ge=0, le=10, description="Starting anger, 0 calm to 10 furious.")
    patience: int = Field(
        ge=1,
        description="Patience points: an unproductive reply costs 1, blaming or brushing off "
        "costs 2; the customer gives up when it reaches 0.",
    )
    ack_calm: float = Field(ge=0, description="Anger removed by the first real acknowledgement.")
    ack_decay: float = Field(ge=0, le=1, description="Each further acknowledgement calms × this.")
    resolution_calm: float = Field(ge=0, description="Anger removed by an acceptable offer.")
    progress_calm: float = Field(
        ge=0, description="Anger removed by every reply that moves the case forward."
    )
    concede_at: float = Field(
        ge=0, le=10, description="Accepts an offer only at this anger or below."
    )
    needs_timeline: bool = Field(description="Accepts only once a timeline has been stated.")
    needs_ownership: bool = Field(description="Accepts only once the trainee has taken ownership.")
    on_exhausted: Literal["escalate", "leave"] = Field(description="What happens at zero patience.")
    max_turns: int = Field(ge=2, description="Trainee replies before the session ends anyway.")
    volunteers: list[Slug] = Field(
        default_factory=list, description="Fact ids the customer gives in the opening message."
    )


class DifficultyPatch(Strict):
    """Per-scenario overrides of the shared difficulty profile."""

    anger: float | None = Field(default=None, ge=0, le=10)
    patience: int | None = Field(default=None, ge=1)
    ack_calm: float | None = Field(default=None, ge=0)
    ack_decay: float | None = Field(default=None, ge=0, le=1)
    resolution_calm: float | None = Field(default=None, ge=0)
    progress_calm: float | None = Field(default=None, ge=0)
    concede_at: float | None = Field(default=None, ge=0, le=10)
    needs_timeline: bool | None = None
    needs_ownership: bool | None = None
    on_exhausted: Literal["escalate", "leave"] | None = None
    max_turns: int | None = Field(default=None, ge=2)
    volunteers: list[Slug] | None = None


class ForbiddenMove(Strict):
    """Wording that breaks a clause in this scenario (graded like a phrase check)."""

    clause: ClauseId = Field(description="The applicable clause this wording breaks.")
    phrases: Phrases = Field(
        description="Phrases; one starting with 're:' is a regular expression."
    )
    negatable: bool = Field(default=True, description="Whether a preceding negation cancels a hit.")

    @model_validator(mode="after")
    def _valid(self) -> ForbiddenMove:
        if not (self.phrases.zh or self.phrases.en):
            raise ValueError("give some phrases")
        check_patterns([*self.phrases.zh, *self.phrases.en])
        return self


class AnswerKey(Strict):
    """What the graders check replies against."""

    problem_terms: Phrases = Field(
        description="Words naming this customer's problem; an apology that names it is specific."
    )
    defect_terms: Phrases = Field(
        default_factory=Phrases,
        description="Words saying what went wrong (裂了, 'wrong size', 没到账); naming it is an "
        "acknowledgement without an apology. Not the item's name or the remedy's.",
    )
    wanted_terms: Phrases = Field(
        default_factory=Phrases,
        description="Words naming what this customer asks for (面霜, 'black M', 差价); naming it "
        "in an offer restates what they want, an acknowledgement.",
    )
    acceptable_resolutions: list[ResolutionKind] = Field(min_length=1)
    forbidden_resolutions: list[ResolutionKind] = Field(
        default_factory=list, description="Offers that break policy here."
    )
    forbidden_phrases: list[ForbiddenMove] = Field(
        default_factory=list, description="Scenario-specific wording that breaks a clause."
    )
    evidence_required: list[Slug] = Field(
        default_factory=list,
        description="Fact ids to ask for before committing to a refund, reship, exchange or "
        "price-difference refund.",
    )
    shipping_payer: Literal["merchant", "customer", "insurance"] = Field(
        description="Who pays return shipping in this case."
    )
    return_eligible: bool | None = Field(default=None, description="No-reason return allowed?")
    price_protection_eligible: bool | None = None
    refund_amount: float | None = Field(default=None, gt=0)
    price_difference: float | None = Field(default=None, gt=0)
    eta: dt.date | None = Field(default=None, description="Delivery date the back office shows.")
    ticket: TicketTeam | None = Field(
        default=None,
        description="The team an escalation ticket goes to in this case (finance, logistics, "
        "quality, supervisor); needed by a clause with an 'escalation_ticket' check. The "
        "callback time is the pack's ticket_callback_hours.",
    )
    required_facts: dict[ResolutionKind, list[RequiredFact]] = Field(
        default_factory=dict,
        description="Facts the trainee must state when offering each resolution.",
    )
    exemplars: dict[Stage, Text] = Field(description="A model reply for each stage of the chat.")

    @field_validator("exemplars")
    @classmethod
    def _all_stages(cls, exemplars: dict[Stage, Text]) -> dict[Stage, Text]:
        missing = [s for s in STAGES if s not in exemplars]
        if missing:
            raise ValueError(f"add exemplars for stages {', '.join(missing)}")
        return exemplars


class Scenario(Strict):
    """One practice case: an angry customer, an order, the policy and the answer key."""

    id: Slug
    version: int = Field(default=1, ge=1, description="Bump when grading-relevant content changes.")
    category: Category
    title: Text
    briefing: Text = Field(description="What the trainee is told before the chat starts.")
    policy: Slug = Field(default="default-shop", description="Policy pack id.")
    clauses: list[ClauseId] = Field(description="Clauses of the pack that apply here.")
    params: PolicyParamsPatch = Field(
        default_factory=PolicyParamsPatch,
        description="Pack parameters this scenario changes, e.g. {compensation_cap: 10}.",
    )
    graders: list[str] = Field(
        default_factory=lambda: ["empathy", "accuracy", "policy"],
        description="Registered grader names run on every reply.",
    )
    player: Literal["scripted", "llm"] = Field(
        default="scripted",
        description="Who phrases the customer's lines: the scenario's own lines, or an LLM "
        "(the engine still decides what the customer does; see docs/llm.md).",
    )
    judge: Literal["rules", "llm"] = Field(
        default="rules",
        description="Who grades: the rule graders alone, or an LLM judge bounded by them.",
    )
    today: When = Field(
        description="When the chat takes place: a date, optionally with a time of day."
    )
    order: Order
    customer: Customer
    difficulty: dict[Difficulty, DifficultyPatch] = Field(default_factory=dict)
    answer_key: AnswerKey
    calibration: Calibration | None = Field(
        default=None,
        description="Agreement required on labelled replies of this scenario; overrides "
        "the pack's (`trainer scenarios validate --calibrated`).",
    )

    def fact(self, fact_id: str) -> CustomerFact | None:
        """Return the customer fact with ``fact_id``, if any."""
        return next((f for f in self.customer.facts if f.id == fact_id), None)


class SharedCustomer(Strict):
    """Defaults every scenario inherits: difficulty profiles and generic customer lines."""

    difficulty: dict[Difficulty, DifficultyProfile]
    lines: Lines

    @field_validator("difficulty")
    @classmethod
    def _all_levels(
        cls, profiles: dict[Difficulty, DifficultyProfile]
    ) -> dict[Difficulty, DifficultyProfile]:
        missing = [d for d in DIFFICULTIES if d not in profiles]
        if missing:
            raise ValueError(f"add profiles for {', '.join(missing)}")
        return profiles


# --- resolved content: what the engine and the graders work with --------------------


@dataclass(frozen=True)
class ResolvedPolicy:
    """A policy pack with inheritance applied: full params and all clauses by id.

    A scenario that sets ``params`` gets its own copy with those values.
    """

    id: str
    title: dict[Lang, str]
    params: PolicyParams
    clauses: dict[str, Clause]
    source: Path
    calibration: Calibration | None = None
    origins: dict[str, str] = field(default_factory=dict)
    """The pack that set each parameter (named as in :func:`param_items`)."""
    _texts: dict[tuple[str, Lang], str] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def clause_text(self, clause_id: str, lang: Lang) -> str:
        """Return the clause text in ``lang`` with the pack's parameters filled in.

        Filled once per clause and language: the judge and the rewriter read every
        applicable clause for every reply.
        """
        key = (clause_id, lang)
        if key not in self._texts:
            values = self.template_values()
            self._texts[key] = self.clauses[clause_id].text.get(lang).format(**values)
        return self._texts[key]

    def template_values(self) -> dict[str, object]:
        """Values for clause-text placeholders."""
        values: dict[str, object] = {
            k: v for k, v in self.params.model_dump().items() if k != "refund_days"
        }
        for channel in PAYMENT_CHANNELS:
            lo, hi = self.params.refund_days.for_channel(channel)
            values[f"refund_days_{channel}"] = f"{lo}–{hi}" if lo != hi else str(lo)
        return values


@dataclass(frozen=True)
class ResolvedScenario:
    """A scenario joined with its policy, difficulty profiles and merged customer lines."""

    scenario: Scenario
    policy: ResolvedPolicy
    profiles: dict[Difficulty, DifficultyProfile]
    lines: dict[ReactionKey, tuple[Line, ...]]
    source: Path
    applicable_clauses: tuple[str, ...] = field(default=())
    _values: dict[Lang, dict[str, str]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def id(self) -> str:
        """The scenario id."""
        return self.scenario.id

    def lines_for(self, key: ReactionKey, difficulty: Difficulty) -> list[Line]:
        """Lines for a reaction usable at ``difficulty``."""
        return [line for line in self.lines.get(key, ()) if line.usable_at(difficulty)]

    def template_values(self, lang: Lang) -> dict[str, str]:
        """Values for ``{placeholder}`` in customer lines, in ``lang`` (a copy)."""
        return dict(self._cached_values(lang))

    def _cached_values(self, lang: Lang) -> dict[str, str]:
        if lang not in self._values:
            self._values[lang] = self._compute_values(lang)
        return self._values[lang]

    def _compute_values(self, lang: Lang) -> dict[str, str]:
        order = self.scenario.order
        key = self.scenario.answer_key
        values = {
            "order_id": order.order_id,
            "item": order.item.get(lang),
            "price": money_text(order.price),
            "courier": COURIER_NAMES[order.courier][lang],
            "receiver_name": order.receiver.name.get(lang),
            "phone_last4": order.receiver.phone[-4:],
            "address": order.receiver.address.get(lang),
            "ordered_on": date_text(order.ordered_on, lang),
        }
        optional = {
            "tracking_no": order.tracking_no,
            "shipped_on": order.shipped_on and date_text(order.shipped_on, lang),
            "signed_on": order.signed_on and date_text(order.signed_on, lang),
            "promised_by": order.promised_by and date_text(order.promised_by, lang),
            "eta": key.eta and date_text(key.eta, lang),
            "price_difference": key.price_difference and money_text(key.price_difference),
            "refund_amount": money_text(key.refund_amount or order.price),
            "refund_reference": order.refund_reference,
            "refund_approved_on": order.refund_approved_on
            and date_text(order.refund_approved_on, lang),
            "return_received_on": order.return_received_on
            and date_text(order.return_received_on, lang),
            "callback_hours": str(self.policy.params.ticket_callback_hours),
            "refund_days": str(self.policy.template_values()[f"refund_days_{order.payment}"]),
            "ticket_team": key.ticket and TICKET_TEAMS[key.ticket][lang],
        }
        values.update({k: v for k, v in optional.items() if v})
        return values

    def render(self, template: str, lang: Lang) -> str:
        """Fill a customer-line template."""
        return str(template.format_map(self._cached_values(lang)))

    def exemplar(self, stage: Stage) -> dict[Lang, str]:
        """The model reply for ``stage`` in both languages, filled in as trainees see it."""
        text = self.scenario.answer_key.exemplars[stage]
        return {lang: self.render(text.get(lang), lang) for lang in LANGS}

    def model_reply(self, stage: Stage, waiting: AgendaItem | None) -> dict[Lang, str]:
        """The model reply for a turn: the answer to the curveball the customer waits on, if any.

        A curveball without a written answer gets the stage's exemplar after a line that
        quotes what the customer is still waiting for.
        """
        if waiting is None:
            return self.exemplar(stage)
        if waiting.answer is not None:
            return {lang: self.render(waiting.answer.get(lang), lang) for lang in LANGS}
        said = {lang: self.render(waiting.say.get(lang), lang) for lang in LANGS}
        exemplar = self.exemplar(stage)
        return {
            "zh": f"客户还在等你回应：「{said['zh']}」先回应这一点，再接着处理。\n{exemplar['zh']}",
            "en": f"The customer is still waiting for an answer to “{said['en']}” Answer that "
            f"first, then go on.\n{exemplar['en']}",
        }

    def calibration(self) -> tuple[Calibration, Path] | None:
        """The agreement this scenario requires and the file that declares it, if any."""
        if self.scenario.calibration is not None:
            return self.scenario.calibration, self.source
        if self.policy.calibration is not None:
            return self.policy.calibration, self.policy.source
        return None


def money_text(value: float) -> str:
    """An amount without trailing zeros: 299, 99.5."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def date_text(value: dt.date, lang: Lang) -> str:
    """A date as people write it in ``lang`` (11月14日, Nov 14), with its time if it has one."""
    day = (
        f"{value.month}月{value.day}日" if lang == "zh" else value.strftime("%b ") + str(value.day)
    )
    if isinstance(value, dt.datetime):
        return f"{day} {value:%H:%M}" if lang == "zh" else f"{day}, {value:%H:%M}"
    return day
