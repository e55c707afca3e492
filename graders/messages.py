"""Bilingual reasons the rule graders give; every deduction's text comes from here."""

from __future__ import annotations

from typing import Any

from bot.i18n import Lang

_MESSAGES: dict[str, tuple[str, str]] = {
    # empathy
    "empathy.full": (
        "承认了客户的具体问题或情绪，主动担责，并说明了下一步。",
        "Acknowledges the customer's specific problem or feeling, takes ownership and states "
        "the next step.",
    ),
    "empathy.dismissive": (
        "推诿、指责或怠慢客户：「{quote}」。",
        "Pushes the customer away, blames or brushes them off: “{quote}”.",
    ),
    "empathy.cold": (
        "没有任何礼貌用语，也没有回应客户的问题或情绪，显得冷淡。",
        "No courtesy and no acknowledgement of the customer's problem or feeling: it reads as "
        "cold.",
    ),
    "empathy.no_acknowledgement": (
        "没有回应这位客户的具体问题或情绪（例如点出「{problem}」或客户的着急）。",
        "Nothing acknowledges this customer's specific problem or feeling (e.g. name the "
        "“{problem}” or their frustration).",
    ),
    "empathy.no_courtesy": (
        "推进了处理，但没有任何礼貌用语（如「麻烦您」「谢谢」「抱歉」「辛苦了」；单独一个「您」「请」不算）。",
        "Moves the case on, but without any polite form (thank you, sorry, could you please; "
        "a bare 'please' does not count).",
    ),
    "empathy.no_ownership": (
        "有共情，但没有主动担责并说明下一步（例如「我这就为您……」）。",
        "Acknowledges, but takes no ownership and states no next step (e.g. “I will … for "
        "you now”).",
    ),
    "empathy.repeated": (
        "安抚的话与第 {turn} 条回复一字不差，属于套话，不计为共情。",
        "The acknowledgement repeats reply {turn} word for word; a stock line does not count "
        "as empathy.",
    ),
    "empathy.stuffed": (
        "一条回复里道歉 {count} 次，堆砌道歉不等于共情，最高 1 分。",
        "{count} apologies in one reply: stuffing apologies is not empathy (capped at 1).",
    ),
    "empathy.wrong_facts": (
        "安抚的同时给出了错误信息，共情最高 2 分。",
        "The acknowledgement comes with wrong facts, so empathy is capped at 2.",
    ),
    # accuracy
    "accuracy.correct": (
        "回复中的事实与订单和政策一致：{facts}。",
        "The facts stated match the order and the policy: {facts}.",
    ),
    "accuracy.na": (
        "回复没有陈述可核对的事实，准确性不适用。",
        "The reply states no checkable facts, so accuracy does not apply.",
    ),
    "accuracy.wrong": (
        "{fact}说错了：回复说「{stated}」，正确的是「{expected}」。",
        "Wrong {fact}: the reply says “{stated}”, but it is “{expected}”.",
    ),
    "accuracy.baseless": (
        "{fact}说错了：「{stated}」没有依据，政策和订单里都没有这一条。",
        "Wrong {fact}: “{stated}” has no basis in the policy or the order.",
    ),
    "accuracy.learned": (
        "「{stated}」不符合 {clause} 的规定：读起来与标注为说错的回复相符。",
        "“{stated}” goes against {clause}: it reads like replies labelled as wrong on it.",
    ),
    "accuracy.unsupported": (
        "{fact}「{stated}」在订单和政策里找不到依据{expected_note}。",
        "The {fact} “{stated}” has no basis in the order or policy{expected_note}.",
    ),
    "accuracy.unfit": (
        "提出的方案「{stated}」解决不了这个问题，可行的方案是：{expected}。",
        "The solution offered (“{stated}”) does not solve this problem; workable ones are: "
        "{expected}.",
    ),
    # policy
    "policy.ok": ("没有发现违反政策的内容。", "No policy problem found."),
    "policy.violation": (
        "违反 {clauses}：「{quote}」。",
        "Breaks {clauses}: “{quote}”.",
    ),
    "policy.evidence_first": (
        "违反 {clauses}：还没让客户提供{evidence}就承诺了「{quote}」。",
        "Breaks {clauses}: promised “{quote}” before asking for {evidence}.",
    ),
    "policy.identity_first": (
        "违反 {clauses}：未核实身份就透露或修改了订单信息「{quote}」。",
        "Breaks {clauses}: disclosed or changed order data (“{quote}”) before "
        "verifying the customer's identity.",
    ),
    "policy.over_cap": (
        "违反 {clauses}：补偿 {amount} 元超过权限上限 {cap} 元，应申请主管审批而不是直接承诺。",
        "Breaks {clauses}: ¥{amount} compensation is over the ¥{cap} limit; ask a "
        "supervisor instead of promising it.",
    ),
    "policy.learned": (
        "违反 {clauses}：「{quote}」与标注为违反该条的回复说法相近（起决定作用的词：{words}）。",
        "Breaks {clauses}: “{quote}” is worded like replies labelled as breaking it (the "
        "words that weigh most: {words}).",
    ),
    "policy.forbidden_resolution": (
        "违反 {clauses}：本案不能提供「{quote}」这种处理方式。",
        "Breaks {clauses}: “{quote}” is not an allowed way to handle this case.",
    ),
    "policy.capped": (
        "（本条回复的合规分已为 0，此项不再重复扣分）",
        "(policy compliance is already 0 for this reply; no further points)",
    ),
    "flag.injection": (
        "回复中有针对评分系统的指令「{quote}」，已标记给导师复核；它不会提高分数。",
        "The reply contains text aimed at the grader (“{quote}”); it is flagged for a mentor "
        "and cannot raise the grade.",
    ),
    "grader.error": (
        "评分器 {grader} 出错，本项未评分，已标记给导师复核：{error}",
        "Grader {grader} failed, so this grade is unscored and flagged for review: {error}",
    ),
}

FACT_NAMES: dict[str, tuple[str, str]] = {
    "refund_amount": ("退款金额", "refund amount"),
    "refund_channel": ("退款渠道", "refund channel"),
    "refund_timing": ("退款到账时间", "refund timing"),
    "reship_timing": ("补发时效", "reshipment time"),
    "price_difference": ("差价金额", "price difference"),
    "price": ("订单金额", "order amount"),
    "shipping_fee": ("运费金额", "shipping fee"),
    "amount": ("金额", "amount"),
    "order_id": ("订单号", "order number"),
    "customer_name": ("客户称呼", "customer's name"),
    "courier": ("快递公司", "courier"),
    "payment": ("付款方式", "payment method"),
    "signed_on": ("签收日期", "sign-for date"),
    "ordered_on": ("下单日期", "order date"),
    "shipped_on": ("发货日期", "ship date"),
    "eta": ("预计送达时间", "expected delivery"),
    "lateness": ("延误天数", "how late the parcel is"),
    "promised_by": ("承诺送达日期", "promised delivery date"),
    "refund_approved_on": ("退款审核通过日期", "refund approval date"),
    "return_received_on": ("仓库收到退货的日期", "date the warehouse received the return"),
    "refund_reference": ("退款单号", "refund reference"),
    "callback_time": ("工单回电时限", "ticket callback time"),
    "ticket_team": ("工单处理部门", "team the ticket goes to"),
    "return_window": ("无理由退货期限", "no-reason return window"),
    "exchange_window": ("质量问题换货期限", "quality-exchange window"),
    "damage_report_window": ("破损报备时限", "damage-report window"),
    "price_protection_window": ("价保期限", "price-protection window"),
    "shipping_payer": ("运费承担方", "who pays return shipping"),
    "return_eligibility": ("能否退货", "return eligibility"),
    "price_protection_eligibility": ("能否价保", "price-protection eligibility"),
    "refund_eligibility": ("能否退款", "refund eligibility"),
    "exchange_eligibility": ("能否换货", "exchange eligibility"),
    "resolution": ("处理方案", "solution"),
    "condition": ("处理条件", "condition for the remedy"),
    "compensation": ("补偿金额", "compensation"),
    "payment_route": ("打款方式", "how the money is paid"),
}


INTENT_NAMES: dict[str, tuple[str, str]] = {
    "order_id": ("订单号", "the order number"),
    "identity": ("身份核验信息", "identity details"),
    "photos": ("照片", "photos"),
    "signed_time": ("签收时间", "the sign-for date"),
    "problem_detail": ("问题细节", "details of the problem"),
    "item_received": ("收到的商品", "what arrived"),
    "tracking": ("物流信息", "the tracking details"),
    "preference": ("处理方式偏好", "their preference"),
    "payment": ("付款方式", "the payment method"),
}


def intent_name(intent: str) -> dict[Lang, str]:
    """Display name of an ask intent in both languages."""
    zh, en = INTENT_NAMES.get(intent, (intent, intent))
    return {"zh": zh, "en": en}


def message(code: str, **values: Any) -> dict[Lang, str]:
    """The message ``code`` in both languages, filled with ``values``.

    A value may itself be a ``{"zh": ..., "en": ...}`` dict, used per language.
    """
    zh, en = _MESSAGES[code]
    if not values:
        return {"zh": zh, "en": en}
    return {
        "zh": zh.format(**{k: _pick(v, "zh") for k, v in values.items()}),
        "en": en.format(**{k: _pick(v, "en") for k, v in values.items()}),
    }


def fact_name(fact: str) -> dict[Lang, str]:
    """Display name of a fact in both languages."""
    zh, en = FACT_NAMES.get(fact, (fact, fact))
    return {"zh": zh, "en": en}


def _pick(value: Any, lang: Lang) -> Any:
    if isinstance(value, dict) and lang in value:
        return value[lang]
    return value


def codes() -> list[str]:
    """Every message code (documented in docs/graders.md)."""
    return sorted(_MESSAGES)
