"""schemathesis against the real server: the OpenAPI document tells the truth (issue 20).

``schemathesis run --checks all`` over every route of the seed API and the three
dialects, against a server on port 0 with a key, a fixed seed and a bounded
number of examples, through all its phases (coverage, fuzzing, and stateful runs
along the document's links). What a JSON Schema cannot state is in
``schemathesis.toml`` and ``schemathesis_hooks.py`` beside this file, each with
its reason. The run takes about a minute.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tablebatch.server import ServerSettings, serve_in_thread
from tablebatch.server.settings import DialectLimits, ServerLimits

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
KEY = "sk-schemathesis"
SEED = 20
EXAMPLES = 8


def schemathesis_command(url: str) -> list[str]:
    """The command: the CLI beside this interpreter, all checks, a fixed seed."""
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli is not None, "schemathesis is not installed: pip install -e '.[test]'"
    return [
        cli,
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "-H",
        f"Authorization: Bearer {KEY}",
        "--seed",
        str(SEED),
        "--max-examples",
        str(EXAMPLES),
        "--workers",
        "1",
        "--no-color",
    ]


@pytest.mark.timeout(600)
def test_schemathesis_finds_nothing_on_any_route(tmp_path: Path) -> None:
    # small call limits, so that the coverage phase's boundary cases (maxItems) stay small
    settings = ServerSettings(
        api_keys=[KEY],
        limits=ServerLimits(max_requests_per_call=5),
        dialect_limits=DialectLimits(anthropic_max_requests=5),
    )
    with serve_in_thread(settings) as server:
        operations = sum(
            len(item)
            for item in httpx.get(server.base_url + "/openapi.json").json()["paths"].values()
        )
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "TABLEBATCH_SCHEMATHESIS_KEY": KEY,
            "NO_COLOR": "1",
        }
        run = subprocess.run(
            schemathesis_command(server.base_url),
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=540,
            stdin=subprocess.DEVNULL,
        )
    out = run.stdout + run.stderr
    summary = [line for line in out.splitlines() if re.match(r"^=+ .* in [\d.]+s =+$", line)]
    print(out[out.find("SUMMARY") - 40 :])
    assert run.returncode == 0, out[-20_000:]
    assert summary and "failure" not in summary[-1] and "error" not in summary[-1], out[-5000:]
    assert f"Selected: {operations}/{operations}" in out and f"Tested: {operations}" in out
    assert re.search(r"(\d+) generated, \1 passed", out), out[-5000:]
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅ {phase}", out), out[-5000:]
