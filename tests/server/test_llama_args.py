"""How the llama backend reads a chat request, and checks a JSON answer (no model needed)."""

from __future__ import annotations

import pytest

from tablebatch.server.backends.llama import pool_shape
from tablebatch.server.backends.llama_model import (
    _not_conforming,
    chat_arguments,
    response_schema,
)
from tablebatch.server.settings import LlamaSettings, ServerSettings

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def test_chat_parameters_become_llama_arguments() -> None:
    args = chat_arguments(
        {
            "model": "m",
            "messages": [],
            "max_completion_tokens": 5,
            "temperature": 0,
            "stop": ["\n"],
            "seed": 3,
            "logit_bias": {"2": -100},
            "response_format": {"type": "json_schema", "json_schema": {"schema": SCHEMA}},
        }
    )
    assert args == {
        "temperature": 0,
        "top_p": 1.0,
        "stop": ["\n"],
        "seed": 3,
        "logit_bias": {2: -100.0},
        "max_tokens": 5,
        "response_format": {"type": "json_object", "schema": SCHEMA},
    }
    assert chat_arguments({"model": "m", "messages": []}) == {"temperature": 1.0, "top_p": 1.0}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"logprobs": True}, "logprobs are not supported by the llama backend"),
        ({"n": 2}, "n must be 1"),
        ({"max_tokens": 0}, "max_tokens must be a positive integer"),
        ({"response_format": {"type": "xml"}}, "type 'xml' is not supported"),
        ({"response_format": {"type": "json_schema"}}, "needs json_schema.schema"),
        ({"logit_bias": {"a": 1}}, "logit_bias maps token ids to numbers"),
    ],
)
def test_what_llama_cannot_honour_is_refused_by_name(body: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        chat_arguments({"model": "m", "messages": [], **body})


def test_response_formats() -> None:
    assert response_schema(None) is None
    assert response_schema({"type": "text"}) is None
    assert response_schema({"type": "json_object"}) == {}
    assert response_schema({"type": "json_object", "schema": SCHEMA}) == SCHEMA


def _answer(content: str, finish: str = "stop") -> dict:
    return {"choices": [{"message": {"content": content}, "finish_reason": finish}]}


def test_a_json_answer_is_checked_against_its_schema() -> None:
    assert _not_conforming(_answer('{"n": 1}'), SCHEMA) is None
    assert _not_conforming(_answer('{"m": 1}'), {}) is None
    assert "does not match the schema: 'n' is a required property" in _not_conforming(
        _answer('{"m": 1}'), SCHEMA
    )
    assert "not valid JSON" in _not_conforming(_answer('{"n": "a\nb"}'), SCHEMA)
    assert "cut at max_tokens" in _not_conforming(_answer('{"n": ', "length"), SCHEMA)


def test_the_pool_is_sized_to_the_machine() -> None:
    assert pool_shape(LlamaSettings(), cores=2) == (2, 1)
    assert pool_shape(LlamaSettings(), cores=1) == (1, 1)
    assert pool_shape(LlamaSettings(), cores=32) == (8, 4)
    assert pool_shape(LlamaSettings(processes=1), cores=4) == (1, 4)
    settings = ServerSettings(backend="llama", llama={"models": {"a": "/m/a.gguf"}, "n_ctx": 4096})
    assert settings.llama.models == {"a": "/m/a.gguf"} and settings.llama.n_ctx == 4096


def test_without_the_extra_the_commands_say_what_to_install(monkeypatch, capsys, tmp_path):
    from flows.cli import main
    from tablebatch.server.backends import llama

    monkeypatch.setattr(llama, "llama_available", lambda: False)
    monkeypatch.setenv("TABLEBATCH_SERVER_BACKEND", "offline")  # restored after the test
    assert main(["server", "--backend", "llama", "--port", "0", "--db", ":memory:"]) == 2
    err = capsys.readouterr().err
    assert "The llama backend needs llama-cpp-python, which is not installed" in err
    assert "pip install -e '.[llama]'" in err

    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "rows.csv").write_text("id,text\na,hello\n")
    job = "name: j\nkind: summarization\ninput: {path: rows.csv, id_column: id}\n"
    job += "prompt: {template: '{text}'}\nmodel: m\n"
    (tmp_path / "j.yaml").write_text(job)
    assert main(["run", str(tmp_path / "j.yaml"), "--backend", "llama"]) == 2
    assert "pip install -e '.[llama]'" in capsys.readouterr().err
    remote = job + "api: {base_url: 'http://127.0.0.1:9/v1', api_key_env: SOME_KEY}\n"
    (tmp_path / "r.yaml").write_text(remote)
    monkeypatch.setenv("SOME_KEY", "k")
    assert main(["run", str(tmp_path / "r.yaml"), "--backend", "llama"]) == 2
    assert "--backend llama is for the run's own local server" in capsys.readouterr().err
