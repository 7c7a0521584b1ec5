"""What a conform run builds, and how: a full build or a delta, which part of the dbt graph, and why.

A conform run is numbered (``ndc_meta.conform_runs.conform_seq``) and is one of two modes
(docs/conform-publish.md):

* **full** — every model rebuilt (``dbt build --full-refresh``: incremental models too) with the shared models in
  the build schema consumers are not reading; published by switching the ``shared.<model>`` views.
* **delta** — the part of the graph downstream of the sources whose landing tables changed, incremental models
  updated by what changed, shared models built for their changed keys only into ``shared_delta``; published by
  applying those rows to the published tables in one transaction (:mod:`ndc.conform.publish`).

A delta is the default. A run is full, and says why, when nothing was published yet, a full refresh was asked
for, a full build was left unpublished, the published build predates numbered runs, a model, seed, snapshot or
macro of the dbt project changed since the publication (a new contract version, a province-mapping change), or a
shared relation is not published yet.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from ndc.conform import dbt
from ndc.errors import NdcError

DELTA_SCHEMA = "shared_delta"
# Horizon of a build: every landing row stamped (``_ndc_loaded_at``) before it was committed when the build started
# (an extract's merge stamps its rows with its transaction's start and commits later). The dbt macro
# ``conformed_through`` is the same expression.
HORIZON = ("select least(now(), min(xact_start)) from pg_stat_activity"
           " where pid != pg_backend_pid() and xact_start is not null and datname = current_database()")


class NothingToConform(NdcError):
    """A scheduled run found no landing change that feeds a shared model since the last publication: it builds
    and publishes nothing (a full run is never skipped)."""


# The sources whose landing tables changed since a horizon, from the ledger (its recorded_at index): extracts that
# merged new versions, replays that loaded rows, full compares that marked or restored rows (a daily extract that
# found nothing new changes nothing). Each ledger row is stamped inside its load's transaction, and a horizon is the
# start of the oldest transaction open when it was taken, so a load committed after the horizon is never missed.
LANDED_SINCE = """
select distinct regexp_replace(split_part(target, '.', 1), '^landing_', '')
from ndc_meta.ledger
where recorded_at >= %s and outcome = 'success' and target like 'landing\\_%%'
    and case kind
        when 'extract' then coalesce((details->>'rows_new_versions')::bigint, rows_loaded) > 0
        when 'replay' then rows_loaded > 0
        when 'full_compare' then rows_loaded > 0 or coalesce((details->>'restored')::bigint, 0) > 0
        else false
    end
"""


def landed_since_publication(conn: psycopg.Connection) -> tuple[list[str] | None, str]:
    """The sources loaded since the landing horizon of the last published conform run (None: every source, when no
    numbered run is published), and a sentence saying since when. A scheduled conform run builds what they feed:
    every landing between two runs is collected into the next one."""
    last = conn.execute("select r.conform_seq, r.changes_through from ndc_meta.publications p"
                        " join ndc_meta.conform_runs r on r.conform_seq = p.conform_seq"
                        " order by p.publication_id desc limit 1").fetchone()
    if last is None:
        return None, "no numbered conform run is published"
    found = sorted(r[0] for r in conn.execute(LANDED_SINCE, (last[1],)))
    return found, f"loaded since conform run {last[0]} (landing horizon {last[1].isoformat()})"


@dataclass
class RunPlan:
    conform_seq: int
    mode: str                 # "full" | "delta"
    reason: str
    build_schema: str         # where dbt builds shared models: shared_a / shared_b (full) or shared_delta (delta)
    published_schema: str | None  # the build schema consumers read now
    sources: list[str] | None     # the sources whose part of the graph runs (None: all)
    models: list[str]             # shared relations this run builds and publishes
    nodes: list[str] = field(default_factory=list)  # dbt unique ids a delta run builds (empty: the whole project)
    published: dict[str, dict] = field(default_factory=dict)  # relation -> {"seq", "through"} of its publication
    changes_through: str = ""
    # safety overrides given before the build (accept_stale): the run's publish ledger row records them
    overrides: dict = field(default_factory=dict)

    @property
    def is_delta(self) -> bool:
        return self.mode == "delta"

    def dbt_vars(self) -> dict:
        return {"ndc_build_schema": self.published_schema if self.is_delta else self.build_schema,
                "ndc_conform_mode": self.mode, "ndc_conform_seq": self.conform_seq,
                "ndc_published": self.published}

    def dbt_args(self, manifest: dict | None = None) -> list[str]:
        """``dbt build`` arguments: the whole project with ``--full-refresh`` (full), or the delta's nodes by name
        (their tests and unit tests listed too, nothing selected indirectly)."""
        if not self.is_delta:
            return ["--full-refresh"]
        manifest = manifest or _manifest()
        names = []
        for uid in self.nodes:
            node = manifest["nodes"].get(uid) or manifest["unit_tests"].get(uid)
            if uid.startswith("unit_test."):
                names.append(f"unit_test:{node['name']}")
            else:
                names.append(".".join(node["fqn"]))
        return ["--select", *names, "--indirect-selection", "empty"]

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunPlan:
        return cls(**data)


def _manifest(path: Path | None = None) -> dict:
    path = path or dbt.manifest_file()
    if not path.exists():
        raise NdcError(f"{path} is missing: run `ndc dbt parse` (CI and the images do) first")
    return json.loads(path.read_text())


def checksums(manifest: dict) -> dict[str, str]:
    """A fingerprint of everything a build's output depends on in the project: each model's, seed's and snapshot's
    SQL or data, config and columns, and the project's macros and vars."""
    found = {}
    for uid, node in manifest["nodes"].items():
        if node["resource_type"] not in ("model", "seed", "snapshot"):
            continue
        shape = json.dumps([node["checksum"]["checksum"], node["config"], sorted(node.get("columns", {}))],
                           sort_keys=True, default=str)
        found[uid] = hashlib.sha256(shape.encode()).hexdigest()[:16]
    macros = sorted((uid, m["macro_sql"]) for uid, m in manifest["macros"].items() if m["package_name"] == "ndc")
    found["macros"] = hashlib.sha256(json.dumps(macros).encode()).hexdigest()[:16]
    return found


def _shared(manifest: dict) -> dict[str, str]:
    """unique id -> relation of every shared model."""
    return {uid: n["alias"] for uid, n in manifest["nodes"].items()
            if n["resource_type"] == "model" and n["config"].get("schema") == "shared"}


def _descendants(manifest: dict, roots: set[str]) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        for child in manifest["child_map"].get(todo.pop(), []):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def delta_nodes(manifest: dict, sources: list[str] | None) -> tuple[list[str], list[str]]:
    """The dbt nodes a delta run builds, and the shared relations among them.

    Models and snapshots downstream of the sources' landing tables; the incremental models and change sets they
    read (an incremental model must be current before what reads it; unchanged, it costs a few index lookups);
    the data tests of the shared models and change sets built (the staging and intermediate tests read whole
    tables and run on full builds); the unit tests of every model built. Ephemeral models are compiled into their
    readers."""
    nodes = manifest["nodes"]
    buildable = {uid for uid, n in nodes.items() if n["resource_type"] in ("model", "snapshot")
                 and n["config"].get("materialized") != "ephemeral"}
    roots = {uid for uid, s in manifest["sources"].items() if sources is None or s["source_name"] in sources}
    chosen = _descendants(manifest, roots) & buildable
    todo = list(chosen)
    while todo:  # incremental models and change sets upstream of what is chosen
        for parent in manifest["parent_map"].get(todo.pop(), []):
            node = nodes.get(parent)
            if parent in chosen or node is None or parent not in buildable:
                continue
            if node["config"].get("materialized") == "incremental" or (node["config"].get("meta") or {}).get(
                    "ndc_changes_for"):
                chosen.add(parent)
                todo.append(parent)
    shared = _shared(manifest)
    changes = {uid for uid in chosen if (nodes[uid]["config"].get("meta") or {}).get("ndc_changes_for")}
    tested = {uid for uid in chosen if uid in shared} | changes
    tests = {uid for uid, n in nodes.items() if n["resource_type"] == "test"
             and {p for p in n["depends_on"]["nodes"] if p in buildable} & tested
             and {p for p in n["depends_on"]["nodes"] if p in buildable} <= chosen}
    unit = {uid for uid, u in manifest.get("unit_tests", {}).items()
            if set(u["depends_on"]["nodes"][:1]) & chosen}
    models = sorted(shared[uid] for uid in chosen if uid in shared)
    return sorted(chosen | tests | unit), models


def changes_models(manifest: dict | None = None) -> dict[str, tuple[str, str, list[str]]]:
    """Shared relation -> (schema and name of its change set, its key columns), from the ``ndc_changes_for``
    models."""
    manifest = manifest or _manifest()
    found = {}
    for node in manifest["nodes"].values():
        meta = (node["config"].get("meta") or {}) if node["resource_type"] == "model" else {}
        if meta.get("ndc_changes_for"):
            found[meta["ndc_changes_for"]] = (node["schema"], node["alias"], list(meta["ndc_key"]))
    return found


def _last_publications(conn: psycopg.Connection, relations: list[str]) -> dict[str, tuple]:
    """relation -> (publication id, build schema, mode, conform_seq, horizon) of its latest publication."""
    rows = conn.execute(
        "select distinct on (m) m, p.publication_id, p.build_schema, p.mode, p.conform_seq, r.changes_through"
        " from ndc_meta.publications p cross join unnest(p.models) m"
        " left join ndc_meta.conform_runs r on r.conform_seq = p.conform_seq"
        " where m = any(%s) order by m, p.publication_id desc", (relations,)).fetchall()
    return {r[0]: r[1:] for r in rows}


def _why_full(conn: psycopg.Connection, manifest: dict, relations: list[str], full_refresh: bool,
              fingerprint: dict[str, str]) -> tuple[str | None, str | None]:
    """(reason for a full run or None, the schema consumers read)."""
    last = conn.execute("select p.build_schema, p.conform_seq, r.checksums from ndc_meta.publications p"
                        " left join ndc_meta.conform_runs r on r.conform_seq = p.conform_seq"
                        " order by p.publication_id desc limit 1").fetchone()
    if last is None:
        return "nothing is published yet", None
    active, seq, published_checksums = last
    if full_refresh:
        return "a full refresh was asked for", active
    if seq is None:
        return "the published build predates numbered conform runs", active
    unpublished = conn.execute("select conform_seq, run_id from ndc_meta.conform_runs where mode = 'full'"
                               " and conform_seq > %s order by conform_seq desc limit 1", (seq,)).fetchone()
    if unpublished:
        return f"full build {unpublished[0]} ({unpublished[1]}) was not published", active
    changed = sorted(k for k in set(fingerprint) | set(published_checksums or {})
                     if fingerprint.get(k) != (published_checksums or {}).get(k))
    if changed:
        shown = ", ".join(c.split(".")[-1] for c in changed[:8]) + (" …" if len(changed) > 8 else "")
        return f"the dbt project changed since the publication: {shown}", active
    published = {m for m, p in _last_publications(conn, relations).items() if p[1] == active}
    missing = sorted(set(relations) - published)
    if missing:
        return f"not published yet: {', '.join(missing)}", active
    return None, active


def plan_run(conn: psycopg.Connection, *, run_id: str | None, sources: list[str] | None = None,
             full_refresh: bool = False, manifest_path: Path | None = None) -> RunPlan:
    """Decide and record the run (one ``ndc_meta.conform_runs`` row). ``sources``: the sources whose landing
    tables triggered it (None: all). Needs ``ensure_meta`` first."""
    manifest = _manifest(manifest_path)
    relations = sorted(_shared(manifest).values())
    fingerprint = checksums(manifest)
    with conn.transaction():
        conn.execute("lock table ndc_meta.conform_runs in exclusive mode")
        reason, active = _why_full(conn, manifest, relations, full_refresh, fingerprint)
        if reason is None:
            nodes, models = delta_nodes(manifest, sources)
            if sources is not None and not nodes:
                raise NothingToConform(
                    f"no shared model is fed by the sources that changed ({', '.join(sources) or 'none'}): "
                    "nothing to build or publish")
            mode = "delta"
            reason = (f"changes from {', '.join(sources)}" if sources else "changes from every source")
            build_schema = DELTA_SCHEMA
        else:
            nodes, models, mode, sources = [], relations, "full", None
            build_schema = "shared_b" if active == "shared_a" else "shared_a"
        horizon = conn.execute(HORIZON).fetchone()[0]
        seq = conn.execute(
            "insert into ndc_meta.conform_runs (run_id, mode, reason, sources, models, changes_through, checksums)"
            " values (%s, %s, %s, %s, %s, %s, %s) returning conform_seq",
            (run_id, mode, reason, sources, models, horizon, Jsonb(fingerprint))).fetchone()[0]
        published = {m: {"seq": int(p[3] or 0), "through": p[4].isoformat() if p[4] else None}
                      for m, p in _last_publications(conn, models).items() if p[3] is not None}
    return RunPlan(conform_seq=seq, mode=mode, reason=reason, build_schema=build_schema, published_schema=active,
                   sources=sources, models=models, nodes=nodes, published=published,
                   changes_through=horizon.isoformat())


def run_record(conn: psycopg.Connection, conform_seq: int) -> dict:
    """The recorded run: mode, reason, horizon and fingerprint."""
    row = conn.execute("select mode, reason, changes_through, checksums, models from ndc_meta.conform_runs"
                       " where conform_seq = %s", (conform_seq,)).fetchone()
    if row is None:
        raise NdcError(f"conform run {conform_seq} is not recorded in ndc_meta.conform_runs")
    return {"mode": row[0], "reason": row[1], "changes_through": row[2], "checksums": row[3], "models": row[4]}
