"""The ``offline`` backend: a deterministic stand-in for a model.

It is not a model and does not pretend to be one. It exists so that a job runs
end to end with no network and no account, and gives the same answer to the
same request every time:

- When the prompt offers choices ("positive or negative?", "Labels: a, b, c",
  "one of: …"), it answers with one of them. For sentiment-like choices it uses
  a small sentiment lexicon (with negation) over the text; for other choices it
  prefers a choice whose words appear in the text; otherwise it picks one by a
  hash of the text and the model name.
- Asked to summarise, it returns the first sentence of the longest paragraph,
  cut to about 30 words: an extract, not a summary.
- Otherwise it returns a short extract of the prompt.

Token usage is counted by a fixed rule (a token per four characters, plus a
few tokens per message), and ``max_tokens`` cuts the answer with
``finish_reason: "length"``.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import multiprocessing as mp
import os
import re
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import lru_cache
from itertools import chain
from typing import Any

import orjson

from tablebatch.server.backends.offline_structured import (
    broken,
    data_text,
    requested_schema,
    structured,
)
from tablebatch.server.backends.processes import init_helper, stop_signals_blocked, usable_cores
from tablebatch.server.store import Outcome, encode_result

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
_WINDOW = 200  # characters before a "?" that may offer its choices
_QUESTIONS = 20  # question marks looked at, at most
_SUMMARY = re.compile(r"\bsummar|\btl;?dr\b|\bin (?:one|a single) sentence\b", re.IGNORECASE)
_INSTRUCTION = re.compile(r"^[^\n]*?\b(?:summar\w*|tl;?dr)\b[^\n:]*:[ \t]*", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_BREAKS = frozenset({".", "but"})
_QUOTES = "'\"`‘’“”«»"
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
_LEXICON = POSITIVE_WORDS | NEGATIVE_WORDS
_POLARITY_LABELS = {
    **{w: 1 for w in ("positive", "pos", "good", "favorable", "favourable", "praise", "happy")},
    **{w: -1 for w in ("negative", "neg", "bad", "unfavorable", "complaint", "unhappy")},
    **{w: 0 for w in ("neutral", "mixed", "none")},
}


def count_tokens(text: str) -> int:
    """Tokens by the offline rule: one per four characters, rounded up (OpenAI's rule of thumb)."""
    return (len(text) + 3) // 4


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
    lower = prompt.lower()
    # substring checks first: they cost far less than the regexes on a long text
    hinted = (
        "label" in lower
        or "one of" in lower
        or "choose" in lower
        or "answer with" in lower
        or "categor" in lower
        or "class" in lower
        or "option" in lower
    )
    match = _LIST_CHOICES.search(prompt) if hinted else None
    if match:
        parts = re.split(r"\s*(?:,|\||/|\bor\b)\s*", match.group(1).strip())
        choices = [p.strip(" '\"`") for p in parts if p.strip(" '\"`")]
        if len(choices) >= 2:
            return choices, match.span()
    if "or" not in lower:
        return None
    # only the text just before each "?" is searched: the cost stays linear in the prompt
    end = prompt.find("?")
    for _ in range(_QUESTIONS):
        if end == -1:
            break
        start = max(0, end - _WINDOW)
        match = _OR_CHOICES.search(prompt, start, end + 1)
        if match:
            choices = [c.strip() for c in match.group(1).split(",")] + [match.group(2)]
            return choices, match.span()
        end = prompt.find("?", end + 1)
    return None


def _clause_words(text: str) -> list[str]:
    """Lowercase words of ``text``, with ``.`` standing for every clause break."""
    low = text.lower()
    for mark in ".,!?;:":  # str.replace is several times faster than a regex here
        if mark in low:
            low = low.replace(mark, " . ")
    words = low.split()
    if any(q in low for q in _QUOTES):  # a quoted text: 'Terrible experience.'
        words = [w.strip(_QUOTES) or w for w in words]
    return words


def sentiment(text: str) -> int:
    """Lexicon score of a text: positive words minus negative ones.

    A negation ("not", "never", …) up to three words before a word flips it,
    within its clause (clauses end at punctuation and "but").
    """
    words = _clause_words(text)
    score = 0
    for word in _LEXICON.intersection(words):
        polarity = 1 if word in POSITIVE_WORDS else -1
        i = -1
        for _ in range(words.count(word)):
            i = words.index(word, i + 1)
            sign = polarity
            for w in reversed(words[max(0, i - 3) : i]):
                if w in _BREAKS:
                    break
                if w in _NEGATIONS:
                    sign = -sign
                    break
            score += sign
    return score


@lru_cache(maxsize=1024)
def _polarities(choices: tuple[str, ...]) -> tuple[int | None, ...] | None:
    """The polarity of each choice, or None when no choice leans either way."""
    polarity = tuple(_POLARITY_LABELS.get(c.lower()) for c in choices)
    return polarity if any(p for p in polarity) else None


def choose(choices: list[str], text: str, model: str = "") -> str:
    """Pick one of ``choices`` for ``text``, with a real signal where there is one.

    Without a signal the pick is a hash of the text and the model's name, so two
    models may differ where a guess is all there is, and agree where there is a signal."""
    polarity = _polarities(tuple(choices))
    if polarity is not None:
        score = sentiment(text)
        want = (score > 0) - (score < 0)
        if want in polarity:
            return choices[polarity.index(want)]
    words = set(_WORD.findall(text.lower()))
    overlap = [
        sum(1 for w in _WORD.findall(c.lower()) if len(w) > 2 and w in words) for c in choices
    ]
    best = max(overlap)
    if best > 0:
        choices = [c for c, o in zip(choices, overlap, strict=True) if o == best]
    return choices[_digest(model + "\x00" + text) % len(choices)]


def _longest_paragraph(text: str) -> str:
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return max(paragraphs, key=len) if paragraphs else ""


def _extract(text: str, words: int) -> str:
    first = _SENTENCE_END.split(_longest_paragraph(text), maxsplit=1)[0]
    cut = first.split()
    return " ".join(cut[:words]) + (" …" if len(cut) > words else "")


def answer(messages: list[dict[str, Any]], model: str = "") -> str:
    """The offline answer to a conversation (``model`` only breaks ties of a guess)."""
    system = "\n".join(_text(m.get("content")) for m in messages if m.get("role") == "system")
    users = [_text(m.get("content")) for m in messages if m.get("role") != "system"]
    user = users[-1] if users else ""
    found = find_choices(system)  # instructions first: the user message may quote data
    if found:
        return choose(found[0], user, model)
    found = find_choices(user)
    if found:
        choices, (start, end) = found
        return choose(choices, user[:start] + " " + user[end:], model)
    if _SUMMARY.search(user) or _SUMMARY.search(system):
        return _extract(_INSTRUCTION.sub("", user, count=1), 30)
    return _extract(user, 12) or "(empty prompt)"


def _truncate(text: str, max_tokens: int) -> str:
    """The longest start of ``text`` within ``max_tokens``, cut at a space where there is one."""
    cut = text[: max_tokens * 4]
    if len(cut) < len(text) and not text[len(cut)].isspace() and " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip()


STAND_IN = "tablebatch offline backend: a deterministic stand-in for a model, not a model"


def structured_answer(messages: list[dict[str, Any]], schema: dict[str, Any], model: str) -> str:
    """JSON of ``schema`` read off the conversation's last message (see offline_structured)."""
    users = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
    prompt = users[-1] if users else ""
    system = "\n".join(_text(m.get("content")) for m in messages if m.get("role") == "system")
    value = structured(schema, data_text(prompt), system + "\n" + prompt, choose, model)
    return orjson.dumps(value).decode()


def answer_body(
    body: bytes, invalid_json: float = 0.0, salt: str = ""
) -> tuple[dict[str, Any], int, int]:
    """The offline response to one chat-completions request body, and its token counts
    (``invalid_json``: the share of structured answers made invalid, chosen by ``salt``)."""
    request = orjson.loads(body)
    messages = request["messages"]
    schema = requested_schema(request)
    if schema is None:
        content = answer(messages, request["model"])
    else:
        content = structured_answer(messages, schema, request["model"])
        digest = _digest(salt)
        if invalid_json and (digest % 10_000) / 10_000 < invalid_json:
            content = broken(content, digest // 10_000)
    prompt_tokens = sum(count_tokens(_text(m.get("content"))) + 4 for m in messages) + 3
    completion_tokens = count_tokens(content)
    finish_reason = "stop"
    limit = request.get("max_completion_tokens") or request.get("max_tokens")
    if isinstance(limit, int) and 0 < limit < completion_tokens:
        content = _truncate(content, limit)
        completion_tokens = count_tokens(content)
        finish_reason = "length"
    response = {
        "id": "chatcmpl-" + hashlib.blake2b(body, digest_size=12).hexdigest(),
        "object": "chat.completion",
        "created": 0,
        "model": request["model"],
        "system_fingerprint": "tablebatch-offline",
        "metadata": {"backend": "offline", "stand_in": STAND_IN},
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
    return response, prompt_tokens, completion_tokens


Encoded = tuple[bytes, int, int]  # a result's JSON, prompt tokens, completion tokens


def answer_rows(
    rows: list[tuple[int, str, bytes]], created: int, invalid_json: float = 0.0, seed: int = 0
) -> list[Encoded]:
    """Answer rows ``(n, custom_id, body)`` into encoded results: the unit of work of a
    helper process, which returns bytes rather than objects because they cross cheaply.
    ``invalid_json``: the share of structured answers made invalid (by ``seed``, and the
    request's ``n``, so a request sent again may be answered well)."""
    out = []
    for n, custom_id, body in rows:
        salt = f"{seed}\x00{n}\x00{custom_id}"
        response, prompt_tokens, completion_tokens = answer_body(body, invalid_json, salt)
        response["created"] = created
        result = encode_result(n, custom_id, "completed", "response", response)
        out.append((result, prompt_tokens, completion_tokens))
    return out


log = logging.getLogger("tablebatch.server")
_pools: dict[int, ProcessPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(processes: int) -> ProcessPoolExecutor:
    """A process pool shared by every server of this process, started on first use."""
    with _pools_lock:
        if processes not in _pools:
            _pools[processes] = ProcessPoolExecutor(
                processes,
                mp_context=mp.get_context("spawn"),
                initializer=init_helper,
                initargs=(os.getpid(),),
            )
            atexit.register(_pools[processes].shutdown, wait=False, cancel_futures=True)
        return _pools[processes]


def default_processes() -> int:
    """Helper processes for the offline backend: one per core, none on a single core."""
    cores = usable_cores()
    return min(cores, 8) if cores > 1 else 0


class OfflineBackend:
    """Answers requests deterministically, at memory speed.

    The analysis is pure Python, so a large chunk is shared out to helper
    processes (one per core) to use every core; small chunks are answered in
    the calling thread, which costs less than a round trip to a process.
    """

    name = "offline"
    PARALLEL_FROM = 256

    def __init__(
        self,
        clock: Any = time.time,
        processes: int | None = None,
        invalid_json_rate: float = 0.0,
        seed: int = 0,
    ) -> None:
        self._clock = clock
        self._processes = default_processes() if processes is None else processes
        self._faults = (invalid_json_rate, seed)
        self._warm_wanted = False
        self._warming: list[Future[Any]] | None = None

    def warm_up(self) -> None:
        """Allow the helper processes; they start with the first large chunk (a small job,
        such as a 24-row sample, never pays their start: two interpreters importing this
        package, seconds of CPU on a 2-core machine while the job runs). Chunks are
        answered in this thread until they have started, so no chunk waits for them."""
        self._warm_wanted = True

    def start_helpers(self) -> None:
        """Start the helper processes now, in the background (a long-lived server does, so
        that its first large batch finds them ready)."""
        if self._processes <= 1 or self._warming is not None:
            return
        try:
            pool = _pool(self._processes)
            with stop_signals_blocked():
                self._warming = [pool.submit(answer_rows, [], 0) for _ in range(self._processes)]
        except (RuntimeError, OSError, BrokenProcessPool) as exc:
            log.warning("offline backend: no helper processes (%s); answering in-thread", exc)
            self._processes = 0

    def _helpers_ready(self) -> bool:
        """Whether this large chunk goes to the helpers (starting them if need be)."""
        if self._processes <= 1:
            return False
        if self._warming is None:
            self.start_helpers()
            if not self._warm_wanted:
                return self._processes > 1  # used directly: wait for them this once
        if self._processes <= 1 or self._warming is None:
            return False
        return all(f.done() for f in self._warming)

    def complete(self, rows: list[tuple[int, str, bytes]]) -> list[Outcome]:
        """Answer a chunk of requests ``(n, custom_id, body)``."""
        return self.submit(rows).result()

    def submit(self, rows: list[tuple[int, str, bytes]]) -> Future[list[Outcome]]:
        """Start answering a chunk; large chunks go to the helper processes."""
        created = int(self._clock())
        if len(rows) >= self.PARALLEL_FROM and self._helpers_ready():
            size = -(-len(rows) // (self._processes * 2))
            try:
                pool = _pool(self._processes)
                with stop_signals_blocked():
                    parts = [
                        pool.submit(answer_rows, rows[i : i + size], created, *self._faults)
                        for i in range(0, len(rows), size)
                    ]
                return _Joined(rows, parts)
            except (RuntimeError, OSError, BrokenProcessPool) as exc:
                log.warning("offline backend: no helper processes (%s); answering in-thread", exc)
                self._processes = 0
        done: Future[list[Outcome]] = Future()
        done.set_result(_outcomes(rows, answer_rows(rows, created, *self._faults)))
        return done


def _outcomes(rows: list[tuple[int, str, bytes]], encoded: list[Encoded]) -> list[Outcome]:
    return [
        Outcome(n, custom_id, None, None, pt, ct, result)
        for (n, custom_id, _), (result, pt, ct) in zip(rows, encoded, strict=True)
    ]


class _Joined(Future):
    """The outcomes of a chunk answered in parts by helper processes."""

    def __init__(self, rows: list[tuple[int, str, bytes]], parts: list[Future]) -> None:
        super().__init__()
        self._rows = rows
        self._parts = parts

    def result(self, timeout: float | None = None) -> list[Outcome]:
        encoded = list(chain.from_iterable(part.result(timeout) for part in self._parts))
        return _outcomes(self._rows, encoded)
