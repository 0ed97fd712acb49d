"""``tablebatch plan``: what a run would send (rows, requests, batches, tokens, cost); it
sends nothing."""

from __future__ import annotations

import argparse
from typing import Any

from flows.cli.common import config_arguments, config_file, error


def cmd_plan(args: argparse.Namespace) -> int:
    """Show what a run would send, and send nothing."""
    from tablebatch.api.dialects import limits_of
    from tablebatch.jobs.build import within_limits
    from tablebatch.jobs.config import load_config, project_root
    from tablebatch.jobs.cost import Estimate, max_completion, mean_completion
    from tablebatch.jobs.errors import JobError
    from tablebatch.jobs.plan import plan_batches, plan_requests
    from tablebatch.jobs.preflight import read_input
    from tablebatch.jobs.prices import load_prices
    from tablebatch.jobs.tokens import counter_for, request_tokens

    if args.show < 0:
        error(f"--show {args.show}: give a number of requests, 0 or more")
        return 2
    try:
        config_path = config_file(args.config)
        config = load_config(config_path, args.set)
        checked = read_input(config, config_path)
        prices = load_prices(project_root(config_path), config)
    except JobError as exc:
        error(exc)
        return 2
    table, ids, path = checked.table, checked.ids, checked.path
    provider = config.api.provider if config.api else "seed"
    if config.api is None or config.api.is_local:
        backend = (config.api.backend if config.api else None) or "offline"
        api = f"a local server ({backend} backend), in the {provider} dialect"
    else:
        api = f"{config.api.base_url} ({provider})"
    config = within_limits(config, limits_of(provider))  # shards fit the provider's batches
    print(f"{config.name} ({config.kind}): {table.num_rows} rows from {path}")
    print(f"  API: {api}")
    counter = counter_for(config)
    estimates: list[Estimate] = []
    for model in config.model_names:
        plan = plan_requests(table, config, ids, model)
        pending, earlier = plan.rows, None
        if not args.offline:  # what the API already answered is not sent again
            pending, note, earlier = _unanswered(config, config_path, plan)
            print(f"  {model}: {note}")
        batches: list[tuple[str, int, int]] = []
        requests = tokens = total_bytes = 0
        for planned in plan_batches(plan, config, rows=pending):  # as a run's shards do
            piece = planned.requests
            batches.append((planned.name, len(piece), piece.nbytes))
            requests += len(piece)
            tokens += sum(request_tokens(counter, piece))
            total_bytes += piece.nbytes
        print(
            f"  {model}: {requests} request(s), {len(plan.skipped)} skipped, "
            f"{len(batches)} batch(es), ~{tokens} prompt tokens, {total_bytes} bytes"
        )
        for name, count, nbytes in batches:
            print(f"    {name}: {count} requests, {nbytes} bytes")
        for custom_id, reason in list(plan.skipped.items())[:5]:
            print(f"    skipped {custom_id}: {reason}")
        mean = mean_completion(earlier) if earlier is not None else None
        guess = Estimate(
            model, requests, tokens, counter.name, prices.get(model), max_completion(config), mean
        )
        estimates.append(guess)
    second = config.kind_impl.second_stage()
    if second is not None:
        print(f"  then a {second.stage} batch per model to {second.model}")
    _print_cost(config, estimates, prices, second is not None)
    if args.show:
        _show(checked, args.show)
    print("Nothing was sent.")
    return 0


def _print_cost(config: Any, estimates: list[Any], prices: Any, judged: bool) -> None:
    """The estimate's cost lines: prompt and completion tokens, batch and real-time cost,
    the cap, and how to give a missing price."""
    from tablebatch.jobs.cost import add, money, raised_cap
    from tablebatch.jobs.prices import describe, price_hint

    cur = prices.currency
    total: float | None = 0.0
    worst: float | None = 0.0
    realtime: float | None = 0.0
    for e in estimates:
        if e.max_completion is None:
            bound = "no upper bound (params.max_tokens is not set)"
        else:
            bound = f"at most {e.worst_completion_tokens} ({e.max_completion} a request)"
        likely = (
            f"likely {e.completion_tokens} ({e.mean_completion:.1f} a request, the mean of "
            "earlier answers); "
            if e.mean_completion is not None
            else ""
        )
        print(f"  {e.model}: completion tokens: {likely}{bound}")
        price = describe(e.price) if e.price is not None else price_hint(e.model)
        print(f"  {e.model}: price: {price}")
        print(
            f"  {e.model}: cost: ~{money(e.cost(), cur)} at batch prices, "
            f"~{money(e.cost(batch=False), cur)} at real-time prices"
            + (
                f" (at most {money(e.cost(worst=True), cur)})"
                if e.mean_completion is not None
                else ""
            )
        )
        total = add(total, e.cost())
        worst = add(worst, e.cost(worst=True))
        realtime = add(realtime, e.cost(batch=False))
    counted = estimates[0].counter if estimates else "the 4-characters rule"
    print(
        f"  estimate: ~{money(total, cur)} at batch prices (~{money(realtime, cur)} real-time); "
        f"prompt tokens counted with {counted}"
        + ("; the judge's batches are not in it" if judged else "")
    )
    cap = config.budget.max_cost
    if cap is not None:
        if total is None:
            verdict = "cannot be checked (a price is unknown): a run is refused"
        elif total > cap:
            verdict = (
                f"the estimate is over it: a run is refused (raise it with --set "
                f"budget.max_cost={raised_cap(total)})"
            )
        else:
            verdict = "the estimate is within it"
        print(f"  budget.max_cost {money(cap, cur)}: {verdict}")


def _unanswered(config: Any, config_path: Any, plan: Any) -> tuple[Any, str, Any]:
    """The rows of ``plan`` whose request has no answer on the job's API yet (asked as a run
    would, changing nothing), a line saying what was found, and the answers found."""
    from flows.clients import open_client
    from tablebatch.api import BatchApiError
    from tablebatch.jobs.config import project_root
    from tablebatch.jobs.discover import discover, unanswered
    from tablebatch.jobs.result_cache import ResultCache, cache_folder
    from tablebatch.jobs.submit import StageRun

    root = project_root(config_path)
    api = config.api
    if (api is None or api.is_local) and not (root / ".tablebatch" / "server.db").exists():
        return plan.rows, "no earlier run on the local server: every request is new", None
    cache = ResultCache(cache_folder(root, config.name))  # read only what a run kept
    run = StageRun(config, "answer", plan.model, config.fingerprint(plan.model), cache=cache)
    try:
        with open_client(config, root, process=False) as client:
            found = discover(client, run, plan.rows, lambda _: set(), look_only=True)
    except BatchApiError as exc:
        return plan.rows, f"could not ask the API what it answered ({exc}); counting all", None
    pending = plan.rows.select(unanswered(plan.rows.ids, found.results, run.kind.retry_invalid))
    return (
        pending,
        f"{len(plan.rows) - len(pending)} of {len(plan.rows)} distinct request(s) already "
        "answered on the API "
        f"(not sent again); {len(pending)} to send",
        found.results,
    )


def _show(checked: Any, count: int) -> None:
    """The first ``count`` requests of the first model, as they would be sent."""
    import orjson

    from tablebatch.jobs.preflight import first_requests

    config = checked.config
    shown = first_requests(checked, count)
    others = config.model_names[1:]
    to = f" (the same to {', '.join(others)} but for the model)" if others else ""
    print(f"  the first {len(shown)} request(s) to {config.model_names[0]}{to}:")
    for request in shown:
        print(f"  --- {request['custom_id']}")
        payload = request.get("body", request.get("params"))
        text = orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode()
        print("\n".join("    " + line for line in text.splitlines()))


def add_parsers(sub: Any) -> None:
    """``plan``."""
    text = "show what a run would send (rows, requests, batches, tokens); send nothing"
    command = sub.add_parser("plan", help=text, description=text)
    config_arguments(command)
    command.set_defaults(handler=cmd_plan)
    command.add_argument(
        "--show",
        type=int,
        default=0,
        metavar="N",
        help="print the first N requests (system, messages, params) exactly as they would be "
        "sent, to check a prompt before money is spent",
    )
    command.add_argument(
        "--offline",
        action="store_true",
        help="ask the API nothing: count every request, as if the job had never run",
    )
