"""Counting a request's prompt tokens before it is sent: with the model's own tokenizer
where one is available offline (the llama backend's GGUF, read with
``Llama(vocab_only=True)`` and its chat template), else by the 4-characters rule.

Each counter says which it is (``name``), so that an estimate says how it was made.
"""

from __future__ import annotations

import atexit
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, Protocol

import orjson

from tablebatch.jobs.schema import JobConfig

FOUR_CHARS = "the 4-characters rule"


def _text(content: Any) -> str:
    """A message's text (a string, or the text of its parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


class Counter(Protocol):
    """Counts the prompt tokens of a chat request's messages."""

    name: str

    def count(self, messages: list[dict[str, Any]]) -> int: ...


class FourChars:
    """A token per four characters of each message, 4 more a message and 3 a request
    (OpenAI's rule of thumb; also what the offline backend reports)."""

    name = FOUR_CHARS

    def count(self, messages: list[dict[str, Any]]) -> int:
        """The estimate for one request's messages."""
        return sum((len(_text(m.get("content"))) + 3) // 4 + 4 for m in messages) + 3


class LlamaCounter:
    """The tokens a GGUF model reads for a chat request: its chat template applied, then its
    tokenizer, as llama-cpp-python's ``create_chat_completion`` does (the vocabulary alone is
    loaded, not the weights)."""

    def __init__(self, gguf: str, label: str) -> None:
        from llama_cpp import Llama
        from llama_cpp._utils import suppress_stdout_stderr
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        with suppress_stdout_stderr(disable=False):
            self.llm = Llama(model_path=gguf, vocab_only=True, verbose=False)
        atexit.register(self.llm.close)  # its finalizer fails in the interpreter's teardown
        model = self.llm._model
        template = self.llm.metadata.get("tokenizer.chat_template")
        self.formatter = (
            Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(self.llm.token_eos()),
                bos_token=model.token_get_text(self.llm.token_bos()),
            )
            if template
            else None
        )
        self.name = f"{label}'s own tokenizer (llama.cpp{', chat template' if template else ''})"

    def count(self, messages: list[dict[str, Any]]) -> int:
        """The tokens of one request's prompt, as the model reads it."""
        plain = [{"role": m.get("role"), "content": _text(m.get("content"))} for m in messages]
        if self.formatter is None:
            text, special = "\n".join(m["content"] for m in plain), False
        else:
            result = self.formatter(messages=plain)
            text, special = result.prompt, result.added_special
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=not special, special=True))


@lru_cache(maxsize=4)
def _llama(gguf: str, label: str) -> LlamaCounter:
    return LlamaCounter(gguf, label)


def counter_for(config: JobConfig) -> Counter:
    """The most exact counter available here for the job's model: the llama backend's own
    tokenizer when the job runs on it and the [llama] extra is installed, else the
    4-characters rule."""
    api = config.api
    if api is None or api.backend != "llama":
        return FourChars()
    try:
        from tablebatch.server.backends.llama_model import DEFAULT_GGUF, default_gguf

        return _llama(str(default_gguf()), DEFAULT_GGUF.split(".")[0])
    except (ImportError, ValueError):  # the extra is not installed: the rule
        return FourChars()


def request_tokens(counter: Counter, items: Iterable[tuple[str, bytes]]) -> list[int]:
    """The prompt tokens of each encoded request (``{"custom_id", "body"}``)."""
    return [counter.count(orjson.loads(item)["body"]["messages"]) for _, item in items]
