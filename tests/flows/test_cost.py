"""Money (issue 17), end to end on a real Prefect engine and the real local server: what
``tablebatch plan`` estimates and what a run then cost in every dialect, the cap
(``budget.max_cost``) refusing a run before anything is sent and stopping one mid-way, an
unknown model's cost, and a project's own prices."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flows.cli import main
from flows.job import batch_job
from tablebatch.api import BatchClient
from tablebatch.jobs.cost import money
from tablebatch.jobs.errors import JobFailed
from tests.flows.configs import sentiment_job

PROVIDERS = ("seed", "xai", "openai", "anthropic")
GROK_4 = (3.00, 15.00, 0.5)  # tablebatch/data/prices.yaml: input, output, batch discount
WORDS = ["great", "terrible", "fine", "broken", "lovely", "awful"]


def _reviews(n: int) -> str:
    lines = ["id,text"] + [
        f"r{i:03d},Review {i}: {WORDS[i % 6]} and {WORDS[i * 5 % 6]} - said customer {i}"
        for i in range(n)
    ]
    return "\n".join(lines) + "\n"


def _job(name: str, **extra: object) -> dict:
    """The sentiment job over ``_reviews`` (ids in ``id``)."""
    ids = {"path": "data/reviews.csv", "id_column": "id"}
    return sentiment_job(name, **{"input": ids, **extra})


def _plan(capsys, config: Path, *args: str) -> str:
    capsys.readouterr()
    assert main(["plan", str(config), *args]) == 0
    return capsys.readouterr().out


def _batch_cost(prompt: int, completion: int, price=GROK_4) -> float:
    return (prompt * price[0] + completion * price[1]) / 1e6 * (1 - price[2])


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_plan_estimates_and_the_run_reports_what_it_cost(project, capsys, provider) -> None:
    config = project(
        _job(f"cost-{provider}", api={"provider": provider, "base_url": "local"}),
        {"data/reviews.csv": _reviews(20)},
    )
    out = _plan(capsys, config, "--offline")
    estimated = int(re.search(r"~(\d+) prompt tokens", out).group(1))
    assert "completion tokens: at most 320 (16 a request)" in out
    assert "prompt tokens counted with the 4-characters rule" in out
    worst = _batch_cost(estimated, 320)
    assert f"cost: ~{money(worst)} at batch prices, ~{money(worst * 2)} at real-time" in out

    report = batch_job(str(config))
    cost, spent = report["cost"], report["cost"]["per_model"]["grok-4"]["tokens_this_run"]
    # the offline backend counts a prompt by the same rule: the estimate is exact here
    assert spent["prompt"] == estimated
    assert 0 < spent["completion"] <= 320
    assert cost["this_run"] == pytest.approx(_batch_cost(spent["prompt"], spent["completion"]))
    assert cost["this_run_realtime"] == pytest.approx(cost["this_run"] * 2)
    assert cost["behind_output"] == pytest.approx(cost["this_run"])
    assert cost["per_output_row"] == pytest.approx(cost["this_run"] / 20)
    assert cost["currency"] == "USD" and cost["prices_as_of"] == "2026-11-06"
    assert cost["cached_prompt_tokens"] == 0  # the local server caches nothing
    written = pq.read_table(Path(report["output"]))
    assert written.column("cached_tokens").to_pylist() == [0] * 20

    # a re-run sends nothing: it costs nothing, and the output's answers cost the same
    again = batch_job(str(config))
    assert again["cost"]["this_run"] == 0
    assert again["cost"]["behind_output"] == pytest.approx(cost["behind_output"])
    # the plan's likely completion is now the mean of the earlier answers
    rerun = _plan(capsys, config, "--set", "model=grok-4")
    assert "20 of 20 distinct request(s) already answered" in rerun
    assert "0 request(s), 0 skipped" in rerun and "estimate: ~$0.00 at batch prices" in rerun


def test_a_run_over_its_cap_is_refused_before_anything_is_sent(
    project, server_factory, monkeypatch, capsys
) -> None:
    server = server_factory()
    monkeypatch.setenv("TB_ANY_KEY", "any")
    config = project(
        _job(
            "capped",
            api={"base_url": server.url, "api_key_env": "TB_ANY_KEY"},
            budget={"max_cost": 0.0001},
        ),
        {"data/reviews.csv": _reviews(30)},
    )
    out = _plan(capsys, config)
    assert "budget.max_cost $0.000100: the estimate is over it: a run is refused" in out

    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert "over budget.max_cost $0.000100. Nothing was sent." in err
    assert "--set budget.max_cost=" in err and "Traceback" not in err
    with BatchClient(server.url) as client:
        assert list(client.iter_batches()) == []  # the server got nothing
    assert not (config.parent.parent / "data/output/capped.parquet").exists()


def test_the_cap_stops_sending_mid_run_and_a_higher_cap_sends_only_the_rest(
    project, tmp_path, capsys
) -> None:
    from tablebatch.io import read_table
    from tablebatch.jobs.build import check_table
    from tablebatch.jobs.config import load_config
    from tablebatch.jobs.plan import build_requests
    from tablebatch.jobs.tokens import FourChars, request_tokens

    api = {"base_url": "local"}
    batch = {"max_requests": 8, "concurrency": 1}
    first = project(_job("midway", api=api, batch=batch), {"data/reviews.csv": _reviews(8)})
    batch_job(str(first))  # 8 rows answered: their mean completion is the likely figure
    earlier = pq.read_table(tmp_path / "data/output/midway.parquet")
    mean = sum(earlier.column("completion_tokens").to_pylist()) / 8
    (tmp_path / "data/reviews.csv").write_text(_reviews(48))  # the table grew by 40 rows

    job = load_config(first)
    table = read_table(str(tmp_path / "data/reviews.csv"), string_columns=["id"])
    plan = build_requests(table, job, check_table(table, job, "x"), "grok-4")
    counts = request_tokens(FourChars(), plan.items)
    prompts = dict(zip(plan.items.ids.to_pylist(), counts, strict=True))
    answered = set(earlier.column("request_id").to_pylist())
    new = [p for c, p in prompts.items() if c not in answered]
    likely = _batch_cost(sum(new), round(mean * len(new)))
    worst_shard = _batch_cost(sum(new) * 8 // len(new), 16 * 8)
    likely_shard = likely / 5
    cap = likely + (worst_shard - likely_shard) / 2  # the estimate fits; the last shard not
    out = _plan(capsys, first, "--set", f"budget.max_cost={cap}")
    assert "the estimate is within it" in out

    with pytest.raises(JobFailed, match=r"budget.max_cost \$[0-9.]+ reached") as stopped:
        batch_job(str(first), settings=[f"budget.max_cost={cap}"])
    assert "to send the rest, raise the cap" in str(stopped.value)
    output = pq.read_table(tmp_path / "data/output/midway.parquet")
    status = output.column("status").to_pylist()
    kept_back = status.count("cancelled")
    assert 0 < kept_back < 40 and status.count("completed") == 48 - kept_back
    errors = {
        e
        for e, s in zip(output.column("error").to_pylist(), status, strict=True)
        if s == "cancelled"
    }
    assert len(errors) == 1 and errors.pop().startswith("not sent: budget.max_cost")

    report = batch_job(str(first), settings=["budget.max_cost=1.0"])
    assert report["rows_by_status"] == {"completed": 48}
    assert report["requests"]["sent"] == kept_back  # only the rest
    assert report["requests"]["found"] == 48 - kept_back


def test_an_unknown_model_costs_unknown_and_plan_says_how_to_price_it(project, capsys) -> None:
    config = project(
        _job("unknown", model="my-own-model", api={"base_url": "local"}),
        {"data/reviews.csv": _reviews(6)},
    )
    out = _plan(capsys, config, "--offline")
    assert "cost: ~unknown at batch prices, ~unknown at real-time prices" in out
    assert "no price is known for model 'my-own-model': give it in the config (pricing:" in out
    assert "prices.yaml at the project's root" in out
    report = batch_job(str(config))
    cost = report["cost"]
    assert cost["this_run"] is None and cost["behind_output"] is None  # unknown, never 0
    assert cost["unknown"] == ["my-own-model"]
    from tablebatch.jobs.report import summary_text

    assert "cost: this run unknown at batch prices" in summary_text(report)

    capped = project(
        _job("unknown-capped", model="my-own-model", budget={"max_cost": 5.0}),
        {"data/reviews.csv": _reviews(6)},
    )
    assert main(["run", str(capped)]) == 2
    assert "the cost of this run cannot be known" in capsys.readouterr().err

    quiz = "question_id,question,answer\nq1,Red planet: Venus or Mars?,Mars\n"
    judged = project(
        {
            "name": "judged",
            "kind": "evaluation",
            "input": {"path": "data/quiz.csv", "id_column": "question_id"},
            "prompt": {"template": "{question}"},
            "models": ["grok-4"],
            "params": {"max_tokens": 16},
            "reference_column": "answer",
            "scoring": "judge",
            "judge": {"model": "my-judge"},
            "budget": {"max_cost": 5.0},
        },
        {"data/quiz.csv": quiz},
    )
    assert main(["run", str(judged)]) == 2
    err = capsys.readouterr().err
    assert "the cost of its judge cannot be known: no price is known for model 'my-judge'" in err


def test_a_project_price_file_and_a_config_price_override_the_table(
    project, tmp_path, capsys
) -> None:
    (tmp_path / "prices.yaml").write_text(
        "models:\n  grok-4: {input: 10, output: 100, batch_discount: 0.25}\n"
    )
    config = project(_job("priced", api={"base_url": "local"}), {"data/reviews.csv": _reviews(5)})
    out = _plan(capsys, config, "--offline")
    assert f"price: 10 in / 10 cached / 100 out per million, batch -25% ({tmp_path}" in out
    report = batch_job(str(config))
    spent = report["cost"]["per_model"]["grok-4"]["tokens_this_run"]
    price = (10, 100, 0.25)
    assert report["cost"]["this_run"] == pytest.approx(
        _batch_cost(spent["prompt"], spent["completion"], price)
    )
    own = project(
        _job("self-hosted", model="grok-4", pricing={"grok-4": {"input": 0, "output": 0}}),
        {"data/reviews.csv": _reviews(5)},
    )
    assert "cost: ~$0.00 at batch prices" in _plan(capsys, own, "--offline")


def test_anthropic_requests_mark_their_static_prefix_for_the_prompt_cache(project, capsys) -> None:
    job = _job("cached", api={"provider": "anthropic", "base_url": "local"})
    job["prompt"]["cache"] = True
    config = project(job, {"data/reviews.csv": _reviews(5)})
    shown = _plan(capsys, config, "--offline", "--show", "1")
    compact = "".join(shown.split())
    assert '"cache_control":{"type":"ephemeral","ttl":"1h"}' in compact
    report = batch_job(str(config))  # the local server takes the marks (and caches nothing)
    assert report["rows_by_status"] == {"completed": 5}
    assert report["cost"]["cache_write_tokens"] == 0


def test_the_ui_form_shows_the_cap() -> None:
    from prefect.utilities.callables import parameter_schema

    from flows.params import JobOverrides

    schema = parameter_schema(batch_job).model_dump()
    field = schema["definitions"]["JobOverrides"]["properties"]["max_cost"]
    assert "budget.max_cost" in field["description"]
    assert JobOverrides(max_cost=0.5).updates() == {"budget.max_cost": 0.5}


@pytest.mark.llama
@pytest.mark.timeout(300)
def test_on_the_llama_backend_the_plan_counts_prompts_with_the_models_tokenizer(
    project, capsys
) -> None:
    job = _job("llama-cost", api={"base_url": "local", "backend": "llama"})
    job["params"] = {"temperature": 0, "max_tokens": 4}
    config = project(job, {"data/reviews.csv": _reviews(5)})
    out = _plan(capsys, config, "--offline")
    assert "counted with SmolLM2-135M-Instruct's own tokenizer (llama.cpp, chat template)" in out
    estimated = int(re.search(r"~(\d+) prompt tokens", out).group(1))
    report = batch_job(str(config))
    real = report["cost"]["per_model"]["grok-4"]["tokens_this_run"]["prompt"]
    assert real > 0 and abs(estimated - real) <= 0.02 * real  # what the model read


def test_a_capped_judge_needs_a_bound_on_its_verdicts(project, capsys) -> None:
    import sqlite3

    import orjson

    from tablebatch.jobs.config import load_config

    quiz = "question_id,question,answer\nq1,Red planet: Venus or Mars?,Mars\nq2,2+2?,4\n"
    job = {
        "name": "judged-capped",
        "kind": "evaluation",
        "input": {"path": "data/quiz.csv", "id_column": "question_id"},
        "prompt": {"template": "{question}"},
        "models": ["grok-4"],
        "params": {"max_tokens": 16},
        "reference_column": "answer",
        "scoring": "judge",
        "judge": {"model": "grok-4"},
        "budget": {"max_cost": 5.0},
    }
    unbounded = project(job, {"data/quiz.csv": quiz})
    assert main(["run", str(unbounded)]) == 2
    err = capsys.readouterr().err
    assert "nothing bounds the length of its judge's answers" in err
    assert "Set judge.max_tokens" in err
    db = unbounded.parent.parent / ".tablebatch" / "server.db"
    assert not db.exists() or not sqlite3.connect(db).execute("SELECT * FROM requests").fetchall()
    # unset, the judge's shape (its fingerprint) is what it was before the key existed
    kind = load_config(unbounded).kind_impl
    assert "max_tokens" not in kind.stage_shape()["judge"]
    before = kind.second_stage().fingerprint("grok-4")
    job["judge"] = {"model": "grok-4", "max_tokens": 8}
    bounded = project(job, {"data/quiz.csv": quiz})
    assert main(["run", str(bounded)]) == 0
    bodies = [
        orjson.loads(b)
        for (b,) in sqlite3.connect(db).execute("SELECT body FROM requests").fetchall()
    ]
    verdicts = [b for b in bodies if "Candidate answer" in str(b)]
    assert verdicts and all(b.get("max_tokens") == 8 for b in verdicts)
    assert load_config(bounded).kind_impl.second_stage().fingerprint("grok-4") != before
