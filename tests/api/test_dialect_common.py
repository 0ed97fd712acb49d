"""What every dialect shares: reversible ids, chat bodies to Anthropic params and back,
timestamps, error objects."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tablebatch.api.dialects import IdCodec, UnknownStatusError
from tablebatch.api.dialects.anthropic_messages import chat_completion, messages_params
from tablebatch.api.dialects.common import error_text, map_status, parse_time

ANTHROPIC = IdCodec("anthropic", r"[A-Za-z0-9_-]{1,64}", 55)


@pytest.mark.parametrize(
    ("custom_id", "sent_as_is"),
    [
        ("id-r00001", True),
        ("h-0123456789abcdef", True),
        ("row 7", False),  # a space
        ("ключ", False),  # not ASCII
        ("b64_looks_encoded", False),  # the escape prefix itself must be escaped
        ("a" * 55, True),
        ("a" * 56, False),  # over the length: encoded, and then too long
    ],
)
def test_ids_a_provider_would_reject_are_mapped_reversibly(custom_id, sent_as_is) -> None:
    if len(custom_id) > 55:
        with pytest.raises(ValueError, match="use shorter row ids"):
            ANTHROPIC.encode(custom_id)
        return
    wire = ANTHROPIC.encode(custom_id)
    assert (wire == custom_id) is sent_as_is
    assert ANTHROPIC.pattern is not None and ANTHROPIC.pattern.fullmatch(wire)
    assert ANTHROPIC.decode(wire) == custom_id


@given(st.text(min_size=1, max_size=37).filter(lambda s: len(s.encode()) <= 37))
def test_every_short_id_round_trips(custom_id: str) -> None:
    """37 bytes is the most that fits once encoded (4 + 50 characters of base64url)."""
    wire = ANTHROPIC.encode(custom_id)
    assert ANTHROPIC.pattern is not None and ANTHROPIC.pattern.fullmatch(wire)
    assert ANTHROPIC.decode(wire) == custom_id


def test_an_unknown_status_fails_loudly_and_names_it() -> None:
    with pytest.raises(UnknownStatusError, match=r"batch_9 has status 'paused'.*does not know"):
        map_status("openai", "batch_9", "paused", {"completed": "completed"})


def test_chat_bodies_become_messages_params() -> None:
    body = {
        "model": "claude-x",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Label only."}]},
            {"role": "user", "content": "Is it good?"},
        ],
        "max_completion_tokens": 16,
        "stop": "\n",
        "temperature": 0,
        "thinking": {"type": "disabled"},
    }
    assert messages_params(body, 1024) == {
        "model": "claude-x",
        "max_tokens": 16,
        "system": "Be brief.\n\nLabel only.",
        "messages": [{"role": "user", "content": "Is it good?"}],
        "stop_sequences": ["\n"],
        "thinking": {"type": "disabled"},
    }
    short = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert messages_params(short, 300)["max_tokens"] == 300  # required: the default fills it


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"frequency_penalty": 1}, "'frequency_penalty' is not a parameter"),
        ({"messages": [{"role": "system", "content": "x"}]}, "at least one user message"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "role 'tool' has no Anthropic"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "'image_url' part has no Anthropic equivalent",
        ),
    ],
)
def test_chat_bodies_anthropic_cannot_take_are_refused(body, message) -> None:
    full = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}
    with pytest.raises(ValueError, match=message):
        messages_params(full, 10)


def test_messages_come_back_as_chat_completions() -> None:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [{"type": "text", "text": "posi"}, {"type": "text", "text": "tive"}],
        "stop_reason": "max_tokens",
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 2, "output_tokens": 3},
    }
    assert chat_completion(message) == {
        "id": "msg_1",
        "object": "chat.completion",
        "model": "claude-x",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "positive"},
                "finish_reason": "length",
            }
        ],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 3,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 2, "cache_write_tokens": 0},
        },
    }


def test_times_and_errors_of_every_shape() -> None:
    assert parse_time(0).isoformat() == "1970-01-01T00:00:00+00:00"
    assert parse_time("2024-08-20T18:37:24.100435Z").isoformat().endswith("+00:00")
    assert parse_time("not a time") is None and parse_time(None) is None
    assert error_text({"type": "error", "error": {"type": "overloaded", "message": "busy"}}) == (
        "overloaded",
        "busy",
    )
    assert error_text({"code": "rate_limit", "message": "slow down"}) == ("rate_limit", "slow down")
    assert error_text("plain") == ("error", "plain")
    assert error_text(None) == ("error", "the request failed with no error")
