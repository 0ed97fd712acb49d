"""POSTs that take effect once per ``Idempotency-Key``, for the seed API and every dialect.

A POST's body is read and checked off the event loop, then its effect runs in
one store transaction together with the record of its answer, so that a client
that retries a call it got no answer to (a dropped connection, a 500 after the
fact) gets the first answer instead of a second effect.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tablebatch.server.errors import InvalidRequest, PayloadTooLarge
from tablebatch.server.store import Store

JSON = "application/json"
MAX_IDEMPOTENCY_KEY = 255


async def idempotent_post(
    request: Request,
    store: Store,
    who: str,
    op: Callable[[Any], tuple[int, bytes]],
    parse: Callable[[bytes], Any] | None = None,
    *,
    max_bytes: int,
    scope: str = "",
) -> Response:
    """Run a POST's effect once per Idempotency-Key, off the event loop.

    ``parse`` checks the body before the transaction, so that a large call is
    not parsed while the store is locked; ``op`` gets what it returns and gives
    the status and JSON body of the answer. Keys are scoped to the caller (and
    to ``scope``, e.g. a dialect), so that two callers never share one.
    """
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise PayloadTooLarge(
            f"This call has {length} bytes; the limit is {max_bytes} bytes "
            "per call. Send the requests in smaller calls."
        )
    raw = await request.body()
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidRequest(f"Idempotency-Key must have 1 to {MAX_IDEMPOTENCY_KEY} characters.")
    fingerprint = hashlib.sha256(
        request.method.encode() + b" " + request.url.path.encode() + b"\n" + raw
    ).hexdigest()
    scoped = f"{who}:{scope}{key}" if key is not None else None
    parsed = await run_in_threadpool(parse, raw) if parse is not None else raw
    status, body, replayed = await run_in_threadpool(
        store.idempotent, scoped, fingerprint, lambda: op(parsed)
    )
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return Response(body, status, headers, media_type=JSON)
