"""Terminal practice: a thin adapter between the engine and a console (rich).

Colour and panels on a terminal; plain readable text in a pipe. Ctrl-C, end of input or
``/end`` ends the session cleanly; everything is already saved when it is shown. Ctrl-C
while a reply is being graded lets that reply finish first; a second one stops at once and
leaves the session open for ``trainer play --resume``.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from bot.engine import Engine, ReplyRejected, Session
from bot.i18n import Lang
from bot.scenario import COURIER_NAMES, PAYMENT_NAMES
from bot.storage.rows import utc_now
from bot.words import CHOICES, DIMENSIONS
from graders import Grade
from graders.rubric import OUTCOME_TEXT, Scorecard

UI: dict[str, tuple[str, str]] = {
    "you": ("你", "You"),
    "commands": (
        "命令：/hint 参考回复（教练模式）· /policy 适用规则 · /order 订单信息 · /end 结束 · /help 帮助",
        "Commands: /hint model reply (coach mode) · /policy rules · /order order details · "
        "/end finish · /help",
    ),
    "mode_coach": ("教练模式：每条回复后立即显示评分。", "Coach mode: grades after every reply."),
    "mode_exam": ("考试模式：结束后统一显示评分。", "Exam mode: grades at the end only."),
    "difficulty": ("难度", "Difficulty"),
    "no_hint_exam": ("考试模式不提供参考回复。", "No model replies in exam mode."),
    "hint": ("参考回复（仅供学习，使用会记录）", "Model reply (for learning; use is recorded)"),
    "order_locked": (
        "还看不到订单：请先向客户要订单号。",
        "You can't see the order yet: ask the customer for the order number first.",
    ),
    "better": ("更好的回复", "A better reply"),
    "ended": ("会话结束", "Session over"),
    "interrupted": ("已中断，会话已结束并保存。", "Interrupted: the session was ended and saved."),
    "forced": (
        "已强制停止：已保存的内容都在，会话仍未结束。继续：trainer play --resume {sid}",
        "Stopped at once: everything saved so far is kept and the session is still open. "
        "Continue it with: trainer play --resume {sid}",
    ),
    "forced_at_start": (
        "已强制停止：会话还没开始，没有保存任何内容。",
        "Stopped at once: the session had not begun, so nothing was saved.",
    ),
    "resumed": ("继续会话 {sid}，此前的对话：", "Resuming session {sid}. The chat so far:"),
    "scorecard": ("成绩单", "Scorecard"),
    "total": ("总分", "Total"),
    "passed": ("通过", "PASSED"),
    "failed": ("未通过", "NOT PASSED"),
    "outcome": ("结果", "Outcome"),
    "red_line": ("红线（自动判定不通过）", "Red lines (automatic fail)"),
    "ledger": ("扣分明细", "Points ledger"),
    "no_deductions": ("没有扣分。", "No points lost."),
    "weakest": ("最弱的一条回复：第 {n} 条。", "Weakest reply: #{n}."),
    "yours": ("你的回复", "Yours"),
    "model_reply": ("参考写法", "A model reply"),
    "pass_mark": ("及格 {mark}", "pass {mark}"),
    "unknown_command": ("没有 {command} 这个命令。", "There is no command {command}."),
    "saved": (
        "已保存：会话 {sid}（{db}）。查看：trainer history {sid}",
        "Saved: session {sid} ({db}). Review it with: trainer history {sid}",
    ),
    "review": ("需导师复核的评分", "grades flagged for mentor review"),
    "provisional": (
        "（有未能评分的项，成绩为暂定）",
        "(some grades could not be computed; provisional)",
    ),
    "reply": ("回复", "Reply"),
    "item": ("项目", "Item"),
    "points": ("扣分", "Points"),
    "why": ("原因与原话", "Why, in your words"),
    "clause": ("条款", "Clause"),
    "customer_says": ("客户", "Customer"),
    "na": ("不适用", "n/a"),
    "unscored": ("未评分", "unscored"),
    "yes": ("有", "yes"),
    "no": ("无", "no"),
}


ORDER_LABELS: dict[str, tuple[str, str]] = {
    "order": ("订单号", "order"),
    "item": ("商品", "item"),
    "paid": ("实付", "paid"),
    "courier": ("快递", "courier"),
    "ordered": ("下单", "ordered"),
    "shipped": ("发货", "shipped"),
    "signed": ("签收", "signed"),
    "promised": ("承诺送达", "promised"),
    "eta": ("预计送达", "eta"),
    "insurance": ("运费险", "freight insurance"),
    "received_back": ("仓库收到退货", "return received"),
    "refund_approved": ("退款审核通过", "refund approved"),
    "refund_reference": ("退款单号", "refund reference"),
}
"""The rows of /order."""


def ui(key: str, lang: Lang, **values: Any) -> str:
    """A user-facing terminal text in ``lang``."""
    zh, en = UI[key]
    return (zh if lang == "zh" else en).format(**values)


def grade_line(grade: Grade, lang: Lang) -> str:
    """One grade as a line: dimension, score and reason."""
    if grade.status == "not_applicable":
        score = ui("na", lang)
    elif grade.status == "unscored":
        score = ui("unscored", lang)
    else:
        score = f"{grade.score:g}/{grade.max_score:g}"
    flags = f" [{', '.join(grade.flags)}]" if grade.flags else ""
    clauses = f" ({', '.join(grade.clause_ids)})" if grade.clause_ids else ""
    name = DIMENSIONS.get(grade.dimension, {"zh": grade.dimension, "en": grade.dimension})[lang]
    return f"{name} {score}{clauses}{flags}{_colon(lang)}{grade.reason[lang]}"


def _colon(lang: Lang) -> str:
    return "：" if lang == "zh" else ": "


class Interrupted(Exception):
    """Ctrl-C pressed twice while a reply was graded: the session stays open."""


class _CtrlC:
    """Holds Ctrl-C back while a step runs, so a half-graded reply is not cut off.

    The first press is noted and acted on when the step is done; a second one stops at once.
    """

    def __init__(self) -> None:
        self.pressed = False

    def _press(self, signum: int, frame: FrameType | None) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True

    @contextmanager
    def held(self) -> Iterator[None]:
        """Run a step with Ctrl-C held back (only the main thread receives signals)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, self._press)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


class TerminalPractice:
    """Runs one practice session on a console."""

    def __init__(self, engine: Engine, console: Console):
        self.engine = engine
        self.console = console

    def run(self, resume: str | None = None, **start: Any) -> Scorecard:
        """Play a session from start (or from where ``resume`` stopped) to scorecard."""
        with asyncio.Runner() as runner:
            try:
                return self._run(runner, resume, start)
            finally:  # model clients hold connections bound to this event loop
                runner.run(self.engine.assistants.aclose())

    def _run(self, runner: asyncio.Runner, resume: str | None, start: dict[str, Any]) -> Scorecard:
        ctrl_c = _CtrlC()
        with self._starting(ctrl_c, start.get("lang", "en"), resume, start.get("trainee")):
            if resume is None:  # the customer may take a while (a model writes the opening)
                session, opening = runner.run(self.engine.start(**start))
            else:
                session, _ = runner.run(self.engine.resume(resume))  # its answer is stored
        self._header(session)
        if resume is None:
            if session.opening_note:
                self.console.print(f"[dim]{escape(session.opening_note[session.lang])}[/]")
            self._customer(session, opening)
        else:
            self._replay(session)
        lang = session.lang
        while not session.ended and not ctrl_c.pressed:
            shown = time.monotonic()
            try:
                text = self.console.input(f"[bold green]{ui('you', lang)} ›[/] ")
            except (KeyboardInterrupt, EOFError):
                ctrl_c.pressed = True
                break
            command = text.strip().lower()
            if command in ("/end", "/quit", "/exit"):
                break
            with self._stoppable(session, ctrl_c):
                self._step(runner, session, text, time.monotonic() - shown)
        if ctrl_c.pressed:
            self.console.print(f"\n[yellow]{ui('interrupted', lang)}[/]")
            ctrl_c.pressed = False  # one more press while it is saved is still held back
        with self._stoppable(session, ctrl_c):
            card = runner.run(session.end())
            self.scorecard(session, card)
        return card

    @contextmanager
    def _starting(
        self, ctrl_c: _CtrlC, lang: Lang, resume: str | None, trainee: str | None
    ) -> Iterator[None]:
        """Hold Ctrl-C back while a session starts; pressed twice, stop and say what was kept.

        The session is the one being resumed, or the trainee's that began meanwhile.
        """
        begun = utc_now()
        try:
            with ctrl_c.held():
                yield
        except KeyboardInterrupt:
            store = self.engine.store
            if resume is not None:
                row = store.session(resume)
            else:
                assert trainee is not None
                row = store.active_session(trainee)
                if row is not None and row.started_at < begun:
                    row = None  # an older session of theirs: not this one
            if row is None or row.status != "active":
                self.console.print(f"\n[yellow]{ui('forced_at_start', lang)}[/]")
                raise Interrupted(None) from None
            self.console.print(f"\n[yellow]{ui('forced', row.lang, sid=row.id)}[/]")  # type: ignore[arg-type]
            raise Interrupted(row.id) from None

    @contextmanager
    def _stoppable(self, session: Session, ctrl_c: _CtrlC) -> Iterator[None]:
        """Hold Ctrl-C back; if pressed twice, say how to resume and stop."""
        try:
            with ctrl_c.held():
                yield
        except KeyboardInterrupt:
            self.console.print(f"\n[yellow]{ui('forced', session.lang, sid=session.id)}[/]")
            raise Interrupted(session.id) from None

    def _step(self, runner: asyncio.Runner, session: Session, text: str, latency: float) -> None:
        """One command or reply: graded, answered and shown."""
        lang = session.lang
        command = text.strip().lower()
        if command.startswith("/"):
            self._command(session, command)
            return
        try:
            result = runner.run(session.reply(text, latency))
        except ReplyRejected as exc:
            self.console.print(f"[yellow]{escape(exc.message[lang])}[/]")
            return
        if session.mode == "coach":
            self._feedback(session, result.record.grades, result.better)
        if result.note:
            self.console.print(f"[dim]{escape(result.note[lang])}[/]")
        if result.customer_text:
            self._customer(session, result.customer_text)

    def _replay(self, session: Session) -> None:
        """Show a resumed session's chat so far, ending with the customer's latest line."""
        self.console.print(f"[dim]{ui('resumed', session.lang, sid=session.id)}[/]")
        for turn in session.store.turns(session.id):
            if turn.role == "customer":
                self._customer(session, turn.text)
            elif turn.role == "trainee":
                self.console.print(f"[green]{ui('you', session.lang)} ›[/] {escape(turn.text)}")

    # pieces

    def _header(self, session: Session) -> None:
        lang = session.lang
        s = session.scenario.scenario
        mode = ui("mode_coach" if session.mode == "coach" else "mode_exam", lang)
        body = (
            f"{escape(s.briefing.get(lang))}\n\n"
            f"{ui('difficulty', lang)}{':' if lang == 'en' else '：'}"
            f"{CHOICES[session.difficulty][lang]} · {mode}\n"
            f"[dim]{ui('commands', lang)}[/]"
        )
        self.console.print(Panel(body, title=escape(s.title.get(lang)), border_style="cyan"))

    def _customer(self, session: Session, text: str) -> None:
        name = session.scenario.scenario.customer.persona.name.get(session.lang)
        self.console.print(f"[bold red]{escape(name)}:[/] {escape(text)}")

    def _feedback(
        self, session: Session, grades: tuple[Grade, ...], better: dict[Lang, str] | None
    ) -> None:
        lang = session.lang
        lines = [escape(grade_line(g, lang)) for g in grades]
        quotes = [d.quote for g in grades for d in g.deductions if d.points and d.quote]
        if quotes:
            lines.append("[dim]「" + escape(quotes[0]) + "」[/]")
        if better is not None:
            lines.append(f"[green]{ui('better', lang)}{_colon(lang)}[/]{escape(better[lang])}")
        self.console.print(Panel("\n".join(lines), border_style="magenta", expand=True))

    def _command(self, session: Session, command: str) -> None:
        lang = session.lang
        if command == "/hint":
            if session.mode != "coach":
                self.console.print(ui("no_hint_exam", lang))
                return
            self.console.print(Panel(escape(session.hint()[lang]), title=ui("hint", lang)))
        elif command == "/policy":
            policy = session.scenario.policy
            table = Table(show_header=False, expand=True)
            for clause_id in session.scenario.applicable_clauses:
                clause = policy.clauses[clause_id]
                table.add_row(
                    f"[bold]{clause_id}[/] ({clause.severity})",
                    escape(clause.title.get(lang)),
                    escape(policy.clause_text(clause_id, lang)),
                )
            self.console.print(table)
        elif command == "/order":
            self._order(session)
        elif command == "/help":
            self.console.print(ui("commands", lang))
        else:
            self.console.print(f"[yellow]{ui('unknown_command', lang, command=escape(command))}[/]")
            self.console.print(ui("commands", lang))

    def _order(self, session: Session) -> None:
        lang = session.lang
        s = session.scenario.scenario
        order_facts = {f.id for f in s.customer.facts if f.kind == "order_id"}
        if order_facts and not order_facts & session.grader.state.revealed:
            self.console.print(ui("order_locked", lang))
            return
        o = s.order
        insured = ui("yes" if o.freight_insurance else "no", lang)
        rows = [
            ("order", o.order_id),
            ("item", f"{o.item.get(lang)} ×{o.quantity}"),
            ("paid", f"¥{o.price:g} · {PAYMENT_NAMES[o.payment][lang]}"),
            ("courier", f"{COURIER_NAMES[o.courier][lang]} {o.tracking_no or ''}"),
            ("ordered", str(o.ordered_on)),
            ("shipped", str(o.shipped_on or "—")),
            ("signed", str(o.signed_on or "—")),
            ("promised", str(o.promised_by or "—")),
            ("eta", str(s.answer_key.eta or "—")),
            ("insurance", insured),
        ]
        rows += [(key, str(value)) for key, value in o.refund_facts()]
        table = Table(show_header=False)
        for key, value in rows:
            table.add_row(ORDER_LABELS[key][0 if lang == "zh" else 1], escape(value))
        self.console.print(table)

    def scorecard(self, session: Session, card: Scorecard) -> None:
        """Print the end-of-session scorecard."""
        print_scorecard(
            self.console, card, session.lang, {r.number: r.text for r in session.grader.records}
        )
        db = session.store.url
        self.console.print(f"[dim]{ui('saved', session.lang, sid=session.id, db=db)}[/]")


def print_scorecard(console: Console, card: Scorecard, lang: Lang, replies: dict[int, str]) -> None:
    """Render a scorecard (also used by ``trainer history``)."""
    verdict = ui("passed", lang) if card.passed else ui("failed", lang)
    colour = "green" if card.passed else "red"
    total = "—" if card.total is None else f"{card.total:.1f}"
    head = (
        f"{ui('total', lang)}: [bold]{total}[/] / 100 ({ui('pass_mark', lang, mark=f'{card.pass_mark:g}')}) "
        f"[bold {colour}]{verdict}[/]   {ui('outcome', lang)}: {OUTCOME_TEXT[card.outcome][lang]}"
    )
    for reason in card.fail_reasons:
        head += f"\n[red]• {escape(reason[lang])}[/]"
    if card.provisional:
        head += f"\n[yellow]{ui('provisional', lang)}[/]"
    if card.needs_review:
        head += f"\n[yellow]{card.needs_review} {ui('review', lang)}[/]"
    dims = Table(show_header=False, box=None)
    for d in card.dimensions:
        score = "—" if d.score is None else f"{d.score:.0f}/{d.max_score:g}"
        dims.add_row(escape(d.title[lang]), score)
    console.print(Panel(head, title=ui("scorecard", lang), border_style=colour))
    console.print(dims)
    if card.red_lines:
        console.print(f"[bold red]{ui('red_line', lang)}[/]")
        for e in card.red_lines:
            console.print(f"  #{e.reply} {', '.join(e.clause_ids)}: {escape(e.reason[lang])}")
    console.print(f"[bold]{ui('ledger', lang)}[/]")
    if not card.ledger:
        console.print(ui("no_deductions", lang))
    else:
        table = Table(expand=True)
        for header in ("reply", "item", "points", "why", "clause"):
            table.add_column(ui(header, lang), overflow="fold")
        for e in card.ledger:
            why = e.reason[lang] + (f"\n「{e.quote}」" if e.quote else "")
            table.add_row(
                "—" if e.reply is None else f"#{e.reply}",
                escape(e.item_title[lang]),
                f"-{e.points:.1f}",
                escape(why),
                ", ".join(e.clause_ids),
            )
        console.print(table)
    if card.weakest_reply and card.exemplar:
        console.print(ui("weakest", lang, n=card.weakest_reply))
        if card.weakest_reply in replies:
            yours = escape(replies[card.weakest_reply])
            console.print(f"  {ui('yours', lang)}{_colon(lang)}[dim]{yours}[/]")
        model = escape(card.exemplar[lang])
        console.print(f"  {ui('model_reply', lang)}{_colon(lang)}[green]{model}[/]")
    for note in card.notes:
        console.print(f"[dim]{escape(note[lang])}[/]")
