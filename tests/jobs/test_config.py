"""The job config: every documented key works; every mistake names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tablebatch.jobs.config import ConfigError, load_config, parse_config, template_fields

ISSUE_EXAMPLE = """
name: review-sentiment
kind: classification
input:
  path: data/reviews.csv
  id_column: review_id
prompt:
  system: You label the sentiment of product reviews.
  template: "Is this review positive or negative?\\n\\n{text}"
model: grok-4
params: {temperature: 0, max_tokens: 16}
labels: [positive, negative]
gold_column: label
reference_column: answer
api:
  base_url: https://api.x.ai/v1
  api_key_env: XAI_API_KEY
batch: {max_requests: 10000, poll_interval_s: 10, max_wait_s: 86400, max_attempts: 3}
output:
  path: data/output/review-sentiment.parquet
"""


def _base(**changes: object) -> dict:
    data = yaml.safe_load(ISSUE_EXAMPLE)
    data.pop("reference_column")
    data.update(changes)
    return data


def test_the_documented_example_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(ISSUE_EXAMPLE)
    config = load_config(path)
    assert config.name == "review-sentiment"
    assert config.api.base_url == "https://api.x.ai/v1"
    assert config.batch.max_attempts == 3 and config.batch.max_requests == 10_000
    assert config.params == {"temperature": 0, "max_tokens": 16}
    assert config.columns_needed() == ["review_id", "text", "label", "answer"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"kind": "translation"}, "kind: Input should be 'classification'"),
        ({"nmae": "x"}, "nmae: unknown key (did you mean name?)"),
        (
            {"batch": {"max_requets": 5}},
            "batch.max_requets: unknown key (did you mean max_requests?)",
        ),
        (
            {"batch": {"max_requests": 0}},
            "batch.max_requests: Input should be greater than or equal to 1",
        ),
        (
            {"batch": {"poll_interval_s": "soon"}},
            "batch.poll_interval_s: Input should be a valid number",
        ),
        ({"labels": ["positive"]}, "labels: a list of at least two"),
        ({"labels": ["Positive", "positive"]}, "labels repeats a label"),
        ({"labels": None}, "classification needs labels"),
        ({"model": None}, "give exactly one of model"),
        ({"models": ["a", "b"]}, "give exactly one of model"),
        ({"name": "has space"}, "name: use 1-64 letters"),
        (
            {"prompt": {"template": "{text.__class__}"}},
            "placeholder {text.__class__} is not allowed",
        ),
        ({"prompt": {"template": "{rows[0]}"}}, "placeholder {rows[0]} is not allowed"),
        ({"prompt": {"template": "{text!r}"}}, "placeholder {text!r} is not allowed"),
        ({"prompt": {"template": "{}"}}, "empty placeholder"),
        ({"prompt": {"template": "open { brace"}}, "write a literal brace"),
        ({"prompt": {"template": "  "}}, "the template is empty"),
        ({"params": {"model": "x"}}, "model cannot be set in params"),
        ({"output": {"path": "out.xlsx"}}, "must end in .parquet or .csv"),
        ({"api": {"base_url": "api.x.ai"}}, "base_url must start with http"),
        ({"api": {"base_url": "https://x", "api_key": "sk-1"}}, "api.api_key: unknown key"),
        ({"api": {"api_key_env": "K"}}, "api: base_url is required for provider seed"),
        ({"api": {"provider": "gemini"}}, "api.provider: Input should be 'seed', 'xai'"),
        ({"api": {"provider": "xai", "max_tokens": 9}}, "max_tokens is for provider anthropic"),
        (
            {"api": {"provider": "anthropic", "ledger": "s3://bucket/ledger.jsonl"}},
            "api.ledger: the ledger is a local file",
        ),
        (
            {"api": {"provider": "anthropic"}, "params": {"presence_penalty": 1, "top_p": 1}},
            "params presence_penalty: not parameters of Anthropic's Messages API",
        ),
        (
            {"params": {"temprature": 0}},
            "params temprature (did you mean temperature?): not chat-completions parameters",
        ),
        (
            {"api": {"provider": "anthropic"}, "params": {"stop_sequence": ["x"]}},
            "params stop_sequence (did you mean stop_sequences?): not parameters of Anthropic",
        ),
        ({"scoring": "exact"}, "scoring and judge are for kind: evaluation"),
        ({"input": {"path": "x.csv"}}, "input.id_column: missing"),
    ],
)
def test_mistakes_name_the_file_and_key(change: dict, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_base(**change), "configs/job.yaml")
    message = str(info.value)
    assert message.startswith("configs/job.yaml: ")
    assert words in message


def test_evaluation_rules() -> None:
    base = _base(kind="evaluation", labels=None, model=None, models=["a", "b"])
    with pytest.raises(ConfigError, match="evaluation needs reference_column"):
        parse_config(dict(base), "c.yaml")
    with pytest.raises(ConfigError, match="scoring: judge needs a judge"):
        parse_config({**base, "reference_column": "r", "scoring": "judge"}, "c.yaml")
    with pytest.raises(ConfigError, match="models repeats"):
        parse_config({**base, "reference_column": "r", "models": ["a", "a"]}, "c.yaml")
    config = parse_config(
        {**base, "reference_column": "r", "scoring": "judge", "judge": {"model": "j"}}, "c.yaml"
    )
    assert config.model_names == ["a", "b"]
    assert config.fingerprint("a") != config.fingerprint("b")
    assert config.fingerprint("j", "a") != config.fingerprint("j", "b")


def test_overrides(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(ISSUE_EXAMPLE)
    config = load_config(path, ["batch.max_requests=500", "model=grok-3", "params.seed=7"])
    assert config.batch.max_requests == 500 and config.model == "grok-3"
    assert config.params["seed"] == 7
    with pytest.raises(ConfigError, match="--set 'oops': write key=value"):
        load_config(path, ["oops"])
    with pytest.raises(ConfigError, match=r"batch\.max_reqs: unknown key"):
        load_config(path, ["batch.max_reqs=1"])


def test_a_changed_prompt_changes_the_fingerprint() -> None:
    a = parse_config(_base(), "c.yaml")
    b = parse_config(_base(params={"temperature": 1}), "c.yaml")
    assert a.fingerprint("grok-4") != b.fingerprint("grok-4")
    assert a.fingerprint("grok-4") == parse_config(_base(), "c.yaml").fingerprint("grok-4")


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="the file is empty"):
        load_config(empty)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(listing)


def test_template_fields() -> None:
    assert template_fields("{a} and {b} and {a} {{literal}}") == ["a", "b"]
    assert template_fields("{review text}") == ["review text"]


@pytest.mark.parametrize(
    ("api", "base_url", "key"),
    [
        ({"base_url": "http://127.0.0.1:8000/v1"}, "http://127.0.0.1:8000/v1", "XAI_API_KEY"),
        ({"provider": "xai"}, "https://api.x.ai/v1", "XAI_API_KEY"),
        ({"provider": "openai"}, "https://api.openai.com/v1", "OPENAI_API_KEY"),
        ({"provider": "anthropic"}, "https://api.anthropic.com/v1", "ANTHROPIC_API_KEY"),
        ({"provider": "openai", "base_url": "local"}, "local", "OPENAI_API_KEY"),
        (
            {"provider": "anthropic", "base_url": "https://proxy.test/v1/", "api_key_env": "K"},
            "https://proxy.test/v1",
            "K",
        ),
    ],
)
def test_each_provider_has_its_address_and_key_variable(api, base_url, key) -> None:
    config = parse_config(_base(api=api), "c.yaml")
    assert config.api is not None
    assert (config.api.base_url, config.api.api_key_env) == (base_url, key)
    assert config.api.is_local == (base_url == "local")
