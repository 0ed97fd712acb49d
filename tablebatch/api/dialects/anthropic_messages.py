"""Chat-completions bodies as Anthropic Messages params, and Anthropic Messages back as
chat completions (API version ``2026-10-21``; the batch dialect is ``anthropic.py``).

- **Requests**: system (and developer) messages become ``system``; ``max_tokens`` is
  required, so it comes from the body (``max_tokens``/``max_completion_tokens``) or the
  caller's default; ``stop`` becomes ``stop_sequences``; ``response_format`` (a JSON
  schema) becomes ``output_config``; Messages-native params pass through.
  ``temperature``, ``top_p`` and ``top_k`` are not parameters of this API version: they
  are dropped (the dialect warns). Any other chat parameter is an error. A content
  part's ``cache_control`` (the job's prompt-cache mark) stays on its text block.
- **Answers** come back as chat completions (``choices[0].message.content``,
  ``finish_reason``, ``usage`` with the cache's reads and writes), so the job joins them
  unchanged.
"""

from __future__ import annotations

from typing import Any

# Messages params a chat body may carry as they are (MessageCreateParamsNonStreaming).
NATIVE_PARAMS = frozenset(
    {
        "cache_control",
        "container",
        "inference_geo",
        "metadata",
        "output_config",
        "service_tier",
        "speed",
        "stop_sequences",
        "thinking",
        "tool_choice",
        "tools",
    }
)
MAPPED_PARAMS = frozenset({"max_tokens", "max_completion_tokens", "stop"})
DROPPED_PARAMS = frozenset({"temperature", "top_p", "top_k"})
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
}


def unsupported_params(params: dict[str, Any]) -> list[str]:
    """Chat parameters that have no place in Anthropic's Messages params (for config checks)."""
    known = NATIVE_PARAMS | MAPPED_PARAMS | DROPPED_PARAMS
    return sorted(k for k in params if k not in known)


def _text(content: Any, where: str) -> str:
    """The text of a chat message's content (a string, or a list of text parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ValueError(f"{where}: a {kind!r} part has no Anthropic equivalent here")
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise ValueError(f"{where}: content must be text")


def messages_params(body: dict[str, Any], default_max_tokens: int) -> dict[str, Any]:
    """A chat-completions body as Anthropic Messages params (see the module docstring)."""
    messages = body.get("messages")
    if not isinstance(body.get("model"), str) or not isinstance(messages, list) or not messages:
        raise ValueError("a chat body needs a model and at least one message")
    system: list[str] = []
    marks: dict[int, Any] = {}  # system part -> its cache_control (prompt.cache)
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        where = f"messages[{index}]"
        if role in ("system", "developer"):
            content = message.get("content")
            if isinstance(content, list) and any(_mark(p) for p in content):
                marks[len(system)] = next(_mark(p) for p in content if _mark(p))
            system.append(_text(content, where))
        elif role in ("user", "assistant"):
            content = message.get("content")
            if isinstance(content, list):
                content = [_block(_text([p], where), _mark(p)) for p in content]
            else:
                content = _text(content, where)
            turns.append({"role": role, "content": content})
        else:
            raise ValueError(f"{where}: role {role!r} has no Anthropic equivalent")
    if not turns:
        raise ValueError("Anthropic needs at least one user message besides the system prompt")
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or default_max_tokens
    params: dict[str, Any] = {"model": body["model"], "max_tokens": int(max_tokens)}
    if system and marks:  # text blocks, so that the prefix's end carries its mark
        params["system"] = [_block(text, marks.get(i)) for i, text in enumerate(system)]
    elif system:
        params["system"] = "\n\n".join(system)
    params["messages"] = turns
    for key, value in body.items():
        if key in ("model", "messages", "max_tokens", "max_completion_tokens"):
            continue
        if key == "stop":
            if value is not None:
                params["stop_sequences"] = [value] if isinstance(value, str) else list(value)
        elif key == "response_format":
            params["output_config"] = output_config(value)
        elif key in NATIVE_PARAMS:
            params[key] = value
        elif key not in DROPPED_PARAMS:
            raise ValueError(
                f"{key!r} is not a parameter of Anthropic's Messages API; remove it from params"
            )
    return params


def _mark(part: Any) -> Any:
    """A content part's ``cache_control`` (the job's prompt-cache mark), if it has one."""
    return part.get("cache_control") if isinstance(part, dict) else None


def _block(text: str, mark: Any = None) -> dict[str, Any]:
    """A text block, with its ``cache_control`` when it has one."""
    return {"type": "text", "text": text, **({"cache_control": mark} if mark else {})}


def output_config(response_format: Any) -> dict[str, Any]:
    """A chat body's ``response_format`` (a JSON schema) as Anthropic's structured outputs:
    ``output_config: {format: {type: json_schema, schema}}`` (the answer is then JSON text
    in the message's text block, as in a chat completion)."""
    wanted = response_format if isinstance(response_format, dict) else {}
    schema = (wanted.get("json_schema") or {}).get("schema")
    if wanted.get("type") != "json_schema" or not isinstance(schema, dict):
        raise ValueError(
            "response_format: Anthropic takes structured output as a JSON schema only "
            "({type: json_schema, json_schema: {schema: ...}})"
        )
    return {"format": {"type": "json_schema", "schema": schema}}


def chat_completion(message: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Message as a chat completion, the shape the job reads."""
    blocks = message.get("content") or []
    text = "".join(
        str(b.get("text", "")) for b in blocks if isinstance(b, dict) and b.get("type") == "text"
    )
    usage = message.get("usage") or {}
    prompt = sum(
        int(usage.get(k) or 0)
        for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    answer = int(usage.get("output_tokens") or 0)
    details = {  # the cache's share of the prompt, as OpenAI's usage says it (and the writes)
        "cached_tokens": int(usage.get("cache_read_input_tokens") or 0),
        "cache_write_tokens": int(usage.get("cache_creation_input_tokens") or 0),
    }
    stop = message.get("stop_reason")
    return {
        "id": message.get("id"),
        "object": "chat.completion",
        "model": message.get("model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": FINISH_REASONS.get(stop, stop),
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": answer,
            "total_tokens": prompt + answer,
            "prompt_tokens_details": details,
        },
    }
