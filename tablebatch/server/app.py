"""The HTTP layer of the local Batch API server: parse, call the store, serialise.

Routes follow ``seeds/batch-api.md`` plus ``POST /v1/batches/{id}/start`` (which
the spec's example calls). Every POST honours ``Idempotency-Key``; every error
is ``{"error": {"type", "message"}}`` with its status; auth is
``Authorization: Bearer <key>`` when the settings name keys. Responses are
encoded with orjson, and result pages are concatenated from stored JSON.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tablebatch.api.models import (
    Batch,
    BatchList,
    BatchRequestList,
    BatchResultList,
    BatchStatus,
    CreateBatchBody,
    RequestStatus,
)
from tablebatch.server.backends import Backend, make_backend
from tablebatch.server.dialects import DIALECTS, DOCS, dialect_for, error_payload
from tablebatch.server.errors import (
    ApiError,
    AuthenticationFailed,
    InvalidRequest,
    Unprocessable,
)
from tablebatch.server.faults import FaultInjector
from tablebatch.server.idempotency import idempotent_post
from tablebatch.server.openapi import CURSOR, allowed_methods, describe
from tablebatch.server.settings import ServerSettings
from tablebatch.server.store import Store, StoredBatch
from tablebatch.server.validation import parse_add_requests
from tablebatch.server.worker import Worker

log = logging.getLogger("tablebatch.server")

JSON = "application/json"


def _json(data: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code, media_type=JSON)


def _error_response(exc: ApiError, path: str) -> Response:
    """An error in the shape of the API (seed or dialect) that ``path`` belongs to."""
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthenticationFailed) else None
    body = error_payload(path, exc.status_code, exc.error_type, exc.message, exc.details)
    return Response(orjson.dumps(body), exc.status_code, headers, media_type=JSON)


def _describe(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors[:10]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) + "."


def create_app(
    settings: ServerSettings | None = None,
    *,
    backend: Backend | None = None,
) -> FastAPI:
    """Build the server: its store is opened now, its worker runs while the app is served."""
    settings = settings or ServerSettings()
    store = Store(settings.db, settings.limits)
    backend = backend or make_backend(settings)
    worker = Worker(store, backend, settings)
    limits = settings.limits
    keys = [k.get_secret_value().encode() for k in settings.api_keys]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warm_up = getattr(backend, "warm_up", None)
        if warm_up is not None and settings.process:
            warm_up()
        worker.start()
        try:
            yield
        finally:
            worker.stop()
            close = getattr(backend, "close", None)
            if close is not None:
                close()
            store.close()

    app = FastAPI(
        title="tablebatch local Batch API",
        version="1",
        description="A local implementation of the Batch API: batches of chat-completions "
        "requests, processed by a model backend. Lists page with `limit` (default "
        f"{limits.page_default}, at most {limits.page_max}) and the `after` cursor "
        "(the id of the last item of the previous page).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.worker = worker

    def caller(request: Request) -> str:
        """Checks the bearer key; returns a name of the caller that holds no secret."""
        if not keys:
            return "anonymous"
        header = request.headers.get("authorization")
        if not header:
            raise AuthenticationFailed(
                "Missing API key: send the header 'Authorization: Bearer <key>'."
            )
        scheme, _, token = header.partition(" ")
        token_bytes = token.strip().encode()
        if scheme.lower() != "bearer" or not token_bytes:
            raise AuthenticationFailed("Malformed Authorization header: use 'Bearer <key>'.")
        if not any(hmac.compare_digest(token_bytes, key) for key in keys):
            raise AuthenticationFailed("Invalid API key: check the key the client sends.")
        return hashlib.sha256(token_bytes).hexdigest()[:16]

    async def post(
        request: Request,
        who: str,
        op: Callable[[Any], tuple[int, bytes]],
        parse: Callable[[bytes], Any] | None = None,
    ) -> Response:
        """Run a POST's effect once per Idempotency-Key (see ``idempotent_post``)."""
        return await idempotent_post(
            request, store, who, op, parse, max_bytes=limits.max_bytes_per_call
        )

    async def transition(request: Request, who: str, change: Callable[[], StoredBatch]) -> Response:
        """A POST that moves a batch (start, cancel), then wakes the worker to act on it."""

        def op(raw: bytes) -> tuple[int, bytes]:
            batch = change()
            worker.wake()
            return 200, orjson.dumps(batch.to_api())

        return await post(request, who, op)

    def limit_param(what: str) -> Any:
        return Query(
            None,
            ge=1,
            le=limits.page_max,
            description=f"{what} per page (default {limits.page_default}, at most "
            f"{limits.page_max}).",
        )

    after_param = Query(
        None,
        description="Cursor: the id of the last item of the previous page (one that names no "
        "item of the list is a 400).",
        json_schema_extra=CURSOR,
    )
    batch_id_param = Path(description="The batch's id.")

    # -- exception handlers ------------------------------------------------------

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return _error_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        path = request.url.path
        kind = Unprocessable if dialect_for(path) is None else InvalidRequest  # providers: 400
        return _error_response(kind(_describe(list(exc.errors()))), path)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        kinds = {404: "not_found_error", 405: "method_not_allowed_error"}
        message = {
            404: f"No route {request.url.path}. See /openapi.json for the endpoints.",
            405: f"{request.method} is not allowed on {request.url.path}.",
        }.get(exc.status_code, str(exc.detail))
        kind = kinds.get(exc.status_code, "http_error")
        body = error_payload(request.url.path, exc.status_code, kind, message)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path, not just one route's (RFC 9110)
            path, dialect = request.url.path, dialect_for(request.url.path)
            routes = app.router.routes if dialect is None else dialect.router.routes
            if dialect is not None:  # the dialect's routes are relative to its prefix
                path = path.removeprefix(dialect.prefix)
            headers["Allow"] = allowed_methods(routes, path)
        return Response(orjson.dumps(body), exc.status_code, headers, media_type=JSON)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        message = "Internal error; see the server log."
        body = error_payload(request.url.path, 500, "server_error", message)
        return Response(orjson.dumps(body), 500, media_type=JSON)

    # -- routes ------------------------------------------------------------------

    @app.get("/health", include_in_schema=False)
    def health() -> Response:
        return _json({"status": "ok", "backend": backend.name})

    @app.post(
        "/v1/batches",
        response_model=Batch,
        summary="Create a batch",
    )
    async def create_batch(request: Request, who: str = Depends(caller)) -> Response:
        def parse(raw: bytes) -> CreateBatchBody:
            try:
                return CreateBatchBody.model_validate_json(raw or b"null")
            except ValidationError as exc:
                if any(e["type"] == "json_invalid" for e in exc.errors()):
                    raise InvalidRequest("The body is not valid JSON.") from None
                raise Unprocessable(_describe(exc.errors())) from None

        def op(spec: CreateBatchBody) -> tuple[int, bytes]:
            if settings.models is not None and spec.model and spec.model not in settings.models:
                raise InvalidRequest(
                    f"model: {spec.model!r} is not served here; available: "
                    f"{', '.join(settings.models)}."
                )
            batch = store.create_batch(spec.name, spec.description, spec.model, spec.endpoint)
            return 200, orjson.dumps(batch.to_api())

        return await post(request, who, op, parse)

    @app.get("/v1/batches", response_model=BatchList, summary="List batches, newest first")
    def list_batches(
        limit: int | None = limit_param("Batches"),
        after: str | None = after_param,
        status: BatchStatus | None = Query(None, description="Only batches in this status."),
        name: str | None = Query(None, description="Only batches with this name."),
        name_prefix: str | None = Query(
            None, description="Only batches whose name starts with this (an extension)."
        ),
        who: str = Depends(caller),
    ) -> Response:
        batches, more = store.list_batches(
            limit or limits.page_default, after, status, name, name_prefix
        )
        return _json({"object": "list", "data": [b.to_api() for b in batches], "has_more": more})

    @app.get("/v1/batches/{batch_id}", response_model=Batch, summary="Get a batch")
    def get_batch(batch_id: str = batch_id_param, who: str = Depends(caller)) -> Response:
        return _json(store.get_batch(batch_id).to_api())

    @app.get(
        "/v1/batches/{batch_id}/requests",
        response_model=BatchRequestList,
        summary="List a batch's requests",
    )
    def list_requests(
        batch_id: str = batch_id_param,
        limit: int | None = limit_param("Requests"),
        after: str | None = after_param,
        status: RequestStatus | None = Query(None, description="Only requests in this status."),
        who: str = Depends(caller),
    ) -> Response:
        items, more = store.list_requests(batch_id, limit or limits.page_default, after, status)
        return _json({"object": "list", "data": items, "has_more": more})

    @app.post(
        "/v1/batches/{batch_id}/requests",
        response_model=Batch,
        summary="Add requests to a batch (all or none)",
    )
    async def add_requests(
        request: Request, batch_id: str = batch_id_param, who: str = Depends(caller)
    ) -> Response:
        def op(items: list[tuple[str, bytes]]) -> tuple[int, bytes]:
            return 200, orjson.dumps(store.add_requests(batch_id, items).to_api())

        return await post(request, who, op, lambda raw: parse_add_requests(raw, limits))

    @app.get(
        "/v1/batches/{batch_id}/results",
        response_model=BatchResultList,
        summary="Get the results of a batch's finished requests",
    )
    def results(
        batch_id: str = batch_id_param,
        limit: int | None = limit_param("Results"),
        after: str | None = after_param,
        who: str = Depends(caller),
    ) -> Response:
        rows, more = store.results_page(batch_id, limit or limits.page_default, after)
        body = b'{"object":"list","data":[%s],"has_more":%s}' % (
            b",".join(rows),
            b"true" if more else b"false",
        )
        return Response(body, media_type=JSON)

    @app.post("/v1/batches/{batch_id}/start", response_model=Batch, summary="Start processing")
    async def start(
        request: Request, batch_id: str = batch_id_param, who: str = Depends(caller)
    ) -> Response:
        return await transition(request, who, lambda: store.start(batch_id))

    @app.post("/v1/batches/{batch_id}/cancel", response_model=Batch, summary="Cancel processing")
    async def cancel(
        request: Request, batch_id: str = batch_id_param, who: str = Depends(caller)
    ) -> Response:
        return await transition(request, who, lambda: store.cancel(batch_id))

    for dialect in DIALECTS.values():
        app.include_router(dialect.router, prefix=dialect.prefix)

    def openapi() -> dict[str, Any]:
        """FastAPI's document, completed to say exactly what each route does."""
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = describe(schema, settings, DOCS)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    if settings.faults.http_faults:
        app.add_middleware(FaultInjector, faults=settings.faults)
    return app
