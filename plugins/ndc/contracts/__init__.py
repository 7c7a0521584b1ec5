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


def contract_modules() -> list[str]:
    """One module per national database (``ndc sources new`` adds one); each lists its models in ``CONTRACTS``."""
    import pkgutil

    import ndc.contracts

    return sorted(m.name for m in pkgutil.iter_modules(ndc.contracts.__path__) if m.name != "base")


def _models() -> list[type]:
    import importlib

    models: list[type] = []
    for name in contract_modules():
        module = importlib.import_module(f"ndc.contracts.{name}")
        if not hasattr(module, "CONTRACTS"):
            raise ConfigError(f"{module.__file__}: a contract module must list its models in CONTRACTS")
        models.extend(module.CONTRACTS)
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
