"""Write-audit-publish for shared models, by a view switch (a full build) or by applying a delta.

Consumers only ever read the views ``shared.<model>``, over the tables of one build schema (``shared_a`` or
``shared_b``).

* **Full build** (:func:`publish`): shared models are built into the other build schema; publishing switches every
  view to it in **one transaction** (``CREATE OR REPLACE VIEW`` is transactional), then drops the tables of the
  schema consumers no longer read (no second copy is kept).
* **Delta** (:func:`publish_delta`): shared models are built for their changed keys only into ``shared_delta``;
  publishing deletes those keys from the published tables and inserts the delta's rows, for every model, in
  **one transaction** — with the whole-table rules of gate 2 run inside it on the result — so readers (MVCC) see
  the previous version or the new one, never a mix, never a version that failed the gate.

Either way gate 2 (:mod:`ndc.conform.build_audit`: each relation's contract on the rows that changed, and
whole-table rules in SQL) decides; any failure publishes nothing and the next successful run publishes what was
held back (a delta is always taken against the published version).

A new major version of a shared model (a dbt model version, relation ``<model>_v2``) is published beside the old
one; while the old one has a deprecation date, its view's comment says so and the ledger records the notice once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from ndc.audit import alerts
from ndc.audit.handoff import Handoff, record_event, recorded
from ndc.conform import build_audit
from ndc.conform.dbt import BUILD_SCHEMAS
from ndc.errors import ContractViolation, NdcError
from ndc.identifiers import column_list, ident
from ndc.warehouse import locks

log = logging.getLogger(__name__)


def _record_overrides(run: Handoff, accept_row_change: bool, waived: list[str], given: dict | None) -> None:
    """The safety overrides this conform run was given, on its publish ledger row: those decided before the build
    (``given``: the plan's, e.g. ``accept_stale``) and ``accept_row_change`` (``waived``: the relations whose
    row-count change it let through)."""
    for name, what in (given or {}).items():
        run.overrides[name] = what
    if accept_row_change:
        run.override("accept_row_change", bool(waived), relations=sorted(set(waived)))

def active_schema(conn: psycopg.Connection) -> str | None:
    """The build schema consumers read now (None before the first publish). Needs ``ensure_meta`` first."""
    with conn.transaction():
        row = conn.execute("select build_schema from ndc_meta.publications"
                           " order by publication_id desc limit 1").fetchone()
    return row[0] if row else None


def inactive_schema(conn: psycopg.Connection) -> str:
    """Where the next build goes: the build schema consumers are not reading."""
    return "shared_b" if active_schema(conn) == "shared_a" else "shared_a"


def check_columns(conn: psycopg.Connection, build_schema: str, models: dict[str, list[str]]) -> None:
    """Every relation is built with its contract columns (dbt enforces them; a half-built schema fails here)."""
    for model, columns in models.items():
        found = [r[0] for r in conn.execute(
            "select column_name from information_schema.columns where table_schema = %s and table_name = %s"
            " order by ordinal_position", (build_schema, model))]
        missing = [c for c in columns if c not in found]
        if missing:
            raise NdcError(f"{build_schema}.{model}: not built or missing contract columns {missing}; not published")


@dataclass
class Publication:
    build_schema: str
    models: list[str]
    rows: dict[str, int]


def publish(conn: psycopg.Connection, build_schema: str, models: dict[str, list[str]],
            run_id: str | None = None, *, as_of: datetime | None = None, accept_row_change: bool = False,
            deprecations: dict[str, str] | None = None, conform_seq: int | None = None,
            overrides: dict | None = None) -> Publication:
    """Gate 2, then switch every ``shared.<relation>`` view to ``build_schema`` at once; ledger either way.

    ``as_of``: when the build started (landing rows loaded later were not read by it; default now).
    ``deprecations``: relation → deprecation date, from the dbt model versions.
    ``overrides``: safety overrides the run was given before the build (the plan's), for the ledger row.
    """
    if build_schema not in BUILD_SCHEMAS:
        raise NdcError(f"build schema must be one of {BUILD_SCHEMAS}, got {build_schema!r}")
    run = Handoff(kind="publish", source=build_schema, target="shared", run_id=run_id, dataset="shared")
    waived: list[str] = []
    with recorded(conn, run):
        try:
            with conn.transaction():  # committed blocks: the gate's results and the ledger survive a blocked publish
                check_columns(conn, build_schema, models)
            checked = build_audit.audit(conn, build_schema, active_schema(conn), models, run_id=run_id,
                                        as_of=as_of or datetime.now(UTC), accept_row_change=accept_row_change,
                                        waived=waived)
        except ContractViolation as exc:
            # Counts and check names only: the exception's sample rows (personal data) stay in the task log; any
            # other error is described by the hand-off (ndc.audit.handoff.ledger_error), never by its message.
            run.details = {"blocked_by": exc.check, "relation": exc.dataset, "failures": exc.failures}
            raise
        finally:
            _record_overrides(run, accept_row_change, waived, overrides)
        previous = active_schema(conn)
        rows, publication_id = locks.bounded(
            conn, f"publish of {build_schema}: switching the shared views",
            lambda: _switch(conn, build_schema, models, deprecations, run_id, conform_seq), dataset="shared",
            run_id=run_id)
        total = sum(rows.values())
        run.rows_in = run.rows_loaded = total
        run.details = {"models": rows, "gate2_rows_checked": checked, "publication_id": publication_id}
    if previous and previous != build_schema:
        drop_stale(conn, previous, list(models))
    _after_publish(conn, publication_id, models, deprecations, run_id)
    log.info("published %s from %s (%s)", ", ".join(sorted(models)), build_schema, rows)
    return Publication(build_schema, sorted(models), rows)


def _after_publish(conn: psycopg.Connection, publication_id: int, models: dict[str, list[str]],
                   deprecations: dict[str, str] | None, run_id: str | None) -> None:
    _announce_deprecations(conn, deprecations or {}, models, run_id)
    for model in models:
        alerts.close_alerts(conn, f"shared.{model}", run_id)
    from ndc.sharing.agreements import deliver

    deliver(conn, publication_id, run_id)
    _refresh_catalog(conn)


def drop_stale(conn: psycopg.Connection, schema: str, models: list[str]) -> list[str]:
    """Drop the shared tables of a build schema consumers no longer read (after a view switch): a delta is applied
    to the published tables, so an old copy is never needed again and would double the disk. A reader still
    scanning one holds it; the drop then waits at most 2 s and is left to the next full publish. Returns what was
    dropped."""
    dropped = []
    for model in sorted(models):
        try:
            with conn.transaction():
                conn.execute("set local lock_timeout = '2s'")
                conn.execute(sql.SQL("drop table if exists {}").format(ident(schema, model)))
            dropped.append(model)
        except psycopg.errors.LockNotAvailable:
            log.warning("%s.%s is still being read: left for the next full publish", schema, model)
    return dropped


def publish_delta(conn: psycopg.Connection, plan, models: dict[str, list[str]], run_id: str | None = None, *,
                  as_of: datetime | None = None, accept_row_change: bool = False,
                  deprecations: dict[str, str] | None = None, overrides: dict | None = None) -> Publication:
    """Gate 2 on the delta a run built in ``shared_delta`` (``plan``: its :class:`ndc.conform.run_plan.RunPlan`),
    applied to the published tables in one transaction with the whole-table rules inside it; ledger either way.
    ``models``: relation -> contract columns of the relations the run built."""
    from ndc.conform.run_plan import DELTA_SCHEMA, changes_models

    target = plan.published_schema
    if target not in BUILD_SCHEMAS:
        raise NdcError(f"a delta applies to the published build schema; none is published ({target!r})")
    keyed = {m: c for m, c in changes_models().items() if m in models}
    run = Handoff(kind="publish", source=DELTA_SCHEMA, target="shared", run_id=run_id, dataset="shared")
    outcome: dict = {}

    def apply(conn: psycopg.Connection) -> dict[str, build_audit.Applied]:
        conn.execute("lock table ndc_meta.publications in exclusive mode")
        now = conn.execute("select build_schema from ndc_meta.publications order by publication_id desc limit 1"
                           ).fetchone()
        if now is None or now[0] != target:  # a full build was published since this run was planned
            raise NdcError(f"consumers read {now[0] if now else 'nothing'} now, not {target} as when conform run"
                           f" {plan.conform_seq} was planned: nothing applied; the next run plans again")
        return {m: _apply(conn, target, m, columns, keyed.get(m)) for m, columns in sorted(models.items())}

    def commit(conn: psycopg.Connection, applied: dict[str, build_audit.Applied]) -> None:
        outcome["publication_id"] = conn.execute(
            "insert into ndc_meta.publications (build_schema, models, run_id, mode, conform_seq)"
            " values (%s, %s, %s, 'delta', %s) returning publication_id",
            (target, sorted(models), run_id, plan.conform_seq)).fetchone()[0]
        outcome["applied"] = applied

    waived: list[str] = []
    with recorded(conn, run):
        try:
            with conn.transaction():
                check_columns(conn, DELTA_SCHEMA, models)
            checked = build_audit.audit_delta(conn, DELTA_SCHEMA, target, models, apply, commit, run_id=run_id,
                                              as_of=as_of or datetime.now(UTC),
                                              accept_row_change=accept_row_change, waived=waived)
        except ContractViolation as exc:
            run.details = {"blocked_by": exc.check, "relation": exc.dataset, "failures": exc.failures,
                           "mode": "delta", "conform_seq": plan.conform_seq}
            raise
        finally:
            _record_overrides(run, accept_row_change, waived, overrides)
        applied = outcome["applied"]
        rows = {m: a.rows_before - a.rows_deleted + a.rows_inserted for m, a in applied.items()}
        run.rows_in = run.rows_loaded = sum(a.rows_inserted for a in applied.values())
        run.details = {"mode": "delta", "conform_seq": plan.conform_seq, "models": rows,
                       "replaced": {m: {"deleted": a.rows_deleted, "inserted": a.rows_inserted}
                                    for m, a in applied.items()},
                       "gate2_rows_checked": checked, "publication_id": outcome["publication_id"]}
    _after_publish(conn, outcome["publication_id"], models, deprecations, run_id)
    log.info("published the delta of %s into %s (%s)", ", ".join(sorted(models)), target, run.details["replaced"])
    return Publication(target, sorted(models), rows)


def _apply(conn: psycopg.Connection, target: str, model: str, columns: list[str],
           changes: tuple[str, str, list[str]] | None) -> build_audit.Applied:
    """One relation's delta into the published table. Keyed (a change set lists the keys): those keys are deleted
    and the delta's rows (those keys that still exist) inserted. Otherwise the delta is the whole relation, built
    again (it is small): rows that differ are deleted and inserted."""
    published, delta = ident(target, model), ident("shared_delta", model)
    cols = column_list(columns)
    before = conn.execute(sql.SQL("select count(*) from {}").format(published)).fetchone()[0]
    if changes:
        schema, relation, key = changes
        keys = ident(schema, relation)
        match = sql.SQL(" and ").join(sql.SQL("p.{c} = k.{c}").format(c=ident(c)) for c in key)
        deleted = conn.execute(sql.SQL("delete from {published} p using {keys} k where {match}").format(
            published=published, keys=keys, match=match)).rowcount
        inserted = conn.execute(sql.SQL("insert into {published} ({cols}) select {cols} from {delta}").format(
            published=published, cols=cols, delta=delta)).rowcount
        return build_audit.Applied(before, deleted, inserted, keys)
    same = sql.SQL("row({p}) is not distinct from row({d})").format(
        p=sql.SQL(", ").join(sql.SQL("p.{}").format(ident(c)) for c in columns),
        d=sql.SQL(", ").join(sql.SQL("d.{}").format(ident(c)) for c in columns))
    deleted = conn.execute(sql.SQL("delete from {published} p where not exists (select from {delta} d where {same})"
                                   ).format(published=published, delta=delta, same=same)).rowcount
    inserted = conn.execute(sql.SQL(
        "insert into {published} ({cols}) select {cols} from {delta} d where not exists"
        " (select from {published} p where {same})").format(published=published, cols=cols, delta=delta,
                                                              same=same)).rowcount
    return build_audit.Applied(before, deleted, inserted)


def _switch(conn: psycopg.Connection, build_schema: str, models: dict[str, list[str]],
            deprecations: dict[str, str] | None, run_id: str | None,
            conform_seq: int | None = None) -> tuple[dict[str, int], int]:
    """Every ``shared.<relation>`` view to ``build_schema`` in one transaction; returns rows per model and the
    publication's id."""
    rows = {}
    with conn.transaction():
        conn.execute("lock table ndc_meta.publications in exclusive mode")
        for model, columns in models.items():
            conn.execute(sql.SQL("create or replace view {view} as select {cols} from {table}").format(
                view=ident("shared", model), cols=column_list(columns), table=ident(build_schema, model)))
            note = _deprecation_note(model, (deprecations or {}).get(model), models)
            conn.execute(sql.SQL("comment on view {} is {}").format(ident("shared", model), sql.Literal(note)))
            rows[model] = conn.execute(sql.SQL("select count(*) from {}").format(ident(build_schema, model))
                                       ).fetchone()[0]
        publication_id = conn.execute(
            "insert into ndc_meta.publications (build_schema, models, run_id, mode, conform_seq)"
            " values (%s, %s, %s, 'full', %s) returning publication_id",
            (build_schema, sorted(models), run_id, conform_seq)).fetchone()[0]
    return rows, publication_id


def _successor(model: str, models: dict[str, list[str]]) -> str | None:
    base = build_audit._VERSIONED.match(model)
    name, major = (base["model"], int(base["major"])) if base else (model, 1)
    later = sorted((int(m["major"]), r) for r in models if (m := build_audit._VERSIONED.match(r))
                   and m["model"] == name and int(m["major"]) > major)
    return later[-1][1] if later else None


def _deprecation_note(model: str, deprecated_on: str | None, models: dict[str, list[str]]) -> str:
    if not deprecated_on:
        base = build_audit._VERSIONED.match(model)
        contract = f"shared.{base['model']} v{base['major']}" if base else f"shared.{model} v1"
        return f"Shared view {model}; contract {contract}; see the dbt docs and docs/contracts.md."
    successor = _successor(model, models)
    return (f"DEPRECATED: shared.{model} is removed after {deprecated_on}; "
            f"move to shared.{successor or 'its successor'} (docs/contracts.md).")


def _announce_deprecations(conn: psycopg.Connection, deprecations: dict[str, str], models: dict[str, list[str]],
                           run_id: str | None) -> None:
    """One ledger notice per deprecated relation and date: consumers of v1 are told, once, in the ledger."""
    for model, deprecated_on in sorted(deprecations.items()):
        with conn.transaction():
            told = conn.execute("select 1 from ndc_meta.ledger where kind = 'deprecation_notice'"
                                " and target = %s and details->>'deprecated_on' = %s",
                                (f"shared.{model}", deprecated_on)).fetchone()
        if told:
            continue
        record_event(conn, "deprecation_notice", "shared", f"shared.{model}", run_id,
                     {"deprecated_on": deprecated_on, "successor": _successor(model, models)})


def _refresh_catalog(conn: psycopg.Connection) -> None:
    """The catalogue shows the new publication (a failure here is logged: the publish itself has happened)."""
    from ndc.sharing import catalog

    try:
        catalog.refresh(conn)
    except Exception as exc:
        if conn.info.transaction_status.name != "IDLE":
            conn.rollback()
        log.warning("catalogue not refreshed after publishing: %s", exc)
