"""The forwarding backend against a real model server: ``python -m llama_cpp.server``.

llama-cpp-python's own OpenAI-compatible server (the [server] part of the [llama]
extra) serves the SmolLM2 GGUF on a free port; ``tablebatch server --backend openai``
(the command line, in a subprocess) forwards to it; jobs run through the real flow
against that: a batch front end for a self-hosted model, end to end.
"""

from __future__ import annotations

import csv
import io
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pyarrow.parquet as pq
import pytest

from flows.job import batch_job

# a real model server on 2 busy cores: its start-up and a job's come first
pytestmark = [pytest.mark.llama, pytest.mark.timeout(300)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@pytest.fixture(scope="module")
def model_server() -> Iterator[str]:
    """``python -m llama_cpp.server`` with the SmolLM2 GGUF, on a free port; its /v1 URL."""
    from tablebatch.server.backends.llama_model import default_gguf

    port = _free_port()
    log = tempfile.NamedTemporaryFile("w+", suffix=".log")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(default_gguf()),
            "--model_alias",
            "smollm2",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--n_threads",
            "1",  # a thread per core is what a busy machine answers fastest with
            "--verbose",
            "False",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    try:
        while True:
            assert process.poll() is None, Path(log.name).read_text()[-2000:]
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "llama_cpp.server did not start"
            time.sleep(0.2)
        yield url
    finally:
        _stop(process)
        log.close()


@pytest.fixture(scope="module")
def front_end(model_server: str) -> Iterator[str]:
    """``tablebatch server --backend openai`` pointed at the model server; its /v1 URL."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "server",
            "--port",
            "0",
            "--db",
            ":memory:",
            "--no-auth",
            "--backend",
            "openai",
            "--upstream-url",
            model_server,
            "--upstream-concurrency",
            "2",
            "--upstream-schema-as",
            "json_object",  # llama-cpp-python's server takes no json_schema (it answers 500)
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        seen = []
        for line in process.stdout:  # uvicorn's start-up lines, then the server's own
            seen.append(line)
            found = re.search(r"listening on (\S+)", line)
            if found:
                break
        assert found, "".join(seen)
        assert f"backend openai: forwarding to {model_server}" in line
        yield found.group(1)
    finally:
        _stop(process)


def _csv(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def test_jobs_through_the_forwarder_to_a_real_model_server(front_end, project, monkeypatch) -> None:
    monkeypatch.setenv("FRONT_END_KEY", "any")  # the front end runs --no-auth
    api = {"base_url": front_end, "api_key_env": "FRONT_END_KEY"}
    reviews = [
        ("r1", "Great sound and the battery lasts for days. I love them.", "positive"),
        ("r2", "The left ear cup broke after two weeks. Total waste of money.", "negative"),
        ("r3", "too long " + "blah " * 3000, "negative"),  # the upstream rejects it
    ]
    config = project(
        {
            "name": "forwarded-sentiment",
            "kind": "classification",
            "input": {"path": "data/reviews.csv", "id_column": "review_id"},
            "prompt": {"template": "Is this review positive or negative?\n\n{text}"},
            "model": "smollm2",
            "params": {"temperature": 0, "max_tokens": 8},
            "labels": ["positive", "negative"],
            "gold_column": "sentiment",
            "api": api,
            "batch": {"max_attempts": 1},
            "output": {"path": "data/output/sentiment.parquet"},
        },
        {"data/reviews.csv": _csv(reviews, ("review_id", "text", "sentiment"))},
    )
    report = batch_job(str(config))
    rows = pq.read_table(config.parent.parent / "data/output/sentiment.parquet").to_pylist()
    assert [r["status"] for r in rows] == ["completed", "completed", "failed"]
    assert all(r["answer"].strip() and r["completion_tokens"] > 0 for r in rows[:2])
    assert rows[2]["error"].startswith(
        "upstream_error: The model server answered 400: This model's maximum context length "
        "is 2048 tokens."
    )
    assert report["rows_by_status"] == {"completed": 2, "failed": 1}

    # an extraction job, its schema a JSON Schema file: typed columns, values within it
    schema = {
        "type": "object",
        "properties": {
            "product": {"type": "string"},
            "stars": {"type": "integer", "minimum": 1, "maximum": 5},
            "sentiment": {"type": "string", "enum": ["positive", "negative"]},
        },
        "required": ["product", "stars", "sentiment"],
        "additionalProperties": False,
    }
    notes = [
        ("e1", "The Aeropress coffee maker is great. Five stars."),
        ("e2", "This Acme toaster burnt my bread. One star."),
    ]
    config = project(
        {
            "name": "forwarded-extract",
            "kind": "extraction",
            "input": {"path": "data/notes.csv", "id_column": "id"},
            "prompt": {
                "system": "You extract fields from product reviews. Answer with JSON only.",
                "template": "Extract these fields from the review:\n{schema}\n\n{text}",
            },
            "model": "smollm2",
            "params": {"temperature": 0, "max_tokens": 64},
            "output_schema": "schemas/review.json",
            "api": api,
            "output": {"path": "data/output/extract.parquet"},
        },
        {
            "data/notes.csv": _csv(notes, ("id", "text")),
            "schemas/review.json": orjson.dumps(schema).decode(),
        },
    )
    report = batch_job(str(config))
    assert report["rows_by_status"] == {"completed": 2}
    assert report["extraction"]["validity_rate"] == 1.0
    output = pq.read_table(config.parent.parent / "data/output/extract.parquet")
    types = {name: str(output.schema.field(name).type) for name in schema["properties"]}
    assert types == {"product": "string", "stars": "int64", "sentiment": "string"}
    for row in output.to_pylist():
        assert row["parse_error"] is None and row["product"].strip()
        assert isinstance(row["stars"], int) and 1 <= row["stars"] <= 5
        assert row["sentiment"] in ("positive", "negative")
        assert orjson.loads(row["answer"]) == {f: row[f] for f in schema["properties"]}
