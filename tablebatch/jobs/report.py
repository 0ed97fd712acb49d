"""The report of a finished run: counts, tokens, batches and attempts for every job, and
its kind's section (``Kind.report``); as data (written as JSON), as markdown (a Prefect
artifact) and as the summary printed on the terminal."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tablebatch.jobs.cost import TOKEN_COLUMNS, Tokens, add, cost_of, money
from tablebatch.jobs.join import output_types
from tablebatch.jobs.kinds import KINDS, Kind
from tablebatch.jobs.prices import PriceTable
from tablebatch.jobs.schema import JobConfig

LONG_TEXTS = ("answer", "error", "batch_id")  # output texts the report does not keep


def report_columns(chunk: pa.Table, config: JobConfig) -> pa.Table:
    """What the report needs of an output chunk: the output columns but no long text (the
    kind keeps small stand-ins, e.g. a summary's word count), so that a million rows of it
    stay small."""
    kind = config.kind_impl
    drop = {*LONG_TEXTS, *kind.long_columns()}
    keep = [n for n in output_types(config) if n in chunk.column_names and n not in drop]
    slim = chunk.select(keep)
    if "shared_with" in keep and "request_id" in keep:  # only a shared id is counted by id
        alone = pc.equal(pc.fill_null(chunk["shared_with"], 1), 0)
        every = pa.array(np.arange(chunk.num_rows))  # a take keeps only the ids it takes
        ids = chunk["request_id"].take(pc.if_else(alone, pa.scalar(None, pa.int64()), every))
        slim = slim.set_column(slim.schema.get_field_index("request_id"), "request_id", ids)
    for name, values in kind.slim(chunk).items():
        slim = slim.append_column(name, values)
    return slim


def _counts(column: pa.ChunkedArray) -> dict[Any, int]:
    """How often each value occurs (nulls left out), counted in Arrow."""
    return {
        c["values"]: c["counts"]
        for c in pc.value_counts(column).to_pylist()
        if c["values"] is not None
    }


class Requests:
    """Each output row's request as a number, so that "each request once" is a sum over
    numbers in NumPy: grouping a million request ids in Arrow (``group_by``) held some
    350 MB more at the report's peak, for two sums. Rows that share a request share its
    number; rows with no request id share one more. A row the output says is alone with
    its request (``shared_with`` 0) needs no number: its value is summed as it is, so only
    the shared ids are numbered (at a million distinct requests, 0.42 -> 0.12 s)."""

    def __init__(self, output: pa.Table) -> None:
        ids = output["request_id"]
        ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
        self.alone: np.ndarray | None = None
        if "shared_with" in output.column_names:
            alone = pc.equal(pc.fill_null(output["shared_with"], 1), 0)  # its id: not needed
            self.alone = alone.to_numpy(zero_copy_only=False)
            ids = ids.filter(pa.array(~self.alone))
        encoded = pc.dictionary_encode(ids)
        self.numbered = len(encoded.dictionary) + (1 if encoded.null_count else 0)
        self.distinct = self.numbered + (0 if self.alone is None else int(self.alone.sum()))
        self.index = pc.fill_null(encoded.indices, len(encoded.dictionary)).to_numpy()

    def once(self, values: pa.ChunkedArray | pa.Array, rows: np.ndarray | None = None) -> int:
        """The sum of ``values`` counting each request once (its largest value, as rows
        that share a request share its answer and its tokens); ``rows``: a mask of rows."""
        numbers = pc.fill_null(values, 0).to_numpy()
        total = 0
        if self.alone is not None:
            total = int(numbers[self.alone if rows is None else self.alone & rows].sum())
            numbers = numbers[~self.alone]
            rows = None if rows is None else rows[~self.alone]
        index = self.index
        if rows is not None:
            numbers, index = numbers[rows], index[rows]
        largest = np.zeros(self.numbered + 1, np.int64)
        np.maximum.at(largest, index, numbers)
        return total + int(largest.sum())


def _behind(output: pa.Table, requests: Requests | None = None) -> dict[str, int]:
    """The tokens behind the output's answers: each request once, however many rows share it."""
    if requests is None:
        return {
            "prompt": pc.sum(output.column("prompt_tokens")).as_py() or 0,
            "completion": pc.sum(output.column("completion_tokens")).as_py() or 0,
        }
    return {
        "prompt": requests.once(output["prompt_tokens"]),
        "completion": requests.once(output["completion_tokens"]),
    }


def _behind_by_model(
    output: pa.Table, config: JobConfig, requests: Requests | None = None
) -> dict[str, Tokens]:
    """The tokens behind the output's answers, by model, each request once (the answers of
    a second stage, a judge, are not in the output's rows)."""
    models = config.model_names
    by_model = "model" in output.column_names and len(models) > 1
    out: dict[str, Tokens] = {}
    for model in models:
        rows = pc.equal(output["model"], model).to_numpy(zero_copy_only=False) if by_model else None
        columns = [c for c in TOKEN_COLUMNS if c in output.column_names]
        if requests is not None:
            sums = {TOKEN_COLUMNS[c]: requests.once(output[c], rows) for c in columns}
        else:
            part = output if rows is None else output.filter(pa.array(rows))
            sums = {TOKEN_COLUMNS[c]: int(pc.sum(part[c]).as_py() or 0) for c in columns}
        out[model] = Tokens(**sums)
        if not by_model:
            break
    return out


def cost_section(
    config: JobConfig,
    output: pa.Table,
    spend: dict[str, Tokens] | None,
    prices: PriceTable,
    requests: Requests | None = None,
) -> dict[str, Any]:
    """The report's ``cost``: what this run's requests cost at batch prices (the API's token
    counts) and at real-time prices, what the answers behind the output cost (answers
    reused from earlier runs included), per output row, the cached prompt tokens, and the
    prices used. A model with no price makes its costs ``None`` (unknown), never 0."""
    spend = spend or {}
    behind = _behind_by_model(output, config, requests)
    this_run: float | None = 0.0
    realtime: float | None = 0.0
    behind_cost: float | None = 0.0
    per_model: dict[str, Any] = {}
    for model in dict.fromkeys([*config.model_names, *spend]):
        price = prices.get(model)
        used = spend.get(model, Tokens())
        entry = {
            "this_run": cost_of(used, price),
            "this_run_realtime": cost_of(used, price, batch=False),
            "tokens_this_run": used.as_dict(),
            "price": None
            if price is None
            else {
                "input": price.input,
                "cached_input": price.cached_input,
                "cache_write": price.cache_write,
                "output": price.output,
                "batch_discount": price.batch_discount,
                "source": price.source,
            },
        }
        if model in behind:
            entry["behind_output"] = cost_of(behind[model], price)
            behind_cost = add(behind_cost, entry["behind_output"])
        this_run = add(this_run, entry["this_run"])
        realtime = add(realtime, entry["this_run_realtime"])
        per_model[model] = entry
    rows = output.num_rows
    cached = sum(t.cached for t in spend.values())
    return {
        "currency": prices.currency,
        "this_run": this_run,
        "this_run_realtime": realtime,
        "behind_output": behind_cost,
        "per_output_row": None if behind_cost is None or not rows else behind_cost / rows,
        "cached_prompt_tokens": cached,
        "cache_write_tokens": sum(t.cache_write for t in spend.values()),
        "prices_as_of": prices.as_of,
        "unknown": [m for m, e in per_model.items() if e["price"] is None],
        "per_model": per_model,
    }


def _requests(
    output: pa.Table, requests: dict[str, int] | None, numbered: Requests | None
) -> dict[str, int]:
    """Rows and requests: sent by this run, found on the API (earlier runs), and
    rows that share another row's request (and so its answer)."""
    out = dict(requests or {})
    if "shared_with" in output.column_names and numbered is not None:
        sharing = pc.fill_null(output["shared_with"], 0)
        out["shared_rows"] = int(pc.sum(pc.greater(sharing, 0)).as_py() or 0)
        out["distinct"] = numbered.distinct
    return out


def build_report(
    config: JobConfig,
    table: pa.Table,
    output: pa.Table,
    batches: list[dict[str, Any]],
    output_path: str,
    requests: dict[str, int] | None = None,
    tokens_this_run: dict[str, int] | None = None,
    spend: dict[str, Tokens] | None = None,
    prices: PriceTable | None = None,
) -> dict[str, Any]:
    """Counts, tokens, batches, attempts and the kind's metrics of a finished run
    (``output``: the report's columns of every output row; ``requests``: what the run sent
    and what it found already on the API; ``tokens_this_run``: what this run's requests
    used, where ``tokens`` is what the output's answers took, each request once;
    ``spend``: this run's tokens by model, priced with ``prices`` in ``cost``)."""
    numbered = Requests(output) if "request_id" in output.column_names else None
    report: dict[str, Any] = {
        "job": config.name,
        "kind": config.kind,
        "models": config.model_names,
        "output": output_path,
        "input_rows": table.num_rows,
        "output_rows": output.num_rows,
        "rows_by_status": _counts(output.column("status")),
        "requests": _requests(output, requests, numbered),
        "tokens": _behind(output, numbered),
        "tokens_this_run": tokens_this_run,
        "attempts": {str(k): v for k, v in sorted(_counts(output.column("attempts")).items())},
        "batches": batches,
    }
    if tokens_this_run is None:
        del report["tokens_this_run"]
    if prices is not None:
        report["cost"] = cost_section(config, output, spend, prices, numbered)
    report |= config.kind_impl.report(table, output)
    return report


def report_markdown(report: dict[str, Any]) -> str:
    """The report as markdown, for the Prefect artifact and the terminal."""
    lines = [
        f"# {report['job']} ({report['kind']})",
        "",
        f"Output: `{report['output']}` — {report['output_rows']} rows from "
        f"{report['input_rows']} input rows.",
        "",
        "| status | rows |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(report["rows_by_status"].items())],
        "",
        f"Tokens: {report['tokens']['prompt']} prompt, {report['tokens']['completion']} "
        f"completion. Attempts: "
        + ", ".join(f"{v} row(s) in {k}" for k, v in report["attempts"].items())
        + f". Batches: {len(report['batches'])}.",
    ]
    kind = _kind(report)
    if kind is not None:
        lines += kind.markdown(report)
    return "\n".join(lines) + "\n"


def _kind(report: dict[str, Any]) -> type[Kind] | None:
    """The report's kind (None when it is not registered here)."""
    return KINDS.get(report.get("kind", ""))


def summary_text(report: dict[str, Any]) -> str:
    """The run's summary for the terminal: rows, tokens, batches, its kind's headline
    metrics, and where the output and the report are."""
    by_status = ", ".join(f"{v} {k}" for k, v in sorted(report["rows_by_status"].items()))
    lines = [
        f"{report['job']}: {report['output_rows']} rows ({by_status}); "
        f"{report['tokens']['prompt'] + report['tokens']['completion']} tokens in "
        f"{len(report['batches'])} batch(es)",
    ]
    requests = report.get("requests") or {}
    if "sent" in requests:
        spent = report.get("tokens_this_run") or {}
        shared = requests.get("shared_rows", 0)
        lines.append(
            f"  this run sent {requests['sent']} request(s) ({sum(spent.values())} tokens); "
            f"{requests['found']} found on the API from earlier runs (not sent again)"
            + (f"; {shared} row(s) share an identical request" if shared else "")
        )
    cost = report.get("cost")
    if cost:
        lines.append(cost_line(cost))
    kind = _kind(report)
    if kind is not None:
        lines += kind.summary(report)
    lines.append(f"  output: {report['output']}")
    lines.append(f"  report: {report['output']}.report.json")
    if os.path.exists(f"{report['output']}.report.html"):
        lines.append(f"  html:   {report['output']}.report.html")
    return "\n".join(lines)


def cost_line(cost: dict[str, Any]) -> str:
    """The summary's cost line: this run at batch prices (and real-time), behind the output,
    per row, cached tokens; "unknown" for a model with no price."""
    currency = cost.get("currency", "USD")
    line = (
        f"  cost: this run {money(cost['this_run'], currency)} at batch prices "
        f"({money(cost['this_run_realtime'], currency)} at real-time); behind the output "
        f"{money(cost['behind_output'], currency)}"
    )
    if cost.get("per_output_row") is not None:
        line += f", {money(cost['per_output_row'], currency)} a row"
    if cost.get("cached_prompt_tokens"):
        line += f"; {cost['cached_prompt_tokens']} prompt tokens from the cache"
    if cost.get("unknown"):
        line += f" (no price for {', '.join(cost['unknown'])}: see prices.yaml)"
    return line


def table_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report as rows of a table (the kind's, else rows by status)."""
    kind = _kind(report)
    rows = kind.table_rows(report) if kind is not None else None
    if rows is not None:
        return rows
    return [{"status": k, "rows": v} for k, v in sorted(report["rows_by_status"].items())]
