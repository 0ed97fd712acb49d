"""The bad-input corpus (tests/corpus/bad_inputs.yaml) through `tablebatch run`."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.settings import PREFECT_API_URL

CORPUS = yaml.safe_load((Path(__file__).parents[1] / "corpus/bad_inputs.yaml").read_text())
KEY = "sk-corpus-5d1e"


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _write(path: Path, content: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, dict) and "latin1" in content:
        path.write_bytes(content["latin1"].encode("latin-1"))
    elif isinstance(content, dict):
        path.write_bytes(bytes.fromhex(content["hex"]))
    else:
        path.write_text(content, encoding="utf-8")


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS["cases"]) >= 30
    assert len({c["name"] for c in CORPUS["cases"]}) == len(CORPUS["cases"])


@pytest.mark.parametrize("case", CORPUS["cases"], ids=[c["name"] for c in CORPUS["cases"]])
def test_bad_input(case: dict[str, Any], tmp_path: Path, server_factory) -> None:
    (tmp_path / "pyproject.toml").write_text("")
    for name, content in {**CORPUS["base_files"], **case.get("files", {})}.items():
        _write(tmp_path / name, content)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    server = None
    if case.get("api"):
        server = server_factory(api_keys=[KEY], models=["grok-4"])
        env["CORPUS_KEY"] = case.get("key", KEY)
        case = (
            _merge(case, {"config": {"api": {"base_url": server.url}}})
            if "base_url" not in (case["config"].get("api") or {})
            else case
        )
    config = tmp_path / "configs/job.yaml"
    config.parent.mkdir()
    if "config_text" in case:
        config.write_text(case["config_text"])
    else:
        config.write_text(yaml.safe_dump(_merge(CORPUS["base"], case.get("config", {}))))
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "configs/job.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == case.get("exit", 2), result.stderr[-2000:]
    assert case["expect"] in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / ".tablebatch").exists()  # no local server was ever started
    assert not (tmp_path / "pwned").exists()
    if server is not None:
        store = server.app.state.store
        assert all(b.request_count == 0 for b in store.list_batches(100, None, None, None)[0])
