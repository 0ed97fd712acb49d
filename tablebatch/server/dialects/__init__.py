"""The providers' batch APIs the local server speaks beside the seed API.

Each dialect is a router mounted under its own prefix (their paths collide
with the seed's and with each other's), over the same store, worker and
backends, so the offline backend answers every dialect and the fault injector
hits every dialect:

    seed        /v1/...                     (the seed spec; the root)
    openai      /openai/v1/...              Files + Batches, as api.openai.com
    anthropic   /anthropic/v1/messages/batches/...   as api.anthropic.com
    xai         /xai/v1/...                 the REST batches of api.x.ai

An SDK's base URL is the server's root plus the dialect's ``sdk_path``.
"""

from __future__ import annotations

from typing import Any

from tablebatch.server.dialects import anthropic, anthropic_doc, openai, openai_doc, xai, xai_doc
from tablebatch.server.dialects.common import Dialect
from tablebatch.server.openapi import DialectDoc

DIALECTS: dict[str, Dialect] = {d.name: d for d in (openai.DIALECT, anthropic.DIALECT, xai.DIALECT)}
# each dialect's entries in the OpenAPI document, by its prefix
DOCS: dict[str, DialectDoc] = {
    openai.DIALECT.prefix: openai_doc.DOC,
    anthropic.DIALECT.prefix: anthropic_doc.DOC,
    xai.DIALECT.prefix: xai_doc.DOC,
}


def dialect_for(path: str) -> Dialect | None:
    """The dialect a request path belongs to, or None for the seed API."""
    for dialect in DIALECTS.values():
        if path.startswith(dialect.prefix + "/"):
            return dialect
    return None


def is_api_path(path: str) -> bool:
    """Whether a path is an API call of any dialect (not the docs or the health check)."""
    dialect = dialect_for(path)
    return path.startswith(dialect.prefix + "/v1/" if dialect else "/v1/")


def error_payload(
    path: str, status: int, kind: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON body of an error, in the shape of the dialect ``path`` belongs to."""
    dialect = dialect_for(path)
    if dialect is None:
        return {"error": {"type": kind, "message": message, **(details or {})}}
    return dialect.error_body(status, kind, message, details or {})


def sdk_base_url(root: str, provider: str) -> str:
    """The base URL to give a provider's SDK for a local server at ``root``."""
    return root.rstrip("/") + DIALECTS[provider].sdk_path
