"""The ``params`` keys a job may set, per provider: the lists match the providers' SDKs."""

from __future__ import annotations

import pytest

from tablebatch.api.dialects.anthropic_messages import unsupported_params
from tablebatch.jobs.params import CHAT_COMPLETIONS_PARAMS, check_params, known_params


def test_the_chat_completions_list_is_the_openai_sdks() -> None:
    from openai.types.chat.completion_create_params import CompletionCreateParamsBase

    sdk = set(CompletionCreateParamsBase.__annotations__) - {"model", "messages", "stream"}
    assert set(CHAT_COMPLETIONS_PARAMS) == sdk


def test_anthropic_takes_what_its_dialect_passes_or_maps() -> None:
    known = known_params("anthropic")
    assert unsupported_params(dict.fromkeys(known)) == []
    assert unsupported_params({"presence_penalty": 1}) == ["presence_penalty"]


@pytest.mark.parametrize("provider", ["seed", "xai", "openai"])
def test_a_typo_is_refused_with_the_closest_key(provider: str) -> None:
    check_params({"temperature": 0, "max_tokens": 16, "seed": 1}, provider)
    with pytest.raises(ValueError, match=r"temprature \(did you mean temperature\?\)"):
        check_params({"temprature": 0}, provider)


def test_a_key_like_no_other_is_named_without_a_guess() -> None:
    with pytest.raises(ValueError, match=r"^params zzz: not chat-completions parameters"):
        check_params({"zzz": 1}, "openai")
    with pytest.raises(ValueError, match="model cannot be set in params"):
        check_params({"model": "x"}, "xai")
