"""The job config: what a data team writes in ``configs/<job>.yaml``.

Every key is a contract with users. Unknown keys are errors (a typo must not be
silently ignored), and every error names the file, the key and what to change.
``load_config`` reads a file, applies ``--set key=value`` overrides and checks
it; ``ConfigError`` carries the message for the user.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import string
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tablebatch.api.providers import BASE_URLS, KEY_ENVS, Provider
from tablebatch.jobs.errors import ConfigError
from tablebatch.jobs.params import check_params

JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
OUTPUT_COLUMNS = (
    "answer",
    "status",
    "error",
    "batch_id",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
)


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


class JudgeConfig(Strict):
    """A judge model for ``scoring: judge``: it reads each answer and gives a verdict."""

    model: str
    system: str | None = (
        "You grade answers against a reference. Reply with one of: correct, incorrect."
    )
    template: str = Field(
        "Question:\n{prompt}\n\nReference answer:\n{reference}\n\nCandidate answer:\n{answer}\n\n"
        "Is the candidate answer correct or incorrect?",
        description="Placeholders: {prompt}, {answer}, {reference} and any input column.",
    )
    pass_labels: list[str] = Field(["correct"], min_length=1)
    fail_labels: list[str] = Field(["incorrect"], min_length=1)

    @field_validator("template")
    @classmethod
    def _check_template(cls, value: str) -> str:
        template_fields(value)
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


class JobConfig(Strict):
    """One job: a table, a prompt, a model, and where the answers go."""

    name: str = Field(description="Names the job, its batches and its default output.")
    kind: Literal["classification", "summarization", "evaluation"]
    input: InputConfig
    prompt: PromptConfig
    model: str | None = None
    models: list[str] | None = Field(None, min_length=1, description="evaluation: several models")
    params: dict[str, Any] = Field(default_factory=dict, description="Passed into each body.")
    labels: list[str] | None = Field(None, description="classification: the label set.")
    invalid_label: str = Field("INVALID", description="The label of an answer in no label.")
    gold_column: str | None = Field(None, description="Score answers against this column.")
    reference_column: str | None = Field(None, description="evaluation/summarization reference.")
    scoring: Literal["exact", "normalized", "contains", "regex", "judge"] = "normalized"
    judge: JudgeConfig | None = None
    api: ApiConfig | None = None
    batch: BatchSettings = Field(default_factory=BatchSettings)
    output: OutputConfig = Field(default_factory=OutputConfig)
    schedule: ScheduleConfig | None = Field(None, description="For tablebatch deploy.")

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
    def _check_kind(self) -> JobConfig:
        if (self.model is None) == (self.models is None):
            raise ValueError("give exactly one of model (a name) or models (a list, evaluation)")
        if self.models is not None:
            if self.kind != "evaluation":
                raise ValueError("models (several) is for kind: evaluation; use model")
            if len(set(self.models)) != len(self.models):
                raise ValueError("models repeats a name")
        if self.kind == "classification":
            if not self.labels or len(self.labels) < 2:
                raise ValueError("classification needs labels: a list of at least two")
            if len({label.strip().lower() for label in self.labels}) != len(self.labels):
                raise ValueError("labels repeats a label (case is ignored)")
            if self.invalid_label in self.labels:
                raise ValueError("invalid_label must not be one of labels")
        elif self.labels is not None:
            raise ValueError(f"labels is for kind: classification, not {self.kind}")
        if self.kind == "evaluation" and not self.reference_column:
            raise ValueError("evaluation needs reference_column: the column with right answers")
        if self.scoring == "judge" and self.judge is None:
            raise ValueError("scoring: judge needs a judge section (model, template)")
        if self.kind != "evaluation" and ("scoring" in self.model_fields_set or self.judge):
            raise ValueError("scoring and judge are for kind: evaluation")
        check_params(self.params, self.api.provider if self.api else "seed")  # jobs/params.py
        return self

    # -- derived -------------------------------------------------------------------

    @property
    def model_names(self) -> list[str]:
        """The models the job runs (one, or several for evaluation)."""
        return list(self.models) if self.models else [self.model or ""]

    def columns_needed(self) -> list[str]:
        """Input columns the job reads: id, placeholders, gold and reference."""
        needed = [self.input.id_column, *template_fields(self.prompt.template)]
        if self.prompt.system:
            needed += template_fields(self.prompt.system)
        for column in (self.gold_column, self.reference_column):
            if column:
                needed.append(column)
        if self.judge is not None:
            extra = set(template_fields(self.judge.template)) - {"prompt", "answer", "reference"}
            needed += sorted(extra)
        return list(dict.fromkeys(needed))

    def fingerprint(self, model: str, judged_model: str | None = None) -> str:
        """A short hash of what shapes the requests to ``model``: a changed prompt or
        parameter makes new batches instead of mixing answers to two prompts. For a judge,
        ``judged_model`` names the model whose answers it reads."""
        shape: dict[str, Any] = {
            "system": self.prompt.system,
            "template": self.prompt.template,
            "model": model,
            "params": self.params,
            "id": self.input.id_column,
        }
        if judged_model is not None and self.judge is not None:
            shape |= {
                "judged": self.fingerprint(judged_model),
                "judge": self.judge.model_dump(),
                "reference": self.reference_column,
            }
        return hashlib.sha256(orjson.dumps(shape, option=orjson.OPT_SORT_KEYS)).hexdigest()[:8]


# -- loading -----------------------------------------------------------------------


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        inner = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        nested = [a for a in inner if issubclass(a, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return list(model.model_fields)


def describe_errors(source: str, exc: ValidationError) -> str:
    """One line per problem: ``<file>: <key>: <what is wrong>``."""
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if error["type"] == "extra_forbidden":
            known = _known_keys(JobConfig, loc)
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            message = f"unknown key{hint}; known keys here: {', '.join(known)}"
        elif error["type"] == "missing":
            message = "missing: this key is required"
        else:
            message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {key}: {message}")
    return "\n".join(lines)


def _set_value(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def _set(data: dict[str, Any], dotted: str, raw: str) -> None:
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {dotted}={raw}: not a YAML value ({exc})") from None
    _set_value(data, dotted, value)


def parse_config(
    data: Any,
    source: str,
    overrides: list[str] | None = None,
    updates: dict[str, Any] | None = None,
) -> JobConfig:
    """Check a config's data; ``source`` names it in errors.

    ``overrides`` are ``key=value`` strings (YAML values, as ``--set``); ``updates``
    maps dotted keys to values already typed (as the flow's typed parameters)."""
    if data is None:
        raise ConfigError(f"{source}: the file is empty; see configs/ for examples")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the config must be a mapping of keys, not {type(data).__name__}"
        )
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: write key=value, e.g. --set batch.max_requests=500")
        _set(data, key.strip(), value)
    for key, value in (updates or {}).items():
        _set_value(data, key, value)
    try:
        return JobConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_errors(source, exc)) from None


def load_config(
    path: str | Path, overrides: list[str] | None = None, updates: dict[str, Any] | None = None
) -> JobConfig:
    """Read and check a YAML job config (see ``parse_config`` for the overrides)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(data, str(path), overrides, updates)


def project_root(config_path: str | Path) -> Path:
    """The directory relative paths in a config resolve against: the nearest folder above
    the config holding ``pyproject.toml`` or ``.git``, else the config's own folder."""
    start = Path(config_path).resolve().parent
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").exists() or (folder / ".git").exists():
            return folder
    return start
