"""The keys a job's ``params`` may hold: the request-body parameters its provider's chat
endpoint accepts, so a typo (``temprature``) is caught before anything is sent.

seed, xai and openai take the OpenAI chat-completions body
(https://platform.openai.com/docs/api-reference/chat/create; xAI's is compatible:
https://docs.x.ai/docs/api-reference) less ``model`` and ``messages``,
which a job sets itself, and ``stream``, which a batch cannot use. anthropic takes the
Messages params the Anthropic dialect passes or maps (``unsupported_params``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

# openai-python 3.57 ``CompletionCreateParamsBase``, less model and messages
CHAT_COMPLETIONS_PARAMS = frozenset(
    {
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "metadata",
        "modalities",
        "moderation",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)
RESERVED = frozenset({"model", "messages"})  # the job sets them from its config and rows


def known_params(provider: str) -> frozenset[str]:
    """The ``params`` keys a job of ``provider`` may set."""
    if provider != "anthropic":
        return CHAT_COMPLETIONS_PARAMS
    # the dialect's own lists (imported here: a config check need not load every dialect)
    from tablebatch.api.dialects.anthropic import DROPPED_PARAMS, MAPPED_PARAMS, NATIVE_PARAMS

    return NATIVE_PARAMS | MAPPED_PARAMS | DROPPED_PARAMS


def check_params(params: Iterable[str] | dict[str, Any], provider: str) -> None:
    """Raise ``ValueError`` naming each key the provider does not take, with the closest
    known key ("did you mean") or where to look."""
    keys = list(params)
    reserved = sorted(RESERVED & set(keys))
    if reserved:
        raise ValueError(f"{', '.join(reserved)} cannot be set in params")
    known = known_params(provider)
    problems = []
    for key in keys:
        if key in known:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1)
        problems.append(f"{key} (did you mean {close[0]}?)" if close else key)
    if not problems:
        return
    if provider == "anthropic":
        where = (
            "not parameters of Anthropic's Messages API (provider anthropic); remove them, "
            "or use its own (e.g. stop_sequences, thinking, output_config)"
        )
    else:
        where = (
            f"not chat-completions parameters (provider {provider}); the known ones: "
            "https://platform.openai.com/docs/api-reference/chat/create"
        )
    raise ValueError(f"params {', '.join(problems)}: {where}")
