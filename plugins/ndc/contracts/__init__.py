"""The contract registry: one pandera model per dataset version, looked up by name (and major version).

A contract's name (``<source>.<table>`` for a landing table, ``shared.<model>`` for a shared view) and its
semantic version (``metadata = {"version": "X.Y.Z"}``) live in its ``Config``; the registry is the only place
that maps names to models, so source files, the loader, quarantine, gate 2 and the ledger all agree. Several
majors of one name may be registered at once: v1 stays for a deprecation window beside v2 (``shared.<model>_v2``);
a name without a major means its latest version. Models come from this package's modules, the DAG bundle's
``contracts/*.py`` (loaded by path) and ``NDC_CONTRACT_MODULES``. ``ndc contracts check`` compares the registry
with the released schemas (``released.json``) and fails on a breaking change that does not come as a new major
(see :mod:`ndc.contracts.compat` and docs/contracts.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl

from ndc.errors import ConfigError

SHARED_PREFIX = "shared."
_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
# Modules of this package that hold no contracts.
_NOT_CONTRACT_MODULES = frozenset({"base", "checks", "compat", "validation"})
BUNDLE_MODULE_PREFIX = "ndc_bundle_contracts_"


@dataclass(frozen=True)
class Contract:
    name: str
    version: str
    model: type

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        major, minor, patch = _VERSION.match(self.version).groups()  # type: ignore[union-attr]
        return int(major), int(minor), int(patch)

    @property
    def major(self) -> int:
        return self.version_tuple[0]

    @property
    def kind(self) -> str:
        """``shared`` for a shared view's contract (checked by gate 2), ``landing`` for a source table's."""
        return "shared" if self.name.startswith(SHARED_PREFIX) else "landing"

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self.model.__config__.metadata or {})

    @property
    def primary_key(self) -> list[str]:
        """The unique key of a shared contract (``metadata["primary_key"]``); empty where none is declared."""
        return list(self.metadata.get("primary_key", []))

    @property
    def relation(self) -> str:
        """A shared contract's view in the ``shared`` schema: ``<model>`` for major 1, ``<model>_v<N>`` after."""
        model = self.metadata.get("dbt_model") or self.name.removeprefix(SHARED_PREFIX)
        return model if self.major == 1 else f"{model}_v{self.major}"

    @property
    def columns(self) -> dict[str, pl.DataType]:
        """Contract columns in order, with their polars types."""
        schema = self.model.to_schema()
        return {name: column.dtype.type for name, column in schema.columns.items()}

    @property
    def nullable(self) -> dict[str, bool]:
        """Contract columns in order: may the column hold nulls?"""
        return {name: column.nullable for name, column in self.model.to_schema().columns.items()}

    def validate(self, frame: pl.DataFrame, *, lazy: bool = True) -> pl.DataFrame:
        return self.model.validate(frame, lazy=lazy)


def contract_modules() -> list[str]:
    """One module per national database shipped with the platform, and ``shared`` for the shared views; each
    lists its models in ``CONTRACTS``."""
    import pkgutil

    import ndc.contracts

    return sorted(m.name for m in pkgutil.iter_modules(ndc.contracts.__path__)
                  if m.name not in _NOT_CONTRACT_MODULES)


def extra_modules() -> list[str]:
    """Contract modules from elsewhere (e.g. a DAG bundle's own package): ``NDC_CONTRACT_MODULES``, comma-separated
    importable module names, each listing its models in ``CONTRACTS`` like the built-in ones."""
    from ndc.settings import get_settings

    return list(get_settings().contract_modules)


def bundle_module_files() -> list[Path]:
    """The DAG bundle's contract modules, ``<NDC_DAGS_DIR>/contracts/*.py`` (``ndc sources new`` writes one per
    source there): a data team adds a source without changing the installed package."""
    from ndc.settings import get_settings

    folder = get_settings().contracts_dir
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("_")) if folder.is_dir() else []


def _load_bundle_module(path: Path) -> ModuleType:
    """Import a bundle contract module by path, as ``ndc_bundle_contracts_<file stem>``: the same name in every
    process, so model names in messages and a second scan in one process agree."""
    import importlib.util
    import sys

    name = f"{BUNDLE_MODULE_PREFIX}{path.stem}"
    loaded = sys.modules.get(name)
    if loaded is not None and Path(loaded.__file__ or "") == path:
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pandera and dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # any error of the team's file is a configuration error naming it
        del sys.modules[name]
        raise ConfigError(f"{path}: cannot load contract module: {type(exc).__name__}: {exc}") from None
    return module


def _models() -> list[type]:
    import importlib

    modules: list[ModuleType] = [importlib.import_module(f"ndc.contracts.{m}") for m in contract_modules()]
    modules += [_load_bundle_module(path) for path in bundle_module_files()]
    for name in extra_modules():
        try:
            modules.append(importlib.import_module(name))
        except ImportError as exc:
            raise ConfigError(f"NDC_CONTRACT_MODULES: cannot import contract module {name!r}: {exc}") from None
    models: list[type] = []
    for module in modules:
        if not hasattr(module, "CONTRACTS"):
            raise ConfigError(f"{module.__file__}: a contract module must list its models in CONTRACTS")
        models.extend(module.CONTRACTS)
    return models


def contract_of(model: type) -> Contract:
    """The registry entry of a pandera model: its Config's name and ``metadata["version"]`` (X.Y.Z)."""
    config = model.__config__
    where = f"{model.__module__}.{model.__qualname__}"
    if not config.name:
        raise ConfigError(f"{where}: a contract needs a name in its Config")
    version = (config.metadata or {}).get("version")
    if not isinstance(version, str) or not _VERSION.match(version):
        raise ConfigError(f"{where} ({config.name}): metadata version must be 'X.Y.Z', got {version!r}")
    return Contract(config.name, version, model)


@cache
def all_contracts() -> tuple[Contract, ...]:
    """Every registered contract, every major of each name, sorted by name then version."""
    return registry_of(_models())


def registry_of(models: list[type]) -> tuple[Contract, ...]:
    """The contracts of ``models``, sorted by name then version; one model per name and major version."""
    found: dict[tuple[str, int], Contract] = {}
    for model in models:
        contract = contract_of(model)
        key = (contract.name, contract.major)
        if key in found:
            other = found[key].model
            raise ConfigError(
                f"contract {contract.name} major {contract.major} is defined twice: "
                f"{other.__module__}.{other.__qualname__} ({found[key].version}) and "
                f"{model.__module__}.{model.__qualname__} ({contract.version}); a new major needs a new version")
        found[key] = contract
    return tuple(sorted(found.values(), key=lambda c: (c.name, c.version_tuple)))


def contracts() -> dict[str, Contract]:
    """Name -> its latest registered version."""
    return {contract.name: contract for contract in all_contracts()}  # sorted by version: the last one wins


# Callers that add a contract module at run time (``ndc sources new``) re-scan with ``contracts.cache_clear()``.
contracts.cache_clear = all_contracts.cache_clear  # type: ignore[attr-defined]


def get_contract(name: str, major: int | None = None) -> Contract:
    """The contract ``name`` at ``major`` (its latest version when ``major`` is None)."""
    versions = [c for c in all_contracts() if c.name == name]
    if not versions:
        known = ", ".join(sorted(contracts()))
        raise ConfigError(f"unknown contract {name!r} (registered: {known})")
    if major is None:
        return versions[-1]
    for contract in versions:
        if contract.major == major:
            return contract
    majors = ", ".join(str(c.major) for c in versions)
    raise ConfigError(f"contract {name!r} has no major version {major} (registered: {majors})")
