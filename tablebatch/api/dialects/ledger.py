"""A local record of batches by name, for a provider whose batches have no name (Anthropic).

Anthropic's Message Batches carry no name, no metadata and no idempotency key,
so the provider alone cannot tell a re-run which batch is its own. The ledger
is an append-only JSONL file, one line per event, flushed and synced before the
call it guards goes on:

- ``{"name", "intent": {"count"}, "at"}`` — written *before* a batch is created;
- ``{"name", "id", "at"}`` — written once the provider has answered with its id.

A name with an id is found again by that id. A name with an intent newer than
its last id means a run stopped (or lost the answer) between the two: the
client then looks at the provider's batches created since the intent with the
same number of requests (see ``AnthropicBatches``). The file must travel with
the job: on another machine without it, a re-run cannot find an unfinished
batch and sends it again (the gap README's Anthropic section states).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import orjson


@dataclass(frozen=True)
class Intent:
    """A batch about to be created: its name, request count, and when (wall clock)."""

    name: str
    count: int
    at: float


class Ledger:
    """Batches by name, in a JSONL file (or in memory when ``path`` is None)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._memory: list[dict] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Ledger({str(self.path) if self.path else 'in memory'!r})"

    def _append(self, event: dict) -> None:
        with self._lock:
            if self.path is None:
                self._memory.append(event)
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("ab") as out:
                out.write(orjson.dumps(event) + b"\n")
                out.flush()
                os.fsync(out.fileno())

    def _events(self) -> list[dict]:
        with self._lock:
            if self.path is None:
                return list(self._memory)
            try:
                raw = self.path.read_bytes()
            except FileNotFoundError:
                return []
        events = []
        for line in raw.splitlines():
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a line cut short by a crash: the event it held never happened
            if isinstance(event, dict) and isinstance(event.get("name"), str):
                events.append(event)
        return events

    def intend(self, name: str, count: int, at: float) -> None:
        """Note that a batch of ``count`` requests named ``name`` is about to be created."""
        self._append({"name": name, "intent": {"count": count}, "at": at})

    def record(self, name: str, batch_id: str, at: float) -> None:
        """Note that the batch named ``name`` is ``batch_id``."""
        self._append({"name": name, "id": batch_id, "at": at})

    def ids(self, name: str) -> list[str]:
        """The batch ids recorded for ``name``, oldest first."""
        return list(
            dict.fromkeys(
                e["id"]
                for e in self._events()
                if e["name"] == name and isinstance(e.get("id"), str)
            )
        )

    def open_intents(self, name: str) -> list[Intent]:
        """Intents for ``name`` that no later id answers: batches that may exist unrecorded."""
        open_: list[Intent] = []
        for event in self._events():
            if event["name"] != name:
                continue
            if isinstance(event.get("id"), str):
                open_ = []  # the id answers every intent before it
            elif isinstance(event.get("intent"), dict):
                count = event["intent"].get("count")
                at = event.get("at")
                if isinstance(count, int) and isinstance(at, int | float):
                    open_.append(Intent(name, count, float(at)))
        return open_

    def all_names(self) -> list[str]:
        """Every name the ledger has an event for, in order of first mention."""
        return list(dict.fromkeys(e["name"] for e in self._events()))

    def names(self) -> dict[str, str]:
        """Every recorded batch id and its name."""
        return {e["id"]: e["name"] for e in self._events() if isinstance(e.get("id"), str)}
