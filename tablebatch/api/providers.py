"""The providers a job may name (``api.provider``), their addresses and key variables."""

from __future__ import annotations

from typing import Literal

Provider = Literal["seed", "xai", "openai", "anthropic"]
PROVIDERS: tuple[str, ...] = ("seed", "xai", "openai", "anthropic")
BASE_URLS: dict[str, str] = {
    "xai": "https://api.x.ai/v1",
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
}  # the seed's API has no public address
KEY_ENVS: dict[str, str] = {
    "seed": "XAI_API_KEY",
    "xai": "XAI_API_KEY",
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
}
