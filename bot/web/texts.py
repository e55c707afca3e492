"""The web pages' words, in Simplified Chinese and English."""

from __future__ import annotations

from bot.i18n import Lang

TEXTS: dict[str, dict[Lang, str]] = {
    "title": {"zh": "售后客服练习", "en": "After-sales practice"},
    "join_title": {"zh": "加入练习", "en": "Join the practice"},
    "join_name": {"zh": "你的名字", "en": "Your name"},
    "join_lang": {"zh": "语言", "en": "Language"},
    "join_go": {"zh": "加入", "en": "Join"},
    "choose": {"zh": "选择一个场景开始练习", "en": "Pick a scenario to practise"},
    "assigned": {"zh": "任务", "en": "assigned"},
    "due": {"zh": "截止", "en": "due"},
    "start": {"zh": "开始", "en": "Start"},
    "difficulty": {"zh": "难度", "en": "Difficulty"},
    "easy": {"zh": "简单", "en": "easy"},
    "normal": {"zh": "普通", "en": "normal"},
    "hard": {"zh": "困难", "en": "hard"},
    "mode": {"zh": "模式", "en": "Mode"},
    "coach": {"zh": "教练模式", "en": "coach"},
    "exam": {"zh": "考试模式", "en": "exam"},
    "continue": {"zh": "继续进行中的练习", "en": "Continue the session in progress"},
    "history": {"zh": "最近的练习", "en": "Recent sessions"},
    "customer": {"zh": "顾客", "en": "Customer"},
    "you": {"zh": "你", "en": "You"},
    "send": {"zh": "发送", "en": "Send"},
    "reply_here": {
        "zh": "输入你的回复（回车发送，Shift+回车换行）",
        "en": "Type your reply (Enter sends, Shift+Enter adds a line)",
    },
    "typing": {"zh": "顾客正在输入…", "en": "The customer is typing…"},
    "end": {"zh": "结束练习", "en": "End the session"},
    "home": {"zh": "首页", "en": "Home"},
    "better": {"zh": "更好的回复", "en": "A better reply"},
    "clauses": {"zh": "条款", "en": "Clauses"},
    "scorecard": {"zh": "成绩单", "en": "Scorecard"},
    "total": {"zh": "总分", "en": "Total"},
    "passed": {"zh": "通过", "en": "PASSED"},
    "failed": {"zh": "未通过", "en": "NOT PASSED"},
    "exam_later": {
        "zh": "考试模式：评分在结束后显示。",
        "en": "Exam mode: the grades are shown at the end.",
    },
    "signed_out": {
        "zh": "你还没有登录。请用导师发给你的邀请链接打开本站。",
        "en": "You are not signed in. Open the invite link your mentor sent you.",
    },
    "order": {"zh": "订单信息", "en": "Order"},
    "policy": {"zh": "适用的政策条款", "en": "Policy clauses"},
    "hint": {"zh": "参考回复", "en": "Model reply"},
    "order_no": {"zh": "订单号", "en": "Order"},
    "item": {"zh": "商品", "en": "Item"},
    "paid": {"zh": "实付", "en": "Paid"},
    "courier": {"zh": "快递", "en": "Courier"},
    "ordered": {"zh": "下单", "en": "Ordered"},
    "shipped": {"zh": "发货", "en": "Shipped"},
    "signed": {"zh": "签收", "en": "Signed for"},
    "dispute": {"zh": "申诉", "en": "Dispute"},
    "dispute_why": {"zh": "为什么这项扣分不对？", "en": "Why is this deduction wrong?"},
    "dispute_send": {"zh": "提交申诉", "en": "Send the dispute"},
    "disputed": {"zh": "申诉中", "en": "disputed"},
    "review": {"zh": "待处理的申诉", "en": "Disputes to rule on"},
    "verdict": {"zh": "裁定", "en": "Ruling"},
    "accepted": {"zh": "采纳（退回全部扣分）", "en": "accept (all points back)"},
    "partly": {"zh": "部分采纳", "en": "partly (points still lost)"},
    "rejected": {"zh": "驳回", "en": "reject"},
    "points_kept": {"zh": "部分采纳时仍扣的分", "en": "points still lost (partly)"},
    "ruling_why": {"zh": "裁定理由", "en": "Why (the trainee reads it)"},
    "rule": {"zh": "提交裁定", "en": "Rule"},
    "nothing_to_review": {"zh": "没有待处理的申诉。", "en": "Nothing waits for you."},
    "your_teams": {"zh": "你带的团队", "en": "Your teams"},
    "csv": {"zh": "导出 CSV", "en": "Export CSV"},
    "sessions_ended": {"zh": "已完成的练习", "en": "Sessions ended"},
    "averages": {"zh": "各维度平均分", "en": "Averages per dimension"},
    "assignments": {"zh": "任务", "en": "Assignments"},
    "trainee": {"zh": "学员", "en": "Trainee"},
    "scenario": {"zh": "场景", "en": "Scenario"},
    "attempts": {"zh": "次数", "en": "Attempts"},
    "best": {"zh": "最好成绩", "en": "Best"},
    "overdue": {"zh": "已逾期", "en": "overdue"},
    "weak_clauses": {"zh": "最常违反的条款", "en": "Most broken clauses"},
    "trainees": {"zh": "学员", "en": "Trainees"},
    "no_sessions": {"zh": "还没有练习", "en": "No sessions yet"},
    "forbidden": {"zh": "你不能查看这个页面。", "en": "You may not see this page."},
    "not_found": {"zh": "找不到这个页面。", "en": "There is no such page."},
    "bad_form": {
        "zh": "表单已过期或来自别处，请返回重试。",
        "en": "This form is stale or came from elsewhere; go back and try again.",
    },
    "bad_message": {
        "zh": "页面发来的消息无法读取，请刷新页面。",
        "en": "The page sent a message that cannot be read; reload the page.",
    },
    "reconnecting": {"zh": "连接已断开，正在重连…", "en": "Connection lost; reconnecting…"},
    "reply_time": {"zh": "本条回复用时", "en": "This reply"},
    "too_many": {"zh": "尝试次数太多，请稍后再试。", "en": "Too many tries; wait a minute."},
}


DIMENSIONS: dict[str, dict[Lang, str]] = {
    "empathy": {"zh": "共情", "en": "empathy"},
    "accuracy": {"zh": "准确", "en": "accuracy"},
    "policy": {"zh": "合规", "en": "policy"},
}


def t(key: str, lang: Lang) -> str:
    """The text ``key`` in ``lang``."""
    return TEXTS[key][lang]


MOODS: tuple[tuple[float, dict[Lang, str]], ...] = (
    (7.0, {"zh": "非常生气", "en": "furious"}),
    (4.0, {"zh": "生气", "en": "angry"}),
    (2.0, {"zh": "不耐烦", "en": "impatient"}),
    (float("-inf"), {"zh": "平静", "en": "calm"}),
)
"""The customer's mood by anger (0–10), as the chat labels it."""


def mood(anger: float | None, lang: Lang) -> str:
    """The mood a customer message was written in ("" when not recorded)."""
    if anger is None:
        return ""
    return next(label[lang] for floor, label in MOODS if anger >= floor)


def dimension(name: str, lang: Lang) -> str:
    """A grade dimension's name in ``lang`` (an unknown one as it is)."""
    return DIMENSIONS.get(name, {}).get(lang, name)
