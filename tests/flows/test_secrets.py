"""The API key never shows: not in logs (local or sent to Prefect), artifacts, outputs,
reports or exception text, after a good run and after a failing one."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from flows.job import batch_job
from tablebatch.api import AuthenticationError

KEY = "sk-scan-7c0ffee-Q1w2E3"
WRONG = "sk-wrong-9dead-Z8x7C6"


def _everything_prefect_saw(state) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
        run = client.read_flow_run(run_id)
    return "\n".join(
        [
            *(log.message for log in logs),
            *(str(a.data) for a in artifacts),
            str(run.parameters),
            str(state),
        ]
    )


def test_the_key_is_nowhere(project, server_factory, monkeypatch, caplog, tmp_path) -> None:
    caplog.set_level("DEBUG")
    server = server_factory(api_keys=[KEY])
    config = project(
        {
            "name": "secret-scan",
            "kind": "classification",
            "input": {"path": "data/r.csv", "id_column": "id"},
            "prompt": {"template": "Is this positive or negative?\n\n{text}"},
            "model": "grok-4",
            "labels": ["positive", "negative"],
            "api": {"base_url": server.url, "api_key_env": "TB_SCAN_KEY", "max_retries": 1},
        },
        {"data/r.csv": "id,text\na,I love it\nb,It broke\n"},
    )
    monkeypatch.setenv("TB_SCAN_KEY", KEY)
    state = batch_job(str(config), return_state=True)
    assert state.is_completed()
    seen = [_everything_prefect_saw(state), caplog.text]
    output = tmp_path / "data/output/secret-scan.parquet"
    seen.append(json.dumps(pq.read_table(output).to_pylist()))
    seen.append((tmp_path / "data/output/secret-scan.parquet.report.json").read_text())
    seen.append((tmp_path / "data/output/secret-scan.parquet.report.html").read_text())
    seen.append(output.read_bytes().decode("latin-1"))
    for text in seen:
        assert KEY not in text

    caplog.clear()
    monkeypatch.setenv("TB_SCAN_KEY", WRONG)
    state = batch_job(str(config), return_state=True, settings=["name=secret-scan-2"])
    assert state.is_failed()
    with pytest.raises(AuthenticationError) as info:
        state.result()
    for text in (_everything_prefect_saw(state), caplog.text, str(info.value), repr(info.value)):
        assert WRONG not in text and KEY not in text
    assert "$TB_SCAN_KEY" in str(info.value)
