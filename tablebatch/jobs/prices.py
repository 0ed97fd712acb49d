"""What models cost: the dated price table shipped in the package (``tablebatch/data/
prices.yaml``), a project's ``prices.yaml`` at its root over it, and a config's ``pricing:``
over both. A model found in none of them has no price: its cost is unknown, never 0."""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from tablebatch.jobs.errors import ConfigError
from tablebatch.jobs.schema import JobConfig, ModelPrice, Strict

PROJECT_PRICES = "prices.yaml"  # at a project's root


class PriceFile(Strict):
    """A price table file: the package's or a project's ``prices.yaml``."""

    as_of: str | None = Field(None, description="When the prices were read, e.g. 2026-11-06.")
    currency: str = "USD"
    models: dict[str, ModelPrice] = Field(default_factory=dict)


@dataclass(frozen=True)
class Price:
    """A model's price per million tokens, and where it came from (for people to check)."""

    model: str  # the table's entry
    input: float
    output: float
    cached_input: float
    cache_write: float
    batch_discount: float
    source: str  # "package table 2026-11-06", "prices.yaml", "config pricing"

    @classmethod
    def of(cls, model: str, price: ModelPrice, source: str) -> Price:
        """A table entry, its cache prices defaulting to the input price."""
        return cls(
            model,
            price.input,
            price.output,
            price.input if price.cached_input is None else price.cached_input,
            price.input if price.cache_write is None else price.cache_write,
            price.batch_discount,
            source,
        )


@dataclass
class PriceTable:
    """Every known model's price; ``get`` finds a model by its name or a variant of it."""

    currency: str = "USD"
    as_of: str | None = None
    prices: dict[str, Price] = field(default_factory=dict)

    def add(self, table: PriceFile | dict[str, ModelPrice], source: str) -> None:
        """Entries of ``table`` over the ones known so far."""
        models = table.models if isinstance(table, PriceFile) else table
        if isinstance(table, PriceFile):
            self.currency = table.currency
            self.as_of = table.as_of or self.as_of
        for name, price in models.items():
            self.prices[name.lower()] = Price.of(name, price, source)

    def get(self, model: str) -> Price | None:
        """The price of ``model``: its own entry, else the longest entry it is a dated or
        suffixed variant of (``claude-sonnet-4-5-20250929`` of ``claude-sonnet-4-5``);
        None when it has none."""
        name = model.lower()
        if name in self.prices:
            return self.prices[name]
        matches = [k for k in self.prices if name.startswith(k + "-")]
        return self.prices[max(matches, key=len)] if matches else None


def _read(text: str, source: str) -> PriceFile:
    try:
        return PriceFile.model_validate(yaml.safe_load(text) or {})
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(
            f"{source}: {problems} (each model takes input, output and optionally "
            "cached_input, cache_write, batch_discount, per million tokens)"
        ) from None


def package_prices() -> PriceFile:
    """The price table shipped with tablebatch."""
    text = (importlib.resources.files("tablebatch") / "data" / "prices.yaml").read_text("utf-8")
    return _read(text, "tablebatch/data/prices.yaml")


def load_prices(root: Path | None = None, config: JobConfig | None = None) -> PriceTable:
    """The prices a job uses: the package's table, the project's ``prices.yaml`` (at
    ``root``) over it, the config's ``pricing:`` over both."""
    table = PriceTable()
    shipped = package_prices()
    table.add(shipped, f"tablebatch's table of {shipped.as_of}")
    if root is not None and (root / PROJECT_PRICES).is_file():
        path = root / PROJECT_PRICES
        table.add(_read(path.read_text(encoding="utf-8"), str(path)), str(path))
    if config is not None and config.pricing:
        table.add(config.pricing, "the config's pricing")
    return table


def price_hint(model: str) -> str:
    """How to give a model's price, for a message about an unknown cost."""
    return (
        f"no price is known for model {model!r}: give it in the config (pricing: {{{model}: "
        f"{{input: 1.0, output: 2.0, batch_discount: 0.5}}}}, USD per million tokens) or in "
        f"{PROJECT_PRICES} at the project's root (models: {{{model}: {{...}}}})"
    )


def describe(price: Price | Any) -> str:
    """A price as one line: ``input / cached / output per million, batch -50%``."""
    off = f", batch -{price.batch_discount:.0%}" if price.batch_discount else ""
    return (
        f"{price.input:g} in / {price.cached_input:g} cached / {price.output:g} out per "
        f"million{off} ({price.source})"
    )
