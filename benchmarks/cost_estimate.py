"""How close is ``tablebatch plan``'s prompt-token estimate to what a model really reads?

For every sample job in configs/, each request a run would send is counted three ways:
the 4-characters rule (plan's count for a model with no tokenizer here), the llama
backend's own tokenizer as plan uses it (``Llama(vocab_only=True)`` and the GGUF's chat
template, tablebatch.jobs.tokens), and the prompt tokens the llama backend's model reports
when it answers the request (llama-cpp-python's ``create_chat_completion`` usage, the
count a run on ``--backend llama`` is charged). Prints each job's totals and the percent
error of both estimates against the real count. Needs the [llama] extra.

    flock /tmp/tablebatch-bench.lock .venv/bin/python benchmarks/cost_estimate.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tablebatch.jobs.config import load_config  # noqa: E402
from tablebatch.jobs.plan import build_requests  # noqa: E402
from tablebatch.jobs.preflight import read_input  # noqa: E402
from tablebatch.jobs.tokens import FourChars, counter_for  # noqa: E402


def main() -> None:
    from llama_cpp import Llama
    from llama_cpp._utils import suppress_stdout_stderr

    from tablebatch.server.backends.llama_model import default_gguf

    with suppress_stdout_stderr(disable=False):
        model = Llama(model_path=str(default_gguf()), n_ctx=2048, n_threads=1, verbose=False)
    rule = FourChars()
    print(
        f"{'job':<20} {'requests':>8} {'real':>8} {'rule':>8} {'rule err':>9} "
        f"{'llama':>8} {'llama err':>9}"
    )
    totals = [0, 0, 0]
    started = time.perf_counter()
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        config = load_config(path, ["api.backend=llama"])
        checked = read_input(config, path)
        counter = counter_for(config)
        real = by_rule = by_llama = requests = 0
        for model_name in config.model_names:
            plan = build_requests(checked.table, config, checked.ids, model_name)
            for _, item in plan.items:
                messages = orjson.loads(item)["body"]["messages"]
                with suppress_stdout_stderr(disable=False):
                    answer = model.create_chat_completion(messages=messages, max_tokens=1)
                real += answer["usage"]["prompt_tokens"]
                by_rule += rule.count(messages)
                by_llama += counter.count(messages)
                requests += 1
        totals = [totals[0] + real, totals[1] + by_rule, totals[2] + by_llama]
        print(
            f"{config.name:<20} {requests:>8} {real:>8} {by_rule:>8} "
            f"{100 * (by_rule - real) / real:>+8.1f}% {by_llama:>8} "
            f"{100 * (by_llama - real) / real:>+8.1f}%"
        )
    real, by_rule, by_llama = totals
    print(
        f"{'all':<20} {'':>8} {real:>8} {by_rule:>8} {100 * (by_rule - real) / real:>+8.1f}% "
        f"{by_llama:>8} {100 * (by_llama - real) / real:>+8.1f}%"
    )
    print(f"counter: {counter.name}; {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
