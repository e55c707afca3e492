"""The LLM voice: an LLM puts the customer's reaction into fresh words.

The engine's :class:`~bot.customers.mind.CustomerMind` still decides everything that
matters (what is revealed, patience, whether an offer is accepted, the ending); the
scripted voice writes a draft of exactly that, and the model only rephrases the draft in
the persona's voice, reacting to the chat. Its answer is checked before it is used: the
session's canary or a fence marker in it (the prompt leaked), a number that appears
nowhere in the draft, the order or the chat (an invented fact), the wrong language or a
runaway length all send the scripted draft instead. So do a timeout and any endpoint
error; after two failures in a row the server's breaker (shared by every role and session,
:mod:`bot.llm.client`) keeps it scripted for a cool-down, then tries the model again. Every
customer message records which voice wrote it and why a fallback happened.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from bot.customers.mind import Mood, Reaction
from bot.customers.scripted import ScriptedVoice
from bot.i18n import Lang
from bot.llm.checks import numbers_in
from bot.llm.client import LLMClient, LLMError
from bot.llm.fence import fence, neutralise, nonce
from bot.llm.prompts import render
from bot.scenario import ResolvedScenario

MAX_CHARS = {"zh": 220, "en": 600}
_CJK = re.compile(r"[\u4e00-\u9fff]")
_LATIN = re.compile(r"[A-Za-z]")
_ENDINGS = {
    "zh": {"resolved": "你接受了方案", "escalated": "你要投诉升级", "left": "你不想再聊了"},
    "en": {
        "resolved": "you accept the solution",
        "escalated": "you escalate the complaint",
        "left": "you give up on the chat",
    },
}


_OPEN = {
    "zh": "（聊天开始，请写你的第一条消息。）",
    "en": "(The chat opens. Write your first message.)",
}
_GO_ON = {"zh": "（请写你的下一条消息。）", "en": "(Write your next message.)"}
_NEXT_SPEAKER = re.compile(
    r"\n\s*(?:<<<|(?:agent|customer|客服|顾客|客户)\s*(?:\(.*?\)|（.*?）)?\s*[:：])", re.IGNORECASE
)
_LABEL = re.compile(r"^\s*(?:customer|顾客|客户)\s*[:：]\s*", re.IGNORECASE)
_QUOTES = "\"'“”「」"


def _first_message(text: str) -> tuple[str, bool]:
    """The customer's message in a model's answer, and whether it ended before the answer.

    A model may label its line ("Customer: …") or go on writing the chat (an agent's line,
    a fence): the message is what comes before that. Nothing is reworded.
    """
    found = _NEXT_SPEAKER.search(text)
    message = text[: found.start()] if found else text
    message = _LABEL.sub("", message.strip(), count=1)
    return message.strip().strip(_QUOTES).strip(), found is not None


_ECHO = {"zh": 10, "en": 20}
"""Letters in a row shared with the instructions that make an answer a quote of them."""
_NOT_LETTERS = re.compile(r"[\W_]+")


def _quotes_instructions(text: str, prompt: str, allowed: Sequence[str]) -> bool:
    """Whether ``text`` repeats a run of the prompt's own words (its instructions).

    What the customer may say (the draft, its order, its wishes, the chat) is cut out of
    the prompt first; punctuation and spaces do not count.
    """
    flat = _NOT_LETTERS.sub("", text).casefold()
    instructions = _NOT_LETTERS.sub("", prompt).casefold()
    for piece in sorted((_NOT_LETTERS.sub("", a).casefold() for a in allowed), key=len)[::-1]:
        if piece:
            instructions = instructions.replace(piece, "\x00")
    size = _ECHO["zh"] if _CJK.search(flat) else _ECHO["en"]
    return any(flat[i : i + size] in instructions for i in range(len(flat) - size + 1))


@dataclass(frozen=True)
class Spoken:
    """A customer message and who wrote it."""

    text: str
    voice: str
    """``llm``, or ``scripted`` when the draft was used."""
    fallback: str | None = None
    """Why the draft was used instead of the model (``timeout``, ``canary``, …)."""
    model: str | None = None
    prompt_sha: str | None = None


def canary_for(session_id: str, seed: int) -> str:
    """The session's canary: a code in the system prompt that must never come out."""
    digest = hashlib.sha256(f"canary:{session_id}:{seed}".encode()).hexdigest()
    return f"CNRY-{digest[:12]}"


class LLMVoice:
    """Phrases reactions with an LLM, falling back to the scripted voice."""

    def __init__(
        self,
        scenario: ResolvedScenario,
        lang: Lang,
        scripted: ScriptedVoice,
        client: LLMClient,
        *,
        session_id: str,
        seed: int,
        budget_s: float = 15.0,
    ):
        self.scenario = scenario
        self.lang = lang
        self.scripted = scripted
        self.client = client
        self.session_id = session_id
        self.canary = canary_for(session_id, seed)
        self.budget_s = budget_s

    async def say(
        self, reaction: Reaction, turn: int, mood: Mood, chat: Sequence[tuple[str, str]]
    ) -> Spoken:
        """The customer's message for ``reaction``; ``chat`` is (role, text) so far."""
        draft = self.scripted.say(reaction, turn)
        marker = nonce(self.session_id, turn, "customer")
        prompt = render(
            "customer",
            self.lang,
            persona_name=self._t(self.scenario.scenario.customer.persona.name),
            persona_description=self._t(self.scenario.scenario.customer.persona.description),
            wants=self._t(self.scenario.scenario.customer.wants),
            order=self._order(),
            unknown=[self._t(u) for u in self.scenario.scenario.customer.unknown],
            anger=round(mood.anger, 1),
            ending=_ENDINGS[self.lang].get(reaction.ending or "", ""),
            draft=neutralise(draft),
            marker=marker,
            canary=self.canary,
        )
        messages = [{"role": "system", "content": prompt.text}, *self._turns(chat, marker)]
        try:
            done = await self.client.complete(
                messages, max_tokens=300, budget_s=self.budget_s, cut_ok=True
            )
        except LLMError as exc:  # circuit_open: the server failed just now, not asked
            return Spoken(draft, "scripted", exc.reason, prompt_sha=prompt.sha)
        text, whole = _first_message(done.text)
        problem = self._check(text, draft, chat, marker, prompt.text)
        if problem is None and done.cut and not whole:
            problem = "truncated"
        if problem is not None:
            return Spoken(draft, "scripted", problem, done.model, prompt.sha)
        return Spoken(text, "llm", None, done.model, prompt.sha)

    def _t(self, text: object) -> str:
        return str(getattr(text, self.lang))

    def _order(self) -> str:
        order = self.scenario.scenario.order
        item = self._t(order.item)
        return f"{order.order_id}, {item} ×{order.quantity}, ¥{order.price:g}, {order.payment}"

    def _turns(self, chat: Sequence[tuple[str, str]], marker: str) -> list[dict[str, str]]:
        """The chat as the model's own conversation, each agent message fenced.

        The customer's lines are the model's turns: small models answer a turn, where
        given a transcript they tend to write more of it.
        """
        turns: list[dict[str, str]] = []
        for role, text in chat:
            if role == "customer":
                turn = {"role": "assistant", "content": text}
            elif role == "trainee":
                turn = {"role": "user", "content": fence(text, "CHAT", marker)}
            else:
                continue
            if turns and turns[-1]["role"] == turn["role"]:
                turns[-1]["content"] += "\n" + turn["content"]
            else:
                turns.append(turn)
        if not turns or turns[0]["role"] != "user":  # chat templates open with the user
            turns.insert(0, {"role": "user", "content": _OPEN[self.lang]})
        if turns[-1]["role"] != "user":
            turns.append({"role": "user", "content": _GO_ON[self.lang]})
        return turns

    def _check(
        self, text: str, draft: str, chat: Sequence[tuple[str, str]], marker: str, prompt: str
    ) -> str | None:
        if not text:
            return "empty"
        lowered = text.lower()
        if self.canary.lower() in lowered or "cnry-" in lowered:
            return "canary"
        said = [draft, self._order(), *(t for _, t in chat)]
        who = self.scenario.scenario.customer
        own = [who.persona.name, who.persona.description, who.wants, *who.unknown]
        mine = [*said, *(self._t(t) for t in own)]
        if "<<<" in text or marker in text or _quotes_instructions(text, prompt, mine):
            return "prompt_leak"
        if len(text) > MAX_CHARS[self.lang]:
            return "too_long"
        if self.lang == "zh" and not _CJK.search(text):
            return "wrong_language"
        if self.lang == "en" and (_CJK.search(text) or not _LATIN.search(text)):
            return "wrong_language"
        written = numbers_in(text)  # without a number in it, no need to read the rest
        if written and written.difference(*(numbers_in(t) for t in said)):  # each read once
            return "invented_number"
        return None
