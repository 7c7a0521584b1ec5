"""The catalogue of shared datasets, generated — never maintained by hand — from the dbt manifest (relations,
descriptions, lineage to the sources, deprecations), the contract registry, the source registry (owner
agencies), ``ndc_meta`` (last publication, how fresh each source is) and the applied agreements (consumers).

``ndc catalog`` prints it; :func:`refresh` writes it to ``ndc_meta.catalog`` (one row per shared relation), which
every successful publish and every ``ndc agreements apply`` refreshes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from ndc.config.sources import find_source
from ndc.conform import dbt
from ndc.contracts import get_contract
from ndc.errors import ConfigError
from ndc.settings import get_settings


@dataclass
class Entry:
    relation: str
    description: str
    contract_name: str | None
    contract_version: str | None
    deprecated_on: str | None
    owner_agencies: list[str]
    sources: list[str]
    last_published_at: str | None = None
    sources_loaded_through: str | None = None
    consumers: list[dict] = field(default_factory=list)


def _upstream_sources(manifest: dict, unique_id: str) -> set[str]:
    seen, stack, found = set(), [unique_id], set()
    while stack:
        node = stack.pop()
        for parent in manifest["parent_map"].get(node, []):
            if parent in seen:
                continue
            seen.add(parent)
            if parent.startswith("source."):
                found.add(manifest["sources"][parent]["source_name"])
            else:
                stack.append(parent)
    return found


def entries(conn: psycopg.Connection | None = None, manifest_path: Path | None = None) -> list[Entry]:
    manifest_path = manifest_path or dbt.manifest_file()
    if not manifest_path.exists():
        raise ConfigError(f"{manifest_path} is missing: run `ndc dbt parse` first")
    manifest = json.loads(manifest_path.read_text())
    owners: dict[str, str] = {}  # only the sources shared models are built from (not every registered one)
    found = []
    for unique_id, node in sorted(manifest["nodes"].items()):
        if node["resource_type"] != "model" or node["config"].get("schema") != "shared":
            continue
        relation = node["alias"]
        major = int(node.get("version") or 1)
        try:
            contract = get_contract(f"shared.{node['name']}", major)
            name, version = contract.name, contract.version
        except ConfigError:
            name = version = None
        sources = sorted(_upstream_sources(manifest, unique_id))
        for source in sources:
            if source not in owners:
                try:
                    owners[source] = find_source(get_settings().sources_dir, source).owner_agency
                except ConfigError:
                    owners[source] = None
        found.append(Entry(relation=relation, description=" ".join((node.get("description") or "").split()),
                           contract_name=name, contract_version=version,
                           deprecated_on=str(node["deprecation_date"])[:10] if node.get("deprecation_date") else None,
                           owner_agencies=sorted({owners[s] for s in sources if owners.get(s)}), sources=sources))
    if conn is not None:
        _add_state(conn, found)
    return found


def _add_state(conn: psycopg.Connection, found: list[Entry]) -> None:
    with conn.transaction():
        # the last successful publish of each relation, from the rollup the ledger keeps (one row per dataset)
        published = dict(conn.execute(
            "select substr(dataset, 8), last_success_at from ndc_meta.dataset_loads where dataset like 'shared.%'"
            " and last_success_at is not null").fetchall())
        loaded = dict(conn.execute(
            "select split_part(dataset, '.', 1), min(loaded_through) from ndc_meta.watermarks group by 1").fetchall())
        consumers: dict[str, list[dict]] = {}
        if conn.execute("select to_regclass('ndc_meta.applied_agreements')").fetchone()[0]:
            for agreement, consumer, views in conn.execute(
                    "select agreement_id, consumer, views from ndc_meta.applied_agreements order by 1"):
                for view in views:
                    consumers.setdefault(view, []).append({"agency": consumer, "agreement": agreement})
    for entry in found:
        moment = published.get(entry.relation)
        entry.last_published_at = moment.isoformat() if moment else None
        through = [loaded[s] for s in entry.sources if loaded.get(s)]
        entry.sources_loaded_through = min(through).isoformat() if through else None
        entry.consumers = consumers.get(entry.relation, [])


def refresh(conn: psycopg.Connection) -> list[Entry]:
    """Regenerate ``ndc_meta.catalog`` in one transaction. Needs ``ensure_meta`` first."""
    found = entries(conn)
    with conn.transaction():
        conn.execute("delete from ndc_meta.catalog")
        for e in found:
            conn.execute(
                "insert into ndc_meta.catalog (relation, description, contract_name, contract_version, deprecated_on,"
                " owner_agencies, sources, last_published_at, sources_loaded_through, consumers)"
                " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (e.relation, e.description, e.contract_name, e.contract_version, e.deprecated_on, e.owner_agencies,
                 e.sources, e.last_published_at, e.sources_loaded_through, Jsonb(e.consumers)))
    return found


def as_dicts(found: list[Entry]) -> list[dict]:
    return [asdict(e) for e in found]
