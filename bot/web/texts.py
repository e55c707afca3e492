"""The web pages' words, in Simplified Chinese and English."""

from __future__ import annotations

from typing import Any

from bot import words
from bot.content import ScenarioLibrary
from bot.i18n import Lang
from bot.storage import Store

TEXTS: dict[str, dict[Lang, str]] = {
    "title": {"zh": "售后客服练习", "en": "After-sales practice"},
    "db_down": {
        "zh": "数据库暂时连不上。请几秒后刷新页面：已保存的回复会得到回答，没保存的请重新发送。",
        "en": "The database cannot be reached right now. Reload the page in a few seconds: "
        "a reply that was saved gets its answer, one that was not needs sending again.",
    },
    "join_title": {"zh": "加入练习", "en": "Join the practice"},
    "join_name": {"zh": "你的名字", "en": "Your name"},
    "join_lang": {"zh": "语言", "en": "Language"},
    "join_go": {"zh": "加入", "en": "Join"},
    "choose": {"zh": "选择一个场景开始练习", "en": "Pick a scenario to practise"},
    "assigned": {"zh": "任务", "en": "assigned"},
    "due": {"zh": "截止", "en": "due"},
    "start": {"zh": "开始", "en": "Start"},
    "difficulty": {"zh": "难度", "en": "Difficulty"},
    "mode": {"zh": "模式", "en": "Mode"},
    "continue": {"zh": "继续进行中的练习", "en": "Continue the session in progress"},
    "history": {"zh": "最近的练习", "en": "Recent sessions"},
    "history_all": {"zh": "我的练习记录", "en": "My sessions"},
    "all_sessions": {"zh": "全部记录与趋势", "en": "All sessions and trends"},
    "trends": {
        "zh": "各维度趋势（虚线为 80 分）",
        "en": "Each dimension over time (the line is 80)",
    },
    "in_progress": {"zh": "进行中", "en": "in progress"},
    "chart": {"zh": "成绩图", "en": "Scorecard chart"},
    "customer": {"zh": "顾客", "en": "Customer"},
    "you": {"zh": "你", "en": "You"},
    "send": {"zh": "发送", "en": "Send"},
    "reply": {"zh": "回复客户", "en": "Reply to the customer"},
    "drill_n": {"zh": "演练 #{id}", "en": "Drill #{id}"},
    "drill_planned": {"zh": "未开始", "en": "Planned"},
    "drill_running": {"zh": "进行中", "en": "Running"},
    "drill_ended": {"zh": "已结束", "en": "Ended"},
    "drill_starts": {"zh": "{starts} 开始，{minutes} 分钟", "en": "starts {starts}, {minutes} min"},
    "drill_size": {
        "zh": "{trainees} 名学员，每人同时接待 {concurrency} 位客户",
        "en": "{trainees} trainees, {concurrency} customers each at once",
    },
    "drill_open_desk": {"zh": "进入我的工作台 →", "en": "Open my workspace →"},
    "drill_load": {
        "zh": "高峰时约 {rate} 条消息/秒；一个 Telegram 机器人（30 条/秒）约可承载 {carries} 名学员。",
        "en": "At its busiest ~{rate} messages/s; one Telegram bot (30/s) carries ~{carries} trainees.",
    },
    "drill_too_big": {
        "zh": "超出一个 Telegram 机器人的上限：请在网页版进行，或分到多个机器人。",
        "en": "More than one Telegram bot carries: run it in the web chat, or split it across bots.",
    },
    "drill_board": {"zh": "排行榜", "en": "Leaderboard"},
    "drill_score": {"zh": "平均分", "en": "Score"},
    "drill_assessment": {"zh": "百分制考核", "en": "100-point assessment"},
    "drill_handled": {"zh": "已接待/到达", "en": "Handled/arrived"},
    "drill_first": {"zh": "首次响应（秒）", "en": "First response (s)"},
    "drill_red": {"zh": "红线", "en": "Red lines"},
    "drill_abandoned": {"zh": "流失", "en": "Abandoned"},
    "drill_verdict": {"zh": "结果", "en": "Result"},
    "drill_nobody_yet": {"zh": "还没有客户到达。", "en": "No customer has arrived yet."},
    "drill_report": {"zh": "演练报告（全队）", "en": "Drill report (whole team)"},
    "drill_mean_p90": {"zh": "平均 {mean}，P90 {p90}", "en": "mean {mean}, p90 {p90}"},
    "drill_reply_time": {"zh": "平均回复用时（秒）", "en": "Average reply time (s)"},
    "drill_per_hour": {"zh": "每小时接待客户数", "en": "Customers handled per hour"},
    "drill_rates": {
        "zh": "解决率 {resolved}，流失率 {abandoned}",
        "en": "resolved {resolved}, abandoned {abandoned}",
    },
    "drill_previous": {
        "zh": "上次演练：平均分 {score}，首次响应 {first} 秒，流失率 {abandoned}",
        "en": "Previous drill: score {score}, first response {first} s, abandoned {abandoned}",
    },
    "drill_left": {"zh": "剩余 {minutes}:{seconds}", "en": "{minutes}:{seconds} left"},
    "drill_waited": {"zh": "等了 {seconds} 秒", "en": "waiting {seconds} s"},
    "drill_no_customers": {"zh": "暂时没有客户在等你。", "en": "No customer is waiting for you."},
    "drill_queued": {"zh": "还有 {n} 位客户在排队", "en": "{n} more customers in the queue"},
    "drill_plan": {"zh": "安排一次演练", "en": "Plan a drill"},
    "drill_preset": {"zh": "预设", "en": "Preset"},
    "drill_start_at": {"zh": "开始时间（留空为立即）", "en": "Start (empty: now)"},
    "drill_minutes": {"zh": "时长（分钟）", "en": "Minutes"},
    "drill_concurrency": {"zh": "同时接待", "en": "Customers at once"},
    "drill_go": {"zh": "安排", "en": "Plan it"},
    "drills": {"zh": "演练", "en": "Drills"},
    "drill_follow_up": {
        "zh": "个人跟进计划（最常违反的条款 → 练习场景）",
        "en": "Follow-up plan (most-broken clauses → scenarios)",
    },
    "drill_nothing_to_train": {"zh": "没有扣分条款", "en": "no clause broken"},
    "drill_assign_follow_ups": {"zh": "一键布置给每位学员", "en": "Assign them all"},
    "drill_home": {"zh": "演练 #{id}「{title}」{state}", "en": "Drill #{id} '{title}' {state}"},
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
    "received_back": {"zh": "仓库收到退货", "en": "Return received"},
    "refund_approved": {"zh": "退款审核通过", "en": "Refund approved"},
    "refund_reference": {"zh": "退款单号", "en": "Refund reference"},
    "signed": {"zh": "签收", "en": "Signed for"},
    "identity": {"zh": "身份", "en": "Identity"},
    "confirmed": {"zh": "已核实", "en": "confirmed"},
    "photos": {"zh": "照片", "en": "Photos"},
    "received": {"zh": "已收到", "en": "received"},
    "dispute": {"zh": "申诉", "en": "Dispute"},
    "dispute_why": {"zh": "为什么这项扣分不对？", "en": "Why is this deduction wrong?"},
    "dispute_send": {"zh": "提交申诉", "en": "Send the dispute"},
    "disputed": {"zh": "申诉中", "en": "disputed"},
    "review": {"zh": "待处理", "en": "Waiting for you"},
    "disputes": {"zh": "申诉", "en": "Disputes"},
    "flagged": {"zh": "待复核的评分", "en": "Grades to review"},
    "reply_n": {"zh": "第 {n} 条回复", "en": "reply {n}"},
    "review_accept": {"zh": "维持原评分", "en": "accept (it stands)"},
    "review_adjust": {"zh": "调整扣分", "en": "adjust the points"},
    "review_reject": {"zh": "驳回（不扣分）", "en": "reject (no points lost)"},
    "entry_points": {"zh": "第 {n} 项扣分", "en": "entry {n} costs"},
    "review_why": {"zh": "理由（调整或驳回时必填）", "en": "Why (required to adjust or reject)"},
    "reviewed": {"zh": "已复核", "en": "reviewed"},
    "verdict_accepted": {"zh": "维持", "en": "accepted"},
    "verdict_adjusted": {"zh": "调整", "en": "adjusted"},
    "verdict_rejected": {"zh": "驳回", "en": "rejected"},
    "verdict_partly": {"zh": "部分采纳", "en": "partly accepted"},
    "verdict_override": {"zh": "导师修改", "en": "changed by a mentor"},
    "history_by": {"zh": "{who} 于 {when}", "en": "{who}, {when}"},
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
    "recent_n": {"zh": "近期练习", "en": "Recent"},
    "latest": {"zh": "最近成绩", "en": "Latest"},
    "trend": {"zh": "趋势", "en": "Trend"},
    "sessions_by_trainee": {"zh": "各学员的练习记录", "en": "Each trainee's sessions"},
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
    "message_failed": {
        "zh": "这条消息没有处理成功（已记录），请再发一次或刷新页面。",
        "en": "This message could not be handled (it was logged); send it again or reload.",
    },
    "reconnecting": {"zh": "连接已断开，正在重连…", "en": "Connection lost; reconnecting…"},
    "reply_time": {"zh": "本条回复用时", "en": "This reply"},
    "bad_numbers": {
        "zh": "日期、及格线或次数写得不对（日期如 2026-12-31，数字如 80）。",
        "en": "The date, pass mark or attempts are not valid (a date like 2026-12-31, a number like 80).",
    },
    "assign": {"zh": "布置任务", "en": "Assign scenarios"},
    "assign_to": {"zh": "布置给", "en": "To"},
    "whole_team": {"zh": "整个团队", "en": "the whole team"},
    "due_date": {"zh": "截止日期（可不填）", "en": "Due date (optional)"},
    "pass_mark": {"zh": "及格线", "en": "Pass mark"},
    "attempts_max": {"zh": "最多次数（可不填）", "en": "Attempts at most (optional)"},
    "assign_go": {"zh": "布置", "en": "Assign"},
    "assigned_n": {"zh": "已布置 {n} 个任务。", "en": "{n} assignments made."},
    "notices": {"zh": "新消息", "en": "News"},
    "language": {"zh": "English", "en": "中文"},
    "link_title": {"zh": "用链接码登录", "en": "Sign in with a link code"},
    "link_how": {
        "zh": "已经在用 Telegram 机器人？向机器人发送 /web，把收到的链接码填在这里，就能用同一账号登录。",
        "en": "Already using the Telegram bot? Send it /web and enter the code it gives you "
        "here to sign in as the same account.",
    },
    "link_code": {"zh": "链接码", "en": "Link code"},
    "link_go": {"zh": "登录", "en": "Sign in"},
    "account": {"zh": "账号", "en": "Account"},
    "telegram_link": {"zh": "关联 Telegram", "en": "Link Telegram"},
    "get_code": {"zh": "获取链接码", "en": "Get a link code"},
    "send_bot": {
        "zh": "把下面这条消息发给 Telegram 机器人（{minutes} 分钟内有效，只能用一次）：",
        "en": "Send this to the Telegram bot (works once, for {minutes} minutes):",
    },
    "devices": {"zh": "已登录的浏览器", "en": "Signed-in browsers"},
    "this_browser": {"zh": "当前浏览器", "en": "this browser"},
    "signed_out_tag": {"zh": "已退出", "en": "signed out"},
    "sign_out_device": {"zh": "退出登录", "en": "sign out"},
    "sign_out": {"zh": "退出本浏览器", "en": "Sign this browser out"},
    "invites": {"zh": "邀请链接", "en": "Invite links"},
    "invite_made": {"zh": "新的邀请链接：", "en": "New invite link:"},
    "role": {"zh": "角色", "en": "Role"},
    "team": {"zh": "团队", "en": "Team"},
    "uses": {"zh": "已用 / 上限", "en": "Uses"},
    "link": {"zh": "链接", "en": "Link"},
    "invite_go": {"zh": "生成邀请链接", "en": "Make an invite link"},
    "revoke": {"zh": "作废", "en": "revoke"},
    "revoked": {"zh": "已作废", "en": "revoked"},
    "mentor": {"zh": "导师", "en": "mentor"},
    "admin": {"zh": "管理员", "en": "admin"},
    "mentors": {"zh": "导师", "en": "Mentors"},
    "admin_title": {"zh": "团队与人员", "en": "Teams and people"},
    "new_team": {"zh": "新团队", "en": "New team"},
    "create": {"zh": "创建", "en": "Create"},
    "too_many": {"zh": "尝试次数太多，请稍后再试。", "en": "Too many tries; wait a minute."},
    **words.CHOICES,
}


FLAGS: dict[str, dict[Lang, str]] = {
    "needs_review": {"zh": "需复核", "en": "needs review"},
    "judge_higher": {"zh": "模型评分更高", "en": "the judge scored higher"},
    "injection_attempt": {"zh": "疑似注入", "en": "injection attempt"},
    "disagreement": {"zh": "评分分歧", "en": "graders disagree"},
    "judge_unavailable": {"zh": "模型不可用", "en": "judge unavailable"},
}
"""Grade flags as the review queue names them."""


DIMENSIONS = words.DIMENSIONS


def t(key: str, lang: Lang, **values: object) -> str:
    """The text ``key`` in ``lang``, with ``values`` filled in."""
    text = TEXTS[key][lang]
    return text.format(**values) if values else text


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
    return DIMENSIONS[name][lang] if name in DIMENSIONS else name


NOTICES: dict[str, dict[Lang, str]] = {
    "assignment": {
        "zh": "新任务：{title}（{difficulty}，{mode}，及格线 {pass_mark} 分{due}{attempts}）",
        "en": "New assignment: {title} ({difficulty}, {mode}, pass mark {pass_mark}{due}{attempts})",
    },
    "due": {"zh": "，截止 {due}", "en": ", due {due}"},
    "attempts": {"zh": "，最多 {n} 次", "en": ", at most {n} attempts"},
    "dispute_new": {
        "zh": "{trainee} 对会话 {session} 第 {entry} 项扣分（{points} 分）提出申诉：{reason}",
        "en": "{trainee} disputes entry {entry} of session {session} ({points} points): {reason}",
    },
    "ruled_trainee": {
        "zh": "你的申诉 #{id} 已处理：{verdict}。理由：{reason}。调整后总分 {total}。",
        "en": "Your dispute #{id} was ruled: {verdict}. Reason: {reason}. Adjusted total {total}.",
    },
    "drill_planned": {
        "zh": "演练 #{id}「{title_zh}」{starts} 开始，持续 {minutes} 分钟，你同时接待 {concurrency} 位客户。",
        "en": "Drill #{id} '{title_en}' starts {starts} and lasts {minutes} min; you handle "
        "{concurrency} customers at once.",
    },
    "overridden_trainee": {
        "zh": "导师调整了会话 {session} 第 {entry} 项扣分：{old} → {new} 分。理由：{reason}。"
        "调整后总分 {total}。",
        "en": "A mentor changed entry {entry} of session {session}: {old} → {new} points. "
        "Reason: {reason}. Adjusted total {total}.",
    },
    "accepted": {"zh": "采纳", "en": "accepted"},
    "partly": {"zh": "部分采纳", "en": "partly accepted"},
    "rejected": {"zh": "驳回", "en": "rejected"},
}


def notice(body: dict[str, Any], store: Store, library: ScenarioLibrary) -> tuple[str, str]:
    """A notice from the outbox (see ``bot.notices``) as the web shows it: text and link."""
    lang: Lang = "en" if body["lang"] == "en" else "zh"
    values = dict(body["values"])
    words = {key: text[lang] for key, text in NOTICES.items()}
    if body["key"] == "assignments":
        lines = []
        for a in filter(None, map(store.assignment, values["ids"])):
            lines.append(
                words["assignment"].format(
                    title=library.get(a.scenario_id).scenario.title.get(lang),
                    difficulty=t(a.difficulty, lang),
                    mode=t(a.mode, lang),
                    pass_mark=f"{a.pass_mark:g}",
                    due=words["due"].format(due=a.due) if a.due else "",
                    attempts=words["attempts"].format(n=a.attempts) if a.attempts else "",
                )
            )
        return "\n".join(lines), "/"
    if "verdict" in values:
        values["verdict"] = words[values["verdict"]]
    if body["key"] == "drill_planned":
        return words["drill_planned"].format(**values), f"/drills/{values['id']}"
    link = "/review" if body["key"] == "dispute_new" else f"/practice/{values['session']}"
    return words[body["key"]].format(**values), link
