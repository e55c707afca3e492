"""What the bot owes a chat, stored with the state change that owes it (a transactional outbox).

A state change (a session started, a reply answered, a session ended) is stored with the
messages it owes the trainee, keyed by the update that caused it. :meth:`TelegramApp.
deliver` sends them in order until the Bot API accepts each one, marking each as it goes:
a crash means a message arrives late, and a re-run of the update finds its messages
already owed instead of producing them twice.

Kinds of owed message: ``text``, ``chart`` (the
scorecard chart of a session: an optional extra whose failure never holds back the rest)
and ``result`` (the scorecard text with its Dispute buttons), the last two drawn from the
store when sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot import notices
from bot.engine import Session, TurnResult
from bot.i18n import Lang
from bot.storage import Owed
from bot.telegram import texts
from bot.telegram.texts import t
from graders.rubric import Scorecard

PREFIX = notices.TELEGRAM


def address(chat_id: int | str) -> str:
    """The outbox address of a chat."""
    return f"{PREFIX}{chat_id}"


def chat_of(addr: str) -> int:
    """The chat id of an outbox address."""
    return int(addr[len(PREFIX) :])


def customer_name(session: Session) -> str:
    """The customer's name in the session's language."""
    return session.scenario.scenario.customer.persona.name.get(session.lang)


@dataclass(frozen=True)
class TelegramPostbox:
    """The messages a practice session owes one chat, in the user's language."""

    chat_id: int
    user_id: int
    lang: Lang
    ref: str | None
    """The update that causes the change."""

    def _owed(self, *messages: tuple[str, dict[str, Any]]) -> Owed:
        return Owed(address(self.chat_id), self.ref, messages)

    def _result(self, session: Session) -> tuple[tuple[str, dict[str, Any]], ...]:
        body = {"session": session.id, "user": self.user_id}
        return (("chart", body), ("result", body))

    def opening(self, session: Session, text: str) -> Owed:
        """The briefing and the customer's opening line."""
        lang = self.lang
        s = session.scenario.scenario
        head = t(
            "starting",
            lang,
            title=s.title.get(lang),
            difficulty=t(session.difficulty, lang),
            mode=t(session.mode, lang),
        )
        key = "briefing" if session.mode == "coach" else "briefing_exam"
        briefing = t(key, lang, briefing=s.briefing.get(lang))
        line = texts.customer_line(customer_name(session), text, lang)
        note = f"{session.opening_note[lang]}\n\n" if session.opening_note else ""
        return self._owed(("text", {"text": f"{head}\n\n{briefing}\n\n{note}{line}"}))

    def answer(self, session: Session, result: TurnResult) -> Owed:
        """Feedback (coach mode), a note, the customer's answer; the scorecard if it ended."""
        lang = self.lang
        parts = []
        if session.mode == "coach":
            record = result.record
            parts.append(texts.feedback(record.number, record.grades, result.better, lang))
        if result.note:
            parts.append(result.note[lang])
        if result.customer_text:
            parts.append(texts.customer_line(customer_name(session), result.customer_text, lang))
        messages: list[tuple[str, dict[str, Any]]] = []
        if parts:
            messages.append(("text", {"text": "\n\n".join(parts)}))
        if result.ended is not None:
            messages.extend(self._result(session))
        return self._owed(*messages)

    def line(self, session: Session, text: str, *, ended: bool) -> Owed:
        """The answer to the last reply, produced after a restart; the scorecard if it ended."""
        lang = self.lang
        parts = []
        records = session.grader.records
        if session.mode == "coach" and records:
            record = records[-1]
            parts.append(
                texts.feedback(record.number, record.grades, session.better_reply(record), lang)
            )
        parts.append(texts.customer_line(customer_name(session), text, lang))
        said = ("text", {"text": "\n\n".join(parts)})
        return self._owed(said, *(self._result(session) if ended else ()))

    def ending(self, session: Session, card: Scorecard) -> Owed:
        """The scorecard of a session ended by /end."""
        return self._owed(*self._result(session))
