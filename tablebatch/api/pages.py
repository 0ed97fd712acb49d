"""Pages of a list, and the one loop that follows them (as openai-python's pages do).

A dialect says how to fetch one page and what its next cursor is (``Page``);
``follow`` walks from the first page to the last and stops, naming the list, when
a server's cursor does not move. ``HttpApi._pages`` adds the page size: the largest
a server accepts is learned once per client (a server refuses a size over its limit
with a 422), so no caller falls back on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tablebatch.api.errors import BatchApiError

T = TypeVar("T")
PAGE_SIZES: tuple[int | None, ...] = (10_000, 1000, 100, None)  # None: the server's default


@dataclass
class Page(Generic[T]):
    """One page of a list: its items, and the cursor of the next page (None: the last)."""

    items: list[T]
    next_cursor: str | None = None

    @classmethod
    def by_last_id(
        cls, items: Sequence[Any], has_more: bool, last_id: str | None = None, what: str = ""
    ) -> Page[Any]:
        """A page whose next cursor is the id of its last item (the seed's ``after``,
        OpenAI's ``after``, Anthropic's ``after_id``/``last_id``)."""
        if not has_more:
            return cls(list(items), None)
        if last_id is None and items:
            last = items[-1]
            last_id = last.get("id") if isinstance(last, dict) else getattr(last, "id", None)
        if not last_id:
            raise BatchApiError(f"{what}: the server said has_more but sent no items.")
        return cls(list(items), str(last_id))


def follow(fetch: Callable[[str | None], Page[T]], what: str) -> Iterator[Page[T]]:
    """Every page of a list, first to last: ``fetch(cursor)`` gets one (None: the first)."""
    cursor: str | None = None
    seen: set[str] = set()
    while True:
        page = fetch(cursor)
        yield page
        following = page.next_cursor
        if following is None:
            return
        if following == cursor or following in seen:
            raise BatchApiError(f"{what}: the cursor repeats {following!r}: it did not move.")
        seen.add(following)
        cursor = following


def smaller_size(limit: int | None) -> int | bool | None:
    """The next page size to try after ``limit`` was refused; False when there is none."""
    if limit is None:
        return False
    return next((s for s in PAGE_SIZES if s is None or s < limit), False)
