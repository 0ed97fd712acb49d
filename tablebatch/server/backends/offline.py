"""The ``offline`` backend: a deterministic stand-in for a model.

It is not a model and does not pretend to be one. It exists so that a job runs
end to end with no network and no account, and gives the same answer to the
same request every time:

- When the prompt offers choices ("positive or negative?", "Labels: a, b, c",
  "one of: …"), it answers with one of them. For sentiment-like choices it uses
  a small sentiment lexicon (with negation) over the text; for other choices it
  prefers a choice whose words appear in the text; otherwise it picks one by a
  hash of the text.
- Asked to summarise, it returns the first sentence of the longest paragraph,
  cut to about 30 words: an extract, not a summary.
- Otherwise it returns a short extract of the prompt.

Token usage is counted by a fixed rule (words and punctuation marks, plus a
few tokens per message), and ``max_tokens`` cuts the answer with
``finish_reason: "length"``.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

import orjson

from tablebatch.server.store import Outcome

_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"[a-z']+")
_LIST_CHOICES = re.compile(
    r"(?:\b(?:answer with(?: one of)?|choose(?: one)? from|one of)\b\s*:?"
    r"|\b(?:labels?|categories|classes|options)\s*:)"
    r"\s*\[?([^\n?\].]+)",
    re.IGNORECASE,
)
_OR_CHOICES = re.compile(
    r"\b([A-Za-z][\w-]*(?:\s*,\s*[A-Za-z][\w-]*)*)\s*,?\s+or\s+([A-Za-z][\w-]*)\s*\?"
)
_SUMMARY = re.compile(r"\bsummar|\btl;?dr\b|\bin (?:one|a single) sentence\b", re.IGNORECASE)
_INSTRUCTION = re.compile(r"^[^\n]*?\b(?:summar\w*|tl;?dr)\b[^\n:]*:[ \t]*", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_CLAUSE = re.compile(r"[.!?;,:]+|\bbut\b")
_NEGATIONS = frozenset({"not", "no", "never", "isn't", "wasn't", "don't", "didn't", "doesn't"})

POSITIVE_WORDS = frozenset(
    """good great excellent amazing awesome love loved loves lovely perfect best wonderful
    fantastic happy pleased recommend recommended nice fine superb solid reliable fast easy
    comfortable beautiful works worked sturdy brilliant delighted enjoy enjoyed impressive
    favorite favourite glad satisfied quality helpful friendly worth smooth stellar flawless
    positive""".split()
)
NEGATIVE_WORDS = frozenset(
    """bad poor terrible awful horrible hate hated worst broken broke disappointing
    disappointed useless waste refund return returned cheap flimsy slow defective faulty
    annoying angry unhappy problem problems issue issues fail failed fails failure stopped
    crashed leaked leaks rude late missing wrong damaged junk garbage mediocre unreliable
    uncomfortable overpriced negative""".split()
)
_POLARITY_LABELS = {
    **{w: 1 for w in ("positive", "pos", "good", "favorable", "favourable", "praise", "happy")},
    **{w: -1 for w in ("negative", "neg", "bad", "unfavorable", "complaint", "unhappy")},
    **{w: 0 for w in ("neutral", "mixed", "none")},
}


def count_tokens(text: str) -> int:
    """Tokens by the offline rule: words and punctuation marks."""
    return len(_TOKEN.findall(text))


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(
            p.get("text", "")
            for p in content
            if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def find_choices(prompt: str) -> tuple[list[str], tuple[int, int]] | None:
    """The choices a prompt offers, and the span of text that offers them."""
    match = _LIST_CHOICES.search(prompt)
    if match:
        parts = re.split(r"\s*(?:,|\||/|\bor\b)\s*", match.group(1).strip())
        choices = [p.strip(" '\"`") for p in parts if p.strip(" '\"`")]
        if len(choices) >= 2:
            return choices, match.span()
    match = _OR_CHOICES.search(prompt)
    if match:
        choices = [c.strip() for c in match.group(1).split(",")] + [match.group(2)]
        return choices, match.span()
    return None


def sentiment(text: str) -> int:
    """Lexicon score of a text: positive words minus negative ones, negation flips."""
    score = 0
    for clause in _CLAUSE.split(text.lower()):  # a negation reaches no further than its clause
        words = _WORD.findall(clause)
        for i, word in enumerate(words):
            sign = 1 if word in POSITIVE_WORDS else -1 if word in NEGATIVE_WORDS else 0
            if sign and any(w in _NEGATIONS for w in words[max(0, i - 3) : i]):
                sign = -sign
            score += sign
    return score


def choose(choices: list[str], text: str) -> str:
    """Pick one of ``choices`` for ``text``, with a real signal where there is one."""
    polarity = {c: _POLARITY_LABELS.get(c.lower()) for c in choices}
    if any(p is not None and p != 0 for p in polarity.values()):
        score = sentiment(text)
        want = (score > 0) - (score < 0)
        for choice, p in polarity.items():
            if p == want:
                return choice
    words = set(_WORD.findall(text.lower()))
    overlap = [
        sum(1 for w in _WORD.findall(c.lower()) if len(w) > 2 and w in words) for c in choices
    ]
    best = max(overlap)
    if best > 0:
        return choices[overlap.index(best)]
    return choices[_digest(text) % len(choices)]


def _longest_paragraph(text: str) -> str:
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return max(paragraphs, key=len) if paragraphs else ""


def _extract(text: str, words: int) -> str:
    first = _SENTENCE_END.split(_longest_paragraph(text), maxsplit=1)[0]
    cut = first.split()
    return " ".join(cut[:words]) + (" …" if len(cut) > words else "")


def answer(messages: list[dict[str, Any]]) -> str:
    """The offline answer to a conversation."""
    system = "\n".join(_text(m.get("content")) for m in messages if m.get("role") == "system")
    users = [_text(m.get("content")) for m in messages if m.get("role") != "system"]
    user = users[-1] if users else ""
    found = find_choices(user)
    if found:
        choices, (start, end) = found
        return choose(choices, user[:start] + " " + user[end:])
    found = find_choices(system)
    if found:
        return choose(found[0], user)
    if _SUMMARY.search(user) or _SUMMARY.search(system):
        return _extract(_INSTRUCTION.sub("", user, count=1), 30)
    return _extract(user, 12) or "(empty prompt)"


def _truncate(text: str, max_tokens: int) -> str:
    for i, match in enumerate(_TOKEN.finditer(text)):
        if i == max_tokens:
            return text[: match.start()].rstrip()
    return text


class OfflineBackend:
    """Answers requests in-process, deterministically, at memory speed."""

    name = "offline"

    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock

    def complete(self, rows: list[tuple[int, str, bytes]]) -> list[Outcome]:
        """Answer a chunk of requests ``(n, custom_id, body)``."""
        created = int(self._clock())
        return [self._one(n, custom_id, body, created) for n, custom_id, body in rows]

    def _one(self, n: int, custom_id: str, body: bytes, created: int) -> Outcome:
        request = orjson.loads(body)
        messages = request["messages"]
        content = answer(messages)
        prompt_tokens = sum(count_tokens(_text(m.get("content"))) + 4 for m in messages) + 3
        completion_tokens = count_tokens(content)
        finish_reason = "stop"
        limit = request.get("max_completion_tokens") or request.get("max_tokens")
        if isinstance(limit, int) and 0 < limit < completion_tokens:
            content = _truncate(content, limit)
            completion_tokens = limit
            finish_reason = "length"
        response = {
            "id": "chatcmpl-" + hashlib.blake2b(body, digest_size=12).hexdigest(),
            "object": "chat.completion",
            "created": created,
            "model": request["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return Outcome(n, custom_id, response, None, prompt_tokens, completion_tokens)
