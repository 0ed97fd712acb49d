"""Anthropic's Messages params and the chat completions the backends take, both ways.

``to_chat`` turns a request's ``params`` into a chat-completions body, or says what
is wrong with them (as at Anthropic, such a request ends errored, not the call);
``to_message`` turns a backend's completion into a Messages ``message``, and
``result_line`` a stored result into a line of a batch's results JSONL.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

RESULT_ERRORS = {  # the Anthropic error type of a failed request, by the store's error type
    "invalid_request_error": "invalid_request_error",
    "model_not_found": "not_found_error",
    "not_found_error": "not_found_error",
    "rate_limit_error": "rate_limit_error",
    "overloaded_error": "overloaded_error",
}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
TAKEN = {"model", "max_tokens", "messages", "system", "temperature", "top_p", "top_k"}
TAKEN |= {"stop_sequences", "metadata", "stream", "service_tier", "output_config"}
NOT_SERVED = {  # real Messages params the local backends cannot honour
    "tools",
    "tool_choice",
    "thinking",
    "container",
    "mcp_servers",
    "context_management",
    "output_format",
    "cache_control",
    "diagnostics",
    "inference_geo",
    "speed",
}


def _blocks(content: Any, where: str) -> tuple[Any, str | None]:
    """Message content as chat content: a string, or text parts; or what is wrong."""
    if isinstance(content, str):
        return content, None
    if not isinstance(content, list) or not content:
        return None, f"{where}: must be a string or a non-empty list of content blocks"
    parts = []
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind != "text":
            return None, (
                f"{where}.{j}: {kind!r} blocks are not supported by the local server; send text"
                if isinstance(kind, str)
                else f"{where}.{j}: must be a content block with a type"
            )
        if not isinstance(block.get("text"), str):
            return None, f"{where}.{j}.text: must be a string"
        parts.append({"type": "text", "text": block["text"]})
    return parts, None


def _number(params: dict[str, Any], field: str, high: float) -> str | None:
    value = params.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= high:
        return f"params.{field}: must be a number from 0 to {high:g}"
    return None


def to_chat(params: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The chat-completions body for Messages ``params``, or what is wrong with them."""
    if not isinstance(params, dict):
        return None, "params: must be an object with model, max_tokens and messages"
    for field in params:
        if field in NOT_SERVED:
            return None, f"params.{field}: not supported by the local server"
        if field not in TAKEN:
            return None, f"params.{field}: Extra inputs are not permitted"
    model, max_tokens = params.get("model"), params.get("max_tokens")
    if not isinstance(model, str) or not model:
        return None, "params.model: Field required (a model name)"
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        return None, "params.max_tokens: Field required (a whole number of at least 1)"
    if params.get("stream"):
        return None, "params.stream: batch requests cannot stream"
    messages = params.get("messages")
    if not isinstance(messages, list) or not messages:
        return None, "params.messages: Field required (a non-empty list)"
    chat: list[dict[str, Any]] = []
    system = params.get("system")
    if system is not None:
        content, problem = _blocks(system, "params.system")
        if problem:
            return None, problem
        chat.append({"role": "system", "content": content})
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            return None, f"params.messages.{i}.role: must be 'user' or 'assistant'"
        content, problem = _blocks(message.get("content"), f"params.messages.{i}.content")
        if problem:
            return None, problem
        chat.append({"role": role, "content": content})
    problem = _number(params, "temperature", 1) or _number(params, "top_p", 1)
    if problem:
        return None, problem
    body: dict[str, Any] = {"model": model, "messages": chat, "max_tokens": max_tokens}
    for field in ("temperature", "top_p"):
        if params.get(field) is not None:
            body[field] = params[field]
    if params.get("output_config") is not None:
        wanted, problem = _output_format(params["output_config"])
        if problem:
            return None, problem
        body["response_format"] = wanted
    stops = params.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            return None, "params.stop_sequences: must be a list of strings"
        body["stop"] = stops
    return body, None


def _output_format(config: Any) -> tuple[dict[str, Any] | None, str | None]:
    """Structured outputs (``output_config.format``, a JSON schema) as the chat body's
    ``response_format``; or what is wrong with them."""
    if not isinstance(config, dict) or set(config) - {"format"}:
        return None, "params.output_config: only format is supported by the local server"
    wanted = config.get("format")
    if not isinstance(wanted, dict) or wanted.get("type") != "json_schema":
        return None, "params.output_config.format.type: must be 'json_schema'"
    if not isinstance(wanted.get("schema"), dict):
        return None, "params.output_config.format.schema: must be a JSON schema object"
    schema = {"name": "output", "schema": wanted["schema"], "strict": True}
    return {"type": "json_schema", "json_schema": schema}, None


def to_message(completion: dict[str, Any]) -> dict[str, Any]:
    """A Messages ``message`` for a backend's chat completion."""
    choice = completion["choices"][0]
    usage = completion.get("usage") or {}
    digest = hashlib.blake2b(str(completion.get("id")).encode(), digest_size=12).hexdigest()
    return {
        "id": f"msg_{digest}",
        "type": "message",
        "role": "assistant",
        "model": completion.get("model"),
        "content": [{"type": "text", "text": choice["message"].get("content") or ""}],
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason"), "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage.get("prompt_tokens", 0),
            "output_tokens": usage.get("completion_tokens", 0),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": "batch",
        },
    }


def result_line(custom_id: str, status: str, result: bytes | None) -> bytes:
    """One line of a batch's results: ``{custom_id, result}``."""
    if status == "completed" and result is not None:
        outcome = {"type": "succeeded", "message": to_message(orjson.loads(result)["response"])}
    elif status == "failed" and result is not None:
        error = orjson.loads(result)["error"]
        kind = RESULT_ERRORS.get(error.get("type"), "api_error")
        outcome = {
            "type": "errored",
            "error": {"type": "error", "error": {"type": kind, "message": error["message"]}},
        }
    else:
        outcome = {"type": "expired" if status == "expired" else "canceled"}
    return orjson.dumps({"custom_id": custom_id, "result": outcome})
