"""OpenAI's batch JSONL: checking an input file, writing a batch's output and error files.

Input lines are ``{custom_id, method, url, body}``; output lines are ``{id,
custom_id, response: {status_code, request_id, body}, error}`` — a request the
model refused is a non-200 ``response`` with the error in its body, one that
never ran (cancelled, expired) has ``response: null`` and an ``error`` code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import orjson

from tablebatch.server.store import StoredBatch
from tablebatch.server.validation import body_problem

MAX_ERRORS = 100  # line errors listed in a failed batch's ``errors``

STATUS_CODES = {  # HTTP status of a failed request's response, by the store's error type
    "invalid_request_error": 400,
    "authentication_error": 401,
    "not_found_error": 404,
    "model_not_found": 404,
    "rate_limit_error": 429,
}
NOT_RUN = {  # requests a batch ended before running: OpenAI's codes in the error file
    "cancelled": ("batch_cancelled", "This request was not executed: the batch was cancelled."),
    "expired": (
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    ),
}


# -- reading an input file -----------------------------------------------------


def _line_error(code: str, message: str, line: int | None, param: str | None = None) -> dict:
    return {"code": code, "message": message, "param": param, "line": line}


def read_input(
    content: bytes, endpoint: str, max_requests: int, max_bytes: int
) -> tuple[list[tuple[str, bytes]], dict[str, dict[str, str]], str | None, list[dict]]:
    """Check an input file as OpenAI does: ``(requests, rejected, model, errors)``.

    ``errors`` (file-level problems, by line) fail the whole batch; ``rejected``
    names requests whose body the model cannot take, which fail alone."""
    if len(content) > max_bytes:
        return (
            [],
            {},
            None,
            [
                _line_error(
                    "file_too_large",
                    f"The input file has {len(content)} bytes; a batch takes at most {max_bytes}. "
                    "Split the requests into several batches.",
                    None,
                )
            ],
        )
    lines = [(i, line) for i, line in enumerate(content.splitlines(), 1) if line.strip()]
    if not lines:
        return (
            [],
            {},
            None,
            [_line_error("empty_file", "The input file is empty: put one request per line.", None)],
        )
    if len(lines) > max_requests:
        return (
            [],
            {},
            None,
            [
                _line_error(
                    "too_many_tasks",
                    f"The input file has {len(lines)} requests; a batch takes at most "
                    f"{max_requests}. Split the requests into several batches.",
                    None,
                )
            ],
        )
    items: list[tuple[str, bytes]] = []
    rejected: dict[str, dict[str, str]] = {}
    errors: list[dict] = []
    seen: dict[str, int] = {}
    model: str | None = None
    for number, line in lines:
        problem = None
        try:
            request = orjson.loads(line)
        except orjson.JSONDecodeError:
            request = None
            problem = _line_error(
                "invalid_json_line", "This line is not parseable as valid JSON.", number
            )
        if problem is None and not isinstance(request, dict):
            problem = _line_error(
                "invalid_json_line",
                "This line must be a JSON object {custom_id, method, url, body}.",
                number,
            )
        if problem is None:
            problem = _request_problem(request, number, endpoint, seen, model)
        if problem is not None:
            errors.append(problem)
            continue
        custom_id, body = request["custom_id"], request["body"]
        seen[custom_id] = number
        if model is None and isinstance(body.get("model"), str):
            model = body["model"]
        reason = body_problem(body)
        if reason is not None:
            rejected[custom_id] = {"type": "invalid_request_error", "message": reason + "."}
        items.append((custom_id, orjson.dumps(body)))
    return items, rejected, model, errors[:MAX_ERRORS]


def _request_problem(
    request: dict, number: int, endpoint: str, seen: dict[str, int], model: str | None
) -> dict | None:
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return _line_error(
            "missing_required_parameter",
            "Each line needs a custom_id: a non-empty string.",
            number,
            "custom_id",
        )
    if custom_id in seen:
        return _line_error(
            "duplicate_custom_id",
            f"The custom_id {custom_id!r} is also on line {seen[custom_id]}; custom_ids must be "
            "unique within a batch.",
            number,
            "custom_id",
        )
    if request.get("method") != "POST":
        return _line_error(
            "invalid_value",
            f"The method must be 'POST', not {request.get('method')!r}.",
            number,
            "method",
        )
    if request.get("url") != endpoint:
        return _line_error(
            "url_mismatch",
            f"The url {request.get('url')!r} does not match the batch's endpoint {endpoint!r}.",
            number,
            "url",
        )
    body = request.get("body")
    if not isinstance(body, dict):
        return _line_error(
            "missing_required_parameter", "Each line needs a body: a JSON object.", number, "body"
        )
    if model is not None and body.get("model") != model:
        return _line_error(
            "model_mismatch",
            f"This line asks for model {body.get('model')!r}, the lines before it for "
            f"{model!r}: all requests of a batch must use the same model.",
            number,
            "body.model",
        )
    return None


# -- output files ----------------------------------------------------------------


def _output_line(
    batch: StoredBatch, n: int, custom_id: str, status: str, result: bytes | None
) -> tuple[bool, bytes]:
    """One line of the output (True) or error (False) file, in OpenAI's shape."""
    digest = hashlib.blake2b(f"{batch.id}:{n}".encode(), digest_size=12).hexdigest()
    line: dict[str, Any] = {"id": f"batch_req_{digest}", "custom_id": custom_id}
    if status == "completed" and result is not None:
        body = orjson.loads(result)["response"]
        line["response"] = {"status_code": 200, "request_id": f"req_{digest}", "body": body}
        line["error"] = None
        return True, orjson.dumps(line)
    if status == "failed" and result is not None:
        error = orjson.loads(result)["error"]
        kind = error.get("type", "server_error")
        line["response"] = {
            "status_code": STATUS_CODES.get(kind, 500),
            "request_id": f"req_{digest}",
            "body": {
                "error": {"message": error["message"], "type": kind, "param": None, "code": None}
            },
        }
        line["error"] = None
        return False, orjson.dumps(line)
    code, message = NOT_RUN.get(status, NOT_RUN["cancelled"])
    line["response"] = None
    line["error"] = {"code": code, "message": message}
    return False, orjson.dumps(line)


def render_outputs(
    batch: StoredBatch, chunks: Iterator[list[tuple[int, str, str, bytes | None]]]
) -> dict[str, tuple[str, bytes] | None]:
    """The output and error files of a finished batch (None where a file would be empty)."""
    output: list[bytes] = []
    errors: list[bytes] = []
    for rows in chunks:
        for n, custom_id, status, result in rows:
            ok, line = _output_line(batch, n, custom_id, status, result)
            (output if ok else errors).append(line)
    return {
        "output_file_id": (f"{batch.id}_output.jsonl", b"\n".join(output) + b"\n")
        if output
        else None,
        "error_file_id": (f"{batch.id}_error.jsonl", b"\n".join(errors) + b"\n")
        if errors
        else None,
    }
