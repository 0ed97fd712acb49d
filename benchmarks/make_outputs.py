"""Extraction and generation outputs of a million rows, with their report JSON, for the
report benchmark (``report_scale.py``): no job makes outputs of those kinds at that scale
in minutes, and the page's cost is in reading the output, not in how its answers came.

The rows are the scale job's reviews (its output's ``review_id`` and ``text``), so the
texts have the sample's lengths; the answers are drawn with a fixed seed (an extraction's
fields, 1% invalid answers with a ``parse_error``; a generation's answer, the review cut
short, with chrF/BLEU/ROUGE scores), and the report JSON is computed from the table here,
with the keys the kinds write (``tablebatch.jobs.kinds.extraction`` / ``generation``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROW_GROUP = 50_000  # as the job writes its output
SEVERITY = np.array(["low", "medium", "high"])


def _common(ids: pa.Array, status: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    n = len(ids)
    return {
        "status": pa.array(status),
        "error": pa.nulls(n, pa.string()),
        "batch_id": pa.array(np.full(n, "batch_synthetic")),
        "attempts": pa.array(np.where(status == "invalid", 3, 1).astype(np.int32)),
        "prompt_tokens": pa.array(rng.integers(60, 200, n)),
        "completion_tokens": pa.array(rng.integers(10, 60, n)),
    }


def _report(job: str, kind: str, output: Path, table: pa.Table) -> dict[str, Any]:
    counts = pc.value_counts(table["status"]).to_pylist()
    return {
        "job": job,
        "kind": kind,
        "models": ["grok-4"],
        "output": str(output),
        "input_rows": table.num_rows,
        "output_rows": table.num_rows,
        "rows_by_status": {c["values"]: c["counts"] for c in counts},
        "tokens": {
            "prompt": pc.sum(table["prompt_tokens"]).as_py(),
            "completion": pc.sum(table["completion_tokens"]).as_py(),
        },
        "batches": [{"requests": table.num_rows, "status": "completed"}],
    }


def extraction(reviews: pa.Table, output: Path) -> dict[str, Any]:
    """An extraction output (severity, refund_requested, amount; gold_severity) and its
    report."""
    rng = np.random.default_rng(18)
    n = reviews.num_rows
    status = np.where(rng.random(n) < 0.01, "invalid", "completed")
    done = status == "completed"
    severity = SEVERITY[rng.integers(0, 3, n)]
    gold = np.where(rng.random(n) < 0.8, severity, SEVERITY[rng.integers(0, 3, n)])
    refund = pc.match_substring(reviews["text"], "refund").to_numpy(zero_copy_only=False)
    amount = np.round(rng.uniform(5, 500, n), 2)
    has_amount = rng.random(n) < 0.2
    problem = "severity: 'urgent' is not one of ['low', 'medium', 'high']"
    answers = [
        f'{{"severity":"{s}","refund_requested":{str(r).lower()},"amount":{a if h else "null"}}}'
        for s, r, a, h in zip(severity, refund, amount, has_amount, strict=True)
    ]
    table = pa.table(
        {
            "review_id": reviews["review_id"],
            "text": reviews["text"],
            "gold_severity": pa.array(gold),
            "answer": pa.array(answers),
            **_common(reviews["review_id"], status, rng),
            "error": pa.array(np.where(done, "", problem), mask=done),
            "severity": pa.array(severity, mask=~done),
            "refund_requested": pa.array(refund, mask=~done),
            "amount": pa.array(amount, mask=~(done & has_amount)),
            "parse_error": pa.array(np.where(done, "", problem), mask=done),
        }
    )
    pq.write_table(table, output, row_group_size=ROW_GROUP)
    answered, invalid = int(done.sum()), int((~done).sum())
    present = amount[done & has_amount]

    def values(column: np.ndarray) -> dict[str, int]:
        keys, counts = np.unique(column[done], return_counts=True)
        order = np.argsort(-counts)
        return {str(keys[i]).lower(): int(counts[i]) for i in order}

    fields = {
        "severity": {"filled": answered, "fill_rate": 1.0, "values": values(severity)},
        "refund_requested": {"filled": answered, "fill_rate": 1.0, "values": values(refund)},
        "amount": {
            "filled": int(present.size),
            "fill_rate": present.size / answered,
            "range": {
                "min": float(present.min()),
                "max": float(present.max()),
                "mean": math.fsum(present) / present.size,
            },
        },
    }
    right = int((severity[done] == gold[done]).sum())
    report = _report("synthetic-extraction", "extraction", output, table)
    report["extraction"] = {
        "answered": answered,
        "invalid": invalid,
        "validity_rate": answered / n,
        "fields": fields,
        "gold": {
            "severity": {
                "gold_column": "gold_severity",
                "scored": answered,
                "accuracy": right / answered,
            }
        },
    }
    report["columns"] = {"id": "review_id", "inputs": ["text"], "gold": None, "reference": None}
    return report


def generation(reviews: pa.Table, output: Path) -> dict[str, Any]:
    """A generation output (the answer: the review's first characters; the reference: the whole
    review; scores drawn) and its report."""
    rng = np.random.default_rng(18)
    n = reviews.num_rows
    cut = rng.integers(0, 3, n)  # the first 60, 150 or 300 characters of the review
    answers = reviews["text"]
    for code, size in ((0, 60), (1, 150), (2, 300)):
        short = pc.utf8_slice_codeunits(reviews["text"], 0, size)
        answers = pc.if_else(pa.array(cut == code), short, answers)
    status = np.where(rng.random(n) < 0.005, "failed", "completed")
    done = status == "completed"
    scores = {
        "chrf": rng.beta(2, 3, n) * 100,
        "bleu": rng.beta(1, 4, n) * 100,
        "rouge1": rng.beta(2, 3, n),
        "rouge2": rng.beta(1, 4, n),
        "rougeL": rng.beta(2, 4, n),
    }
    table = pa.table(
        {
            "review_id": reviews["review_id"],
            "text": reviews["text"],
            "answer": pc.if_else(pa.array(done), answers, pa.scalar(None, pa.string())),
            **_common(reviews["review_id"], status, rng),
            **{k: pa.array(v, mask=~done) for k, v in scores.items()},
        }
    )
    pq.write_table(table, output, row_group_size=ROW_GROUP)
    counts = pc.count_substring_regex(answers, r"\S+").to_numpy(zero_copy_only=False)[done]
    report = _report("synthetic-generation", "generation", output, table)
    report["answer_lengths"] = {
        "count": int(counts.size),
        "mean_words": float(counts.mean()),
        "median_words": float(np.median(counts)),
        "min_words": int(counts.min()),
        "max_words": int(counts.max()),
    }
    report["scores"] = {k: float(v[done].mean()) for k, v in scores.items()}
    report["reference_column"] = "text"
    report["columns"] = {"id": "review_id", "inputs": ["text"], "gold": None, "reference": "text"}
    return report


def make(kind: str, scale_output: Path, folder: Path) -> Path:
    """The ``kind`` output made from the scale output's reviews (cached in ``folder``)."""
    output = folder / f"{kind}.parquet"
    json_path = Path(str(output) + ".report.json")
    if output.exists() and json_path.exists():
        return output
    folder.mkdir(parents=True, exist_ok=True)
    reviews = pq.read_table(scale_output, columns=["review_id", "text"])
    report = {"extraction": extraction, "generation": generation}[kind](reviews, output)
    json_path.write_bytes(orjson.dumps(report))
    return output
