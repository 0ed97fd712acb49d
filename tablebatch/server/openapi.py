"""The server's OpenAPI document, made to say exactly what the server does.

FastAPI writes the paths; ``describe`` then sets, for every operation, what a
hand-checked route cannot tell it: the request body with the rules the server
enforces, the headers it requires, and every status the route can answer, each
with the error shape of its dialect (the seed's ``{"error": {"type",
"message"}}``, OpenAI's, Anthropic's or xAI's). A route without an entry here
fails loudly, so the document cannot fall behind the routes. What JSON Schema
cannot state (a cursor must name an item that exists; custom_ids are unique
within a call) is said in the descriptions.

The seed API's entries live here; each dialect's in ``dialects/<name>_doc.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.routing import Match

from tablebatch.server.settings import ServerLimits, ServerSettings
from tablebatch.server.validation import MAX_CUSTOM_ID, NEEDS_CONTENT, ROLES

JSON = "application/json"
Schema = dict[str, Any]
NO_CONTROL = "^[^\\u0000-\\u001f\\u007f]*$"  # what validation._CONTROL refuses
CURSOR: dict[str, Any] = {"minLength": 1}  # a cursor param's schema: an empty one names nothing


@dataclass(frozen=True)
class OperationDoc:
    """What the document says about one operation beyond what FastAPI knows."""

    errors: Mapping[int, str]  # status -> when the route answers it
    body: Schema | None = None
    body_type: str = JSON
    headers: tuple[Schema, ...] = ()
    response: Schema | None = None  # the 200 body; None keeps FastAPI's
    response_type: str = JSON
    idempotent: bool = False  # a POST that honours Idempotency-Key
    links: Mapping[str, Schema] = field(default_factory=dict)


Docs = dict[tuple[str, str], OperationDoc]  # (METHOD, path under the dialect's prefix)


@dataclass(frozen=True)
class DialectDoc:
    """A dialect's entries, its error shape, and what every one of its routes may answer."""

    error: Schema
    operations: Callable[[ServerSettings], Docs]
    # its security schemes, any one suffices; none declared where a wrong key is not a 401
    # (xAI's 400), since OpenAPI tools take a declared scheme to promise 401 or 403
    auth: tuple[str, ...] = ("bearer",)
    wrong_key_status: int = 401


def header(name: str, description: str, *, required: bool = False, **schema: Any) -> Schema:
    """A header parameter."""
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": {"type": "string", **schema},
    }


def chat_body(where: str) -> Schema:
    """A chat-completions body as ``validation.body_problem`` checks it (other OpenAI
    parameters pass through)."""
    needs = sorted(NEEDS_CONTENT)
    others = sorted(ROLES - NEEDS_CONTENT)
    message = {
        "anyOf": [
            {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"type": "string", "enum": needs},
                    "content": {"type": ["string", "array"]},
                },
            },
            {
                "type": "object",
                "required": ["role"],
                "properties": {
                    "role": {"type": "string", "enum": others},
                    "content": {"type": ["string", "array", "null"]},
                },
            },
        ],
        "description": f"A message: {', '.join(needs)} need content (a string or a list of "
        "parts); assistant and tool messages may have none.",
    }
    return {
        "type": "object",
        "description": f"{where}: a chat-completions body; other parameters pass through.",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "messages": {"type": "array", "minItems": 1, "items": message},
        },
    }


# -- the seed API ------------------------------------------------------------------

SEED_ERROR: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "items": {
                    "type": "array",
                    "description": "The bad items of an add-requests call.",
                    "items": {
                        "type": "object",
                        "properties": {
                            "index": {"type": "integer"},
                            "custom_id": {"type": ["string", "null"]},
                        },
                    },
                },
                "custom_ids": {
                    "type": "array",
                    "description": "The custom_ids a batch holds already (a 409 of add).",
                    "items": {"type": "string"},
                },
            },
        }
    },
}
CURSOR_400 = "`after` names no item of this list (pass the id of the last item of a page)"


def _create_body(settings: ServerSettings) -> Schema:
    model: Schema = {"type": ["string", "null"], "minLength": 1, "maxLength": 256}
    if settings.models is not None:
        model = {"enum": [*settings.models, None], "description": "A model this server serves."}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 256},
            "description": {"type": ["string", "null"], "maxLength": 4096},
            "model": model,
            "endpoint": {"type": "string", "enum": ["/v1/chat/completions"]},
        },
    }


def _add_body(limits: ServerLimits) -> Schema:
    item = {
        "type": "object",
        "additionalProperties": False,
        "required": ["custom_id", "body"],
        "properties": {
            "custom_id": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_CUSTOM_ID,
                "pattern": NO_CONTROL,
                "description": "Unique within the batch (and within this call); no control "
                "characters.",
            },
            "body": chat_body("body"),
        },
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["requests"],
        "properties": {
            "requests": {
                "type": "array",
                "minItems": 1,
                "maxItems": limits.max_requests_per_call,
                "items": item,
                "description": f"At most {limits.max_requests_per_call} requests and "
                f"{limits.max_bytes_per_call} bytes per call; each body at most "
                f"{limits.max_request_bytes} bytes (over a limit: 413). Checked whole: one bad "
                "item refuses the call and is named.",
            }
        },
    }


def operation_ref(path: str, method: str) -> str:
    """The JSON pointer of an operation of this document (for a link)."""
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method.lower()


def links(path: str, parameter: str, source: str, targets: Mapping[str, str]) -> dict[str, Schema]:
    """Links from an answer to the operations on what it made: ``targets`` maps each
    link's name to ``"METHOD suffix"`` of an operation at ``path`` + suffix, whose
    ``parameter`` is ``source`` (e.g. ``$response.body#/id``)."""
    result = {}
    for name, target in targets.items():
        method, _, suffix = target.partition(" ")
        ref = operation_ref(path + suffix, method)
        result[name] = {"operationRef": ref, "parameters": {parameter: source}}
    return result


def seed_operations(settings: ServerSettings) -> Docs:
    """The seed API's entries."""
    limits = settings.limits
    listing = {400: CURSOR_400, 422: "A query parameter out of its range"}
    found = {404: "No batch with this id"}
    state = {409: "Not allowed in the batch's status"}
    links_ = links(
        "/v1/batches/{batch_id}",
        "batch_id",
        "$response.body#/id",
        {
            "GetBatch": "GET",
            "ListRequests": "GET /requests",
            "AddRequests": "POST /requests",
            "ListResults": "GET /results",
            "Start": "POST /start",
            "Cancel": "POST /cancel",
        },
    )
    bad_create = "The body is not JSON, or names a model this server does not serve"
    return {
        ("POST", "/v1/batches"): OperationDoc(
            {400: bad_create, 422: "A field of the body is invalid"},
            body=_create_body(settings),
            idempotent=True,
            links=links_,
        ),
        ("GET", "/v1/batches"): OperationDoc(listing),
        ("GET", "/v1/batches/{batch_id}"): OperationDoc(found),
        ("GET", "/v1/batches/{batch_id}/requests"): OperationDoc({**listing, **found}),
        ("POST", "/v1/batches/{batch_id}/requests"): OperationDoc(
            {400: "An item is invalid", **found, **state, 413: "Over a limit"},
            body=_add_body(limits),
            idempotent=True,
        ),
        ("GET", "/v1/batches/{batch_id}/results"): OperationDoc({**listing, **found}),
        ("POST", "/v1/batches/{batch_id}/start"): OperationDoc({**found, **state}, idempotent=True),
        ("POST", "/v1/batches/{batch_id}/cancel"): OperationDoc(
            {**found, **state}, idempotent=True
        ),
    }


SEED = DialectDoc(SEED_ERROR, seed_operations)


# -- putting it together -----------------------------------------------------------

IDEMPOTENCY_KEY = header(
    "Idempotency-Key",
    "Send the same key to retry the same call: it takes effect once, and a retry gets the "
    "first answer. 1 to 255 characters.",
    minLength=1,
    maxLength=255,
)
SCHEMES: dict[str, Schema] = {
    "bearer": {"type": "http", "scheme": "bearer"},
    "x-api-key": {"type": "apiKey", "in": "header", "name": "x-api-key"},
}


def _merge(errors: dict[int, str], status: int, text: str) -> None:
    errors[status] = f"{errors[status]}; {text}" if status in errors else text


def _apply(op: Schema, doc: OperationDoc, dialect: DialectDoc, s: ServerSettings) -> None:
    errors = dict(doc.errors)
    if doc.idempotent:
        _merge(errors, 400, "Idempotency-Key is empty or over 255 characters")
        _merge(errors, 409, "This Idempotency-Key was used for a different call")
        _merge(errors, 413, "The call is over the server's size limit")
        op.setdefault("parameters", []).append(IDEMPOTENCY_KEY)
    if s.api_keys:
        _merge(errors, dialect.wrong_key_status, "A wrong API key")
        _merge(errors, 401, "No API key")
        if dialect.auth:
            op["security"] = [{scheme: []} for scheme in dialect.auth]
    if s.faults.http_faults:
        for status, text in ((429, "Rate limited"), (500, "Server error"), (503, "Unavailable")):
            _merge(errors, status, f"{text} (an injected fault)")
    op.setdefault("parameters", []).extend(doc.headers)
    if not op["parameters"]:
        del op["parameters"]
    if doc.body is not None:
        op["requestBody"] = {"required": True, "content": {doc.body_type: {"schema": doc.body}}}
    ok = op["responses"].get("200", {"description": "Successful Response"})
    if doc.response is not None:
        ok = {**ok, "content": {doc.response_type: {"schema": doc.response}}}
    if doc.links:
        ok = {**ok, "links": dict(doc.links)}
    op["responses"] = {"200": ok} | {
        str(status): {"description": text, "content": {JSON: {"schema": dialect.error}}}
        for status, text in sorted(errors.items())
    }


def describe(
    schema: Schema, settings: ServerSettings, dialects: Mapping[str, DialectDoc]
) -> Schema:
    """Complete FastAPI's document: every operation gets its entry (``dialects`` maps each
    dialect's prefix to its entries; paths outside them are the seed's)."""
    entries = {"": SEED.operations(settings)}
    entries |= {prefix: doc.operations(settings) for prefix, doc in dialects.items()}
    for path, item in schema["paths"].items():
        prefix = next((p for p in dialects if path.startswith(p + "/")), "")
        dialect = dialects[prefix] if prefix else SEED
        for method, op in item.items():
            key = (method.upper(), path.removeprefix(prefix))
            if key not in entries[prefix]:
                raise KeyError(f"{method.upper()} {path} has no entry in the OpenAPI document")
            _apply(op, entries[prefix][key], dialect, settings)
    components = schema.setdefault("components", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.get("schemas", {}).pop(unused, None)
    if settings.api_keys:
        components["securitySchemes"] = SCHEMES
    return schema


def allowed_methods(routes: Iterable[Any], path: str) -> str:
    """The methods ``routes`` answer at ``path``: the ``Allow`` of a 405 (RFC 9110).
    Every route counts, not just the first one that matched the path."""
    methods: set[str] = set()
    scope = {"type": "http", "path": path, "root_path": "", "method": ""}
    for route in routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))
