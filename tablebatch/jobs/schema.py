"""The job config's schema: the sections every job has and ``JobConfig``, the base of
every kind's config.

Every key is a contract with users. Unknown keys are errors (a typo must not be
silently ignored), and every error names the file, the key and what to change.
A kind's own keys live with the kind (``tablebatch.jobs.kinds``): its config is a
subclass of ``JobConfig`` with ``kind: Literal[<its name>]``, and the loader
(``tablebatch.jobs.config``) reads a file as the union of them, discriminated by
``kind``.
"""

from __future__ import annotations

import hashlib
import re
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tablebatch.api.providers import BASE_URLS, KEY_ENVS, Provider
from tablebatch.jobs.naming import JOB_NAME
from tablebatch.jobs.params import check_params

if TYPE_CHECKING:
    from tablebatch.jobs.kinds.base import Kind


class Strict(BaseModel):
    """A config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


def template_fields(template: str) -> list[str]:
    """The column names a prompt template uses; only plain ``{column}`` is allowed.

    Attribute and index access (``{x.__class__}``, ``{x[0]}``), conversions and
    format specs are refused: a template reads columns and nothing else.
    """
    fields: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{exc}; write a literal brace as {{{{ or }}}}") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name:
            raise ValueError("an empty placeholder {} names no column; write {column}")
        if any(c in name for c in ".[]") or spec or conversion:
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise ValueError(
                f"placeholder {{{shown}}} is not allowed: use a plain column name, e.g. "
                f"{{{re.split(r'[.[]', name)[0] or 'column'}}}"
            )
        if name not in fields:
            fields.append(name)
    return fields


class InputConfig(Strict):
    """Where the rows come from."""

    path: str = Field(description="A .csv or .parquet file, a glob of them, or an fsspec URL.")
    id_column: str = Field(description="A unique, stable key of each row.")


class PromptConfig(Strict):
    """How a row becomes a chat request."""

    system: str | None = Field(None, description="An optional system message.")
    template: str = Field(description="The user message, with {column} placeholders.")
    cache: bool = Field(
        False,
        description="Mark the static prefix (the system prompt when it has no placeholder, "
        "and the examples) for the provider's prompt cache: for anthropic a cache_control "
        "breakpoint with the 1-hour lifetime (OpenAI and xAI cache prefixes by themselves).",
    )

    @field_validator("template")
    @classmethod
    def _check_template(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the template is empty")
        template_fields(value)
        return value


LOCAL = "local"


class ApiConfig(Strict):
    """The Batch API to use; omitted, a local server is started for the run."""

    provider: Provider = Field(
        "seed", description="Whose batch API: seed (the spec's), xai, openai or anthropic."
    )
    base_url: str | None = Field(
        None,
        description="e.g. https://api.x.ai/v1; default: the provider's. 'local': a local server "
        "for the run, speaking the provider's dialect.",
    )
    api_key_env: str | None = Field(
        None,
        description="Environment variable holding the key; default XAI_API_KEY, OPENAI_API_KEY "
        "or ANTHROPIC_API_KEY by provider.",
    )
    api_key_secret: str | None = Field(
        None, description="A Prefect Secret block holding the key; used before api_key_env."
    )
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0)
    max_tokens: int | None = Field(
        None,
        ge=1,
        description="anthropic: max_tokens of requests whose params give none (default 1024).",
    )
    ledger: str | None = Field(
        None,
        description="anthropic: the file recording its batches by name (default "
        ".tablebatch/anthropic-batches.jsonl in the project).",
    )
    backend: Literal["offline", "llama"] | None = Field(
        None,
        description="base_url local: what answers on the run's own server: offline (the "
        "deterministic stand-in, the default) or llama (a real model on CPU; the [llama] "
        "extra). Implies base_url local.",
    )

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or value == LOCAL:
            return value
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("base_url must start with http:// or https:// (or be 'local')")
        return value.rstrip("/")

    @field_validator("ledger")
    @classmethod
    def _check_ledger(cls, value: str | None) -> str | None:
        if value is not None and "://" in value:
            raise ValueError(
                "the ledger is a local file (appended to and synced); give a path, e.g. one "
                "on a disk the job's machines share"
            )
        return value

    @model_validator(mode="after")
    def _defaults(self) -> ApiConfig:
        if self.backend is not None:
            if self.base_url not in (None, LOCAL):
                raise ValueError(
                    f"backend {self.backend} is for the run's own local server: set base_url "
                    "to 'local' (or leave it out), or remove backend"
                )
            self.base_url = LOCAL
        if self.base_url is None:
            if self.provider not in BASE_URLS:
                raise ValueError(
                    "base_url is required for provider seed (the spec's API has no public "
                    "address): give the server's URL, e.g. http://127.0.0.1:8000/v1, or 'local'"
                )
            self.base_url = BASE_URLS[self.provider]
        if self.api_key_env is None:
            self.api_key_env = KEY_ENVS[self.provider]
        if self.provider != "anthropic":
            extra = [k for k in ("max_tokens", "ledger") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"{', '.join(extra)} is for provider anthropic only")
        return self

    @property
    def is_local(self) -> bool:
        """Whether the run starts its own local server (``base_url: local``)."""
        return self.base_url == LOCAL


class BatchSettings(Strict):
    """How requests are split into batches, waited for and retried."""

    max_requests: int = Field(10_000, ge=1, le=1_000_000, description="Requests per batch.")
    max_bytes: int = Field(100 * 2**20, ge=1024, description="Request bytes per batch.")
    max_request_bytes: int = Field(
        1_000_000, ge=100, description="A row whose request is larger is skipped."
    )
    poll_interval_s: float = Field(10.0, gt=0, description="First wait between polls.")
    max_poll_interval_s: float = Field(60.0, gt=0, description="Longest wait between polls.")
    max_wait_s: float = Field(86_400.0, gt=0, description="How long to wait for a batch.")
    max_attempts: int = Field(3, ge=1, le=20, description="Tries per row, the first included.")
    concurrency: int = Field(4, ge=1, le=64, description="Batches submitted and awaited at once.")
    error_budget: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of an attempt's requests that may fail before the job stops as "
        "systemic (instead of retrying row by row).",
    )
    on_abort: Literal["cancel", "keep"] = Field(
        "cancel",
        description="When a run is stopped (Ctrl-C, a cancel in Prefect, a crash): cancel its "
        "batches in flight (answered rows are kept), or keep them running on the API.",
    )
    on_timeout: Literal["keep", "cancel"] = Field(
        "keep",
        description="When max_wait_s passes: keep the batches running (a re-run collects them), "
        "or cancel them (answered rows are kept; a re-run sends only the rest).",
    )


class OutputConfig(Strict):
    """Where the joined table goes."""

    path: str | None = Field(
        None, description=".parquet or .csv; default data/output/<name>.parquet"
    )

    @field_validator("path")
    @classmethod
    def _check_suffix(cls, value: str | None) -> str | None:
        if value is not None and Path(value).suffix.lower() not in (".parquet", ".csv"):
            raise ValueError(f"the output must end in .parquet or .csv, not {value!r}")
        return value


class ScheduleConfig(Strict):
    """When ``tablebatch deploy`` schedules the job (a config not listed in prefect.yaml)."""

    cron: str = Field(description='A cron expression, e.g. "0 6 * * 1-5".')
    timezone: str = Field("UTC", description="An IANA time zone, e.g. Europe/Berlin.")

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str) -> str:
        if len(value.split()) not in (5, 6):
            raise ValueError("a cron expression has 5 fields, e.g. '0 6 * * *'")
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use e.g. UTC or Europe/Berlin"
            ) from None
        return value


class BudgetConfig(Strict):
    """What a run may spend, in the price table's currency (USD)."""

    max_cost: float | None = Field(
        None,
        ge=0,
        description="A run whose estimate is over it is refused before anything is sent; "
        "during a run, no shard is sent once spent plus the worst case in flight would pass it.",
    )


class ModelPrice(Strict):
    """A model's list price, per million tokens (``pricing:`` and ``prices.yaml``)."""

    input: float = Field(ge=0, description="Per million prompt tokens.")
    output: float = Field(ge=0, description="Per million completion tokens.")
    cached_input: float | None = Field(
        None, ge=0, description="Per million prompt tokens read from the cache (default: input)."
    )
    cache_write: float | None = Field(
        None, ge=0, description="Per million prompt tokens written to the cache (default: input)."
    )
    batch_discount: float = Field(
        0.0, ge=0, le=1, description="The Batch API's discount on every token, e.g. 0.5."
    )


CONFIGS: dict[str, type[JobConfig]] = {}  # kind name -> its config (``kinds.base.register``)


class JobConfig(Strict):
    """One job: a table, a prompt, a model, and where the answers go. Each kind's config
    subclasses it with its own keys (``tablebatch.jobs.kinds``)."""

    kind_class: ClassVar[type[Kind]]  # set when the kind is registered
    several_models: ClassVar[bool] = False  # whether the kind takes ``models: [a, b]``

    name: str = Field(description="Names the job, its batches and its default output.")
    kind: str = Field(description="What the job does with each row's answer.")
    input: InputConfig
    prompt: PromptConfig
    model: str | None = None
    models: list[str] | None = Field(None, min_length=1, description="evaluation: several models")
    params: dict[str, Any] = Field(default_factory=dict, description="Passed into each body.")
    gold_column: str | None = Field(None, description="Score answers against this column.")
    reference_column: str | None = Field(None, description="evaluation/summarization reference.")
    api: ApiConfig | None = None
    batch: BatchSettings = Field(default_factory=BatchSettings)
    output: OutputConfig = Field(default_factory=OutputConfig)
    schedule: ScheduleConfig | None = Field(None, description="For tablebatch deploy.")
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    pricing: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="Prices of models the price table lacks (or overrides), by model name, "
        "e.g. a self-hosted one at 0.",
    )

    @model_validator(mode="before")
    @classmethod
    def _keys_of_another_kind(cls, data: Any) -> Any:
        """A key of another kind is named as such, not as a typo."""
        if not isinstance(data, dict):
            return data
        for key in list(data):
            if key in cls.model_fields:
                continue
            owner = next((c for c in CONFIGS.values() if key in c.own_keys()), None)
            if owner is not None and data[key] is None:
                data = {k: v for k, v in data.items() if k != key}  # unset: as if not there
            elif owner is not None:
                own = owner.own_keys()
                verb = "is" if len(own) == 1 else "are"
                raise ValueError(
                    f"{' and '.join(own)} {verb} for kind: {owner.kind_name()}, not "
                    f"{data.get('kind')}"
                )
        return data

    @classmethod
    def own_keys(cls) -> list[str]:
        """The keys of this kind's config that other kinds do not have."""
        return [k for k in cls.model_fields if k not in JobConfig.model_fields]

    @classmethod
    def kind_name(cls) -> str:
        """The ``kind:`` of this config class."""
        return cls.kind_class.name

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not JOB_NAME.match(value):
            raise ValueError(
                "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        return value

    @field_validator("params")
    @classmethod
    def _check_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted({"model", "messages"} & set(value))
        if reserved:
            raise ValueError(f"{', '.join(reserved)} cannot be set in params")
        return value

    @model_validator(mode="after")
    def _check_models(self) -> JobConfig:
        if (self.model is None) == (self.models is None):
            raise ValueError("give exactly one of model (a name) or models (a list, evaluation)")
        if self.models is not None:
            if not self.several_models:
                raise ValueError("models (several) is for kind: evaluation; use model")
            if len(set(self.models)) != len(self.models):
                raise ValueError("models repeats a name")
        check_params(self.params, self.api.provider if self.api else "seed")  # jobs/params.py
        return self

    @model_validator(mode="after")
    def _check_budget(self) -> JobConfig:
        anthropic = self.api is not None and self.api.provider == "anthropic"  # has a default
        bounded = any(self.params.get(k) for k in ("max_tokens", "max_completion_tokens"))
        if self.budget.max_cost is not None and not (bounded or anthropic):
            raise ValueError(
                "budget.max_cost needs an answer's worst case: set params.max_tokens (e.g. "
                "max_tokens: 256), or remove budget.max_cost"
            )
        return self

    # -- derived -------------------------------------------------------------------

    @property
    def kind_impl(self) -> Kind:
        """The job's kind: what it adds to requests, reads from answers and reports."""
        return self.kind_class(self)

    @property
    def model_names(self) -> list[str]:
        """The models the job runs (one, or several for evaluation)."""
        return list(self.models) if self.models else [self.model or ""]

    def input_keys(self) -> list[tuple[str, str]]:
        """``(config key, column)`` of every input column the job reads but the id: its
        prompt's placeholders, gold and reference, and what its kind reads."""
        own = self.kind_impl.placeholders()  # filled by the kind, not read from the table
        wanted = [
            ("prompt.template", f) for f in template_fields(self.prompt.template) if f not in own
        ]
        if self.prompt.system:
            system = template_fields(self.prompt.system)
            wanted += [("prompt.system", f) for f in system if f not in own]
        for key in ("gold_column", "reference_column"):
            column = getattr(self, key)
            if column:
                wanted.append((key, column))
        return wanted + self.kind_impl.input_keys()

    def columns_needed(self) -> list[str]:
        """Input columns the job reads: id, placeholders, gold and reference, its kind's."""
        needed = [self.input.id_column, *(column for _, column in self.input_keys())]
        return list(dict.fromkeys(needed))

    def fingerprint(self, model: str, judged_model: str | None = None) -> str:
        """A short hash of what shapes the requests to ``model``: a changed prompt or
        parameter makes new batches instead of mixing answers to two prompts. For a second
        stage (a judge), ``judged_model`` names the model whose answers it reads."""
        shape: dict[str, Any] = {
            "system": self.prompt.system,
            "template": self.prompt.template,
            "model": model,
            "params": self.params,
            "id": self.input.id_column,
        }
        kind = self.kind_impl
        extra = {
            "body": kind.body(),
            "placeholders": kind.placeholders(),
            "examples": kind.example_messages(),
        }
        shape |= {k: v for k, v in extra.items() if v}  # none of them: as before kinds had them
        if self.prompt.cache:  # marks change what is sent
            shape["cache"] = True
        if judged_model is not None:
            shape |= {"judged": self.fingerprint(judged_model), **self.kind_impl.stage_shape()}
        return hashlib.sha256(orjson.dumps(shape, option=orjson.OPT_SORT_KEYS)).hexdigest()[:8]
