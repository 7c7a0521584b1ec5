"""The contract registry: one pandera model per dataset version, looked up by name.

A contract's name (``<source>.<table>``) and version live in its ``Config``; the registry is the only place
that maps names to models, so source files, the loader, quarantine and the ledger all agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import polars as pl

from ndc.errors import ConfigError


@dataclass(frozen=True)
class Contract:
    name: str
    version: str
    model: type

    @property
    def columns(self) -> dict[str, pl.DataType]:
        """Contract columns in order, with their polars types."""
        schema = self.model.to_schema()
        return {name: column.dtype.type for name, column in schema.columns.items()}

    def validate(self, frame: pl.DataFrame, *, lazy: bool = True) -> pl.DataFrame:
        return self.model.validate(frame, lazy=lazy)


# One module per national database; each lists its models in ``CONTRACTS``.
CONTRACT_MODULES = ("population", "enterprise", "taxation", "insurance", "education")


def _models() -> list[type]:
    import importlib

    models: list[type] = []
    for name in CONTRACT_MODULES:
        models.extend(importlib.import_module(f"ndc.contracts.{name}").CONTRACTS)
    return models


@cache
def contracts() -> dict[str, Contract]:
    found: dict[str, Contract] = {}
    for model in _models():
        config = model.__config__
        found[config.name] = Contract(config.name, config.metadata["version"], model)
    return found


def get_contract(name: str) -> Contract:
    try:
        return contracts()[name]
    except KeyError:
        known = ", ".join(sorted(contracts()))
        raise ConfigError(f"unknown contract {name!r} (registered: {known})") from None
