"""Provider dialects: the job's ``BatchAPI`` spoken to xAI, OpenAI and Anthropic.

``open_batch_api(provider, base_url, key)`` gives the client of a provider:
``seed`` is ``BatchClient`` (the seed spec's API, and the local server's),
``xai`` is ``XaiBatches``, ``openai`` is ``OpenAIBatches``, ``anthropic`` is
``AnthropicBatches``. Each maps its provider's statuses, ids, request bodies and
results onto the seed's, so nothing above the client changes with the provider.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tablebatch.api.client import BatchClient
from tablebatch.api.dialects.anthropic import AnthropicBatches
from tablebatch.api.dialects.common import IdCodec, UnknownStatusError
from tablebatch.api.dialects.ledger import Ledger
from tablebatch.api.dialects.openai import OpenAIBatches
from tablebatch.api.dialects.xai import XaiBatches
from tablebatch.api.protocol import BatchAPI, Limits
from tablebatch.api.providers import BASE_URLS, KEY_ENVS, PROVIDERS, Provider

CLIENTS: dict[str, type] = {
    "seed": BatchClient,
    "xai": XaiBatches,
    "openai": OpenAIBatches,
    "anthropic": AnthropicBatches,
}


def limits_of(provider: str) -> Limits:
    """What one batch may hold at ``provider``."""
    return CLIENTS[provider].limits


def open_batch_api(
    provider: str,
    base_url: str,
    api_key: str | None,
    *,
    ledger: Ledger | str | Path | None = None,
    max_tokens: int | None = None,
    **options: Any,
) -> BatchAPI:
    """The client of ``provider`` at ``base_url`` (ending in ``/v1``).

    ``ledger`` (a file) and ``max_tokens`` are for Anthropic: where batches are
    recorded by name, and the ``max_tokens`` of requests that give none.
    ``options`` are those of ``HttpApi`` (timeout, max_retries, key_source, …).
    """
    if provider not in CLIENTS:
        raise ValueError(f"unknown provider {provider!r}; use one of {', '.join(PROVIDERS)}")
    if provider == "anthropic":
        if ledger is not None and not isinstance(ledger, Ledger):
            ledger = Ledger(ledger)
        return AnthropicBatches(base_url, api_key, ledger=ledger, max_tokens=max_tokens, **options)
    return CLIENTS[provider](base_url, api_key, **options)


__all__ = [
    "BASE_URLS",
    "KEY_ENVS",
    "PROVIDERS",
    "AnthropicBatches",
    "IdCodec",
    "Ledger",
    "OpenAIBatches",
    "Provider",
    "UnknownStatusError",
    "XaiBatches",
    "limits_of",
    "open_batch_api",
]
