"""Contract compatibility: breaking changes against the released schemas, and agreement with dbt's contracts.

``released.json`` (beside this module) records, per contract name and major version, the schema that was released:
its version, kind, unique key and columns (polars type, nullable) in order. Under a released major, a change is
**breaking** when it removes a column, changes a column's type other than by a widening (:data:`WIDENINGS`),
tightens nullability (nullable -> not nullable), adds a not-nullable column (a producer without it is rejected),
changes the unique key, or moves the version backwards. A breaking change ships as a new major version instead
(a new pandera model beside the old one; for a shared view a dbt model version, published as
``shared.<model>_v<N>``), which may change anything. Adding a nullable column, relaxing nullability and widening a
type are not breaking. See docs/contracts.md.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ndc.contracts import SHARED_PREFIX, Contract
from ndc.errors import NdcError

RELEASED = Path(__file__).with_name("released.json")

_INTEGERS = ("Int8", "Int16", "Int32", "Int64")
_UNSIGNED = ("UInt8", "UInt16", "UInt32", "UInt64")
_FLOATS = ("Float32", "Float64")


def _chain(types: tuple[str, ...]) -> dict[str, set[str]]:
    return {narrow: set(types[i + 1:]) for i, narrow in enumerate(types)}


# Old type -> the types it may become without breaking a reader: every value of the old type is a value of the new
# one, exactly. Integers do not widen into floats (Int64 -> Float64 loses digits); Date -> Datetime is not a widening.
WIDENINGS: dict[str, set[str]] = {
    **_chain(_INTEGERS), **_chain(_FLOATS),
    "UInt8": {*_chain(_UNSIGNED)["UInt8"], "Int16", "Int32", "Int64"},
    "UInt16": {*_chain(_UNSIGNED)["UInt16"], "Int32", "Int64"},
    "UInt32": {*_chain(_UNSIGNED)["UInt32"], "Int64"},
    "Int8": {*_chain(_INTEGERS)["Int8"], "Float32", "Float64"},
    "Int16": {*_chain(_INTEGERS)["Int16"], "Float32", "Float64"},
    "Int32": {*_chain(_INTEGERS)["Int32"], "Float64"},
}
_DECIMAL = re.compile(r"^Decimal\(precision=(\d+), scale=(\d+)\)$")


def is_widening(old: str, new: str) -> bool:
    """Can every value of type ``old`` be read, unchanged, as type ``new``? (Type names as ``str(polars dtype)``.)"""
    if old == new or new in WIDENINGS.get(old, set()):
        return True
    old_decimal, new_decimal = _DECIMAL.match(old), _DECIMAL.match(new)
    if old_decimal and new_decimal:  # more digits at the same scale
        return old_decimal[2] == new_decimal[2] and int(new_decimal[1]) >= int(old_decimal[1])
    return False


def schema_of(contract: Contract) -> dict[str, Any]:
    """What ``released.json`` records of a contract version."""
    nullable = contract.nullable
    return {
        "version": contract.version,
        "kind": contract.kind,
        "primary_key": contract.primary_key,
        "columns": {name: {"type": str(dtype), "nullable": nullable[name]} for name, dtype in contract.columns.items()},
    }


@dataclass(frozen=True)
class Change:
    """One difference between a registered contract and what was released (or what dbt declares)."""

    contract: str
    major: int
    kind: str
    detail: str
    column: str | None = None
    breaking: bool = False

    def __str__(self) -> str:
        where = f"{self.contract} v{self.major}" + (f" column {self.column}" if self.column else "")
        return f"{where}: {self.detail}"


@dataclass
class Report:
    breaking: list[Change] = field(default_factory=list)
    new_versions: list[Change] = field(default_factory=list)
    unreleased: list[Change] = field(default_factory=list)
    retired: list[Change] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaking


def compare(name: str, major: int, released: dict[str, Any], current: dict[str, Any]) -> list[Change]:
    """Every difference of schema ``current`` from ``released`` (both as :func:`schema_of` makes them)."""
    landing = current.get("kind", released.get("kind")) == "landing"
    changes = [Change(name, major, kind, detail, column, breaking)
               for kind, detail, column, breaking in _column_changes(released["columns"], current["columns"], landing)]
    old_key, new_key = list(released.get("primary_key", [])), list(current.get("primary_key", []))
    if old_key != new_key:  # a different key is a different grain; declaring one where none was is not
        changes.append(Change(name, major, "primary_key_changed" if old_key else "primary_key_declared",
                              f"unique key {old_key} -> {new_key}", breaking=bool(old_key)))
    old_version, new_version = _version(released["version"]), _version(current["version"])
    if new_version < old_version:
        changes.append(Change(name, major, "version_regressed",
                              f"version {current['version']} is older than released {released['version']}",
                              breaking=True))
    elif new_version > old_version:
        changes.append(Change(name, major, "version_changed",
                              f"released {released['version']}, registered {current['version']}"))
    elif changes:
        changes.append(Change(name, major, "version_unchanged",
                              f"schema changed but version is still {current['version']}: bump the minor"))
    return changes


def _family(type_name: str) -> str:
    """The landing column family of a polars type name (landing tables store Int* as bigint, Float* as double)."""
    for prefix, family in (("Int", "integer"), ("UInt", "integer"), ("Float", "float"), ("Decimal", "numeric")):
        if type_name.startswith(prefix):
            return family
    return type_name


def _column_changes(old: dict[str, Any], new: dict[str, Any],
                    landing: bool = False) -> list[tuple[str, str, str | None, bool]]:
    """(kind, detail, column, breaking) of every column difference. For a landing contract a widening that changes
    the landing column's type (an integer becoming a float) is breaking: existing landing tables are not retyped."""
    found: list[tuple[str, str, str | None, bool]] = []
    for column, was in old.items():
        now = new.get(column)
        if now is None:
            found.append(("column_removed", f"column removed (was {was['type']})", column, True))
            continue
        if now["type"] != was["type"]:
            widened = is_widening(was["type"], now["type"])
            if widened and landing and _family(was["type"]) != _family(now["type"]):
                found.append(("landing_type_changed", f"type {was['type']} -> {now['type']} would retype the "
                              "landing table's column (not done in place): a new major version", column, True))
            else:
                found.append(("type_widened" if widened else "type_narrowed",
                              f"type {was['type']} -> {now['type']}" + ("" if widened else " is not a widening"),
                              column, not widened))
        if was["nullable"] != now["nullable"]:
            tightened = was["nullable"]
            found.append(("nullability_tightened" if tightened else "nullability_relaxed",
                          "nullable -> not nullable" if tightened else "not nullable -> nullable", column, tightened))
    for column, now in new.items():
        if column not in old:
            required = not now["nullable"]
            found.append(("column_added", f"column added ({now['type']}, {'not ' if required else ''}nullable)",
                          column, required))
    if [c for c in new if c in old] != [c for c in old if c in new]:
        found.append(("column_order_changed", "column order changed (readers select columns by name)", None, False))
    return found


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def check(contracts: list[Contract], released: dict[str, dict[str, Any]]) -> Report:
    """Compare registered contracts with the released schemas (``{name: {major: schema}}``, majors as strings)."""
    report = Report()
    registered = {(c.name, c.major): c for c in contracts}
    for (name, major), contract in sorted(registered.items()):
        current = schema_of(contract)
        releases = released.get(name, {})
        if str(major) not in releases:
            report.new_versions.append(_new_version(contract, current, releases))
            continue
        for change in compare(name, major, releases[str(major)], current):
            (report.breaking if change.breaking else report.unreleased).append(change)
    for name, releases in sorted(released.items()):
        for major in sorted(releases, key=int):
            if (name, int(major)) not in registered:
                report.retired.append(Change(
                    name, int(major), "retired", f"released {releases[major]['version']} is no longer registered"))
    return report


def _new_version(contract: Contract, current: dict[str, Any], releases: dict[str, Any]) -> Change:
    earlier = [int(m) for m in releases if int(m) < contract.major]
    detail = f"new version {contract.version}, not in released.json: release it (`ndc contracts release`)"
    if earlier:
        previous = max(earlier)
        breaking = [c for c in compare(contract.name, contract.major, releases[str(previous)], current)
                    if c.breaking and c.kind != "version_regressed"]
        if breaking:
            detail += f"; breaking against v{previous}: " + "; ".join(
                (f"{c.column}: " if c.column else "") + c.detail for c in breaking)
    return Change(contract.name, contract.major, "new_version", detail)


class BreakingChange(NdcError):
    def __init__(self, changes: list[Change]) -> None:
        self.changes = changes
        lines = "\n".join(f"  {c}" for c in changes)
        super().__init__(f"{len(changes)} breaking change(s) under a released major version; ship them as a new "
                         f"major version instead:\n{lines}")


def release(contracts: list[Contract], released: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The released schemas updated from the registry: new majors added, non-breaking changes recorded, retired
    majors kept (their consumers may still hold them). Raises :class:`BreakingChange` instead of recording one."""
    report = check(contracts, released)
    if report.breaking:
        raise BreakingChange(report.breaking)
    updated = {name: dict(releases) for name, releases in released.items()}
    for contract in contracts:
        updated.setdefault(contract.name, {})[str(contract.major)] = schema_of(contract)
    return {name: dict(sorted(updated[name].items(), key=lambda item: int(item[0]))) for name in sorted(updated)}


def load_released(path: Path = RELEASED) -> dict[str, dict[str, Any]]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def write_released(released: dict[str, dict[str, Any]], path: Path = RELEASED) -> None:
    """Pretty JSON with one line per column, so a release reads as a short diff."""
    text = json.dumps(released, indent=2, ensure_ascii=False)
    text = re.sub(r'\{\n\s+"type": ("(?:[^"\\]|\\.)*"),\n\s+"nullable": (true|false)\n\s+\}',
                  r'{"type": \1, "nullable": \2}', text)
    path.write_text(text + "\n", encoding="utf-8")


# dbt data_type -> the polars type gate 2 reads it as (psycopg -> polars with the contract's schema_overrides).
DBT_TYPES = {
    "text": "String", "varchar": "String", "character varying": "String",
    "date": "Date",
    "boolean": "Boolean", "bool": "Boolean",
    "smallint": "Int16", "int2": "Int16",
    "integer": "Int32", "int": "Int32", "int4": "Int32",
    "bigint": "Int64", "int8": "Int64",
    "real": "Float32", "float4": "Float32",
    "double precision": "Float64", "float8": "Float64",
    "timestamp with time zone": "Datetime(time_unit='us', time_zone='UTC')",
    "timestamptz": "Datetime(time_unit='us', time_zone='UTC')",
    "timestamp": "Datetime(time_unit='us', time_zone=None)",
    "timestamp without time zone": "Datetime(time_unit='us', time_zone=None)",
}
_DBT_NUMERIC = re.compile(r"^(?:numeric|decimal)(?:\(\s*\d+\s*(?:,\s*(\d+)\s*)?\))?$")
_DBT_VARCHAR = re.compile(r"^(?:varchar|character varying)\(\s*\d+\s*\)$")


def polars_type_of(data_type: str) -> str | None:
    """The polars type name of a dbt (PostgreSQL) ``data_type``; numeric[(p, s)] -> Decimal(38, s or 0)."""
    text = " ".join(data_type.lower().split())
    if text in DBT_TYPES:
        return DBT_TYPES[text]
    if _DBT_VARCHAR.match(text):
        return "String"
    numeric = _DBT_NUMERIC.match(text)
    if numeric:
        return f"Decimal(precision=38, scale={numeric[1] or 0})"
    return None


def dbt_shared_models(manifest: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    """(model name, version) -> manifest node of each shared model; an unversioned model is version 1."""
    found = {}
    for node in manifest["nodes"].values():
        if node["resource_type"] == "model" and node["config"].get("schema") == "shared":
            version = node.get("version")
            found[(node["name"], 1 if version is None else int(version))] = node
    return found


def _dbt_not_null(node: dict[str, Any]) -> tuple[list[str], set[str]]:
    """The node's primary key columns, and every column dbt declares not null (not_null or primary key)."""
    key = [c for constraint in node.get("constraints", []) if constraint["type"] == "primary_key"
           for c in constraint.get("columns", [])]
    not_null = set(key)
    for name, column in node["columns"].items():
        kinds = {constraint["type"] for constraint in column.get("constraints", [])}
        if kinds & {"not_null", "primary_key"}:
            not_null.add(name)
        if "primary_key" in kinds and name not in key:
            key.append(name)
    return key, not_null


def agreement_problems(contract: Contract, node: dict[str, Any]) -> list[str]:
    """How a shared contract and its dbt model's contract disagree (columns, order, types, not null, key)."""
    where = f"{contract.name} v{contract.major} / dbt model {node['name']}" + (
        f" v{node['version']}" if node.get("version") is not None else "")
    problems = []
    if not node["config"].get("contract", {}).get("enforced"):
        problems.append(f"{where}: the dbt model contract is not enforced")
    if node.get("alias") != contract.relation:
        problems.append(f"{where}: dbt relation {node.get('alias')!r}, contract expects {contract.relation!r}")
    ours, theirs = contract.columns, node["columns"]
    problems += [f"{where}: column {c} is in the contract, not in dbt" for c in ours if c not in theirs]
    problems += [f"{where}: column {c} is in dbt, not in the contract" for c in theirs if c not in ours]
    if [c for c in ours if c in theirs] != [c for c in theirs if c in ours]:
        problems.append(f"{where}: column order differs: dbt {list(theirs)}, contract {list(ours)}")
    key, not_null = _dbt_not_null(node)
    nullable = contract.nullable
    for name in (c for c in ours if c in theirs):
        data_type = theirs[name].get("data_type") or ""
        expected = polars_type_of(data_type)
        if expected is None:
            problems.append(f"{where}: column {name}: dbt data_type {data_type!r} has no polars type mapping")
        elif expected != str(ours[name]):
            problems.append(f"{where}: column {name}: dbt data_type {data_type} ({expected}), contract {ours[name]}")
        if nullable[name] == (name in not_null):
            dbt_side = "not_null or primary key" if name in not_null else "no not_null constraint"
            problems.append(f"{where}: column {name}: dbt has {dbt_side}, contract nullable={nullable[name]}")
    if key != contract.primary_key:
        problems.append(f"{where}: dbt primary key {key}, contract primary_key {contract.primary_key}")
    return problems


def dbt_agreement(manifest_path: Path | None = None, contracts: list[Contract] | None = None) -> list[str]:
    """Problems between the shared contracts (every major) and the dbt shared models of the manifest; empty when
    they agree. Major N of a contract is dbt model version N (an unversioned model is version 1)."""
    from ndc.conform import dbt
    from ndc.contracts import all_contracts

    path = manifest_path or dbt.manifest_file()
    if not path.exists():
        raise NdcError(f"{path} is missing: run `ndc dbt parse` first (the dbt agreement is checked on it)")
    nodes = dbt_shared_models(json.loads(path.read_text(encoding="utf-8")))
    shared = [c for c in (all_contracts() if contracts is None else contracts) if c.kind == "shared"]
    problems: list[str] = []
    covered = set()
    for contract in shared:
        model = contract.metadata.get("dbt_model") or contract.name.removeprefix(SHARED_PREFIX)
        covered.add((model, contract.major))
        node = nodes.get((model, contract.major))
        if node is None:
            problems.append(f"{contract.name} v{contract.major}: no dbt shared model {model!r} version "
                            f"{contract.major} in {path}")
            continue
        problems += agreement_problems(contract, node)
    for model, version in sorted(set(nodes) - covered):
        problems.append(f"dbt shared model {model} v{version} has no contract (expected {SHARED_PREFIX}{model} "
                        f"major {version} in plugins/ndc/contracts/shared.py)")
    return problems
