"""``tablebatch demo``: one table through the local Batch API server, shown step by step.

It reads the sample config's table, renders one chat request per row, and walks
the whole Batch API against a local server on a free port: create, add, start,
poll, page the results. It is a guided tour of what a job does, with plain
httpx calls; ``tablebatch run`` is the job itself.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pyarrow.csv as pacsv
import yaml

from tablebatch.server import ServerSettings, serve_in_thread


def _requests(config: dict, rows: list[dict]) -> list[dict]:
    prompt = config["prompt"]
    model = config["model"]
    params = config.get("params") or {}
    id_column = config["input"]["id_column"]
    out = []
    for row in rows:
        messages = []
        if prompt.get("system"):
            messages.append({"role": "system", "content": prompt["system"]})
        messages.append({"role": "user", "content": prompt["template"].format_map(row)})
        out.append(
            {
                "custom_id": f"{config['name']}-{row[id_column]}",
                "body": {"model": model, "messages": messages, **params},
            }
        )
    return out


def run_demo(config_path: str, rows: int | None = None) -> int:
    """Run the demo; returns the exit code."""
    config = yaml.safe_load(Path(config_path).read_text())
    table = pacsv.read_csv(config["input"]["path"]).to_pylist()[:rows]
    id_column = config["input"]["id_column"]
    gold = config.get("gold_column")
    requests = _requests(config, table)
    print(f"{len(table)} rows from {config['input']['path']}; starting a local Batch API server")
    with serve_in_thread(ServerSettings(faults={"processing_delay_s": 0.3})) as server:
        print(f"  server: {server.url} (offline backend: a deterministic stand-in for a model)")
        with httpx.Client(base_url=server.url, timeout=30) as http:
            batch = http.post(
                "/batches", json={"name": config["name"], "model": config["model"]}
            ).json()
            print(f"  POST /batches                       -> {batch['id']} ({batch['status']})")
            batch = http.post(f"/batches/{batch['id']}/requests", json={"requests": requests})
            batch = batch.raise_for_status().json()
            print(
                f"  POST /batches/{{id}}/requests         -> {batch['request_count']} requests "
                f"({batch['status']})"
            )
            batch = http.post(f"/batches/{batch['id']}/start").raise_for_status().json()
            print(f"  POST /batches/{{id}}/start            -> {batch['status']}")
            while batch["status"] not in ("completed", "failed", "cancelled"):
                time.sleep(0.1)
                batch = http.get(f"/batches/{batch['id']}").raise_for_status().json()
                print(
                    f"  GET  /batches/{{id}}                  -> {batch['status']}: "
                    f"{batch['completed_count']}/{batch['request_count']} done"
                )
            answers: dict[str, str] = {}
            after = None
            pages = 0
            while True:
                params = {"limit": 10, **({"after": after} if after else {})}
                page = http.get(f"/batches/{batch['id']}/results", params=params).json()
                pages += 1
                for result in page["data"]:
                    response = result.get("response") or {}
                    choice = (response.get("choices") or [{}])[0]
                    answers[result["custom_id"]] = choice.get("message", {}).get("content", "")
                if not page["has_more"]:
                    break
                after = page["data"][-1]["id"]
            print(f"  GET  /batches/{{id}}/results (x{pages})   -> {len(answers)} results\n")
    correct = 0
    print(f"{id_column:<10} {'answer':<10} {'gold':<10} text")
    for row, request in zip(table, requests, strict=True):
        got = answers.get(request["custom_id"], "")
        want = str(row.get(gold, "")) if gold else ""
        correct += got == want
        text = str(row.get("text", ""))[:60]
        print(f"{row[id_column]!s:<10} {got:<10} {want:<10} {text}")
    if gold:
        print(f"\nagreement with {gold}: {correct}/{len(table)}")
    print(f"tokens: {batch['usage']['total_tokens']}; status: {batch['status']}")
    return 0 if batch["status"] == "completed" else 1
