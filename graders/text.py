"""Text normalisation and lexicon matching for Chinese (Simplified or Traditional) and English.

``analyze(text)`` is the single pass every rule grader and the scripted customer share:
normalise (Traditional → Simplified with OpenCC, full width → half width, ASCII lower
case), find every lexicon phrase with one Aho-Corasick scan, keep Chinese hits only on
jieba token boundaries and English hits only on word boundaries, and mark hits that a
negation (无法, 不会, can't, …) governs. Offsets map back to the original text, so
evidence quotes are the trainee's own characters.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any, Literal

import ahocorasick

from graders.lexicon import LEXICON
from graders.prefilter import required_literals
from graders.segment import token_bounds

_CONTROL = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)
_ASCII_FOLD = str.maketrans(
    {
        **{chr(c): chr(c + 32) for c in range(65, 91)},
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
    }
)
_SENTENCE_END = re.compile(r"[。！？!?；;\n]+|(?<!\bmr)(?<!\bms)(?<!\bmrs)(?<!\bdr)\.(?=\s|$)")
"""Ends a sentence; the dot after a title (Mr. Chen) does not."""
_CLAUSE_END = re.compile(r"[，,、：:（）()\u3000]+|\s[-–]\s|\s?—+\s?")
CJK = re.compile(r"[\u3400-\u9fff]")
"""A Chinese character (the graders' one definition)."""
_LATIN = re.compile(r"[a-z]")
_NOT_NEGATABLE = frozenset(
    f"signals.{name}"
    for name in (
        "courtesy",
        "apology",
        "question",
        "request",
        "negation",
        "conditional",
        "most_quickly",
        "stonewall",
        "understanding",
        "feeling",
        "inquiry",
        "refusal",
        "non_negating",
        "choice",
        "instead",
        "legit_condition",
        "approximate",
        "hypothetical",
        "purpose",
    )
)


def clean(text: str) -> str:
    """Remove control and invisible formatting characters (keeps newlines and tabs)."""
    return _CONTROL.sub("", text)


@dataclass(frozen=True, slots=True)
class Normalized:
    """Normalised text with a map from each of its characters to the original offset."""

    text: str
    original: str
    origin: tuple[int, ...] | None  # None: same length, offsets are identical

    def quote(self, start: int, end: int) -> str:
        """The original characters behind ``text[start:end]``."""
        if self.origin is None:
            return self.original[start:end]
        if start >= len(self.origin):
            return ""
        first = self.origin[start]
        last = self.origin[end - 1] + 1 if end > start else first
        return self.original[first:last]


@cache
def _t2s() -> Any:
    import opencc

    return opencc.OpenCC("t2s")


_SLANG = {
    "u": "you",
    "ur": "your",
    "pls": "please",
    "plz": "please",
    "thx": "thanks",
    "tmrw": "tomorrow",
    "tmr": "tomorrow",
    "rn": "right now",
    "b4": "before",
    "cuz": "because",
    "coz": "because",
    "gonna": "going to",
    "wanna": "want to",
    "cant": "can't",
    "dont": "don't",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "isnt": "isn't",
    "wont": "won't",
    "im": "i'm",
    "ive": "i've",
}
_SLANG_WORD = re.compile(r"(?<![\w'])(?:" + "|".join(_SLANG) + r")(?![\w'])")


def _expand_slang(text: str, origin: tuple[int, ...] | None) -> tuple[str, tuple[int, ...] | None]:
    """Chat spellings as words ("u" → "you", tmrw → tomorrow), keeping the offset map."""
    if not _SLANG_WORD.search(text):
        return text, origin
    offsets = list(origin) if origin is not None else list(range(len(text)))
    parts: list[str] = []
    mapped: list[int] = []
    last = 0
    for match in _SLANG_WORD.finditer(text):
        parts.append(text[last : match.start()])
        mapped.extend(offsets[last : match.start()])
        word = _SLANG[match.group()]
        span = offsets[match.start() : match.end()]
        parts.append(word)
        mapped.extend(span[min(i, len(span) - 1)] for i in range(len(word)))
        last = match.end()
    parts.append(text[last:])
    mapped.extend(offsets[last:])
    return "".join(parts), tuple(mapped)


def simplified(text: str) -> str:
    """Traditional characters as Simplified, keeping every offset (same length)."""
    if text.isascii():
        return text
    converted = _t2s().convert(text)
    if len(converted) != len(text):
        converted = "".join(_t2s().convert(c) or c for c in text)
    return converted if len(converted) == len(text) else text


def normalize(text: str) -> Normalized:
    """Fold to Simplified Chinese, half width and ASCII lower case, keeping an offset map.

    Chat spellings of English words are written out ("u" → "you", tmrw → tomorrow), so
    the lexicon needs only the words.
    """
    origin: tuple[int, ...] | None = None
    if text.isascii():
        expanded, origin = _expand_slang(text.translate(_ASCII_FOLD), None)
        return Normalized(expanded, text, origin)
    folded = unicodedata.normalize("NFKC", text)
    if len(folded) != len(text):
        chars: list[str] = []
        offsets: list[int] = []
        for index, char in enumerate(text):
            part = unicodedata.normalize("NFKC", char)
            chars.append(part)
            offsets.extend([index] * len(part))
        folded = "".join(chars)
        origin = tuple(offsets)
    folded = folded.translate(_ASCII_FOLD)
    simplified = _t2s().convert(folded)
    if len(simplified) != len(folded):  # phrase conversion changed length: go char by char
        simplified = "".join(_t2s().convert(c) or c for c in folded)
        if len(simplified) != len(folded):
            simplified = folded
    if _LATIN.search(simplified):
        simplified, origin = _expand_slang(simplified, origin)
    return Normalized(simplified, text, origin)


@dataclass(frozen=True, slots=True)
class Hit:
    """One lexicon phrase found in the normalised text."""

    key: str
    start: int
    end: int
    negated: bool = False
    quoted: bool = False
    """Inside the customer's words quoted back (您说"把我当傻子"): negated whatever the check."""


Check = Literal["token", "word", "none"]
"""How a raw hit is checked: on jieba token bounds, on word bounds, or not (patterns)."""


@dataclass(frozen=True, slots=True)
class _Entry:
    key: str
    length: int
    cjk: bool


_NEGATED_CLASS = re.compile(r"\[\^(?:\\.|[^\]\\])*\]")


def compile_pattern(source: str) -> re.Pattern[str]:
    """Compile a lexicon pattern as the matcher runs it (see :func:`_half_width_stops`)."""
    return re.compile(_half_width_stops(source))


def _half_width_stops(source: str) -> str:
    """Let ``[^。！？]`` in a pattern stop at ! and ? too: text is matched half width."""

    def widen(match: re.Match[str]) -> str:
        body = match.group()
        extra = ("!" if "！" in body and "!" not in body else "") + (
            "?" if "？" in body and "?" not in body else ""
        )
        return body[:-1] + extra + "]" if extra else body

    return _NEGATED_CLASS.sub(widen, source)


class Matcher:
    """All phrases of a set of categories, found in one pass.

    A phrase starting with ``re:`` is a regular expression. A pattern runs only when
    the text holds one of the literals it cannot match without (:mod:`graders.prefilter`);
    the few patterns without such literals run on every text, as one alternation per
    category. A pattern sets its own context, so its matches skip the word-boundary
    check that literal phrases get.
    """

    def __init__(self, categories: Iterable[tuple[str, Sequence[str]]]):
        self._automaton = ahocorasick.Automaton()
        table: dict[str, list[_Entry]] = {}
        patterns: dict[str, list[str]] = {}
        for key, phrases in categories:
            for phrase in phrases:
                if phrase.startswith("re:"):
                    patterns.setdefault(key, []).append(phrase[3:])
                    continue
                term = normalize(phrase).text
                if not term:
                    continue
                entries = table.setdefault(term, [])
                if all(e.key != key for e in entries):
                    entries.append(_Entry(key, len(term), CJK.search(term) is not None))
        for term, entries in table.items():
            self._automaton.add_word(
                term, tuple((e.key, e.length, "token" if e.cjk else "word") for e in entries)
            )
        self._regexes: list[tuple[str, re.Pattern[str]]] = []
        self._gated: list[tuple[str, re.Pattern[str]]] = []
        gates: dict[str, list[int]] = {}
        for key, sources in patterns.items():
            always = []
            for source in sources:
                literals = required_literals(source)
                if literals is None:
                    always.append(source)
                    continue
                for literal in literals:
                    gates.setdefault(literal, []).append(len(self._gated))
                self._gated.append((key, compile_pattern(source)))
            if always:
                joined = "|".join(f"(?:{_half_width_stops(p)})" for p in always)
                self._regexes.append((key, re.compile(joined)))
        self._gates = ahocorasick.Automaton()
        for literal, indexes in gates.items():
            self._gates.add_word(literal, tuple(indexes))
        if gates:
            self._gates.make_automaton()
        self.empty = not table and not self._regexes and not self._gated
        if table:
            self._automaton.make_automaton()

    def scan(self, text: str) -> list[tuple[str, int, int, Check]]:
        """Raw hits ``(key, start, end, boundary check)`` before boundary checks."""
        found: list[tuple[str, int, int, Check]] = []
        if self.empty:
            return found
        if len(self._automaton):
            found = [
                (key, end + 1 - length, end + 1, check)
                for end, entries in self._automaton.iter(text)
                for key, length, check in entries
            ]
        if not self._regexes and not self._gated:
            return found
        runs = list(self._regexes)
        if self._gated:
            opened = {i for _, indexes in self._gates.iter(text) for i in indexes}
            runs += [self._gated[i] for i in opened]
        for key, pattern in runs:
            for match in pattern.finditer(text):
                if match.end() > match.start():
                    found.append((key, match.start(), match.end(), "none"))
        return found


def warm_up() -> None:
    """Compile the lexicons' matcher now (the first analysis would)."""
    _lexicon_matcher()


@cache
def _lexicon_matcher() -> Matcher:
    categories: list[tuple[str, Sequence[str]]] = []
    for section, entries in LEXICON.sections().items():
        for name, phrases in entries.items():
            categories.append((f"{section}.{name}", [*phrases.zh, *phrases.en]))
    return Matcher(categories)


_NO_HITS: tuple[Hit, ...] = ()
_NO_SECTION: dict[str, list[Hit]] = {}
_NEGATION_GAP = {True: 4, False: 48}  # chars allowed between a negation and its target


@dataclass(slots=True)
class Analysis:
    """Everything the rule graders read from one text, independent of any scenario."""

    norm: Normalized
    hits: dict[str, list[Hit]]
    sentence_bounds: list[int]
    clause_bounds: list[int]
    memo: dict[object, Any] = field(default_factory=dict, repr=False)
    """Text-only results computed from this analysis (it is cached, so they are too)."""

    @property
    def text(self) -> str:
        """The normalised text."""
        return self.norm.text

    def get(self, key: str) -> Sequence[Hit]:
        """Hits of one category, e.g. ``signals.apology`` (read-only)."""
        return self.hits.get(key, _NO_HITS)

    def has(self, key: str, *, negated: bool | None = False) -> bool:
        """Whether the category occurs (by default: not under a negation)."""
        return any(negated is None or h.negated == negated for h in self.hits.get(key, ()))

    def prefixed(self, prefix: str) -> dict[str, list[Hit]]:
        """Categories of one section, e.g. ``intents.`` → ``{"order_id": [...]}``."""
        sections: dict[str, dict[str, list[Hit]]] | None = self.memo.get("sections")
        if sections is None:  # grouped once for every section
            sections = {}
            for k, v in self.hits.items():
                section, _, name = k.partition(".")
                sections.setdefault(section + ".", {})[name] = v
            self.memo["sections"] = sections
        return sections.get(prefix, _NO_SECTION)

    def by_clause(self, key: str) -> dict[int, list[Hit]]:
        """Hits of one category by the index of their clause (grouped once)."""
        return self._grouped(key, self.clause_of)

    def by_sentence(self, key: str) -> dict[int, list[Hit]]:
        """Hits of one category by the index of their sentence (grouped once)."""
        return self._grouped(key, self.sentence_of)

    def _grouped(self, key: str, unit_of: Callable[[int], int]) -> dict[int, list[Hit]]:
        memo_key = (unit_of.__name__, key)
        grouped: dict[int, list[Hit]] | None = self.memo.get(memo_key)
        if grouped is None:
            grouped = {}
            for hit in self.get(key):
                grouped.setdefault(unit_of(hit.start), []).append(hit)
            self.memo[memo_key] = grouped
        return grouped

    def sentence_of(self, pos: int) -> int:
        """Index of the sentence containing ``pos``."""
        return bisect.bisect_right(self.sentence_bounds, pos)

    def clause_of(self, pos: int) -> int:
        """Index of the clause containing ``pos`` (clauses also end at sentence ends)."""
        return bisect.bisect_right(self.clause_bounds, pos)

    def sentence_start(self, pos: int) -> int:
        """Offset where the sentence containing ``pos`` starts."""
        index = bisect.bisect_right(self.sentence_bounds, pos)
        return self.sentence_bounds[index - 1] if index else 0

    def sentence_end(self, pos: int) -> int:
        """Offset where the sentence containing ``pos`` ends (after its punctuation)."""
        index = bisect.bisect_right(self.sentence_bounds, pos)
        return self.sentence_bounds[index] if index < len(self.sentence_bounds) else len(self.text)

    def clause_start(self, pos: int) -> int:
        """Offset where the clause containing ``pos`` starts."""
        index = bisect.bisect_right(self.clause_bounds, pos)
        return self.clause_bounds[index - 1] if index else 0

    def clause_end(self, pos: int) -> int:
        """Offset where the clause containing ``pos`` ends."""
        index = bisect.bisect_right(self.clause_bounds, pos)
        return self.clause_bounds[index] if index < len(self.clause_bounds) else len(self.text)

    def sentences(self) -> list[tuple[int, int]]:
        """``(start, end)`` spans of the sentences, without their end punctuation."""
        if "sentences" in self.memo:
            cached: list[tuple[int, int]] = self.memo["sentences"]
            return cached
        spans = []
        start = 0
        for match in _SENTENCE_END.finditer(self.text):
            if match.start() > start:
                spans.append((start, match.start()))
            start = match.end()
        if start < len(self.text):
            spans.append((start, len(self.text)))
        self.memo["sentences"] = [(s, e) for s, e in spans if self.text[s:e].strip()]
        return self.sentences()

    def quote(self, hit: Hit) -> str:
        """The original characters of a hit."""
        return self.norm.quote(hit.start, hit.end)

    def sentence_quote(self, pos: int, limit: int = 80) -> str:
        """The original sentence around ``pos``, shortened to ``limit`` characters."""
        sentences = self.sentences()
        index = bisect.bisect_right(sentences, pos, key=lambda span: span[0]) - 1
        if index >= 0 and pos < sentences[index][1]:
            start, end = sentences[index]
            quote = self.norm.quote(start, end).strip()
            return quote if len(quote) <= limit else quote[: limit - 1] + "…"
        return self.excerpt(limit)

    def excerpt(self, limit: int = 80) -> str:
        """The start of the original text, for deductions about something missing."""
        text = self.norm.original.strip()
        return text if len(text) <= limit else text[: limit - 1] + "…"


_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


def _on_word_boundary(text: str, start: int, end: int) -> bool:
    word = _WORD_CHARS
    if start > 0 and text[start] in word and text[start - 1] in word:
        return False
    if text.startswith("'t", end):  # "i can" must not match inside "i can't"
        return False
    return not (end < len(text) and text[end - 1] in word and text[end] in word)


def _filter(text: str, raw: list[tuple[str, int, int, Check]]) -> list[tuple[str, int, int]]:
    kept = []
    tokens: frozenset[int] | None = None
    for key, start, end, check in raw:
        if check == "token":
            if tokens is None:
                tokens = token_bounds(text)
            # jieba glues a trailing pronoun on (谢谢您, 告诉您): the phrase still ends there
            glued = end < len(text) and text[end] in "您你" and end + 1 in tokens
            if start not in tokens or (end not in tokens and not glued):
                continue
        elif check == "word" and not _on_word_boundary(text, start, end):
            continue
        kept.append((key, start, end))
    return kept


def _dedupe(hits: list[tuple[str, int, int]]) -> dict[str, list[tuple[int, int]]]:
    """Per category, keep the longest of overlapping hits."""
    by_key: dict[str, list[tuple[int, int]]] = {}
    for key, start, _, end in sorted([(k, s, s - e, e) for k, s, e in hits]):
        spans = by_key.setdefault(key, [])
        if spans and start < spans[-1][1]:
            continue
        spans.append((start, end))
    return by_key


def _bounds(pattern: re.Pattern[str], text: str) -> list[int]:
    return [m.end() for m in pattern.finditer(text)]


_IF_CLAUSE = re.compile(r"\b(?:if|unless|in case|once|when)\b[^,.;!?]{0,40}$")
_MAIN_SUBJECT = re.compile(r"\b(?:i|we)(?:'ll|'d|'m|'ve| will| would| can| am| have)?\b")


def _scopes(text: str, negations: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Each negation with where its scope ends at the latest.

    A negation inside an English condition stops where the main clause's subject begins:
    in "if it's not there by then I'll chase it", the chasing is not negated.
    """
    scopes = []
    for start, end in negations:
        limit = len(text)
        if _IF_CLAUSE.search(text, max(0, start - 40), start):
            subject = _MAIN_SUBJECT.search(text, end, end + _NEGATION_GAP[False])
            if subject:
                limit = subject.start()
        scopes.append((start, end, limit))
    return scopes


def _negated(
    start: int, negations: list[tuple[int, int, int]], clause_bounds: list[int], cjk: bool
) -> bool:
    """Whether a negation's scope (:func:`_scopes`, in text order) covers ``start``."""
    clause = bisect.bisect_right(clause_bounds, start)
    first = bisect.bisect_left(negations, start - _NEGATION_GAP[cjk], key=lambda n: n[1])
    for neg_start, neg_end, limit in negations[first:]:
        if neg_end > start:
            break
        if start < limit and bisect.bisect_right(clause_bounds, neg_start) == clause:
            return True
    return False


def build_analysis(norm: Normalized, raw: list[tuple[str, int, int, Check]]) -> Analysis:
    """Turn raw matches into an :class:`Analysis` (boundary checks, dedupe, negation).

    A hit is negated when a negation comes shortly before it in its clause (无法保证),
    when a refusal follows it in its sentence (私下转账这种是不允许的, only for what can be
    refused: forbidden moves, promises, offers, claims, payment channels), or when it sits
    inside the customer's words quoted back (您说的"微信直接转"我做不了).
    """
    text = norm.text
    sentence_bounds = _bounds(_SENTENCE_END, text)
    clause_bounds = sorted(set(sentence_bounds) | set(_bounds(_CLAUSE_END, text)))
    spans = _dedupe(_filter(text, raw))
    keep_words = spans.get("signals.non_negating", [])
    negations = [
        (start, end)
        for start, end in spans.get("signals.negation", [])
        if not any(k_start <= start and end <= k_end for k_start, k_end in keep_words)
    ]
    if keep_words:  # 不好意思 and 别呀 negate nothing, here or in any later check
        spans["signals.negation"] = negations
    scopes = _scopes(text, negations)
    refusals = spans.get("signals.refusal", [])
    quoted = _quoted_spans(text) if _QUOTE_CHARS.search(text) else []
    hits: dict[str, list[Hit]] = {}
    for key, key_spans in spans.items():
        negatable = key not in _NOT_NEGATABLE
        refusable = key.startswith(_REFUSABLE)
        key_hits = []
        for start, end in key_spans:
            cjk = CJK.match(text[start]) is not None
            in_quote = _within(quoted, start, end)
            negated = negatable and (
                bool(negations and _negated(start, scopes, clause_bounds, cjk))
                or bool(key in _ERRANDS and negations and _led_by_negation(text, start, negations))
                or bool(
                    refusable and refusals and _refused(text, end, refusals, sentence_bounds, cjk)
                )
                or bool(
                    refusable
                    and negations
                    and _their_words_turned_down(text, start, end, negations, sentence_bounds)
                )
                or in_quote
            )
            key_hits.append(Hit(key, start, end, negated, negatable and in_quote))
        hits[key] = key_hits
    if negations:
        _share_negations(text, hits)
    return Analysis(norm, hits, sentence_bounds, clause_bounds)


def _within(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether ``start``–``end`` lies inside one of ``spans`` (in text order, apart)."""
    index = bisect.bisect_right(spans, start, key=lambda span: span[0]) - 1
    return index >= 0 and end <= spans[index][1]


_CONNECTORS = ("或者", "或是", "或", "和", "以及", "及", "还有", "、", "/", " or", " nor")


def _share_negations(text: str, hits: dict[str, list[Hit]]) -> None:
    """A phrase joined by 或者/、/or to a negated one shares its negation.

    不会让您私下转账或者私聊: the private chat is ruled out with the transfer.
    """
    negated_ends = sorted({h.end for hs in hits.values() for h in hs if h.negated and not h.quoted})
    if not negated_ends:
        return
    for key, key_hits in hits.items():
        if key in _NOT_NEGATABLE:
            continue
        for i, hit in enumerate(key_hits):
            if not hit.negated and _joined_to_one_of(text, hit.start, negated_ends):
                key_hits[i] = Hit(key, hit.start, hit.end, True, hit.quoted)


def _joined_to_one_of(text: str, start: int, ends: list[int]) -> bool:
    """Whether a phrase ending at one of ``ends`` (sorted) is joined to ``start``.

    Joined: by one connector, with nothing but spaces around it.
    """
    joined = start
    while joined > 0 and text[joined - 1].isspace():
        joined -= 1
    for connector in _CONNECTORS:
        before = joined - len(connector)
        if before < 0 or not text.startswith(connector, before):
            continue
        earliest = before
        while earliest > 0 and text[earliest - 1].isspace():
            earliest -= 1
        first = bisect.bisect_left(ends, earliest)
        if first < len(ends) and ends[first] <= before:
            return True
    return False


_REFUSABLE = (
    "forbidden.",
    "signals.promise",
    "signals.certain_outcome",
    "resolutions.",
    "claims.",
    "payments.",
)
_REFUSAL_GAP = {True: 16, False: 60}  # chars allowed between a hit and a refusal after it
_QUOTE_CHARS = re.compile("[\"'「『“‘]")
_QUOTED = re.compile(
    r"\"([^\"\n]{1,60})\"|「([^」\n]{1,60})」|『([^』\n]{1,60})』|(?<![a-z])'([^'\n]{2,60})'(?![a-z])"
)
_REPORTED = re.compile(
    r"(?:您|你|客户)(?:刚才|刚刚|之前|上面)?(?:说|讲|提到|要求|要|问|写)(?:的|了|过)?\s*$|所谓(?:的)?\s*$|"
    r"(?:想要|想听|就想要|就想听|要的是)(?:一句|句)?\s*$|"
    r"(?:you|you've|you have)\s+(?:just\s+)?(?:said|asked(?: for| me to| me)?|mentioned|wrote|want(?:ed)?|"
    r"suggested|requested)\s*[:,]?\s*$|as you put it\s*[:,]?\s*$|your (?:request|suggestion)"
    r"(?: for| to)?\s*[:,]?\s*$",
)


def _quoted_spans(text: str) -> list[tuple[int, int]]:
    """Quoted words not said to the customer.

    Introduced by 您说/you said, opening the reply, or talked about ('not my department'
    is the last thing you want to hear).
    """
    spans = []
    for match in _QUOTED.finditer(text):
        before = text[max(0, match.start() - 16) : match.start()]
        if (
            _REPORTED.search(before)
            or not before.strip()  # opening the reply
            or _MENTIONED.match(text, match.end())
        ):
            spans.append(match.span())
    return spans


_MENTIONED = re.compile(
    r"\s*(?:is|isn't|was|wasn't|sounds|would be)\s+(?:the\s+last|not|no|never|exactly|just|what)\b|"
    r"(?:这种话|这句话|这样的话|之类的话)"
)
"""After a quote, words that make it a phrase talked about: 'not my department' is the last thing…"""


_ERRANDS = frozenset({"forbidden.courier_deflection", "forbidden.dismissive"})
"""Sending the customer elsewhere: 您不用自己去找圆通 negates it in its own words."""


def _led_by_negation(text: str, start: int, negations: list[tuple[int, int]]) -> bool:
    """A move whose own words negate it right after the pronoun: 您不用自己去找圆通, "you won't need to call"."""
    if text.startswith(("您也", "你也", "您自己", "你自己"), start):
        after = start + (3 if text.startswith("自己", start + 1) else 2)
    elif text.startswith(("您", "你"), start):
        after = start + 1
    elif text.startswith("you ", start):
        after = start + 4
    else:
        return False
    first = bisect.bisect_left(negations, after, key=lambda n: n[0])
    return first < len(negations) and negations[first][0] == after


_THEY_SAID = re.compile(
    r"(?:您|你)(?:说|提到|提的|要求|问)[^。！？!?，,;；]{0,12}$"
    r"|\byou (?:said|asked|mentioned|suggested|proposed)\b[^.!?,;]{0,30}$",
    re.IGNORECASE,
)


def _their_words_turned_down(
    text: str, start: int, end: int, negations: list[tuple[int, int]], sentence_bounds: list[int]
) -> bool:
    """The customer's suggestion told back, then a negation: 您说加微信方便，但不能加私人微信."""
    first = bisect.bisect_right(sentence_bounds, start)
    sentence_start = sentence_bounds[first - 1] if first else 0
    if not _THEY_SAID.search(text, sentence_start, start):
        return False
    sentence_end = sentence_bounds[first] if first < len(sentence_bounds) else len(text)
    after = bisect.bisect_left(negations, end, key=lambda n: n[0])
    return after < len(negations) and negations[after][0] < sentence_end


def _refused(
    text: str, end: int, refusals: list[tuple[int, int]], sentence_bounds: list[int], cjk: bool
) -> bool:
    """A refusal later in the hit's sentence, or opening the answer to an echoed question.

    私下转账行不行？不行的 — the customer's question asked back, then turned down.
    """
    sentence = bisect.bisect_right(sentence_bounds, end - 1)
    asked = sentence < len(sentence_bounds) and text[sentence_bounds[sentence] - 1] in "?？"
    first = bisect.bisect_left(refusals, end, key=lambda r: r[0])
    for r_start, r_end in refusals[first:]:
        in_sentence = bisect.bisect_right(sentence_bounds, r_start)
        if in_sentence > sentence + 1:
            break
        if in_sentence == sentence and r_start - end <= _REFUSAL_GAP[cjk]:
            return True
        if asked and in_sentence == sentence + 1:
            opens = not text[sentence_bounds[sentence] : r_start].strip(" ，,嗯哦啊呃")
            return opens and not _IF_NOT.match(text, r_end)  # 不行的话 / 不行就算了: a condition
    return False


_IF_NOT = re.compile(r"的?话|就|那|\s*,?\s*then\b")


@lru_cache(maxsize=4096)
def analyze(text: str) -> Analysis:
    """Analyse ``text`` with the graders' lexicon (cached: graders and customer share it)."""
    norm = normalize(clean(text))
    return build_analysis(norm, _lexicon_matcher().scan(norm.text))


def scan_extra(analysis: Analysis, matcher: Matcher) -> dict[str, list[Hit]]:
    """Match a scenario-specific :class:`Matcher` on an existing analysis."""
    raw = matcher.scan(analysis.text)
    if not raw:
        return {}
    text = analysis.text
    negations = _scopes(text, [(h.start, h.end) for h in analysis.get("signals.negation")])
    return {
        key: [
            Hit(
                key,
                start,
                end,
                _negated(
                    start, negations, analysis.clause_bounds, CJK.match(text[start]) is not None
                ),
            )
            for start, end in spans
        ]
        for key, spans in _dedupe(_filter(text, raw)).items()
    }
