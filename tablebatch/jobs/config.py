"""Loading a job config: what a data team writes in ``configs/<job>.yaml``.

``load_config`` reads a file, applies ``--set key=value`` overrides and checks it
as the union of the kinds' configs, discriminated by ``kind`` (each kind's keys
and their errors live with the kind, ``tablebatch.jobs.kinds``); ``ConfigError``
carries the message for the user: one line per problem, naming the file and the key.
"""

from __future__ import annotations

import difflib
from functools import reduce
from operator import or_
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from tablebatch.io import resolve
from tablebatch.jobs import kinds
from tablebatch.jobs.errors import ConfigError
from tablebatch.jobs.rows import default_output
from tablebatch.jobs.schema import (
    CONFIGS,
    LOCAL,
    ApiConfig,
    BatchSettings,
    InputConfig,
    JobConfig,
    OutputConfig,
    PromptConfig,
    ScheduleConfig,
    Strict,
    template_fields,
)

__all__ = [
    "LOCAL",
    "ApiConfig",
    "BatchSettings",
    "ConfigError",
    "InputConfig",
    "JobConfig",
    "OutputConfig",
    "PromptConfig",
    "ScheduleConfig",
    "Strict",
    "check_run_parameters",
    "default_output",
    "describe_errors",
    "kinds",
    "load_config",
    "output_path",
    "parse_config",
    "project_root",
    "template_fields",
]

_adapters: dict[tuple[str, ...], TypeAdapter[Any]] = {}


def _adapter() -> TypeAdapter[Any]:
    """The union of every registered kind's config, discriminated by ``kind`` (built again
    when a kind is registered after the first load)."""
    key = tuple(CONFIGS)
    if key not in _adapters:
        union = reduce(or_, CONFIGS.values())
        _adapters[key] = TypeAdapter(Annotated[union, Field(discriminator="kind")])
    return _adapters[key]


def _tags() -> str:
    names = [repr(n) for n in CONFIGS]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


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


def describe_errors(source: str, exc: ValidationError, kind: object = None) -> str:
    """One line per problem: ``<file>: <key>: <what is wrong>`` (``kind``: the config's)."""
    model = CONFIGS.get(kind) if isinstance(kind, str) else None
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        if model is not None and loc[:1] == (kind,):
            loc = loc[1:]  # the union's tag: not a key of the file
        key = ".".join(str(p) for p in loc) or "(top level)"
        if error["type"] == "union_tag_invalid":
            key, message = "kind", f"Input should be {_tags()}"
        elif error["type"] == "union_tag_not_found":
            key, message = "kind", f"missing: this key is required (one of {_tags()})"
        elif error["type"] == "extra_forbidden":
            known = _known_keys(model or JobConfig, loc)
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
    root: Path | None = None,
) -> JobConfig:
    """Check a config's data; ``source`` names it in errors, ``root`` is the project folder
    that paths a kind reads while checking (a schema file) are relative to.

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
        return _adapter().validate_python(data, context={"root": root or Path.cwd()})
    except ValidationError as exc:
        raise ConfigError(describe_errors(source, exc, data.get("kind"))) from None


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
    return parse_config(data, str(path), overrides, updates, project_root(path))


def project_root(config_path: str | Path) -> Path:
    """The directory relative paths in a config resolve against: the nearest folder above
    the config holding ``pyproject.toml`` or ``.git``, else the config's own folder."""
    start = Path(config_path).resolve().parent
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").exists() or (folder / ".git").exists():
            return folder
    return start


def check_run_parameters(
    config: JobConfig, root: Path, updates: dict[str, Any] | None, settings: list[str] | None
) -> None:
    """What a run's parameters (the UI's form) may change: not the API (its URL and key
    stay as the config file says), and no path outside the project."""
    keys = set(updates or {}) | {s.partition("=")[0].strip() for s in settings or []}
    if any(k == "api" or k.startswith("api.") for k in keys):
        raise ConfigError(
            "The API (api.*) cannot be changed by a run's parameters; change it in the config file."
        )
    for key, value in (("input.path", config.input.path), ("output.path", config.output.path)):
        if key not in keys or value is None:
            continue
        target = Path(resolve(value, root)).resolve()
        if "://" in value or not target.is_relative_to(root.resolve()):
            raise ConfigError(
                f"{key} {value!r} from the run's parameters leaves the project folder {root}; "
                "parameters may only name paths inside it (the config file may name others)."
            )


def output_path(config: JobConfig, root: Path) -> str:
    """Where the output goes: ``output.path``, or ``data/output/<name>.parquet``."""
    return resolve(config.output.path or default_output(config.name), root)
