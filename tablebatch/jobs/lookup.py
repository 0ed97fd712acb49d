"""Finding a job from what was typed: a config path or a job's name, and, for a name that
matches nothing, the names it may have meant.

``run``, ``plan`` and ``validate`` take CONFIG|JOB as ``status`` and ``cancel`` do
(``find_job``); a name is looked up in the project's ``configs/``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

import yaml

from tablebatch.jobs.errors import ConfigError
from tablebatch.jobs.manage import find_job


def config_names(root: Path) -> list[str]:
    """The job names of the configs in ``<root>/configs/`` (unreadable ones are skipped)."""
    names = []
    for path in sorted((root / "configs").glob("*.y*ml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            names.append(data["name"])
    return names


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean x?)`` for the closest of ``known``, else the known names, else ''."""
    names = sorted(set(known))
    close = difflib.get_close_matches(name, names, n=2)
    if close:
        return f" (did you mean {' or '.join(close)}?)"
    if names:
        shown = ", ".join(names[:10]) + (" …" if len(names) > 10 else "")
        return f" (known jobs: {shown})"
    return ""


def find_config(arg: str, root: Path) -> Path:
    """The config file of CONFIG|JOB: ``arg`` as a path (as given, or under ``root``), or
    the config in ``<root>/configs/`` of the job named ``arg``; raises ``ConfigError``
    with the names it may have meant."""
    target = find_job(arg, root)
    if target.config_path is not None:
        return target.config_path
    raise ConfigError(
        f"{arg}: no such config file, and no config in {root / 'configs'} names a job "
        f"{arg!r}{did_you_mean(arg, config_names(root))}"
    )
