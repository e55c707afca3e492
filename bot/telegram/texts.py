"""Every text the Telegram bot sends, in Simplified Chinese and English.

Also the plain-text layouts of feedback, scorecards, reports and transcripts (no parse
mode: trainee text is shown as typed, never interpreted as markup).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot import words
from bot.content import ScenarioLibrary
from bot.drill.report import DrillReport
from bot.i18n import Lang
from bot.service import PracticeChoice, Profile, SessionView, TeamReport
from bot.storage import AssignmentRow, Store, TurnRow
from graders import Grade
from graders._base import Bilingual
from graders.rubric import OUTCOME_TEXT

TEXTS: dict[str, tuple[str, str]] = {
    "welcome": (
        "你好，{name}！这里是售后客服陪练。发送 /practice 开始练习，/help 查看全部命令。",
        "Hi {name}! This is the after-sales service trainer. Send /practice to start, "
        "/help for all commands.",
    ),
    "joined_trainee": (
        "已加入团队「{team}」，身份：学员。",
        "You joined team '{team}' as a trainee.",
    ),
    "joined_mentor": (
        "已加入团队「{team}」，身份：导师。发送 /help 查看导师命令。",
        "You joined team '{team}' as a mentor. Send /help for mentor commands.",
    ),
    "joined_admin": (
        "你现在是管理员。用 /newteam 创建团队，用 /invite 生成邀请链接。",
        "You are now an admin. Create teams with /newteam and invite links with /invite.",
    ),
    "help_trainee": (
        "学员命令：\n/practice 选择场景开始练习\n/end 结束当前会话\n/hint 参考回复（教练模式）\n"
        "/history [会话号] 最近的会话；带会话号重看成绩单并申诉\n/me 我的成绩与推荐\n/lang 切换语言（zh / en）\n"
        "/web 在网页版登录同一账号\n/link 链接码 关联网页版账号\n/leaderboard [演练号] 演练排行榜",
        "Trainee commands:\n/practice choose a scenario and start\n/end finish the session\n"
        "/hint model reply (coach mode)\n/history [SESSION] recent sessions; with an id, "
        "that scorecard again with its Dispute buttons\n/me my results and what "
        "to practise next\n/lang switch language (zh / en)\n/web sign in to the web app as "
        "this account\n/link CODE link this chat to your web account\n/leaderboard [DRILL] "
        "a drill's standings",
    ),
    "usage_drill": (
        "用法：/drill 预设 team=团队名 [minutes=30] [concurrency=3]\n预设：{presets}",
        "Usage: /drill PRESET team=NAME [minutes=30] [concurrency=3]\nPresets: {presets}",
    ),
    "drill_planned_by_you": (
        "已安排演练 #{id}：{trainees} 名学员，已通知。高峰时约 {rate} 条消息/秒。/leaderboard {id} 看排名。",
        "Drill #{id} planned: {trainees} trainee(s), told. At its busiest ~{rate} messages/s. "
        "/leaderboard {id} shows the standings.",
    ),
    "drill_too_big": (
        "注意：一个 Telegram 机器人每秒只能发约 30 条，约可承载 {carries} 名学员——请在网页版进行，或分到多个机器人。",
        "Warning: one Telegram bot sends ~30 messages/s, enough for ~{carries} trainees: run "
        "this drill in the web chat, or split it across bots.",
    ),
    "drill_which": (
        "有 {count} 位客户在等你：{labels}。请引用回复那位客户的消息来作答（不会替你猜）。",
        "{count} customers are waiting for you: {labels}. Reply to that customer's message to "
        "answer them (the bot never guesses).",
    ),
    "drill_nobody": (
        "现在没有客户在等你回复；新客户到来时会收到消息。",
        "No customer is waiting for your reply right now; new ones arrive as messages.",
    ),
    "no_drill": (
        "你没有可查看的演练。",
        "There is no drill for you to look at.",
    ),
    "board_head": (
        "🏁 演练 #{id}「{title}」（{status}）\n名次 · 姓名 · 平均分 · 已接待/到达 · 流失 · 首响均值",
        "🏁 Drill #{id} '{title}' ({status})\nrank · name · score · handled/arrived · abandoned · "
        "first response",
    ),
    "board_row": (
        "{rank}. {name} · {score} · {handled}/{arrived} · {abandoned} · {first} 秒",
        "{rank}. {name} · {score} · {handled}/{arrived} · {abandoned} · {first} s",
    ),
    "web_code": (
        "在网页版的登录页（/link）输入这个链接码，即可用同一账号登录（{minutes} 分钟内有效，只能用一次）：\n{code}",
        "Enter this code on the web app's sign-in page (/link) to sign in as this account "
        "(works once, for {minutes} minutes):\n{code}",
    ),
    "linked": (
        "已关联：这个 Telegram 聊天现在就是网页版账号「{name}」，成绩和任务两边共享。",
        "Linked: this Telegram chat is now the web account '{name}'; results and "
        "assignments are shared.",
    ),
    "usage_link": (
        "用法：/link 链接码（在网页版“账号”页获取）",
        "Usage: /link CODE (get one on the web app's Account page)",
    ),
    "help_mentor": (
        "导师命令：\n/team [团队] 团队报告\n/assign 场景[,场景] team=团队|trainee=@用户 "
        "[due=YYYY-MM-DD] [pass=80] [attempts=3] [difficulty=normal] [mode=exam]\n"
        "/sessions @用户 学员的会话\n/transcript 会话号 对话记录与扣分明细\n"
        "/override 会话号 扣分项 分数 理由\n/disputes 待处理的申诉\n/export [团队] 导出 CSV\n"
        "/invite 团队 trainee [次数] 学员邀请链接\n/drill 预设 team=团队 安排演练",
        "Mentor commands:\n/team [team] team report\n/assign scenario[,scenario] team=NAME|"
        "trainee=@user [due=YYYY-MM-DD] [pass=80] [attempts=3] [difficulty=normal] "
        "[mode=exam]\n/sessions @user a trainee's sessions\n/transcript SESSION transcript and "
        "ledger\n/override SESSION ENTRY POINTS REASON\n/disputes open disputes\n"
        "/export [team] CSV of results\n/invite TEAM trainee [uses] trainee invite link\n"
        "/drill PRESET team=NAME plan a drill",
    ),
    "help_admin": (
        "管理员命令：\n/newteam 名称 创建团队\n/invite 团队 mentor|trainee [次数] 或 "
        "/invite - admin 生成邀请链接",
        "Admin commands:\n/newteam NAME create a team\n/invite TEAM mentor|trainee [uses] or "
        "/invite - admin for an invite link",
    ),
    "lang_pick": ("选择语言：", "Choose a language:"),
    "lang_set": ("语言已切换为中文。", "Language set to English."),
    "pick_scenario": (
        "选择一个场景（📌 为导师布置的任务）：",
        "Choose a scenario (📌 = assigned by your mentor):",
    ),
    "pick_difficulty": ("「{title}」选择难度：", "'{title}': choose the difficulty:"),
    "pick_mode": (
        "选择模式：教练模式每条回复后给评分；考试模式结束后统一给评分。",
        "Choose the mode: coach gives grades after every reply; exam only at the end.",
    ),
    "due": ("截止 {due}", "due {due}"),
    "left": ("剩 {n} 次", "{n} left"),
    "done": ("已通过", "passed"),
    "starting": (
        "开始：{title}（{difficulty}，{mode}）",
        "Starting: {title} ({difficulty}, {mode})",
    ),
    "briefing": (
        "📋 情况说明\n{briefing}\n\n命令：/hint 参考回复 · /end 结束\n直接输入文字回复客户。"
        "每条回复后给评分；触犯红线会立即标出，辱骂客户会让客户离开、会话结束。",
        "📋 Briefing\n{briefing}\n\nCommands: /hint model reply · /end finish\n"
        "Type your reply to the customer. Each reply is graded at once; a red line is flagged "
        "at once, and insulting the customer makes them leave, ending the session.",
    ),
    "briefing_exam": (
        "📋 情况说明\n{briefing}\n\n考试模式：没有参考回复，评分在结束时统一给出。命令：/end 结束\n"
        "直接输入文字回复客户。触犯红线记入成绩单（不通过）；辱骂客户会让客户离开、会话结束。",
        "📋 Briefing\n{briefing}\n\nExam mode: no model replies; grades come at the end. "
        "Command: /end finish\nType your reply to the customer. A red line goes on the "
        "scorecard (not passed); insulting the customer makes them leave, ending the session.",
    ),
    "customer": ("👤 {name}：{text}", "👤 {name}: {text}"),
    "feedback_head": ("📝 第 {n} 条回复的评分", "📝 Grades for reply #{n}"),
    "better": ("💡 更好的回复：{text}", "💡 A better reply: {text}"),
    "clauses": ("条款：{ids}", "Clauses: {ids}"),
    "na": ("不适用", "n/a"),
    "unscored": ("未评分（已标记复核）", "unscored (flagged for review)"),
    "no_session": (
        "你现在没有进行中的会话。发送 /practice 开始练习。",
        "You have no session in progress. Send /practice to start one.",
    ),
    "no_hint_exam": ("考试模式不提供参考回复。", "No model replies in exam mode."),
    "hint": ("💡 参考回复（使用会被记录）：\n{text}", "💡 Model reply (use is recorded):\n{text}"),
    "session_over": ("会话结束：{outcome}", "Session over: {outcome}"),
    "scorecard": (
        "📊 成绩单 · {title}\n总分 {total} / 100（及格 {pass_mark}）{verdict}",
        "📊 Scorecard · {title}\nTotal {total} / 100 (pass {pass_mark}) {verdict}",
    ),
    "adjusted": ("导师调整后：{total} {verdict}", "After mentor changes: {total} {verdict}"),
    "passed": ("✅ 通过", "✅ PASSED"),
    "failed": ("❌ 未通过", "❌ NOT PASSED"),
    "provisional": (
        "⚠️ 有未能评分的项，成绩为暂定，已交导师复核。",
        "⚠️ Some grades could not be computed; the result is provisional and flagged.",
    ),
    "red_lines": ("🚫 红线：", "🚫 Red lines:"),
    "weakest": (
        "最弱的一条是第 {n} 条回复。参考写法：\n{text}",
        "Weakest reply: #{n}. A model:\n{text}",
    ),
    "ledger": ("扣分明细（点按钮可申诉）：", "Points ledger (tap a button to dispute):"),
    "ledger_plain": ("扣分明细：", "Points ledger:"),
    "no_deductions": ("没有扣分。", "No points lost."),
    "chart_caption": ("{title}：各维度得分与你的成绩走势", "{title}: dimensions and your trend"),
    "dispute_button": ("申诉 {n}", "Dispute {n}"),
    "dispute_ask": (
        "请写明第 {n} 项扣分（{points} 分）为什么不对，导师会处理。发送 /cancel 取消。",
        "Write why deduction {n} ({points} points) is wrong; your mentor will review it. "
        "Send /cancel to cancel.",
    ),
    "dispute_saved": (
        "申诉 #{id} 已提交，导师处理后会通知你。",
        "Dispute #{id} is filed; you'll be told when your mentor rules on it.",
    ),
    "dispute_new": (
        "📨 新申诉 #{id}：{trainee}，会话 {session} 第 {entry} 项（{points} 分）\n理由：{reason}\n"
        "发送 /disputes 处理。",
        "📨 New dispute #{id}: {trainee}, session {session} entry {entry} ({points} points)\n"
        "Reason: {reason}\nSend /disputes to rule on it.",
    ),
    "cancelled": ("已取消。", "Cancelled."),
    "no_disputes": ("没有待处理的申诉。", "No open disputes."),
    "dispute_item": (
        "申诉 #{id} · {trainee} · 会话 {session}\n第 {entry} 项：{item} −{points}\n"
        "原因：{why}\n原话：{quote}\n学员理由：{reason}",
        "Dispute #{id} · {trainee} · session {session}\nEntry {entry}: {item} −{points}\n"
        "Why: {why}\nQuote: {quote}\nTrainee's reason: {reason}",
    ),
    "accepted": ("采纳", "Accept"),
    "partly": ("部分采纳", "Partly"),
    "rejected": ("驳回", "Reject"),
    "ruling_ask": (
        "请发送裁定理由（必填）。发送 /cancel 取消。",
        "Send the reason for your ruling (required). Send /cancel to cancel.",
    ),
    "ruling_ask_partly": (
        "请发送仍扣的分数和理由，例如：5 部分理由成立。发送 /cancel 取消。",
        "Send the points still lost and the reason, e.g.: 5 partly right. Send /cancel to cancel.",
    ),
    "ruled": (
        "已裁定申诉 #{id}：{verdict}。会话 {session} 调整后总分 {total}。",
        "Dispute #{id} ruled {verdict}. Session {session} adjusted total: {total}.",
    ),
    "ruled_trainee": (
        "你的申诉 #{id} 已处理：{verdict}。理由：{reason}\n调整后总分 {total}。",
        "Your dispute #{id} was ruled {verdict}. Reason: {reason}\nAdjusted total: {total}.",
    ),
    "export_as_text": (
        "这个服务器无法发送文件；团队「{team}」的 CSV 如下（可复制保存为 .csv）：\n\n{csv}",
        "This server cannot send files; team '{team}' as CSV below (copy it into a .csv "
        "file):\n\n{csv}",
    ),
    "drill_planned": (
        "🔔 演练 #{id}「{title_zh}」{starts} 开始，持续 {minutes} 分钟，你同时接待 {concurrency} "
        "位客户。每条客户消息带编号（如 C1）：引用回复那条消息来回答这位客户。/leaderboard 看排名。",
        "🔔 Drill #{id} '{title_en}' starts {starts} and lasts {minutes} min; you handle "
        "{concurrency} customers at once. Each customer message carries a label (like C1): "
        "reply to that message to answer that customer. /leaderboard shows the standings.",
    ),
    "overridden_trainee": (
        "导师调整了会话 {session} 第 {entry} 项扣分：{old} → {new} 分。理由：{reason}\n"
        "调整后总分 {total}（/history {session} 查看）。",
        "A mentor changed entry {entry} of session {session}: {old} → {new} points. "
        "Reason: {reason}\nAdjusted total: {total} (/history {session} shows it).",
    ),
    "overridden": (
        "已修改会话 {session} 第 {entry} 项：{old} → {new} 分。调整后总分 {total}。",
        "Session {session} entry {entry} changed: {old} → {new} points. Adjusted total: {total}.",
    ),
    "usage_override": (
        "用法：/override 会话号 扣分项 分数 理由",
        "Usage: /override SESSION ENTRY POINTS REASON",
    ),
    "usage_assign": (
        "用法：/assign 场景[,场景] team=团队名|trainee=@用户 [due=2026-12-01] [pass=80] "
        "[attempts=3] [difficulty=normal] [mode=exam]\n场景：{ids}",
        "Usage: /assign scenario[,scenario] team=NAME|trainee=@user [due=2026-12-01] "
        "[pass=80] [attempts=3] [difficulty=normal] [mode=exam]\nScenarios: {ids}",
    ),
    "bad_option": (
        "无法识别的参数「{option}」。{usage}",
        "Unrecognised option '{option}'. {usage}",
    ),
    "assigned": (
        "已布置 {n} 个场景给 {target}，已通知 {notified} 位学员。",
        "Assigned {n} scenario(s) to {target}; {notified} trainee(s) notified.",
    ),
    "assignment_new": (
        "📌 新任务：{title}\n难度 {difficulty} · {mode} · 及格 {pass_mark}{due}{attempts}\n"
        "发送 /practice 开始。",
        "📌 New assignment: {title}\n{difficulty} · {mode} · pass {pass_mark}{due}{attempts}\n"
        "Send /practice to start.",
    ),
    "attempts_n": ("，可尝试 {n} 次", ", {n} attempts"),
    "due_on": ("，截止 {due}", ", due {due}"),
    "pick_team": ("选择团队：", "Choose a team:"),
    "no_teams": (
        "你还不是任何团队的导师。",
        "You don't mentor any team yet.",
    ),
    "team_report": (
        "👥 团队「{team}」\n学员 {trainees} 人 · 已结束会话 {sessions} 场\n任务完成 {done}/{total}",
        "👥 Team '{team}'\n{trainees} trainee(s) · {sessions} ended session(s)\n"
        "Assignments completed {done}/{total}",
    ),
    "averages": ("各维度平均：", "Average per dimension:"),
    "top_clauses": ("最常违反的条款：", "Most violated clauses:"),
    "overdue": ("⏰ 逾期：", "⏰ Overdue:"),
    "none": ("无", "none"),
    "usage_sessions": ("用法：/sessions @用户 或 用户 id", "Usage: /sessions @user or user id"),
    "sessions_of": ("{name} 的会话：", "Sessions of {name}:"),
    "usage_transcript": ("用法：/transcript 会话号", "Usage: /transcript SESSION"),
    "history_running": (
        "这个会话还在进行中，结束后才有成绩单（/end 结束）。",
        "That session is still running; its scorecard comes when it ends (/end).",
    ),
    "history_empty": ("还没有练习记录。发送 /practice 开始。", "No sessions yet. Send /practice."),
    "history": (
        "最近的会话（/history 会话号 查看成绩单并申诉）：",
        "Recent sessions (/history SESSION shows its scorecard and Dispute buttons):",
    ),
    "adjusted_total": (
        "{total}（导师调整，原 {was}）",
        "{total} (adjusted by a mentor; was {was})",
    ),
    "me": (
        "📈 我的成绩\n会话 {sessions} 场 · 平均分 {average} · 通过 {passed} 场",
        "📈 My results\n{sessions} session(s) · average {average} · {passed} passed",
    ),
    "weak_clauses": ("最常扣分的条款：", "Clauses that cost you most:"),
    "recommend": ("推荐下一个练习：{title}{why}", "Practise next: {title}{why}"),
    "recommend_assigned": ("（导师布置的任务）", " (assigned by your mentor)"),
    "usage_newteam": ("用法：/newteam 团队名称", "Usage: /newteam TEAM_NAME"),
    "team_created": (
        "已创建团队「{team}」。用 /invite {team} mentor 邀请导师。",
        "Team '{team}' created. Invite a mentor with /invite {team} mentor.",
    ),
    "usage_invite": (
        "用法：/invite 团队 mentor|trainee [次数]，或 /invite - admin",
        "Usage: /invite TEAM mentor|trainee [uses], or /invite - admin",
    ),
    "invite_link": (
        "邀请链接（{role}，可用 {uses} 次）：\n{link}\n或在机器人里发送：/start {code}",
        "Invite link ({role}, {uses} use(s)):\n{link}\nor send the bot: /start {code}",
    ),
    "exported": ("团队「{team}」的成绩（CSV）", "Results of team '{team}' (CSV)"),
    "error": (
        "出错了，已记录。你的对话已保存，请稍后再试。",
        "Something went wrong and was logged. Your chat is saved; please try again.",
    ),
    "not_text": (
        "目前只支持文字回复。",
        "Only text replies are supported for now.",
    ),
    "unknown_command": ("未知命令。发送 /help 查看命令。", "Unknown command. Send /help."),
    "stale_button": (
        "这个按钮已失效，请重新发送命令。",
        "This button no longer works; send the command again.",
    ),
    **{key: (word["zh"], word["en"]) for key, word in words.CHOICES.items()},
}

DIMENSIONS = words.DIMENSIONS


def t(key: str, lang: Lang, **values: Any) -> str:
    """The text ``key`` in ``lang`` with ``values`` filled in."""
    zh, en = TEXTS[key]
    return (zh if lang == "zh" else en).format(**values)


def _score(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def grade_line(grade: Grade, lang: Lang) -> str:
    """One grade as a line: dimension, score and reason."""
    name = DIMENSIONS.get(grade.dimension, {"zh": grade.dimension, "en": grade.dimension})[lang]
    if grade.status == "not_applicable":
        score = t("na", lang)
    elif grade.status == "unscored":
        score = t("unscored", lang)
    else:
        score = f"{grade.score:g}/{grade.max_score:g}"
    return (
        f"• {name} {score}：{grade.reason[lang]}"
        if lang == "zh"
        else (f"• {name} {score}: {grade.reason[lang]}")
    )


def feedback(number: int, grades: Sequence[Grade], better: Bilingual | None, lang: Lang) -> str:
    """Coach-mode feedback on one reply.

    The grades, the words that cost points, the clauses and a better reply.
    """
    lines = [t("feedback_head", lang, n=number)]
    lines += [grade_line(g, lang) for g in grades]
    quotes = [d.quote for g in grades for d in g.deductions if d.points and d.quote]
    if quotes:
        lines.append(f"「{quotes[0]}」")
    clauses = sorted({c for g in grades for c in g.clause_ids})
    if clauses:
        lines.append(t("clauses", lang, ids=", ".join(clauses)))
    if better is not None:
        lines.append(t("better", lang, text=better[lang]))
    return "\n".join(lines)


def customer_line(name: str, text: str, lang: Lang) -> str:
    """A customer message."""
    return t("customer", lang, name=name, text=text)


def choice_label(choice: PracticeChoice, lang: Lang, limit: int = 60) -> str:
    """A practice keyboard button label of at most ``limit`` characters.

    A long title is shortened, never the due date or the attempts left after it.
    """
    title = choice.title[lang]
    if choice.assignment is None:
        return title if len(title) <= limit else title[: limit - 1] + "…"
    tail = []
    if choice.passed:
        tail.append(t("done", lang))
    if choice.assignment.due:
        tail.append(t("due", lang, due=choice.assignment.due))
    if choice.attempts_left is not None:
        tail.append(t("left", lang, n=choice.attempts_left))
    after = "".join(f" · {part}" for part in tail)
    room = max(limit - len(after) - 2, 1)
    shown = title if len(title) <= room else title[: room - 1] + "…"
    return f"📌 {shown}{after}"


def notice(body: dict[str, Any], store: Store, library: ScenarioLibrary) -> str:
    """A notice from the outbox (see ``bot.notices``) in this chat's words."""
    lang: Lang = "en" if body["lang"] == "en" else "zh"
    values = dict(body["values"])
    if body["key"] == "assignments":
        rows = [a for a in map(store.assignment, values["ids"]) if a is not None]
        return "\n\n".join(
            assignment_note(a, library.get(a.scenario_id).scenario.title.get(lang), lang)
            for a in rows
        )
    if "verdict" in values:
        values["verdict"] = t(values["verdict"], lang)
    return t(body["key"], lang, **values)


def leaderboard(report: DrillReport, lang: Lang) -> str:
    """A drill's standings as one message."""
    status = {"planned": ("未开始", "planned"), "running": ("进行中", "running"),
              "ended": ("已结束", "ended")}[report.drill.status]  # fmt: skip
    lines = [
        t(
            "board_head",
            lang,
            id=report.drill.id,
            title=report.plan.title.get(lang),
            status=status[0 if lang == "zh" else 1],
        )
    ]
    for rank, s in enumerate(report.trainees, start=1):
        lines.append(
            t(
                "board_row",
                lang,
                rank=rank,
                name=s.name,
                score="—" if s.score is None else f"{s.score:.1f}",
                handled=s.handled,
                arrived=s.arrived,
                abandoned=s.abandoned,
                first="—" if s.first_response_mean_s is None else f"{s.first_response_mean_s:.0f}",
            )
        )
    return "\n".join(lines)


def assignment_note(assignment: AssignmentRow, title: str, lang: Lang) -> str:
    """What a trainee is told about an assignment."""
    a = assignment
    return t(
        "assignment_new",
        lang,
        title=title,
        difficulty=t(a.difficulty, lang),
        mode=t(a.mode, lang),
        pass_mark=f"{a.pass_mark:g}",
        due=t("due_on", lang, due=a.due) if a.due else "",
        attempts=t("attempts_n", lang, n=a.attempts) if a.attempts else "",
    )


def scorecard(view: SessionView, title: str, lang: Lang, *, with_buttons: bool) -> str:
    """The end-of-session scorecard with its ledger (numbered for disputes)."""
    card = view.card
    assert card is not None
    verdict = t("passed" if card.passed else "failed", lang)
    lines = [
        t(
            "scorecard",
            lang,
            title=title,
            total=_score(card.total),
            pass_mark=f"{card.pass_mark:g}",
            verdict=verdict,
        ),
        t("session_over", lang, outcome=OUTCOME_TEXT[card.outcome][lang]),
    ]
    if view.adjusted:
        lines.append(
            t(
                "adjusted",
                lang,
                total=_score(view.adjusted_total),
                verdict=t("passed" if view.adjusted_passed else "failed", lang),
            )
        )
    for d in card.dimensions:
        score = "—" if d.score is None else f"{d.score:.0f}/{d.max_score:g}"
        lines.append(f"  {d.title[lang]} {score}")
    lines += [f"• {r[lang]}" for r in view.adjusted_reasons]
    if card.provisional:
        lines.append(t("provisional", lang))
    if card.red_lines:
        lines.append(t("red_lines", lang))
        lines += [
            f"  #{e.reply} {', '.join(e.clause_ids)}: {e.reason[lang]}" for e in card.red_lines
        ]
    lines.append("")
    lines.append(ledger(view, lang, with_buttons=with_buttons))
    if card.weakest_reply and card.exemplar:
        lines.append("")
        lines.append(t("weakest", lang, n=card.weakest_reply, text=card.exemplar[lang]))
    return "\n".join(lines)


def ledger(view: SessionView, lang: Lang, *, with_buttons: bool) -> str:
    """The numbered points ledger with mentor changes."""
    if not view.entries:
        return t("no_deductions", lang)
    lines = [t("ledger" if with_buttons else "ledger_plain", lang)]
    for e in view.entries:
        where = "—" if e.entry.reply is None else f"#{e.entry.reply}"
        points = f"−{e.entry.points:g}"
        if e.history:
            points += f" → −{e.points:g}"
        line = f"{e.number}. [{where}] {e.entry.item_title[lang]} {points}: {e.entry.reason[lang]}"
        if e.entry.quote:
            line += f"「{e.entry.quote}」"
        if e.entry.clause_ids:
            line += f" ({', '.join(e.entry.clause_ids)})"
        lines.append(line)
        for h in e.history:
            lines.append(
                f"   ↳ {h.kind} {h.verdict or ''} {h.old_points:g}→{h.new_points:g}: {h.reason}"
            )
    return "\n".join(lines)


def session_line(view: SessionView, lang: Lang, title: str) -> str:
    """One session in a list, with the mentor-adjusted total when points were changed."""
    row = view.row
    if row.status != "ended":
        state = "…"
    elif view.adjusted:
        verdict = "✅" if view.adjusted_passed else "❌"
        state = t("adjusted_total", lang, total=_score(view.adjusted_total), was=_score(row.total))
        state += f" {verdict}"
    else:
        verdict = "✅" if row.passed else "❌"
        state = f"{_score(row.total)} {verdict}"
    return f"{row.id} · {row.started_at[:10]} · {title} · {t(row.difficulty, lang)} · {state}"


def transcript(
    view: SessionView, turns: Sequence[TurnRow], names: tuple[str, str], lang: Lang
) -> str:
    """A session's chat and its ledger."""
    customer, trainee = names
    row = view.row
    lines = [f"{row.id} · {row.scenario_id} · {t(row.difficulty, lang)} · {t(row.mode, lang)}"]
    for turn in turns:
        if turn.role == "customer":
            lines.append(f"👤 {customer}: {turn.text}")
        elif turn.role == "trainee":
            lines.append(f"🧑‍💼 {trainee}: {turn.text}")
    lines.append("")
    if view.card is not None:
        lines.append(
            f"{_score(view.card.total)} → {_score(view.adjusted_total)}"
            if view.adjusted
            else _score(view.card.total)
        )
    lines.append(ledger(view, lang, with_buttons=False))
    return "\n".join(lines)


def team_report(report: TeamReport, lang: Lang) -> str:
    """A team report."""
    lines = [
        t(
            "team_report",
            lang,
            team=report.team.name,
            trainees=len(report.trainees),
            sessions=report.sessions,
            done=report.completed,
            total=len(report.progress),
        ),
        t("averages", lang),
    ]
    lines += [f"  {title[lang]} {_score(avg)}" for title, avg in report.dimension_averages] or [
        f"  {t('none', lang)}"
    ]
    lines.append(t("top_clauses", lang))
    lines += [f"  {cid} {title[lang]} ×{n}" for cid, title, n in report.top_clauses] or [
        f"  {t('none', lang)}"
    ]
    lines.append(t("overdue", lang))
    lines += [
        f"  {p.trainee.name} (id {p.trainee.id}) · {p.assignment.scenario_id} · {p.assignment.due}"
        for p in report.overdue
    ] or [f"  {t('none', lang)}"]
    for p in report.progress:
        mark = "✅" if p.passed else ("⏰" if p.overdue else "…")
        lines.append(
            f"{mark} {p.trainee.name} · {p.assignment.scenario_id} · {p.attempts}× · "
            f"{_score(p.best)}"
        )
    return "\n".join(lines)


def profile(p: Profile, lang: Lang) -> str:
    """A trainee's /me summary."""
    lines = [t("me", lang, sessions=p.sessions, average=_score(p.average), passed=p.passed)]
    if p.weakest:
        lines.append(t("weak_clauses", lang))
        lines += [f"  {cid} {title[lang]} −{pts:g}" for cid, title, pts in p.weakest]
    if p.next_scenario is not None:
        why = t("recommend_assigned", lang) if p.next_scenario.assignment else ""
        lines.append(t("recommend", lang, title=p.next_scenario.title[lang], why=why))
    return "\n".join(lines)


def split(text: str, limit: int = 4096) -> list[str]:
    """Split a message into Telegram-sized parts, at line breaks where possible."""
    parts: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit)
        if cut <= 0:
            cut = limit
        parts.append(text[:cut])
        text = text[cut:].lstrip("\n")
    if text or not parts:
        parts.append(text)
    return parts
