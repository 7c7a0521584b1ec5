"""Lineage of a shared row (``ndc trace``): from a row of ``shared.citizens`` or ``shared.enterprises`` back to the
landing versions it was built from, the batches and runs that loaded them, the contract versions that validated
them (the ledger), the publication consumers read it in, and the agreements (with their deliveries) under which
agencies received it.

Only entity views trace to one landing record; aggregates (``province_statistics``) trace to the datasets they
count, which the catalogue's lineage lists.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from ndc.conform.build_audit import TABLE_RULES, LandingReconcile
from ndc.errors import NdcError
from ndc.identifiers import ident

TRACEABLE = {rule.name.split("_reconcile")[0]: rule for rules in TABLE_RULES.values() for rule in rules
             if isinstance(rule, LandingReconcile)}


@dataclass
class Trace:
    relation: str
    key: str
    in_published_view: bool
    versions: list[dict]
    contracts: list[dict]
    publication: dict | None
    agreements: list[dict]


def trace(conn: psycopg.Connection, relation: str, key: str) -> Trace:
    if relation not in TRACEABLE:
        raise NdcError(f"shared.{relation}: lineage is traced for {', '.join(sorted(TRACEABLE))} "
                       "(an aggregate traces to the datasets it counts: see `ndc catalog`)")
    rule = TRACEABLE[relation]
    with conn.transaction():
        present = conn.execute(sql.SQL("select exists (select from {} where {}::text = %s)").format(
            ident("shared", relation), ident(rule.build_key)), (key,)).fetchone()[0]
        versions = conn.execute(sql.SQL(
            "select h._ndc_row_hash, h._ndc_batch_id::text, h._ndc_run_id, h._ndc_loaded_at,"
            " b.window_start, b.window_end, h._ndc_row_hash = l._ndc_row_hash as current"
            " from {history} h left join ndc_meta.batches b on b.batch_id = h._ndc_batch_id"
            " left join {latest} l on l.{key} = h.{key}"
            " where h.{key}::text = %s order by h._ndc_loaded_at").format(
            history=ident(rule.landing_schema, f"{rule.landing_table}_history"),
            latest=ident(rule.landing_schema, rule.landing_table), key=ident(rule.landing_key)), (key,)).fetchall()
        runs = sorted({v[2] for v in versions})
        contracts = conn.execute(
            "select run_id, ledger_id, contract_name, contract_version, row_hash, recorded_at from ndc_meta.ledger"
            " where kind = 'extract' and target = %s and run_id = any(%s) and outcome = 'success'"
            " order by ledger_id", (f"{rule.landing_schema}.{rule.landing_table}", runs)).fetchall()
        publication = conn.execute(
            "select p.publication_id, p.build_schema, p.published_at, l.ledger_id, l.row_hash"
            " from ndc_meta.publications p left join lateral (select ledger_id, row_hash from ndc_meta.ledger"
            " where kind = 'publish' and outcome = 'success' and source = p.build_schema"
            " and recorded_at >= p.published_at order by ledger_id limit 1) l on true"
            " where %s = any(p.models) order by p.publication_id desc limit 1", (relation,)).fetchone()
        agreements = []
        if conn.execute("select to_regclass('ndc_meta.delivery_receipts')").fetchone()[0]:
            agreements = conn.execute(
                "select a.agreement_id, a.consumer, a.content_sha256, r.delivery_id, r.ledger_id, r.ledger_hash,"
                " r.delivered_at from ndc_meta.applied_agreements a left join lateral (select * from"
                " ndc_meta.delivery_receipts d where d.agreement_id = a.agreement_id and d.publication_id = %s"
                " order by delivery_id desc limit 1) r on true where %s = any(a.views) order by 1",
                (publication[0] if publication else -1, relation)).fetchall()
    return Trace(
        relation=relation, key=key, in_published_view=present,
        versions=[{"row_hash": v[0], "batch_id": v[1], "run_id": v[2], "loaded_at": v[3].isoformat(),
                   "window": [v[4].isoformat(), v[5].isoformat()] if v[4] else None, "current": bool(v[6])}
                  for v in versions],
        contracts=[{"run_id": c[0], "ledger_id": c[1], "contract": c[2], "version": c[3], "ledger_hash": c[4],
                    "recorded_at": c[5].isoformat()} for c in contracts],
        publication=None if publication is None else {
            "publication_id": publication[0], "build_schema": publication[1],
            "published_at": publication[2].isoformat(), "ledger_id": publication[3], "ledger_hash": publication[4]},
        agreements=[{"agreement": a[0], "agency": a[1], "agreement_sha256": a[2], "delivery_id": a[3],
                     "delivery_ledger_id": a[4], "delivery_ledger_hash": a[5],
                     "delivered_at": a[6].isoformat() if a[6] else None} for a in agreements])
