"""Prices and costs as plain Python: the price table and its overrides, a model's variants,
cached prompt tokens read from each provider's usage shape, and the cost formula."""

from __future__ import annotations

from pathlib import Path

import pytest

from tablebatch.api.dialects.anthropic_messages import chat_completion, messages_params
from tablebatch.jobs.config import parse_config
from tablebatch.jobs.cost import Meter, Tokens, cost_of, money
from tablebatch.jobs.errors import ConfigError
from tablebatch.jobs.prices import load_prices
from tablebatch.jobs.submit import cache_tokens

JOB = {
    "name": "j",
    "kind": "classification",
    "input": {"path": "x.csv", "id_column": "id"},
    "prompt": {"template": "{text}"},
    "model": "grok-4",
    "labels": ["a", "b"],
}


def test_models_are_found_by_name_or_as_a_dated_variant() -> None:
    table = load_prices()
    assert table.as_of and table.currency == "USD"
    assert table.get("claude-sonnet-4-5-20250929").model == "claude-sonnet-4-5"
    assert table.get("gpt-4o-mini-2024-07-18").model == "gpt-4o-mini"
    assert table.get("grok-4.7").input == 2.0  # not grok-4's
    assert table.get("GPT-4O").model == "gpt-4o"
    assert table.get("gpt-4ox") is None and table.get("my-model") is None


def test_a_project_file_and_the_config_override_the_shipped_table(tmp_path: Path) -> None:
    (tmp_path / "prices.yaml").write_text(
        "as_of: '2027-01-01'\nmodels:\n  grok-4: {input: 1, output: 2}\n  mine: {input: 5, "
        "output: 6}\n"
    )
    config = parse_config(
        {**JOB, "pricing": {"mine": {"input": 0, "output": 0}}}, "j.yaml", root=tmp_path
    )
    table = load_prices(tmp_path, config)
    assert (table.get("grok-4").input, table.get("grok-4").batch_discount) == (1, 0)
    assert table.get("mine").input == 0 and table.get("mine").source == "the config's pricing"
    assert table.get("gpt-4o").input == 2.5 and table.as_of == "2027-01-01"
    (tmp_path / "prices.yaml").write_text("models:\n  grok-4: {input: -1, output: 2}\n")
    with pytest.raises(ConfigError, match=r"prices.yaml: models.grok-4.input: Input should be"):
        load_prices(tmp_path)


def test_a_cap_needs_a_bound_on_each_answer() -> None:
    with pytest.raises(ConfigError, match=r"budget\.max_cost needs an answer's worst case"):
        parse_config({**JOB, "budget": {"max_cost": 1}}, "j.yaml")
    parse_config({**JOB, "budget": {"max_cost": 1}, "params": {"max_tokens": 8}}, "j.yaml")
    anthropic = {"api": {"provider": "anthropic", "base_url": "local"}}
    parse_config({**JOB, **anthropic, "budget": {"max_cost": 1}}, "j.yaml")  # its default


def test_cached_tokens_are_read_from_each_providers_usage() -> None:
    # OpenAI chat completions (and its Batch API's output lines carry the same body)
    openai = {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
    }
    assert cache_tokens(openai) == (1920, 0)
    # xAI's chat completions
    xai = {
        "prompt_tokens": 37,
        "completion_tokens": 530,
        "prompt_tokens_details": {
            "text_tokens": 37,
            "audio_tokens": 0,
            "image_tokens": 0,
            "cached_tokens": 6,
        },
    }
    assert cache_tokens(xai) == (6, 0)
    assert cache_tokens({"prompt_tokens": 5}) == (0, 0)  # a server that says nothing
    # Anthropic's message usage, as the dialect turns it into a chat completion
    message = {
        "id": "msg_1",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "usage": {
            "input_tokens": 21,
            "cache_creation_input_tokens": 1880,
            "cache_read_input_tokens": 3000,
            "output_tokens": 393,
        },
    }
    usage = chat_completion(message)["usage"]
    assert usage["prompt_tokens"] == 21 + 1880 + 3000
    assert cache_tokens(usage) == (3000, 1880)


def test_cached_and_written_tokens_cost_their_own_prices() -> None:
    price = load_prices().get("claude-sonnet-4-5")
    tokens = Tokens(prompt=4901, completion=393, cached=3000, cache_write=1880)
    realtime = (21 * 3.0 + 3000 * 0.30 + 1880 * 6.0 + 393 * 15.0) / 1e6
    assert cost_of(tokens, price, batch=False) == pytest.approx(realtime)
    assert cost_of(tokens, price) == pytest.approx(realtime / 2)
    assert cost_of(tokens, None) is None and money(None) == "unknown"


def test_the_meter_reserves_the_worst_case_and_settles_what_was_spent() -> None:
    meter = Meter(1.0)
    assert meter.reserve("a", 0.6) and not meter.reserve("b", 0.6)
    meter.settle("a", 0.1)
    assert meter.reserve("b", 0.6) and meter.spent == pytest.approx(0.1)
    assert "budget.max_cost $1.00 reached" in meter.message(0.6, 3)


def test_prompt_cache_marks_the_static_prefix_for_anthropic_with_a_one_hour_life() -> None:
    import orjson
    import pyarrow as pa

    from tablebatch.jobs.build import Renderer

    job = {
        **JOB,
        "prompt": {"system": "Label it.", "template": "{text}", "cache": True},
        "api": {"provider": "anthropic", "base_url": "local"},
    }
    config = parse_config(job, "j.yaml")
    row = pa.table({"text": ["hello"]})
    body = orjson.loads(next(Renderer(config, "claude-haiku-4-5").bodies(row)))
    params = messages_params(body, 64)
    assert params["system"] == [
        {"type": "text", "text": "Label it.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    ]
    assert params["messages"] == [{"role": "user", "content": "hello"}]  # the row's: not cached
    seed = parse_config({**job, "api": {"base_url": "local"}}, "j.yaml")  # caches by itself
    assert b"cache_control" not in next(Renderer(seed, "grok-4").bodies(row))
    varying = {**job, "prompt": {"system": "About {text}.", "template": "{text}", "cache": True}}
    by_row = parse_config(varying, "j.yaml")
    assert b"cache_control" not in next(Renderer(by_row, "claude-haiku-4-5").bodies(row))
